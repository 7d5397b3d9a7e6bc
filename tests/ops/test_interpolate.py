"""Resizing: torch's bilinear / nearest / bicubic formulas, and the bilinear backward."""

import numpy as np
import pytest

from mrcnn_np.ops.interpolate import (
    nearest_indices,
    resize_bicubic,
    resize_bilinear,
    resize_bilinear_backward,
    resize_nearest,
)


def test_bilinear_2x_upsampling_by_hand():
    x = np.array([[0.0, 4.0], [8.0, 12.0]], np.float32)
    out, _ = resize_bilinear(x, size=(4, 4))
    # scale 0.5: output d samples src = max(0.5*(d+0.5) - 0.5, 0) = 0, 0.25, 0.75, 1.25->i0=1
    # columns: weights on (x0, x1) = (1,0), (0.75,0.25), (0.25,0.75), (0,1) (i0 capped at 1)
    row0 = [0.0, 1.0, 3.0, 4.0]
    row1 = [8.0, 9.0, 11.0, 12.0]
    expected = np.array([row0, np.add(np.multiply(row0, .75), np.multiply(row1, .25)),
                         np.add(np.multiply(row0, .25), np.multiply(row1, .75)), row1])
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_nearest_index_rules():
    np.testing.assert_array_equal(nearest_indices(3, 3), [0, 1, 2])
    np.testing.assert_array_equal(nearest_indices(3, 6), [0, 0, 1, 1, 2, 2])
    # 5 -> 3: floor(d * 5/3) = 0, 1, 3
    np.testing.assert_array_equal(nearest_indices(5, 3), [0, 1, 3])
    masks = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    assert resize_nearest(masks, (4, 6)).dtype == np.uint8


def test_bilinear_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 7))
    dout = rng.standard_normal((2, 9, 4))
    _, cache = resize_bilinear(x, size=(9, 4))
    dx = resize_bilinear_backward(dout, cache)
    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        numeric[i] = ((resize_bilinear(xp, size=(9, 4))[0] - resize_bilinear(xm, size=(9, 4))[0])
                      * dout).sum() / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-7, atol=1e-9)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="x: expected"):
        resize_bilinear(np.zeros(3, np.float32), size=(2, 2))
    with pytest.raises(TypeError, match="floating"):
        resize_bilinear(np.zeros((3, 3), np.uint8), size=(2, 2))
    with pytest.raises(ValueError, match="exactly one"):
        resize_bilinear(np.zeros((3, 3), np.float32))


@pytest.mark.parity
@pytest.mark.parametrize("size", [(7, 11), (20, 3), (1, 1), (13, 13)])
def test_resizes_match_torch(size):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.random.default_rng(1).standard_normal((2, 3, 13, 9)).astype(np.float32)
    xt = torch.from_numpy(x)
    # float32 separable arithmetic vs torch's fused 2-D formula: a few ulps apart
    np.testing.assert_allclose(
        resize_bilinear(x, size=size)[0],
        F.interpolate(xt, size=size, mode="bilinear", align_corners=False).numpy(),
        rtol=0, atol=3e-6)
    np.testing.assert_array_equal(
        resize_nearest(x, size), F.interpolate(xt, size=size, mode="nearest").numpy())
    np.testing.assert_allclose(
        resize_bicubic(x, size),
        F.interpolate(xt, size=size, mode="bicubic", align_corners=False).numpy(),
        rtol=0, atol=1e-5)


@pytest.mark.parity
def test_fixed_scale_factor_matches_torch_and_backward_matches_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 17, 28, 28)).astype(np.float32)
    dout = rng.standard_normal((2, 17, 56, 56)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    # the keypoint predictor's 2x upsampling: scale_factor=2, recompute_scale_factor=False
    yt = torch.nn.functional.interpolate(xt, scale_factor=2.0, mode="bilinear",
                                         align_corners=False, recompute_scale_factor=False)
    yt.backward(torch.from_numpy(dout))
    y, cache = resize_bilinear(x, scale_factor=2.0)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=0, atol=3e-6)
    np.testing.assert_allclose(resize_bilinear_backward(dout, cache), xt.grad.numpy(),
                               rtol=0, atol=1e-5)
