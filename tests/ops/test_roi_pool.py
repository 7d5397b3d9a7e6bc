"""RoIPool: the quantisation written out, reference vs kernel, gradients, parity."""

import numpy as np
import pytest

from mrcnn_np.nn.gradcheck import gradcheck
from mrcnn_np.ops.roi_pool import (
    c_round,
    roi_pool,
    roi_pool_backward,
    roi_pool_bins,
    roi_pool_reference,
)

RAMP = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)  # value 5*row + col


def test_rounding_shifts_the_bins():
    # RoI x 0.6..3.4, y 1.2..3.6 is first rounded to x 1..3, y 1..4 (C round: 3.6 -> 4),
    # size 3 x 4 pixels (inclusive), bins 1.5 wide and 2 high:
    #   rows [1, 3) and [3, 5); columns floor(0)+1..ceil(1.5)+1 = [1, 3) and [2, 4):
    #   the two column ranges overlap at column 2, and row 4 lies outside the RoI's y2 = 3.6
    rois = np.array([[0, 0.6, 1.2, 3.4, 3.6]], np.float32)
    bins = roi_pool_bins(rois[0], 2, 1.0, 5, 5)
    np.testing.assert_array_equal(bins[0, 0], [1, 3, 1, 3])
    np.testing.assert_array_equal(bins[1, 1], [3, 5, 2, 4])
    out, argmax = roi_pool(RAMP, rois, 2)
    # maxima at the bottom-right of each bin: (2,2)=12, (2,3)=13, (4,2)=22, (4,3)=23
    np.testing.assert_array_equal(out[0, 0], [[12, 13], [22, 23]])
    np.testing.assert_array_equal(argmax[0, 0], [[12, 13], [22, 23]])


def test_c_round_goes_away_from_zero():
    assert [c_round(v) for v in (0.5, 1.5, 2.5, -0.5, -2.5)] == [1, 2, 3, -1, -3]


def test_empty_bins_give_zero_and_minus_one_and_first_max_wins():
    x = np.ones((1, 1, 4, 4), np.float32)
    out, argmax = roi_pool(x, np.array([[0, 10, 10, 12, 12]], np.float32), 2)
    assert (out == 0).all() and (argmax == -1).all()
    out, argmax = roi_pool(x, np.array([[0, 0, 0, 3, 3]], np.float32), 1)
    assert argmax[0, 0, 0, 0] == 0  # all equal: the first in row-major order


def test_kernel_matches_reference_and_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 3 * 8 * 9).reshape(2, 3, 8, 9) / 100.0  # distinct: no ties
    boxes = rng.uniform(-2, 9, (12, 4))
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(0, 6, (12, 2))
    rois = np.concatenate([rng.integers(0, 2, (12, 1)), boxes], axis=1)
    fast = roi_pool(x, rois, (3, 2), 0.5)
    slow = roi_pool_reference(x, rois, (3, 2), 0.5)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])

    def forward(x):
        out, argmax = roi_pool(x, rois, (3, 2), 0.5)
        return out, argmax

    def backward(dout, argmax):
        return roi_pool_backward(dout, argmax, x.shape, rois)

    assert gradcheck(forward, backward, {"x": x}, ("x",))["x"] < 1e-6


def test_bad_and_empty_inputs():
    x = np.zeros((2, 1, 4, 4), np.float32)
    out, argmax = roi_pool(x, np.zeros((0, 5), np.float32), 3)
    assert out.shape == argmax.shape == (0, 1, 3, 3)
    with pytest.raises(ValueError, match="rois"):
        roi_pool_backward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3), np.int64), x.shape)
    with pytest.raises(ValueError, match="rois"):
        roi_pool(x, np.array([[0, 0, 0, 1]], np.float32), 2)


@pytest.mark.parity
def test_matches_torchvision_forward_and_backward():
    torch = pytest.importorskip("torch")
    from torchvision.ops import roi_pool as tv_roi_pool

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 12, 15)).astype(np.float32)
    boxes = rng.uniform(-10, 60, (50, 4)).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(0, 30, (50, 2))
    rois = np.concatenate([rng.integers(0, 3, (50, 1)), boxes], axis=1).astype(np.float32)
    dout = rng.standard_normal((50, 4, 3, 5)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    ref = tv_roi_pool(xt, torch.from_numpy(rois), (3, 5), 0.25)
    ref.backward(torch.from_numpy(dout))
    out, argmax = roi_pool(x, rois, (3, 5), 0.25)
    np.testing.assert_array_equal(out, ref.detach().numpy())  # a max: exact
    grad = roi_pool_backward(dout, argmax, x.shape, rois)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-6, atol=1e-6)
