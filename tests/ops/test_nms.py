"""nms, nms_reference and batched_nms (REFERENCE.md §6.2, §6.3)."""

import numpy as np
import pytest

from mrcnn_np.ops import batched_nms, nms, nms_reference


def random_boxes(rng, n, grid=None, image=(800, 1333)):
    """Boxes of realistic sizes (8..300 px) in an image; `grid` snaps them (exact IoU ties)."""
    centre = rng.uniform(0, 1, size=(n, 2)) * np.float32([image[1], image[0]])
    size = rng.uniform(8, 300, size=(n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    if grid:
        boxes = np.round(boxes / grid) * grid
    return boxes.astype(np.float32)


def crowded_boxes(rng, n):
    """Heavily overlapping boxes on a coarse grid with repeated scores (ties everywhere)."""
    boxes = random_boxes(rng, n, grid=8.0, image=(64, 64))
    scores = rng.integers(0, 5, size=n).astype(np.float32) / 4
    return boxes, scores


@pytest.fixture(params=[nms, nms_reference], ids=["numba", "reference"])
def nms_function(request):
    return request.param


def test_greedy_suppression_by_hand(nms_function):
    boxes = np.float32([
        [0, 0, 10, 10],    # 0: s 0.9, kept
        [2, 0, 12, 10],    # 1: s 0.8, IoU(0,1) = 8*10 / (100+100-80) = 0.667 > 0.5 -> suppressed
        [4, 0, 14, 10],    # 2: s 0.7, IoU(0,2) = 60/140 = 0.43 -> kept, although
                           #    IoU(1,2) = 0.667: box 1 was suppressed and suppresses nothing
        [0, 0, 10, 10],    # 3: s 0.9, a duplicate of box 0 with the same score: 0 comes first
                           #    (stable order), then IoU(0,3) = 1 -> suppressed
        [20, 20, 30, 30],  # 4: s 0.9, disjoint, kept; ties with 0 -> after 0 (higher index)
    ])
    scores = np.float32([0.9, 0.8, 0.7, 0.9, 0.9])
    keep = nms_function(boxes, scores, 0.5)
    np.testing.assert_array_equal(keep, [0, 4, 2])
    assert keep.dtype == np.int64


def test_iou_equal_to_threshold_is_kept(nms_function):
    # inter = 2*1 = 2, union = 3 + 3 - 2 = 4: IoU = 0.5 exactly (representable in float32)
    boxes = np.float32([[0, 0, 3, 1], [1, 0, 4, 1]])
    scores = np.float32([0.9, 0.8])
    np.testing.assert_array_equal(nms_function(boxes, scores, 0.5), [0, 1])  # 0.5 > 0.5 false
    np.testing.assert_array_equal(nms_function(boxes, scores, 0.49), [0])


def test_equal_scores_keep_index_order(nms_function):
    boxes = np.float32([[0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11], [20, 0, 21, 1]])
    scores = np.float32([0.5, 0.7, 0.5, 0.7])
    np.testing.assert_array_equal(nms_function(boxes, scores, 0.5), [1, 3, 0, 2])


def test_zero_area_duplicates_are_not_suppressed(nms_function):
    # two identical points: IoU = 0/0 = NaN, and NaN > threshold is false (as in torchvision)
    boxes = np.float32([[3, 3, 3, 3], [3, 3, 3, 3]])
    np.testing.assert_array_equal(nms_function(boxes, np.float32([0.9, 0.8]), 0.5), [0, 1])


def test_empty_input(nms_function):
    keep = nms_function(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64
    keep = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                       np.zeros(0, np.int64), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_kernel_matches_reference(rng, threshold):
    for boxes, scores in (crowded_boxes(rng, 120),
                          (random_boxes(rng, 150), rng.random(150).astype(np.float32))):
        np.testing.assert_array_equal(nms(boxes, scores, threshold),
                                      nms_reference(boxes, scores, threshold))
    boxes64 = boxes.astype(np.float64)
    np.testing.assert_array_equal(nms(boxes64, scores, threshold),
                                  nms_reference(boxes64, scores, threshold))


def test_nms_rejects_bad_input(nms_function):
    boxes = np.float32([[0, 0, 1, 1], [0, 0, 2, 2]])
    scores = np.float32([0.5, 0.4])
    with pytest.raises(ValueError, match=r"scores: expected shape \(2,\)"):
        nms_function(boxes, scores[:1], 0.5)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        nms_function(boxes[:, :3], scores, 0.5)
    with pytest.raises(TypeError, match="boxes"):
        nms_function(boxes.astype(np.int32), scores, 0.5)
    with pytest.raises(TypeError, match="scores"):
        nms_function(boxes, np.array([1, 0]), 0.5)
    with pytest.raises(ValueError, match="x1 <= x2"):
        nms_function(np.float32([[0, 0, 1, 1], [3, 0, 2, 2]]), scores, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        nms_function(np.float32([[0, 0, 1, 1], [0, 0, np.nan, 2]]), scores, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        nms_function(boxes, np.float32([0.5, np.nan]), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms_function(boxes, scores, float("nan"))


# --------------------------------------------------------------------------------------------
# batched_nms


def per_class_oracle(boxes, scores, idxs, threshold):
    """nms_reference on every category separately, merged by stable descending score."""
    kept = []
    for category in np.unique(idxs):
        members = np.flatnonzero(idxs == category)
        kept.extend(members[nms_reference(boxes[members], scores[members], threshold)])
    kept = np.array(sorted(kept), dtype=np.int64)
    return kept[np.argsort(-scores[kept], kind="stable")]


def test_batched_nms_by_hand():
    boxes = np.float32([[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]])
    scores = np.float32([0.6, 0.9, 0.8, 0.6])
    idxs = np.array([0, 1, 1, 2])
    # class 1: box 1 (0.9) suppresses box 2 (IoU 90/110 = 0.82); classes 0 and 2 have one box
    # each, identical to box 1, but other classes never suppress. Ties 0/3 in index order.
    np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, 0.5), [1, 0, 3])
    # with a single class, box 1 suppresses everything
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.zeros(4, np.int64), 0.5), [1])


def test_batched_nms_matches_per_class_nms(rng):
    boxes, scores = crowded_boxes(rng, 150)
    idxs = rng.integers(-2, 4, size=150)  # negative ids are fine too
    np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, 0.5),
                                  per_class_oracle(boxes, scores, idxs, 0.5))


def test_batched_nms_rejects_bad_idxs():
    boxes = np.float32([[0, 0, 1, 1], [0, 0, 2, 2]])
    scores = np.float32([0.5, 0.4])
    with pytest.raises(TypeError, match="idxs"):
        batched_nms(boxes, scores, np.float32([0, 1]), 0.5)
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(boxes, scores, np.array([0, 1, 2]), 0.5)


# --------------------------------------------------------------------------------------------
# parity with torchvision


@pytest.mark.parity
def test_nms_matches_torchvision(rng):
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    cases = [
        (random_boxes(rng, 2000), rng.random(2000).astype(np.float32), 0.7),
        (*crowded_boxes(rng, 400), 0.5),  # score ties and duplicate boxes
        (random_boxes(rng, 500, grid=16.0), np.ones(500, np.float32), 0.3),  # all tied
    ]
    for boxes, scores, threshold in cases:
        expected = tv_ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)
        # same stable order and the same float32 IoU arithmetic: identical index lists
        np.testing.assert_array_equal(nms(boxes, scores, threshold), expected.numpy())


@pytest.mark.parity
@pytest.mark.parametrize("n", [600, 3000], ids=["coordinate-trick-path", "vanilla-path"])
def test_batched_nms_matches_torchvision(rng, n):
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    boxes = random_boxes(rng, n)
    idxs = rng.integers(0, 5, size=n)
    for scores in (rng.random(n).astype(np.float32),  # distinct scores
                   rng.integers(0, 20, size=n).astype(np.float32) / 19):  # many ties
        expected = tv_ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                      torch.from_numpy(idxs), 0.5).numpy()
        keep = batched_nms(boxes, scores, idxs, 0.5)
        # same kept set; the order is by score in both, but torchvision's vanilla path (> 1000
        # boxes) orders exact ties arbitrarily, so compare sets and the score sequence
        np.testing.assert_array_equal(np.sort(keep), np.sort(expected))
        np.testing.assert_array_equal(scores[keep], scores[expected])
        if n <= 1000:  # the coordinate-trick path keeps ties in index order, as we do
            np.testing.assert_array_equal(keep, expected)
