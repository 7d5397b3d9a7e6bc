"""Mask targets (RoIAlign of the gt mask) and pasting M x M probabilities into the image."""

import numpy as np
import pytest

from mrcnn_np.ops.masks import paste_masks_in_image, project_masks_on_boxes

# a 2x2 map of ones, zero-padded to 4x4 = rows/cols [0, 1, 1, 0], resized to 5 pixels:
# scale 4/5 = 0.8, src = 0.8*(d + 0.5) - 0.5 = -0.1 (-> 0), 0.7, 1.5, 2.3, 3.1 (-> 3), so
# [0, 0.3*0 + 0.7*1, 1, 0.7*1 + 0.3*0, 0] = [0, .7, 1, .7, 0]
FADE5 = np.array([0, .7, 1, .7, 0])


def test_paste_by_hand():
    # box (2, 1, 4, 3): the 2x2 map grows with its padding by (2+2)/2 = 2 about the centre
    # (3, 2) to (1, 0, 5, 4); +1 sizes: 5x5, covering rows 0..4 and columns 1..5
    out = paste_masks_in_image(np.ones((1, 1, 2, 2)), np.array([[2, 1, 4, 3]]), (6, 7))
    expected = np.zeros((6, 7))
    expected[0:5, 1:6] = np.outer(FADE5, FADE5)
    assert out.shape == (1, 1, 6, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-7)


def test_paste_clips_at_the_border():
    # box (-1, -1, 1, 1) grows to (-2, -2, 2, 2): rows/cols -2..2 get FADE5, of which the
    # image keeps indices 0..2 -> [1, .7, 0]
    out = paste_masks_in_image(np.ones((1, 2, 2)), np.array([[-1, -1, 1, 1]]), (4, 4))
    expected = np.zeros((4, 4))
    expected[:3, :3] = np.outer([1, .7, 0], [1, .7, 0])
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-7)


def test_paste_truncates_the_grown_box_toward_zero():
    # box (-0.75, 0, 1.25, 2): x grows about 0.25 by 2 to -1.75..2.25 -> truncated to -1..2
    # (floor would give -2), so 4 columns: resizing 4 -> 4 copies [0, 1, 1, 0], and the image
    # keeps columns 0..2 = [1, 1, 0] (with floor it would be [1, .7, 0]).
    # y grows to -1..3: FADE5 on rows -1..3 -> image rows 0..3 = [.7, 1, .7, 0]
    out = paste_masks_in_image(np.ones((1, 2, 2)), np.array([[-0.75, 0, 1.25, 2]]), (5, 4))
    expected = np.zeros((5, 4))
    expected[:4, :3] = np.outer([.7, 1, .7, 0], [1, 1, 0])
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-7)


def test_a_box_outside_the_image_pastes_nothing():
    out = paste_masks_in_image(np.ones((2, 1, 28, 28)),
                               np.array([[-50, -40, -20, -10.0], [40, 5, 60, 10]]), (20, 30))
    assert out.shape == (2, 1, 20, 30) and out.max() == 0


def test_empty_and_bad_inputs():
    assert paste_masks_in_image(np.zeros((0, 1, 28, 28)), np.zeros((0, 4)), (5, 6)).shape \
        == (0, 1, 5, 6)
    with pytest.raises(ValueError, match="boxes: expected 2 boxes"):
        paste_masks_in_image(np.zeros((2, 1, 28, 28)), np.zeros((1, 4)), (5, 6))
    with pytest.raises(ValueError, match="boxes: contains NaN"):
        paste_masks_in_image(np.zeros((1, 1, 28, 28)), [[0, 0, np.nan, 1]], (5, 6))
    with pytest.raises(ValueError, match="masks: expected \\(D, 1, M, M\\)"):
        paste_masks_in_image(np.zeros((1, 1, 28, 14)), np.zeros((1, 4)), (5, 6))
    assert project_masks_on_boxes(np.zeros((1, 5, 5)), np.zeros((0, 4)), [], 28).shape == \
        (0, 28, 28)
    with pytest.raises(ValueError, match="matched_idxs: expected integer gt indices in"):
        project_masks_on_boxes(np.zeros((2, 5, 5)), np.zeros((1, 4)), [2], 28)
    with pytest.raises(ValueError, match="matched_idxs: expected 1 entries"):
        project_masks_on_boxes(np.zeros((2, 5, 5)), np.zeros((1, 4)), [0, 1], 28)
    with pytest.raises(ValueError, match="gt_masks: expected \\(G, H, W\\)"):
        project_masks_on_boxes(np.zeros((5, 5)), np.zeros((1, 4)), [0], 28)


def test_project_masks_takes_the_matched_gt_and_stays_soft():
    gt = np.zeros((2, 8, 8), np.uint8)
    gt[1, :, :4] = 1  # left half of gt 1; gt 0 is empty
    boxes = np.array([[0, 0, 8, 8], [2, 0, 6, 8]], np.float32)
    targets = project_masks_on_boxes(gt, boxes, np.array([1, 1]), 4)
    # box 0..8: bins of 2 px, adaptive grid ceil(8/4) = 2 points per axis; bin 1 samples
    # x = 2.5 (1) and 3.5 (halfway between column 3 = 1 and column 4 = 0: 0.5) -> 0.75
    np.testing.assert_allclose(targets[0], [[1, 0.75, 0, 0]] * 4)
    # box 2..6 in x: bins of width 1 sampled at 2.5, 3.5, 4.5, 5.5 -> 1, 0.5, 0, 0: soft
    np.testing.assert_allclose(targets[1], [[1, 0.5, 0, 0]] * 4)
    assert not project_masks_on_boxes(gt, boxes, np.array([0, 0]), 4).any()


@pytest.mark.parity
def test_paste_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste

    rng = np.random.default_rng(0)
    probs = rng.random((12, 1, 28, 28)).astype(np.float32)
    # fractional boxes, many crossing the border (torchvision fails on boxes wholly outside)
    boxes = rng.uniform(-30, 100, (12, 4)).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(5, 70, (12, 2))
    ref = tv_paste(torch.from_numpy(probs), torch.from_numpy(boxes), (90, 120)).numpy()
    ours = paste_masks_in_image(probs, boxes, (90, 120))
    # same footprints (a 1-pixel shift would move whole rows by up to 1.0). The values: torch's
    # vectorised bilinear kernel rounds its float32 weights and sums differently from our
    # resize (interpolate.resize_bilinear): up to 1.1e-6 over 200 such draws, i.e. ~20 ulps
    np.testing.assert_array_equal(ours > 0, ref > 0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)


@pytest.mark.parity
def test_project_masks_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import project_masks_on_boxes as tv_project

    rng = np.random.default_rng(1)
    gt = (rng.random((3, 60, 80)) > 0.5).astype(np.uint8)
    boxes = rng.uniform(-10, 60, (20, 4)).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(0.5, 40, (20, 2))  # small to large: adaptive grids
    idx = rng.integers(0, 3, 20)
    ref = tv_project(torch.from_numpy(gt), torch.from_numpy(boxes), torch.from_numpy(idx), 28)
    # roi_align is bitwise torchvision's (test_roi_align)
    np.testing.assert_array_equal(project_masks_on_boxes(gt, boxes, idx, 28), ref.numpy())
