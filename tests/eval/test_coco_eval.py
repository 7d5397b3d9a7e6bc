"""COCOEvaluator against the COCOEVAL.md vectors (§3.5-3.8) and against pycocotools."""

import copy
import json
import warnings

import numpy as np
import pytest

from mrcnn_np.eval import COCOEvaluator, Params, detections_to_results, rle_decode, write_results

STATS_A = [
    0.5982178217821782,
    0.7782178217821781,
    0.7782178217821781,
    0.5331683168316832,
    0.7504950495049505,
    0.8499999999999999,
    0.4083333333333333,
    0.8208333333333332,
    0.8208333333333332,
    0.7999999999999999,
    0.8,
    0.85,
]
STATS_A_NO_CATS = [
    0.5379387938793879,
    0.7032703270327035,
    0.7032703270327035,
    0.45306930693069297,
    0.722112211221122,
    0.7359735973597358,
    0.14285714285714285,
    0.8142857142857143,
    0.8142857142857143,
    0.7999999999999999,
    0.7999999999999999,
    0.85,
]
STATS_B = [
    0.5085148514851484,
    0.7782178217821781,
    0.6039603960396039,
    0.25957095709570954,
    0.7504950495049505,
    0.7999999999999999,
    0.3416666666666667,
    0.7541666666666667,
    0.7541666666666667,
    0.6,
    0.8,
    0.8,
]
STATS_C = [
    0.4504950495049505,
    0.5,
    0.5,
    0.7999999999999999,
    0.9999999999999998,
    0.9,
    1.0,
    1.0,
    0.8,
    1.0,
]
STATS_D = [
    0.968882602545969,
    0.9688826025459688,
    0.9688826025459688,
    -1.0,
    0.968882602545969,
    -1.0,
    0.05,
    0.45,
    1.0,
    -1.0,
    1.0,
    -1.0,
]


@pytest.mark.parametrize(
    "name, iou_type, use_cats, expected",
    [
        ("bbox", "bbox", True, STATS_A),
        ("bbox", "bbox", False, STATS_A_NO_CATS),
        ("segm", "segm", True, STATS_B),
        ("kp", "keypoints", True, STATS_C),
        ("trap", "bbox", True, STATS_D),
    ],
)
def test_vector_scenarios(vectors, vectors_dir, name, iou_type, use_cats, expected):
    ev = COCOEvaluator(vectors_dir / f"{name}_gt.json", iou_type, use_cats=use_cats)
    stats = ev.evaluate(str(vectors_dir / f"{name}_dets.json"))  # json paths
    assert stats.dtype == np.float64 and stats.tolist() == expected
    # the same from dicts and lists
    ev2 = COCOEvaluator(vectors(f"{name}_gt.json"), iou_type, use_cats=use_cats)
    assert ev2.evaluate(vectors(f"{name}_dets.json")).tolist() == expected


def test_scenario_a_intermediates(vectors):
    ev = COCOEvaluator(vectors("bbox_gt.json"), "bbox")
    ev.evaluate(vectors("bbox_dets.json"))
    assert ev.precision.shape == (10, 101, 2, 4, 3) and ev.recall.shape == (10, 2, 4, 3)
    np.testing.assert_allclose(ev.recall[:, 0, 0, 2], [1] * 6 + [2 / 3] * 4, rtol=1e-15)
    np.testing.assert_allclose(ev.recall[:, 1, 0, 2], [1] * 6 + [0.75, 0.5, 0.25, 0.25], rtol=1e-15)
    p = ev.precision[0, :, 0, 0, 2]
    assert set(p[:34]) == {0.9999999999999998} and set(p[34:67]) == {0.6666666666666666}
    assert set(p[67:]) == {0.6}
    assert set(ev.precision[0, :, 1, 0, 2]) == {0.8}
    per_cat = ev.per_category_ap()
    assert list(per_cat) == [1, 2]
    assert per_cat[1] == np.mean(ev.precision[:, :, 0, 0, 2])


def test_segm_on_box_results_matches_bbox(vectors):
    # gt segmentation = the rectangle of each bbox: integer rectangles rasterise exactly and a
    # result with a bbox has area w*h, so segm gives scenario A's numbers (COCOEVAL.md §3.5)
    gt = vectors("bbox_gt.json")
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    assert COCOEvaluator(gt, "segm").evaluate(vectors("bbox_dets.json")).tolist() == STATS_A


def test_trap_precision_slice(vectors):
    # recall 7/20 = 0.35 < recThrs[35] = 0.35000000000000003: index 35 skips past the FP
    ev = COCOEvaluator(vectors("trap_gt.json"), "bbox")
    ev.evaluate(vectors("trap_dets.json"))
    assert ev.precision[0, 30:41, 0, 0, 2].tolist() == [1.0] * 5 + [0.9523809523809523] * 6
    assert ev.params.iouThrs[8] == 0.8999999999999999
    assert ev.params.recThrs[35] == 0.35000000000000003


def test_empty_results(vectors):
    # pycocotools crashes on []: here every category with gts scores 0, the rest -1
    ev = COCOEvaluator(vectors("trap_gt.json"), "bbox")
    assert ev.evaluate([]).tolist() == [0, 0, 0, -1, 0, -1, 0, 0, 0, -1, 0, -1]
    assert np.all(ev.precision[:, :, :, [0, 2]] == 0) and np.all(ev.precision[:, :, :, 1] == -1)
    ev = COCOEvaluator(vectors("kp_gt.json"), "keypoints")
    assert ev.evaluate([]).tolist() == [0.0] * 10


def test_summary_and_params(vectors):
    ev = COCOEvaluator(vectors("bbox_gt.json"), "bbox")
    with pytest.raises(RuntimeError, match="evaluate"):
        ev.summary()
    ev.evaluate(vectors("bbox_dets.json"))
    lines = ev.summary().splitlines()
    assert len(lines) == 12
    assert lines[0] == (
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.598"
    )
    assert (
        lines[9]
        == " Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = 0.800"
    )
    assert isinstance(ev.params, Params) and ev.params.maxDets == [1, 10, 100]
    ev.params.maxDets = [100, 1]  # too few for the 12 stats
    with pytest.raises(ValueError, match="maxDets"):
        ev.evaluate(vectors("bbox_dets.json"))
    ev.params.maxDets = [100, 10, 1]  # sorted like pycocotools
    assert ev.evaluate(vectors("bbox_dets.json")).tolist() == STATS_A
    ev.params.imgIds = [2]
    stats = ev.evaluate(vectors("bbox_dets.json"))
    assert stats[0] != STATS_A[0]
    ev.params.imgIds = [5]
    with pytest.raises(ValueError, match="imgIds"):
        ev.evaluate([])
    kp = COCOEvaluator(vectors("kp_gt.json"), "keypoints")
    kp.evaluate(vectors("kp_dets.json"))
    assert len(kp.summary().splitlines()) == 10 and kp.params.maxDets == [20]


def test_result_errors(vectors):
    ev = COCOEvaluator(vectors("bbox_gt.json"), "bbox")
    det = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
    with pytest.raises(ValueError, match="not a gt image"):
        ev.evaluate([dict(det, image_id=3)])
    with pytest.raises(ValueError, match="'score'"):
        ev.evaluate([{k: v for k, v in det.items() if k != "score"}])
    with pytest.raises(ValueError, match="NaN"):
        ev.evaluate([dict(det, score=float("nan"))])
    with pytest.raises(ValueError, match="'bbox'"):
        ev.evaluate([det, {k: v for k, v in det.items() if k != "bbox"}])
    with pytest.warns(UserWarning, match="categories \\[7\\]"):
        assert ev.evaluate([dict(det, category_id=7)]).tolist() == ev.evaluate([]).tolist()
    with pytest.raises(ValueError, match="iou_type"):
        COCOEvaluator(vectors("bbox_gt.json"), "mask")
    gt = vectors("bbox_gt.json")
    gt["annotations"][1]["id"] = 1
    with pytest.raises(ValueError, match="unique"):
        COCOEvaluator(gt, "bbox")
    with pytest.raises(ValueError, match="segm"):
        COCOEvaluator(vectors("kp_gt.json"), "segm").evaluate(vectors("kp_dets.json"))


def test_write_results_round_trip(vectors, tmp_path):
    dets = vectors("segm_dets.json")
    for d in dets[:3]:  # numpy values and bytes counts, as model code and pycocotools make them
        d["score"] = np.float32(d["score"])
        d["segmentation"]["counts"] = d["segmentation"]["counts"].encode()
    write_results(tmp_path / "res.json", dets)
    loaded = json.loads((tmp_path / "res.json").read_text())
    assert COCOEvaluator(vectors("segm_gt.json"), "segm").evaluate(loaded).tolist() == STATS_B


def test_detections_to_results():
    masks = np.zeros((2, 1, 6, 8), np.float32)
    masks[0, 0, 1:3, 2:5] = 0.9
    masks[1, 0, 4:6, 0:2] = 0.4  # below the 0.5 threshold: an empty mask
    res = detections_to_results(
        5,
        [[2, 1, 5, 3], [0.5, 4, 2, 6]],
        [0.9, 0.3],
        [3, 1],
        masks=masks,
        keypoints=np.ones((2, 2, 3)),
    )
    assert res[0]["bbox"] == [2, 1, 3, 2] and res[1]["bbox"] == [0.5, 4, 1.5, 2]
    assert (res[0]["image_id"], res[0]["category_id"], res[0]["score"]) == (5, 3, 0.9)
    np.testing.assert_array_equal(rle_decode(res[0]["segmentation"]), masks[0, 0] > 0.5)
    assert rle_decode(res[1]["segmentation"]).sum() == 0
    assert res[1]["keypoints"] == [1.0] * 6


PARITY_SEEDS = range(30)


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2
@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
@pytest.mark.parametrize("use_cats", [1, 0])
def test_parity_random_scenarios(scenario, pycocotools_eval, iou_type, use_cats):
    crowded = 0
    for seed in PARITY_SEEDS:
        gt, results = scenario(seed, iou_type)
        if not results:
            continue  # pycocotools crashes on an empty result list
        ref = pycocotools_eval(gt, results, iou_type, use_cats)
        gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(results)
        ours = COCOEvaluator(gt, iou_type, use_cats=bool(use_cats))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # detections of a category missing from the gt
            stats = ours.evaluate(results)
        assert gt == gt_before and results == results_before  # inputs untouched
        # exactly equal (the spec asks 1e-12; the implementation repeats pycocotools' float ops)
        assert stats.tolist() == ref.stats.tolist(), (seed, stats, ref.stats)
        np.testing.assert_array_equal(ours.precision, ref.eval["precision"])
        np.testing.assert_array_equal(ours.recall, ref.eval["recall"])
        np.testing.assert_array_equal(ours.scores, ref.eval["scores"])
        crowded += any(len(e["dtIds"]) == ref.params.maxDets[-1] for e in ref.evalImgs if e)
    assert crowded  # at least one (image, category) had its detections cut to 100 (20)
