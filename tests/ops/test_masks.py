"""Mask targets (RoIAlign of the gt mask) and pasting 28x28 probabilities into the image."""

import numpy as np
import pytest

from mrcnn_np.ops.masks import paste_masks_in_image, project_masks_on_boxes


def test_paste_by_hand():
    # a 2x2 map of ones in box (2, 1, 4, 3): padded to 4x4 (zeros around), the box grows by
    # 4/2 = 2 about its centre (3, 2) to (1, 0, 5, 4), truncated to ints, so the resized map
    # is (4-0+1) x (5-1+1) = 5x5 and covers rows 0..4, columns 1..5
    masks = np.ones((1, 1, 2, 2), np.float32)
    out = paste_masks_in_image(masks, np.array([[2, 1, 4, 3]], np.float32), (6, 7))
    assert out.shape == (1, 1, 6, 7)
    assert out[0, 0, 5].max() == 0 and out[0, 0, :, 0].max() == 0 and out[0, 0, :, 6].max() == 0
    assert out[0, 0, 2, 3] == pytest.approx(1.0)  # the centre is well inside the ones
    # resizing 4x4 -> 5x5 samples source rows/cols 0, 0.7, 1.5, 2.3, 3.1: image row 0 reads
    # padded row 0 (zeros); pixel (1, 2) reads (0.7, 0.7): 0.7 * 0.7 of the ones = 0.49
    assert out[0, 0, 0].max() == 0
    assert out[0, 0, 1, 2] == pytest.approx(0.49)  # the border fades towards the padding


def test_a_box_outside_the_image_pastes_nothing():
    out = paste_masks_in_image(np.ones((1, 1, 28, 28)), np.array([[-50, -40, -20, -10.0]]),
                               (20, 30))
    assert out.shape == (1, 1, 20, 30) and out.max() == 0


def test_empty_and_bad_inputs():
    assert paste_masks_in_image(np.zeros((0, 1, 28, 28)), np.zeros((0, 4)), (5, 6)).shape \
        == (0, 1, 5, 6)
    with pytest.raises(ValueError, match="boxes"):
        paste_masks_in_image(np.zeros((2, 1, 28, 28)), np.zeros((1, 4)), (5, 6))
    assert project_masks_on_boxes(np.zeros((1, 5, 5)), np.zeros((0, 4)), [], 28).shape == \
        (0, 28, 28)


def test_project_masks_takes_the_matched_gt_and_stays_soft():
    gt = np.zeros((2, 8, 8), np.uint8)
    gt[1, :, :4] = 1  # left half
    boxes = np.array([[0, 0, 8, 8], [2, 0, 6, 8]], np.float32)
    targets = project_masks_on_boxes(gt, boxes, np.array([1, 1]), 4)
    # box 0..8: bins of 2 px, 2x2 samples each (adaptive: ceil(8/4)); bin 1 samples x = 2.5
    # (1) and 3.5 (halfway between column 3 = 1 and column 4 = 0: 0.5) -> 0.75
    np.testing.assert_allclose(targets[0], [[1, 0.75, 0, 0]] * 4)
    # box 2..6 in x: bins of width 1 sampled at 2.5, 3.5, 4.5, 5.5 -> 1, 0.5 (between
    # column 3 (=1) and 4 (=0)), 0, 0: a soft target
    np.testing.assert_allclose(targets[1], [[1, 0.5, 0, 0]] * 4)


@pytest.mark.parity
def test_match_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste
    from torchvision.models.detection.roi_heads import project_masks_on_boxes as tv_project

    rng = np.random.default_rng(0)
    probs = rng.random((8, 1, 28, 28)).astype(np.float32)
    # some cross the border (torchvision fails on boxes entirely outside the image)
    boxes = rng.uniform(-30, 80, (8, 4)).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(35, 70, (8, 2))
    ref = tv_paste(torch.from_numpy(probs), torch.from_numpy(boxes), (90, 120)).numpy()
    # float32 bilinear weights computed separably: a few ulps
    np.testing.assert_allclose(paste_masks_in_image(probs, boxes, (90, 120)), ref, atol=2e-6)

    gt = (rng.random((3, 60, 80)) > 0.5).astype(np.uint8)
    boxes = rng.uniform(0, 50, (10, 4)).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(1, 30, (10, 2))
    idx = rng.integers(0, 3, 10)
    ref = tv_project(torch.from_numpy(gt), torch.from_numpy(boxes), torch.from_numpy(idx), 28)
    np.testing.assert_allclose(project_masks_on_boxes(gt, boxes, idx, 28), ref.numpy(),
                               atol=1e-5)
