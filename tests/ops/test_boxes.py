"""box_area, box_iou, clip_boxes_to_image, remove_small_boxes and BoxCoder."""

import math

import numpy as np
import pytest

from mrcnn_np.ops import (
    BoxCoder,
    box_area,
    box_iou,
    box_iou_reference,
    clip_boxes_to_image,
    remove_small_boxes,
)


def random_boxes(rng, n, dtype=np.float32, grid=None):
    """Boxes inside a 100x80 image; `grid` snaps coordinates to multiples of it (exact ties)."""
    xy = rng.uniform(0, 80, size=(n, 2))
    wh = rng.uniform(0, 30, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    if grid:
        boxes = np.round(boxes / grid) * grid
    return boxes.astype(dtype)


# --------------------------------------------------------------------------------------------
# box_area / box_iou, by hand


def test_box_area_by_hand():
    boxes = np.array([[0, 0, 2, 3], [1, 1, 1, 5], [0.5, 0.5, 1.5, 1.0]], dtype=np.float32)
    # 2*3 = 6; zero width -> 0; 1.0*0.5 = 0.5
    np.testing.assert_array_equal(box_area(boxes), np.array([6, 0, 0.5], dtype=np.float32))
    assert box_area(boxes).dtype == np.float32


@pytest.mark.parametrize(
    ("box_a", "box_b", "expected"),
    [
        # touching edges: overlap width min(2,4) - max(0,2) = 0 -> 0 / (4 + 4 - 0) = 0
        ([0, 0, 2, 2], [2, 0, 4, 2], 0.0),
        # nested: inter = 2*2 = 4, union = 16 + 4 - 4 = 16 -> 0.25
        ([0, 0, 4, 4], [1, 1, 3, 3], 0.25),
        # corner overlap: inter = 1*1, union = 4 + 4 - 1 = 7 -> 1/7 (rounded to float32)
        ([0, 0, 2, 2], [1, 1, 3, 3], np.float32(1) / np.float32(7)),
        # disjoint
        ([0, 0, 1, 1], [5, 5, 6, 6], 0.0),
        # identical
        ([1, 2, 5, 7], [1, 2, 5, 7], 1.0),
        # zero-area box inside a box of area 4: inter = 0, union = 0 + 4 - 0 -> 0
        ([1, 1, 1, 1], [0, 0, 2, 2], 0.0),
        # a zero-width box against itself: inter 0, union 0 -> 0/0 = NaN (torchvision too)
        ([1, 0, 1, 3], [1, 0, 1, 3], np.nan),
        # two disjoint points: 0/0 = NaN
        ([1, 1, 1, 1], [3, 3, 3, 3], np.nan),
    ],
)
def test_box_iou_by_hand(box_a, box_b, expected):
    a = np.array([box_a], dtype=np.float32)
    b = np.array([box_b], dtype=np.float32)
    for function in (box_iou, box_iou_reference):
        np.testing.assert_array_equal(function(a, b), np.array([[expected]], dtype=np.float32))
        np.testing.assert_array_equal(function(b, a), np.array([[expected]], dtype=np.float32))


def test_box_iou_shape_and_dtype():
    a = np.array([[0, 0, 2, 2], [0, 0, 4, 4], [1, 1, 3, 3]], dtype=np.float32)
    b = np.array([[0, 0, 2, 2], [10, 10, 11, 11]], dtype=np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (3, 2) and iou.dtype == np.float32
    # column 0: identical -> 1; [0,0,4,4] contains it -> 4/16; [1,1,3,3] -> 1/(4+4-1)
    np.testing.assert_array_equal(iou[:, 0], np.float32([1, 0.25, np.float32(1) / np.float32(7)]))
    np.testing.assert_array_equal(iou[:, 1], np.zeros(3, np.float32))
    assert box_iou(a.astype(np.float64), b.astype(np.float64)).dtype == np.float64
    assert box_iou(a, b.astype(np.float64)).dtype == np.float64


def test_box_iou_empty_inputs():
    some = np.array([[0, 0, 1, 1]] * 3, dtype=np.float32)
    empty = np.zeros((0, 4), dtype=np.float32)
    assert box_iou(empty, some).shape == (0, 3)
    assert box_iou(some, empty).shape == (3, 0)
    assert box_iou(empty, empty).dtype == np.float32
    assert box_area(empty).shape == (0,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_box_iou_kernel_matches_reference(rng, dtype):
    a = random_boxes(rng, 40, dtype, grid=0.5)  # the grid gives zero-area boxes and exact ties
    b = random_boxes(rng, 30, dtype, grid=0.5)
    np.testing.assert_array_equal(box_iou(a, b), box_iou_reference(a, b))


@pytest.mark.parametrize("function", [box_iou, box_iou_reference])
def test_box_iou_rejects_bad_input(function):
    good = np.array([[0, 0, 1, 1]], dtype=np.float32)
    with pytest.raises(TypeError, match="boxes1"):
        function(good.astype(np.int64), good)
    with pytest.raises(ValueError, match=r"boxes2.*\(N, 4\)"):
        function(good, good[0])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        function(np.zeros((2, 5), np.float32), good)
    with pytest.raises(ValueError, match="x1 <= x2"):
        function(good, np.array([[2, 0, 1, 1]], dtype=np.float32))
    with pytest.raises(ValueError, match="y1 <= y2"):
        function(np.array([[0, 2, 1, 1]], dtype=np.float32), good)
    with pytest.raises(ValueError, match="NaN"):
        function(np.array([[0, 0, np.nan, 1]], dtype=np.float32), good)


# --------------------------------------------------------------------------------------------
# clip_boxes_to_image / remove_small_boxes


def test_clip_boxes_to_image_by_hand():
    boxes = np.array([[-5, -1, 50, 30], [3, 4, 5, 6]], dtype=np.float32)
    # size = (H, W) = (20, 40): x in [0, 40], y in [0, 20]; the bound is W itself, not W-1
    clipped = clip_boxes_to_image(boxes, (20, 40))
    np.testing.assert_array_equal(clipped, np.float32([[0, 0, 40, 20], [3, 4, 5, 6]]))
    assert clipped.dtype == np.float32
    np.testing.assert_array_equal(boxes[0], np.float32([-5, -1, 50, 30]))  # not in place


def test_clip_boxes_to_image_per_class_shape():
    boxes = np.float32([[[-1, -1, 3, 3], [2, 2, 99, 99]]])  # (K=1, C=2, 4), as the box head has
    clipped = clip_boxes_to_image(boxes, (10, 8))
    np.testing.assert_array_equal(clipped, np.float32([[[0, 0, 3, 3], [2, 2, 8, 10]]]))
    assert clip_boxes_to_image(np.zeros((0, 4), np.float32), (10, 8)).shape == (0, 4)


def test_remove_small_boxes_by_hand():
    boxes = np.float32([[0, 0, 1, 1], [0, 0, 0.5, 2], [0, 0, 2, 0.999], [1, 1, 2, 2]])
    # widths 1, 0.5, 2, 1; heights 1, 2, 0.999, 1; min_size 1 keeps w >= 1 and h >= 1 (inclusive)
    keep = remove_small_boxes(boxes, 1.0)
    np.testing.assert_array_equal(keep, [0, 3])
    assert keep.dtype == np.int64
    assert remove_small_boxes(np.zeros((0, 4), np.float32), 1.0).shape == (0,)


def test_box_functions_reject_integer_boxes():
    boxes = np.array([[0, 0, 1, 1]])
    for call in (lambda: box_area(boxes), lambda: clip_boxes_to_image(boxes, (5, 5)),
                 lambda: remove_small_boxes(boxes, 1.0)):
        with pytest.raises(TypeError, match="float32"):
            call()


# --------------------------------------------------------------------------------------------
# BoxCoder


def test_encode_by_hand():
    anchor = np.float32([[0, 0, 10, 10]])  # w = h = 10, centre (5, 5)
    gt = np.float32([[5, 5, 25, 15]])  # w = 20, h = 10, centre (15, 10)
    # dx = (15 - 5)/10 = 1, dy = (10 - 5)/10 = 0.5, dw = ln(20/10), dh = ln(10/10) = 0
    expected = np.float32([[1, 0.5, math.log(2), 0]])
    np.testing.assert_allclose(BoxCoder().encode(gt, anchor), expected, rtol=1e-7)
    # the box head's weights (10, 10, 5, 5) multiply each term
    weighted = BoxCoder(weights=(10, 10, 5, 5)).encode(gt, anchor)
    np.testing.assert_allclose(weighted, expected * np.float32([10, 10, 5, 5]), rtol=1e-6)


def test_decode_by_hand():
    anchor = np.float32([[0, 0, 10, 10]])
    deltas = np.float32([[1, 0.5, math.log(2), 0]])
    # centre (5 + 1*10, 5 + 0.5*10) = (15, 10), size (10*2, 10*1) = (20, 10)
    np.testing.assert_allclose(BoxCoder().decode(deltas, anchor), [[5, 5, 25, 15]], rtol=1e-6)


@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (10, 10, 5, 5)])
def test_encode_decode_round_trip(rng, weights):
    proposals = random_boxes(rng, 50) + np.float32([0, 0, 1, 1])  # positive sizes
    gt = random_boxes(rng, 50) + np.float32([0, 0, 1, 1])
    coder = BoxCoder(weights=weights)
    decoded = coder.decode(coder.encode(gt, proposals), proposals)
    # float32: each step rounds at ~6e-8 relative; coordinates are <= ~110, so 1e-4 absolute
    # is a few dozen ulps of slack for the log/exp/divide chain, far below any real error
    np.testing.assert_allclose(decoded, gt, rtol=0, atol=1e-4)
    assert decoded.dtype == np.float32


def test_decode_clamps_dw_dh_from_above_only():
    anchor = np.float32([[0, 0, 10, 20]])
    clip = math.log(1000 / 16)
    # dw = 10 is clamped to ln(62.5): width 10*62.5 = 625; dh = -10 is not clamped: 20*e^-10
    boxes = BoxCoder().decode(np.float32([[0, 0, 10, -10]]), anchor)
    width, height = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
    np.testing.assert_allclose(width, 10 * math.exp(clip), rtol=1e-6)
    # y1, y2 are ~10, so their difference carries ~1 ulp of 10 (1e-6) of cancellation error;
    # a symmetric clamp at -ln(62.5) would have given 20/62.5 = 0.32 instead of 9.1e-4
    np.testing.assert_allclose(height, 20 * math.exp(-10), atol=2 * np.spacing(np.float32(10)))
    # centre stays at (5, 10)
    np.testing.assert_allclose((boxes[0, 0] + boxes[0, 2]) / 2, 5, atol=1e-4)
    np.testing.assert_allclose((boxes[0, 1] + boxes[0, 3]) / 2, 10, atol=1e-6)


def test_decode_per_class_layout(rng):
    proposals = random_boxes(rng, 6) + np.float32([0, 0, 1, 1])
    deltas = rng.normal(size=(6, 12)).astype(np.float32)  # 3 classes
    coder = BoxCoder(weights=(10, 10, 5, 5))
    per_class = coder.decode(deltas, proposals)
    assert per_class.shape == (6, 3, 4)
    for c in range(3):  # class c reads columns 4c..4c+3
        np.testing.assert_array_equal(per_class[:, c], coder.decode(deltas[:, 4 * c:4 * c + 4],
                                                                    proposals))
    assert coder.decode(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)).shape == (0, 4)
    assert coder.decode(np.zeros((0, 8), np.float32), np.zeros((0, 4), np.float32)).shape == (
        0, 2, 4)
    assert coder.encode(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_box_coder_rejects_bad_input():
    coder = BoxCoder()
    box = np.float32([[0, 0, 2, 2]])
    with pytest.raises(ValueError, match="positive width"):
        coder.encode(box, np.float32([[1, 1, 1, 3]]))
    with pytest.raises(ValueError, match="same shape"):
        coder.encode(box, np.float32([[0, 0, 2, 2]] * 2))
    with pytest.raises(ValueError, match=r"deltas.*\(K, 4\*C\)"):
        coder.decode(np.zeros((1, 5), np.float32), box)
    with pytest.raises(ValueError, match="same number of rows"):
        coder.decode(np.zeros((2, 4), np.float32), box)
    with pytest.raises(TypeError, match="deltas"):
        coder.decode(np.zeros((1, 4), np.int32), box)
    with pytest.raises(ValueError, match="weights"):
        BoxCoder(weights=(1, 1, 1))


# --------------------------------------------------------------------------------------------
# parity with torchvision


@pytest.mark.parity
def test_box_iou_matches_torchvision(rng):
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    a = random_boxes(rng, 200, grid=0.5)  # includes zero-area boxes -> NaN entries
    b = random_boxes(rng, 150)
    b[:5] = a[:5]
    for x, y in ((a, b), (a, a)):
        expected = tv_ops.box_iou(torch.from_numpy(x), torch.from_numpy(y)).numpy()
        # identical float32 operations in the same order: bitwise equal, NaNs in the same places
        np.testing.assert_array_equal(box_iou(x, y), expected)


@pytest.mark.parity
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_matches_torchvision(rng, weights):
    torch = pytest.importorskip("torch")
    det_utils = pytest.importorskip("torchvision.models.detection._utils")
    proposals = random_boxes(rng, 300) * 10 + np.float32([0, 0, 1, 1])
    gt = random_boxes(rng, 300) * 10 + np.float32([0, 0, 1, 1])
    deltas = rng.normal(scale=2.0, size=(300, 8)).astype(np.float32)
    deltas[:10, 2] = 20.0  # beyond the clamp
    ours, theirs = BoxCoder(weights), det_utils.BoxCoder(weights)

    expected = theirs.encode_single(torch.from_numpy(gt), torch.from_numpy(proposals)).numpy()
    # np.log and torch.log may differ by 1 ulp; everything else is the same float32 sequence.
    # Targets are O(1..10), so 2e-6 absolute is a few ulps.
    np.testing.assert_allclose(ours.encode(gt, proposals), expected, rtol=1e-6, atol=2e-6)

    expected = theirs.decode(torch.from_numpy(deltas), [torch.from_numpy(proposals)]).numpy()
    decoded = ours.decode(deltas, proposals)
    assert decoded.shape == expected.shape == (300, 2, 4)
    # exp may differ by 1 ulp (6e-8 relative) before it is scaled by widths of up to ~300 and
    # the result added to centres of up to ~1100; allow 4 ulps of the largest coordinate
    atol = 4 * np.spacing(np.abs(expected).max())
    np.testing.assert_allclose(decoded, expected, rtol=0, atol=atol)
