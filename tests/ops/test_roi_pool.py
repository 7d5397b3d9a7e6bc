"""RoIPool: the quantisation written out, reference vs Numba kernels, gradients, parity."""

import numpy as np
import pytest

from mrcnn_np.nn.gradcheck import gradcheck
from mrcnn_np.ops.roi_pool import (
    c_round,
    roi_pool,
    roi_pool_backward,
    roi_pool_backward_reference,
    roi_pool_bins,
    roi_pool_reference,
)

RAMP = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)  # value 5*row + col


def test_rounding_shifts_the_bins():
    # RoI x 0.6..3.4, y 1.2..3.6 (the RoIAlign test's Figure 3 RoI) is first rounded to
    # x 1..3, y 1..4 (C round: 0.6 -> 1, 3.4 -> 3, 1.2 -> 1, 3.6 -> 4), then made inclusive:
    # 3 x 4 pixels, so 2x2 bins are 1.5 wide and 2 high:
    #   rows    [floor(0*2)+1, ceil(1*2)+1) = [1, 3)  and  [floor(1*2)+1, ceil(2*2)+1) = [3, 5)
    #   columns [floor(0*1.5)+1, ceil(1*1.5)+1) = [1, 3)  and  [floor(1.5)+1, ceil(3)+1) = [2, 4)
    # the two column ranges overlap at column 2, and row 4 lies below the RoI's y2 = 3.6
    rois = np.array([[0, 0.6, 1.2, 3.4, 3.6]], np.float32)
    bins = roi_pool_bins(rois[0], 2, 1.0, 5, 5)
    np.testing.assert_array_equal(bins, [[[1, 3, 1, 3], [1, 3, 2, 4]],
                                         [[3, 5, 1, 3], [3, 5, 2, 4]]])
    out, argmax = roi_pool(RAMP, rois, 2)
    # on the ramp each maximum is its bin's bottom-right pixel: (2,2)=12, (2,3)=13, (4,2)=22,
    # (4,3)=23, and the flat index h*5 + w equals the value
    np.testing.assert_array_equal(out[0, 0], [[12, 13], [22, 23]])
    np.testing.assert_array_equal(argmax[0, 0], [[12, 13], [22, 23]])
    # RoIAlign's bin (1, 1) of this RoI is 17.7 (test_roi_align); RoIPool reads 23, a pixel
    # outside the RoI


def test_c_round_goes_away_from_zero():
    assert [c_round(v) for v in (0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997)] == [1, 2, 3, -1, -3, 0]
    # with spatial_scale 0.5, x1 = 5 -> 2.5 -> 3 (np.round would give 2): the RoI starts a
    # column later, x 3..4 (x2 = 8 -> 4), y 0..1
    rois = np.array([[0, 5, 0, 8, 2]], np.float32)
    np.testing.assert_array_equal(roi_pool_bins(rois[0], 1, 0.5, 5, 5), [[[0, 2, 3, 5]]])
    assert roi_pool(RAMP, rois, 1, 0.5)[0][0, 0, 0, 0] == 9  # max over rows 0-1, cols 3-4


def test_empty_bins_give_zero_and_minus_one_and_first_max_wins():
    x = np.ones((1, 1, 4, 4), np.float32)
    out, argmax = roi_pool(x, np.array([[0, 10, 10, 12, 12]], np.float32), 2)
    assert (out == 0).all() and (argmax == -1).all()  # clipped to [4, 4): empty
    grad = roi_pool_backward(np.ones((1, 1, 2, 2)), argmax, x.shape)
    assert not grad.any()
    out, argmax = roi_pool(x, np.array([[0, 0, 0, 3, 3]], np.float32), 1)
    assert argmax[0, 0, 0, 0] == 0  # all equal: the first in row-major order
    # a bin of values below -FLT_MAX keeps torchvision's start value and argmax -1
    out, argmax = roi_pool(np.full((1, 1, 2, 2), -np.inf, np.float32),
                           np.array([[0, 0, 0, 1, 1]], np.float32), 1)
    assert out[0, 0, 0, 0] == np.finfo(np.float32).min and argmax[0, 0, 0, 0] == -1


def distinct_map_and_rois(rng, dtype):
    x = rng.permutation(2 * 3 * 8 * 9).reshape(2, 3, 8, 9).astype(dtype) / 100  # no ties
    boxes = rng.uniform(-4, 20, (30, 4))
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(0, 12, (30, 2))  # partly / wholly outside, tiny
    rois = np.concatenate([rng.integers(0, 2, (30, 1)), boxes], axis=1).astype(dtype)
    return x, rois


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.3])
def test_kernels_match_the_reference(scale):
    rng = np.random.default_rng(0)
    x, rois = distinct_map_and_rois(rng, np.float32)
    x[1, 2, :3, :3] = 7.0  # some ties too
    fast, fast_argmax = roi_pool(x, rois, (3, 2), scale)
    slow, slow_argmax = roi_pool_reference(x, rois, (3, 2), scale)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast_argmax, slow_argmax)
    dout = rng.standard_normal(fast.shape).astype(np.float32)
    np.testing.assert_array_equal(
        roi_pool_backward(dout, fast_argmax, x.shape, rois),
        roi_pool_backward_reference(dout, fast_argmax, x.shape, rois[:, 0].astype(int)))


def test_backward_matches_finite_differences():
    x, rois = distinct_map_and_rois(np.random.default_rng(1), np.float64)

    def forward(x):
        return roi_pool(x, rois, (3, 2), 0.5)

    def backward(dout, argmax):
        return roi_pool_backward(dout, argmax, x.shape, rois)

    assert forward(x)[0].dtype == np.float64
    assert gradcheck(forward, backward, {"x": x}, ("x",))["x"] < 1e-7


def test_empty_and_bad_inputs():
    x = np.zeros((2, 1, 4, 4), np.float32)
    out, argmax = roi_pool(x, np.zeros((0, 5), np.float32), 3)
    assert out.shape == argmax.shape == (0, 1, 3, 3) and argmax.dtype == np.int64
    assert roi_pool_backward(out, argmax, x.shape, np.zeros((0, 5))).shape == x.shape
    ok = np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3), np.int64)
    with pytest.raises(ValueError, match="rois: needed to find each RoI's image"):
        roi_pool_backward(*ok, x.shape)
    with pytest.raises(ValueError, match="rois: expected 1 rows"):
        roi_pool_backward(*ok, x.shape, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="argmax: expected flat indices in \\[-1, H\\*W = 16\\)"):
        roi_pool_backward(ok[0], ok[1] + 16, x.shape, np.zeros((1, 5)))
    with pytest.raises(TypeError, match="argmax: expected an integer"):
        roi_pool_backward(ok[0], ok[1].astype(np.float32), x.shape, np.zeros((1, 5)))
    with pytest.raises(ValueError, match="grad_out, argmax: expected the same shape"):
        roi_pool_backward(ok[0], ok[1][:, :, :2], x.shape, np.zeros((1, 5)))
    with pytest.raises(ValueError, match="rois: expected shape \\(K, 5\\)"):
        roi_pool(x, np.array([[0, 0, 0, 1]], np.float32), 2)
    with pytest.raises(ValueError, match="x2 < x1"):
        roi_pool(x, np.array([[0, 2, 0, 1, 1]], np.float32), 2)
    with pytest.raises(ValueError, match="integer image indices in \\[0, 2\\)"):
        roi_pool(x, np.array([[1.5, 0, 0, 1, 1]], np.float32), 2)
    with pytest.raises(ValueError, match="NaN"):
        roi_pool(x, np.array([[0, 0, np.nan, 1, 1]], np.float32), 2)


@pytest.mark.parity
@pytest.mark.parametrize("scale", [1.0, 0.25, 0.3])
def test_matches_torchvision_forward_and_backward(scale):
    torch = pytest.importorskip("torch")
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 12, 15)).astype(np.float32)
    x[0, 1, 2:6, 3:8] = 0.5  # ties: the first maximum must win on both sides
    boxes = rng.uniform(-10, 60, (50, 4)).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(0, 30, (50, 2))
    boxes[:10] = np.round(boxes[:10] * 2) / 2  # halves: C round vs round-half-to-even
    rois = np.concatenate([rng.integers(0, 3, (50, 1)), boxes], axis=1).astype(np.float32)
    dout = rng.standard_normal((50, 4, 3, 5)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    ref, ref_argmax = torch.ops.torchvision.roi_pool(xt, torch.from_numpy(rois), scale, 3, 5)
    ref.backward(torch.from_numpy(dout))
    out, argmax = roi_pool(x, rois, (3, 5), scale)
    # maxima and their positions are exact; the backward adds the same float32 values to each
    # pixel in the same order (RoI by RoI), so it is bitwise equal too
    np.testing.assert_array_equal(out, ref.detach().numpy())
    np.testing.assert_array_equal(argmax, ref_argmax.numpy())
    np.testing.assert_array_equal(roi_pool_backward(dout, argmax, x.shape, rois),
                                  xt.grad.numpy())
