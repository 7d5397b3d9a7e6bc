"""Greedy matching and precision/recall accumulation (COCOEVAL.md §2.5-2.7)."""

import numpy as np

from mrcnn_np.eval import COCOEvaluator
from mrcnn_np.eval.matching import (
    accumulate,
    accumulate_reference,
    evaluate_image_reference,
    match_groups,
)

REC_THRS = np.linspace(0.0, 1.00, 101)
IOU_THRS = np.linspace(0.5, 0.95, 10)
EPS = np.spacing(1.0)


def one_image_gt(boxes, areas=None, crowd=None, ids=None):
    n = len(boxes)
    return {
        "images": [{"id": 1, "height": 100, "width": 100}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {
                "id": (ids or list(range(1, n + 1)))[i],
                "image_id": 1,
                "category_id": 1,
                "bbox": boxes[i],
                "area": (areas or [b[2] * b[3] for b in boxes])[i],
                "iscrowd": (crowd or [0] * n)[i],
            }
            for i in range(n)
        ],
    }


def dets(*boxes_scores):
    return [{"image_id": 1, "category_id": 1, "bbox": b, "score": s} for b, s in boxes_scores]


def test_tiny_ap_worked_out():
    # gts A = [0,0,10,10] and B = [20,0,10,10] (area 100: 'small').
    # d1 (0.9) = A exactly (IoU 1), d2 (0.8) far away (FP), d3 (0.7) = upper half of B:
    # IoU(d3, B) = 50 / (50 + 100 - 50) = 0.5.
    gt = one_image_gt([[0, 0, 10, 10], [20, 0, 10, 10]])
    ev = COCOEvaluator(gt, "bbox")
    stats = ev.evaluate(dets(([0, 0, 10, 10], 0.9), ([50, 50, 10, 10], 0.8), ([20, 0, 10, 5], 0.7)))
    # IoU 0.50: TP, FP, TP -> tp 1,1,2  fp 0,1,1  recall .5,.5,1
    #   precision tp/(tp+fp+eps) = 1/(1+eps) = 0.9999999999999998, 0.5, 2/3
    #   made monotone from the right: 0.9999999999999998, 2/3, 2/3
    #   recall thresholds 0.00..0.50 (51 of them) first reach recall at d1 -> 0.9999999999999998
    #   thresholds 0.51..1.00 (50) first reach it at d3 -> 2/3
    p50 = np.array([1 / (1 + EPS)] * 51 + [2 / 3] * 50)
    # IoU >= 0.55: d3 no longer matches -> recall .5,.5,.5; thresholds past 0.5 read 0
    p_hi = np.array([1 / (1 + EPS)] * 51 + [0.0] * 50)
    expected = np.stack([p50] + [p_hi] * 9)
    np.testing.assert_array_equal(ev.precision[:, :, 0, 0, 2], expected)
    assert ev.recall[:, 0, 0, 2].tolist() == [1.0] + [0.5] * 9
    assert stats[0] == np.mean(expected)  # AP@[.5:.95] over the whole (10, 101) block
    assert stats[1] == np.mean(p50)  # AP50 = (51 * 0.9999999999999998 + 50 * 2/3) / 101
    assert stats[2] == np.mean(p_hi)  # AP75
    assert stats[3] == stats[0] and stats[4] == stats[5] == -1  # all gts small: no medium/large
    assert stats[8] == np.mean([1.0] + [0.5] * 9) == 0.55  # AR@100
    assert stats[6] == 0.5  # AR@1: only d1 per image
    assert ev.per_category_ap() == {1: stats[0]}


def test_equal_iou_later_gt_wins():
    # two identical gts (ids 7 then 3) and one identical det: on exact ties the later gt wins
    ious = np.array([[1.0, 1.0]])
    dtm, dt_ignore, _ = evaluate_image_reference(
        ious, [7, 3], [0, 0], [0, 0], [100, 100], [100], [0, 1e10], IOU_THRS
    )
    assert dtm[:, 0].tolist() == [3] * 10 and not dt_ignore.any()
    # end to end: one of the two gts found -> recall 0.5; thresholds past 0.5 read 0
    gt = one_image_gt([[0, 0, 10, 10], [0, 0, 10, 10]], ids=[7, 3])
    stats = COCOEvaluator(gt).evaluate(dets(([0, 0, 10, 10], 0.9)))
    assert stats[1] == np.mean([1 / (1 + EPS)] * 51 + [0.0] * 50) and stats[8] == 0.5


def test_gt_id_zero_cannot_be_a_true_positive():
    # ids are sentinels: a det matched to gt id 0 is recorded as unmatched (dtm == 0) -> FP
    gt = one_image_gt([[0, 0, 10, 10]], ids=[0])
    stats = COCOEvaluator(gt).evaluate(dets(([0, 0, 10, 10], 0.9)))
    assert stats[0] == 0.0 and stats[8] == 0.0


def test_crowd_absorbs_many_dets_and_area_ignore():
    # crowd gt [0,0,50,50]: both dets inside it score IoU 1 (crowd divides by det area) and
    # become ignored, not FPs; the regular gt [60,60,10,10] is found by the third det
    gt = one_image_gt([[0, 0, 50, 50], [60, 60, 10, 10]], crowd=[1, 0])
    stats = COCOEvaluator(gt).evaluate(
        dets(([0, 0, 10, 10], 0.95), ([10, 10, 10, 10], 0.9), ([60, 60, 10, 10], 0.5))
    )
    assert stats[0] == 1 / (1 + EPS)
    # gt area exactly 1024 counts as small and as medium (both bounds inclusive)
    gt = one_image_gt([[0, 0, 32, 32]], areas=[1024])
    stats = COCOEvaluator(gt).evaluate(dets(([0, 0, 32, 32], 0.9)))
    assert stats[3] == stats[4] == 1 / (1 + EPS) and stats[5] == -1


def random_cells(rng, n_cells):
    """Random flat cells for match_groups: ties, crowd, ignore, gt id 0, empty sides."""
    n_dt = rng.integers(0, 8, n_cells)
    n_gt = rng.integers(0, 6, n_cells)
    n_gt[rng.random(n_cells) < 0.2] = 0
    no_iou = (n_dt == 0) | (n_gt == 0)
    sizes = np.where(no_iou, 0, n_dt * n_gt)
    iou = np.round(rng.random(sizes.sum()), 1)  # coarse values: many exact ties
    cells = {
        "iou": iou,
        "iou_ptr": np.concatenate([[0], np.cumsum(sizes)]),
        "dt_ptr": np.concatenate([[0], np.cumsum(n_dt)]),
        "gt_ptr": np.concatenate([[0], np.cumsum(n_gt)]),
        "gt_area": rng.choice([10.0, 1024.0, 5000.0, 9216.0, 20000.0], n_gt.sum()),
        "gt_ignore": rng.random(n_gt.sum()) < 0.2,
        "gt_crowd": rng.random(n_gt.sum()) < 0.2,
        "gt_id": rng.integers(0, 4, n_gt.sum()),
        "dt_area": rng.uniform(0, 12000, n_dt.sum()),
    }
    cells["gt_ignore"] |= cells["gt_crowd"]
    return cells


AREAS = np.array([[0, 1e10], [0, 1024], [1024, 9216], [9216, 1e10]])


def test_match_kernel_agrees_with_reference(rng):
    c = random_cells(rng, 300)
    matched, ignored, n_regular = match_groups(
        c["iou"],
        c["iou_ptr"],
        c["dt_ptr"],
        c["gt_ptr"],
        c["gt_area"],
        c["gt_ignore"],
        c["gt_crowd"],
        c["gt_id"],
        c["dt_area"],
        AREAS,
        IOU_THRS,
    )
    for g in range(300):
        d0, d1, g0, g1 = c["dt_ptr"][g], c["dt_ptr"][g + 1], c["gt_ptr"][g], c["gt_ptr"][g + 1]
        block = c["iou"][c["iou_ptr"][g] : c["iou_ptr"][g + 1]]
        ious = block.reshape(d1 - d0, g1 - g0) if block.size else []  # pycocotools' "no IoU"
        for a, rng_a in enumerate(AREAS):
            dtm, dt_ig, gt_ig = evaluate_image_reference(
                ious,
                c["gt_id"][g0:g1],
                c["gt_ignore"][g0:g1],
                c["gt_crowd"][g0:g1],
                c["gt_area"][g0:g1],
                c["dt_area"][d0:d1],
                rng_a,
                IOU_THRS,
            )
            np.testing.assert_array_equal(matched[a, :, d0:d1], dtm != 0)
            np.testing.assert_array_equal(ignored[a, :, d0:d1], dt_ig)
            assert n_regular[a, g] == np.count_nonzero(~gt_ig)


def test_accumulate_kernel_agrees_with_reference(rng):
    for _ in range(20):
        c = random_cells(rng, 40)
        matched, ignored, n_regular = match_groups(
            c["iou"],
            c["iou_ptr"],
            c["dt_ptr"],
            c["gt_ptr"],
            c["gt_area"],
            c["gt_ignore"],
            c["gt_crowd"],
            c["gt_id"],
            c["dt_area"],
            AREAS,
            IOU_THRS,
        )
        cut = np.sort(rng.integers(0, 41, 3))  # 4 categories of consecutive cells
        cat_ptr = np.concatenate([[0], cut, [40]])
        scores = np.round(rng.random(c["dt_ptr"][-1]), 1)  # ties across images
        args = (cat_ptr, c["dt_ptr"], scores, matched, ignored, n_regular, REC_THRS, [1, 3, 5])
        for ours, ref in zip(accumulate(*args), accumulate_reference(*args), strict=True):
            np.testing.assert_array_equal(ours, ref)
