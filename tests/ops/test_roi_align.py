"""RoIAlign: hand-computed bins, reference vs kernel, gradients, torchvision parity."""

import numpy as np
import pytest

from mrcnn_np.nn.gradcheck import gradcheck
from mrcnn_np.ops.roi_align import (
    roi_align,
    roi_align_backward,
    roi_align_reference,
    sampling_points,
)

# value 5*row + col: bilinear interpolation of a linear function is exact, so every sample
# equals 5*y + x and a bin's mean is 5*mean(y) + mean(x)
RAMP = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)


def test_paper_figure_3_two_by_two_bins_four_samples():
    # RoI x 0.6..3.4, y 1.2..3.6 (fractional corners, no rounding): 2x2 bins of 1.4 x 1.2,
    # sampling_ratio 2 -> samples at y = 1.5, 2.1 | 2.7, 3.3 and x = 0.95, 1.65 | 2.35, 3.05.
    # One sample written out, (y, x) = (1.5, 0.95): y0 = 1, ly = 0.5, x0 = 0, lx = 0.95,
    #   0.5*0.05*v[1,0] + 0.5*0.95*v[1,1] + 0.5*0.05*v[2,0] + 0.5*0.95*v[2,1]
    #   = 0.025*5 + 0.475*6 + 0.025*10 + 0.475*11 = 8.45 = 5*1.5 + 0.95.
    # bin (0,0): mean y 1.8, mean x 1.3 -> 10.3; (0,1): mean x 2.7 -> 11.7;
    # bin (1,0): mean y 3.0 -> 16.3; (1,1): 17.7
    rois = np.array([[0, 0.6, 1.2, 3.4, 3.6]], np.float32)
    out = roi_align(RAMP, rois, 2, sampling_ratio=2)
    np.testing.assert_allclose(out[0, 0], [[10.3, 11.7], [16.3, 17.7]], rtol=1e-6)
    points = sampling_points(rois[0], 2, sampling_ratio=2)
    np.testing.assert_allclose(points[0, 0], [[1.5, 0.95], [1.5, 1.65], [2.1, 0.95],
                                              [2.1, 1.65]], rtol=1e-6)


def test_aligned_shifts_by_half_a_pixel():
    # box [1, 1, 3, 3] -> 4x4 bins of 0.5; adaptive grid: ceil(2/4) = 1 sample at each centre.
    # aligned=False: centres at 1.25, 1.75, 2.25, 2.75 -> row 0 = 5*1.25 + x = 7.5, 8, 8.5, 9
    # aligned=True: the RoI moves by -0.5 -> centres 0.75 ... 2.25 -> row 0 = 4.5 .. 6.0
    # (detectron2's test of the same map).
    rois = np.array([[0, 1, 1, 3, 3]], np.float32)
    plain = roi_align(RAMP, rois, 4, sampling_ratio=0, aligned=False)[0, 0]
    shifted = roi_align(RAMP, rois, 4, sampling_ratio=0, aligned=True)[0, 0]
    np.testing.assert_allclose(plain[0], [7.5, 8.0, 8.5, 9.0], rtol=1e-6)
    np.testing.assert_allclose(plain[:, 0], [7.5, 10.0, 12.5, 15.0], rtol=1e-6)
    np.testing.assert_allclose(shifted[0], [4.5, 5.0, 5.5, 6.0], rtol=1e-6)
    np.testing.assert_allclose(shifted - plain, -3.0, rtol=1e-6)  # -0.5 * (5 + 1)


def test_out_of_map_samples_count_but_contribute_nothing():
    # RoI x -6..-2 (entirely left of the map), y 0..4: every sample has x < -1 -> bins are 0;
    # x -2..2: one sample per bin at y = 2, x = -1 (on the edge: kept, clamped to 0) and x = 1
    rois = np.array([[0, -6, 0, -2, 4], [0, -2, 0, 2, 4]], np.float32)
    out = roi_align(RAMP, rois, (1, 2), sampling_ratio=1)
    assert out[0].max() == 0
    # bin (0, 0): sample (2, -1) -> x clamped to 0 -> 10; bin (0,1): (2, 1) -> 11
    np.testing.assert_allclose(out[1, 0], [[10.0, 11.0]], rtol=1e-6)
    rois = np.array([[0, -4, 0, 0, 4]], np.float32)  # samples at x = -3: dropped, count = 1
    np.testing.assert_array_equal(roi_align(RAMP, rois, 1, sampling_ratio=1), 0)


def test_max_mode_takes_the_largest_sample():
    rois = np.array([[0, 0.6, 1.2, 3.4, 3.6]], np.float32)
    out = roi_align(RAMP, rois, 2, sampling_ratio=2, mode="max")
    # the largest sample of bin (0,0) is (2.1, 1.65) -> 12.15
    np.testing.assert_allclose(out[0, 0, 0, 0], 12.15, rtol=1e-6)


def random_rois(rng, k, n_img, height, width, scale=1.0):
    xy = rng.uniform(-0.3, 1.1, (k, 2)) * [width / scale, height / scale]
    wh = rng.uniform(0.05, 0.6, (k, 2)) * [width / scale, height / scale]
    wh[: k // 5] = rng.uniform(0.0, 0.9, (k // 5, 2))  # RoIs under one pixel
    boxes = np.concatenate([xy, xy + wh], axis=1)
    return np.concatenate([rng.integers(0, n_img, (k, 1)), boxes], axis=1).astype(np.float32)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_kernel_matches_reference(aligned, sampling_ratio):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    rois = random_rois(rng, 25, 2, 9, 11, scale=0.5)
    fast = roi_align(x, rois, (3, 2), 0.5, sampling_ratio, aligned)
    slow = roi_align_reference(x, rois, (3, 2), 0.5, sampling_ratio, aligned)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [False, True])
def test_backward_matches_finite_differences(mode, aligned):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 6, 7))
    rois = random_rois(rng, 6, 2, 6, 7).astype(np.float64)

    def forward(x):
        return roi_align(x, rois, (2, 3), 1.0, 2, aligned, mode), x

    def backward(dout, x):
        return roi_align_backward(dout, rois, x.shape, (2, 3), 1.0, 2, aligned, mode, x=x)

    assert gradcheck(forward, backward, {"x": x}, ("x",))["x"] < 1e-6


def test_empty_and_bad_inputs():
    x = np.zeros((2, 3, 4, 4), np.float32)
    assert roi_align(x, np.zeros((0, 5), np.float32), (2, 3)).shape == (0, 3, 2, 3)
    assert roi_align_backward(np.zeros((0, 3, 2, 3), np.float32), np.zeros((0, 5)),
                              x.shape, (2, 3)).shape == x.shape
    bad = {
        "shape (K, 5)": np.zeros((1, 4)),
        "image indices": np.array([[2, 0, 0, 1, 1]]),
        "x2 < x1": np.array([[0, 3, 0, 1, 1]]),
        "NaN": np.array([[0, np.nan, 0, 1, 1]]),
    }
    for message, rois in bad.items():
        with pytest.raises(ValueError, match=message.split()[0]):
            roi_align(x, rois.astype(np.float32), 2)
    with pytest.raises(ValueError, match="image indices"):
        roi_align(x, np.array([[0.5, 0, 0, 1, 1]], np.float32), 2)
    with pytest.raises(TypeError, match="x: expected a floating"):
        roi_align(x.astype(np.int32), np.zeros((0, 5)), 2)
    with pytest.raises(ValueError, match="mode"):
        roi_align(x, np.zeros((0, 5)), 2, mode="median")


@pytest.mark.parity
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_matches_torchvision_forward_and_backward(aligned, sampling_ratio, scale):
    torch = pytest.importorskip("torch")
    from torchvision.ops import roi_align as tv_roi_align

    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 12, 15)).astype(np.float32)
    rois = random_rois(rng, 40, 3, 12, 15, scale)
    dout = rng.standard_normal((40, 4, 3, 5)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    ref = tv_roi_align(xt, torch.from_numpy(rois), (3, 5), scale, sampling_ratio, aligned)
    ref.backward(torch.from_numpy(dout))
    ours = roi_align(x, rois, (3, 5), scale, sampling_ratio, aligned)
    grad = roi_align_backward(dout, rois, x.shape, (3, 5), scale, sampling_ratio, aligned)
    # we accumulate in float64 and torchvision in float32: ~1e-6 apart on N(0, 1) values;
    # a half-pixel shift would change the values by ~0.1
    np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=0, atol=2e-5)
