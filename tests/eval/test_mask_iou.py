"""Box IoU, mask IoU and OKS as pycocotools computes them (COCOEVAL.md §1.9, §2.4, §3.3-3.4)."""

import numpy as np
import pytest

from mrcnn_np.eval import bbox_iou_xywh, rle_encode, rle_iou
from mrcnn_np.eval.iou import bbox_iou_xywh_reference, oks_matrix, rle_iou_reference
from mrcnn_np.eval.polygon import bbox_to_rle

SIGMAS = (
    np.array(
        [
            0.26,
            0.25,
            0.25,
            0.35,
            0.35,
            0.79,
            0.79,
            0.72,
            0.72,
            0.62,
            0.62,
            1.07,
            1.07,
            0.87,
            0.87,
            0.89,
            0.89,
        ]
    )
    / 10.0
)


def rows(text):
    return np.array([[int(c) for c in r] for r in text.split("/")], np.uint8)


def test_box_iou_hand_computed():
    # [0,0,10,10] vs [5,5,10,10]: overlap 5x5 = 25, union 100 + 100 - 25 = 175
    assert bbox_iou_xywh([[0, 0, 10, 10]], [[5, 5, 10, 10]], [0])[0, 0] == 25 / 175
    # crowd gt: divide by the detection's own area, 25 / 100
    assert bbox_iou_xywh([[0, 0, 10, 10]], [[5, 5, 10, 10]], [1])[0, 0] == 0.25
    assert bbox_iou_xywh([[5, 5, 10, 10]], [[0, 0, 10, 10]], [1])[0, 0] == 0.25
    # touching boxes: overlap width 0 -> 0 (no +1 convention)
    assert bbox_iou_xywh([[0, 0, 10, 10]], [[10, 0, 10, 10]], [0])[0, 0] == 0.0
    out = bbox_iou_xywh(
        [[0, 0, 10, 10], [1, 1, 2, 2]], [[5, 5, 10, 10], [0, 0, 4, 4], [2, 2, 20, 20]], [0, 1, 0]
    )
    # row 0: 25/175; crowd: 16/100; 64/(100+400-64) = 64/436. row 1: 0; 4/4; 1/(4+400-1)
    assert out.tolist() == [[25 / 175, 0.16, 64 / 436], [0.0, 1.0, 1 / 403]]
    assert out.tolist() == [
        [0.14285714285714285, 0.16, 0.14678899082568808],
        [0.0, 1.0, 0.0024813895781637717],
    ]


def test_mask_iou_hand_computed():
    a = rle_encode(rows("1110/1110/0000/0000"))  # 6 pixels
    b = rle_encode(rows("0000/0110/0110/0110"))  # 6 pixels, 2 shared with a (row 1, cols 1-2)
    assert rle_iou([a], [b], [0])[0, 0] == 2 / 10 == 0.2  # union 6 + 6 - 2
    assert rle_iou([a], [b], [1])[0, 0] == 2 / 6  # crowd: / area of the detection
    assert rle_iou([b], [a], [1])[0, 0] == 2 / 6
    ones3x3 = rle_encode(np.ones((3, 3), bool))
    ones3x4 = rle_encode(np.ones((3, 4), bool))
    assert rle_iou([ones3x3], [ones3x4], [0])[0, 0] == -1.0  # different sizes, boxes overlap
    # different sizes but disjoint boxes: the box prefilter gives 0 before sizes are compared
    far = rle_encode(np.pad(np.ones((1, 1), bool), ((2, 0), (3, 0))))  # pixel (2, 3) on 3x4
    corner = rle_encode(np.pad(np.ones((1, 1), bool), ((0, 2), (0, 2))))  # pixel (0, 0) on 3x3
    assert rle_iou([corner], [far], [0])[0, 0] == 0.0


def test_empty_matrices():
    a = rle_encode(np.ones((3, 3), bool))
    assert rle_iou([], [a], [0]).shape == (0, 1)
    assert rle_iou([a], [], []).shape == (1, 0)
    assert bbox_iou_xywh(np.zeros((0, 4)), [[0, 0, 1, 1]], [0]).shape == (0, 1)
    with pytest.raises(ValueError, match="iscrowd"):
        bbox_iou_xywh([[0, 0, 1, 1]], [[0, 0, 1, 1]], [0, 1])
    with pytest.raises(ValueError, match="finite"):
        bbox_iou_xywh([[0, 0, np.inf, 1]], [[0, 0, 1, 1]], [0])


def random_masks(rng, n, h, w):
    out = np.zeros((n, h, w), np.uint8)
    for m in out:
        if rng.random() < 0.3:
            m[:] = rng.random((h, w)) < 0.3
        else:
            y, x = rng.integers(0, h), rng.integers(0, w)
            m[y : y + rng.integers(0, h), x : x + rng.integers(0, w)] = 1
    return out


def test_reference_and_kernel_agree(rng):
    for _ in range(100):
        h, w = rng.integers(1, 12, 2)
        dt = rle_encode(random_masks(rng, rng.integers(0, 5), h, w))
        gt = rle_encode(random_masks(rng, rng.integers(0, 5), h, w))
        crowd = rng.integers(0, 2, len(gt))
        np.testing.assert_array_equal(rle_iou(dt, gt, crowd), rle_iou_reference(dt, gt, crowd))
        boxes_d = rng.uniform(-3, 10, (rng.integers(0, 5), 4))
        boxes_g = rng.uniform(-3, 10, (len(gt), 4))
        np.testing.assert_array_equal(
            bbox_iou_xywh(boxes_d, boxes_g, crowd), bbox_iou_xywh_reference(boxes_d, boxes_g, crowd)
        )


def test_mask_iou_of_boxes_matches_box_iou_on_integer_boxes(rng):
    # integer boxes rasterise exactly, so mask IoU == box IoU (pixel counts are w*h)
    boxes = np.concatenate([rng.integers(0, 10, (6, 2)), rng.integers(1, 8, (6, 2))], 1)
    rles = bbox_to_rle(boxes.astype(float), 20, 20)
    crowd = [0, 1, 0, 0, 1, 0]
    np.testing.assert_allclose(
        rle_iou(rles, rles, crowd), bbox_iou_xywh(boxes, boxes, crowd), rtol=0, atol=1e-15
    )


def test_oks_values(vectors):
    # COCOEVAL.md §3.4: scenario C, image 1, dets by score (0.9, 0.8, 0.7) x gts (id1, id2);
    # gt id2 has no labelled keypoint: distance to its box grown by its size on every side
    gts = {a["id"]: a for a in vectors("kp_gt.json")["annotations"]}
    dets = vectors("kp_dets.json")
    img1 = [d["keypoints"] for d in dets[:3]]
    g = [gts[1], gts[2]]
    out = oks_matrix(
        img1, [a["keypoints"] for a in g], [a["bbox"] for a in g], [a["area"] for a in g], SIGMAS
    )
    assert out.tolist() == [
        [0.9694546460737336, 0.1813658183388966],
        [0.6262500758034977, 0.2369499107946662],
        [1.5869552260229264e-05, 1.0],
    ]
    img2 = [dets[4]["keypoints"], dets[3]["keypoints"]]  # scores 0.95, 0.6
    out = oks_matrix(img2, [gts[3]["keypoints"]], [gts[3]["bbox"]], [gts[3]["area"]], SIGMAS)
    assert out.tolist() == [[1.2092338808406974e-53], [0.8900528275042593]]


@pytest.mark.parity
def test_parity_random_ious(rng):
    mask_api = pytest.importorskip("pycocotools.mask")
    for _ in range(300):
        h, w = rng.integers(1, 20, 2)
        dm = random_masks(rng, rng.integers(1, 5), h, w)
        gm = random_masks(rng, rng.integers(1, 5), h, w)
        crowd = rng.integers(0, 2, len(gm))
        ref = mask_api.iou(
            [mask_api.encode(np.asfortranarray(m)) for m in dm],
            [mask_api.encode(np.asfortranarray(m)) for m in gm],
            crowd.tolist(),
        )
        np.testing.assert_array_equal(rle_iou(rle_encode(dm), rle_encode(gm), crowd), ref)
        d = np.round(rng.uniform(-5, 20, (len(dm), 4)), rng.integers(0, 3))
        g = np.round(rng.uniform(-5, 20, (len(gm), 4)), rng.integers(0, 3))
        np.testing.assert_array_equal(
            bbox_iou_xywh(d, g, crowd), mask_api.iou(d, g, crowd.tolist())
        )
