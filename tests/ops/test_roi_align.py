"""RoIAlign: hand-computed bins, reference vs Numba kernels, gradients, torchvision parity."""

import numpy as np
import pytest

from mrcnn_np.nn.gradcheck import gradcheck
from mrcnn_np.ops.roi_align import (
    bilinear_weights,
    roi_align,
    roi_align_backward,
    roi_align_backward_reference,
    roi_align_reference,
    sampling_points,
)

# value 5*row + col: bilinear interpolation of a linear function is exact, so every sample
# equals 5*y + x and a bin's mean is 5*mean(y) + mean(x)
RAMP = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)

# The paper's Figure 3: a RoI with fractional corners, x 0.6..3.4 and y 1.2..3.6, over a
# small map, 2x2 bins (1.4 wide, 1.2 high), sampling_ratio 2 -> 4 points per bin.
FIG3_ROI = np.array([[0, 0.6, 1.2, 3.4, 3.6]], np.float32)


def test_figure_3_sampling_points_and_bilinear_weights():
    # bin (0, 0) spans x 0.6..2.0 and y 1.2..2.4; its 2x2 points sit at 1/4 and 3/4 of it:
    # y = 1.2 + 0.3 = 1.5 and 1.2 + 0.9 = 2.1; x = 0.6 + 0.35 = 0.95 and 0.6 + 1.05 = 1.65
    # (the corners are float32, e.g. 0.6 is 0.60000002: hence the 1e-7 tolerances)
    points = sampling_points(FIG3_ROI[0], 2, sampling_ratio=2)
    np.testing.assert_allclose(points[0, 0], [[1.5, 0.95], [1.5, 1.65], [2.1, 0.95],
                                              [2.1, 1.65]], rtol=1e-7)
    # every weight of the four points, (row, col, weight) with ly = y - floor(y), lx likewise:
    # (1.5, 0.95): ly 0.5, lx 0.95 -> (1,0) .5*.05   (1,1) .5*.95   (2,0) .5*.05   (2,1) .5*.95
    # (1.5, 1.65): ly 0.5, lx 0.65 -> (1,1) .5*.35   (1,2) .5*.65   (2,1) .5*.35   (2,2) .5*.65
    # (2.1, 0.95): ly 0.1, lx 0.95 -> (2,0) .9*.05   (2,1) .9*.95   (3,0) .1*.05   (3,1) .1*.95
    # (2.1, 1.65): ly 0.1, lx 0.65 -> (2,1) .9*.35   (2,2) .9*.65   (3,1) .1*.35   (3,2) .1*.65
    expected = [
        [(1, 0, .025), (1, 1, .475), (2, 0, .025), (2, 1, .475)],
        [(1, 1, .175), (1, 2, .325), (2, 1, .175), (2, 2, .325)],
        [(2, 0, .045), (2, 1, .855), (3, 0, .005), (3, 1, .095)],
        [(2, 1, .315), (2, 2, .585), (3, 1, .035), (3, 2, .065)],
    ]
    for (y, x), taps in zip(points[0, 0], expected):
        got = bilinear_weights(y, x, 5, 5)
        assert [(r, c) for r, c, _ in got] == [(r, c) for r, c, _ in taps]
        np.testing.assert_allclose([w for *_, w in got], [w for *_, w in taps], rtol=1e-6)


def test_figure_3_bin_is_the_weighted_sum_of_its_pixels():
    # bin (0, 0) = the mean of its 4 points, so pixel (r, c) weighs (sum of its weights) / 4:
    #   (1,0) .025/4 = .00625          (1,1) (.475+.175)/4 = .1625   (1,2) .325/4 = .08125
    #   (2,0) (.025+.045)/4 = .0175    (2,1) (.475+.175+.855+.315)/4 = .455
    #   (2,2) (.325+.585)/4 = .2275    (3,0) .005/4 = .00125
    #   (3,1) (.095+.035)/4 = .0325    (3,2) .065/4 = .01625          (they sum to 1)
    weights = np.zeros((4, 5))
    weights[1, :3] = [.00625, .1625, .08125]
    weights[2, :3] = [.0175, .455, .2275]
    weights[3, :3] = [.00125, .0325, .01625]
    # the backward of a one-hot gradient on bin (0, 0) is exactly this weight map ...
    dout = np.zeros((1, 1, 2, 2), np.float32)
    dout[0, 0, 0, 0] = 1
    grad = roi_align_backward(dout, FIG3_ROI, (1, 1, 4, 5), 2, sampling_ratio=2)
    np.testing.assert_allclose(grad[0, 0], weights, rtol=1e-6, atol=1e-7)
    # ... and the forward of any map is its weighted sum (an irregular map, not a ramp)
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 5)).astype(np.float32)
    out = roi_align(x, FIG3_ROI, 2, sampling_ratio=2)
    np.testing.assert_allclose(out[0, 0, 0, 0], (weights * x[0, 0]).sum(), rtol=1e-6)
    # on the ramp: bin (0,0) mean y 1.8, mean x 1.3 -> 10.3; (0,1) mean x 2.7 -> 11.7;
    # (1,0) mean y 3.0 -> 16.3; (1,1) -> 17.7
    out = roi_align(RAMP, FIG3_ROI, 2, sampling_ratio=2)
    np.testing.assert_allclose(out[0, 0], [[10.3, 11.7], [16.3, 17.7]], rtol=1e-6)


def test_detectron2_ramp_for_both_aligned_values():
    # box [1, 1, 3, 3] -> 4x4 bins of 0.5; adaptive grid ceil(2 / 4) = 1 point, at bin centres.
    # aligned=False: centres 1.25, 1.75, 2.25, 2.75 -> 5*y + x, e.g. 5*1.25 + 1.25 = 7.5
    # aligned=True: the RoI moves by -0.5 to 0.5..2.5 -> centres 0.75 ... 2.25, e.g. 4.5
    rois = np.array([[0, 1, 1, 3, 3]], np.float32)
    plain = roi_align(RAMP, rois, 4, sampling_ratio=0, aligned=False)[0, 0]
    shifted = roi_align(RAMP, rois, 4, sampling_ratio=0, aligned=True)[0, 0]
    np.testing.assert_allclose(plain, [[7.5, 8.0, 8.5, 9.0],
                                       [10.0, 10.5, 11.0, 11.5],
                                       [12.5, 13.0, 13.5, 14.0],
                                       [15.0, 15.5, 16.0, 16.5]], rtol=1e-6)
    np.testing.assert_allclose(shifted, [[4.5, 5.0, 5.5, 6.0],
                                         [7.0, 7.5, 8.0, 8.5],
                                         [9.5, 10.0, 10.5, 11.0],
                                         [12.0, 12.5, 13.0, 13.5]], rtol=1e-6)


@pytest.mark.parametrize("point, value", [
    ((2.0, 4.5), 14.0),   # x past the last column but <= W: snapped to column 4 -> 10 + 4
    ((2.0, -0.5), 10.0),  # x in [-1, 0): clamped to 0 -> 10 + 0
    ((-1.0, 2.0), 2.0),   # y = -1 exactly is kept (the rule is y < -1), clamped to row 0
    ((5.0, 2.0), 22.0),   # y = H exactly is kept (y > H is dropped), snapped to row 4
    ((2.0, -1.5), 0.0),   # x < -1: dropped, reads 0
    ((5.5, 2.0), 0.0),    # y > H: dropped
])
def test_out_of_map_rules(point, value):
    # a 2x2 box around the point, one bin, one sample (sampling_ratio 1) at the box's centre
    y, x = point
    rois = np.array([[0, x - 1, y - 1, x + 1, y + 1]], np.float32)
    assert roi_align(RAMP, rois, 1, sampling_ratio=1)[0, 0, 0, 0] == pytest.approx(value)


def test_adaptive_grid_counts_dropped_samples():
    # RoI x -4..2, y 0..1, one bin: adaptive grid gh = ceil(1/1) = 1, gw = ceil(6/1) = 6,
    # points at y 0.5 and x -3.5, -2.5, -1.5 (dropped), -0.5 (clamped to 0), 0.5, 1.5:
    # (2.5 + 3.0 + 4.0) / 6 = 1.58333 (the dropped points still count in the mean)
    rois = np.array([[0, -4, 0, 2, 1]], np.float32)
    assert sampling_points(rois[0], 1).shape == (1, 1, 6, 2)
    assert roi_align(RAMP, rois, 1)[0, 0, 0, 0] == pytest.approx(9.5 / 6)


def test_empty_grid_with_aligned_gives_zero():
    # a zero-width RoI: aligned=True keeps width 0 -> gw = ceil(0 / 2) = 0, an empty grid -> 0;
    # aligned=False forces the width to 1 pixel -> x 2..3, gw = 1, points at x 2.25 and 2.75
    rois = np.array([[0, 2, 1, 2, 3]], np.float32)
    assert not roi_align(RAMP, rois, 2, aligned=True).any()
    assert not roi_align_backward(np.ones((1, 1, 2, 2), np.float32), rois, RAMP.shape, 2,
                                  aligned=True).any()
    # bin (0, 0): y 1..2, gh = ceil(2/2) = 1 -> y 1.5; 5*1.5 + 2.25 = 9.75
    assert roi_align(RAMP, rois, 2, aligned=False)[0, 0, 0, 0] == pytest.approx(9.75)


def test_max_mode_takes_the_largest_sample():
    out = roi_align(RAMP, FIG3_ROI, 2, sampling_ratio=2, mode="max")
    # the largest point of bin (0,0) is the bottom-right one, (2.1, 1.65) -> 5*2.1 + 1.65
    np.testing.assert_allclose(out[0, 0, 0, 0], 12.15, rtol=1e-6)
    # its gradient goes to that point's 4 pixels only, with its weights (.315 .585 .035 .065)
    dout = np.zeros((1, 1, 2, 2), np.float32)
    dout[0, 0, 0, 0] = 1
    grad = roi_align_backward(dout, FIG3_ROI, RAMP.shape, 2, sampling_ratio=2, mode="max",
                              x=RAMP)
    np.testing.assert_allclose(grad[0, 0, 2:4, 1:3], [[.315, .585], [.035, .065]], atol=1e-7)
    assert grad.sum() == pytest.approx(1.0)


def random_rois(rng, k, n_img, height, width, scale=1.0):
    """RoIs in image coordinates: some partly or wholly outside the map, a fifth under one
    pixel, spread over n_img images."""
    size = np.array([width, height]) / scale
    xy = rng.uniform(-0.3, 1.1, (k, 2)) * size
    wh = rng.uniform(0.05, 0.6, (k, 2)) * size
    wh[: k // 5] = rng.uniform(0.0, 0.9, (k // 5, 2))  # under one pixel
    boxes = np.concatenate([xy, xy + wh], axis=1)
    return np.concatenate([rng.integers(0, n_img, (k, 1)), boxes], axis=1).astype(np.float32)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_kernels_match_the_reference(mode, aligned, sampling_ratio):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    rois = random_rois(rng, 25, 2, 9, 11, scale=0.5)
    args = ((3, 2), 0.5, sampling_ratio, aligned, mode)
    fast = roi_align(x, rois, *args)
    slow = roi_align_reference(x, rois, *args)
    # float32 sample positions in the kernel, float64 in the reference: ~1e-6 apart
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    dout = rng.standard_normal(fast.shape).astype(np.float32)
    fast = roi_align_backward(dout, rois, x.shape, *args, x=x)
    slow = roi_align_backward_reference(dout, rois, x.shape, *args, x=x)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


def test_many_rois_on_one_plane_accumulate_without_races():
    # 300 overlapping RoIs scatter into the same 2 planes: every contribution must arrive
    rng = np.random.default_rng(5)
    rois = np.concatenate([np.zeros((300, 1)), rng.uniform(0, 3, (300, 2)),
                           rng.uniform(4, 7, (300, 2))], axis=1)
    dout = np.ones((300, 2, 2, 2))
    grad = roi_align_backward(dout, rois, (1, 2, 8, 8), 2, sampling_ratio=2)
    # inside the map, each bin hands out exactly its gradient (weights sum to 1 per point)
    np.testing.assert_allclose(grad.sum(axis=(2, 3)), [[300 * 4, 300 * 4]], rtol=1e-12)
    np.testing.assert_allclose(grad, roi_align_backward_reference(dout, rois, (1, 2, 8, 8),
                                                                   2, sampling_ratio=2))


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [False, True])
def test_backward_matches_finite_differences(mode, aligned):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 6, 7))
    rois = random_rois(rng, 6, 2, 6, 7).astype(np.float64)

    def forward(x):
        return roi_align(x, rois, (2, 3), 0.9, 2, aligned, mode), x

    def backward(dout, x):
        return roi_align_backward(dout, rois, x.shape, (2, 3), 0.9, 2, aligned, mode, x=x)

    assert forward(x)[0].dtype == np.float64  # float64 stays float64
    assert gradcheck(forward, backward, {"x": x}, ("x",))["x"] < 1e-7


def test_empty_rois_and_dtypes():
    x = np.zeros((2, 3, 4, 4), np.float32)
    assert roi_align(x, np.zeros((0, 5), np.float32), (2, 3)).shape == (0, 3, 2, 3)
    grad = roi_align_backward(np.zeros((0, 3, 2, 3), np.float32), np.zeros((0, 5)), x.shape,
                              (2, 3))
    assert grad.shape == x.shape and grad.dtype == np.float32 and not grad.any()
    assert roi_align(x, np.array([[1, 0, 0, 2, 2]]), 2).dtype == np.float32


def test_bad_inputs():
    x = np.zeros((2, 3, 4, 4), np.float32)
    bad = {
        "shape \\(K, 5\\)": np.zeros((1, 4)),
        "image indices in \\[0, 2\\)": np.array([[2, 0, 0, 1, 1]]),
        "x2 < x1": np.array([[0, 3, 0, 1, 1]]),
        "NaN": np.array([[0, np.nan, 0, 1, 1]]),
    }
    for message, rois in bad.items():
        with pytest.raises(ValueError, match=message):
            roi_align(x, rois.astype(np.float32), 2)
        with pytest.raises(ValueError, match=message):
            roi_align_backward(np.zeros((len(rois), 3, 2, 2), np.float32), rois, x.shape, 2)
    with pytest.raises(ValueError, match="integer image indices"):
        roi_align(x, np.array([[0.5, 0, 0, 1, 1]], np.float32), 2)
    with pytest.raises(TypeError, match="x: expected a floating"):
        roi_align(x.astype(np.int32), np.zeros((0, 5)), 2)
    with pytest.raises(ValueError, match="x: expected \\(N, C, H, W\\)"):
        roi_align(x[0], np.zeros((0, 5)), 2)
    with pytest.raises(ValueError, match="mode"):
        roi_align(x, np.zeros((0, 5)), 2, mode="median")
    with pytest.raises(ValueError, match="output_size"):
        roi_align(x, np.zeros((0, 5)), (2, 0))
    rois = np.array([[0, 0, 0, 2, 2]], np.float32)
    with pytest.raises(ValueError, match="grad_out: expected shape \\(1, 3, 2, 2\\)"):
        roi_align_backward(np.zeros((1, 3, 3, 3), np.float32), rois, x.shape, 2)
    with pytest.raises(ValueError, match="x: mode='max' needs the forward's input"):
        roi_align_backward(np.zeros((1, 3, 2, 2), np.float32), rois, x.shape, 2, mode="max")


@pytest.mark.parity
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
@pytest.mark.parametrize("scale", [1.0, 0.25, 0.3])
def test_matches_torchvision_forward_and_backward(aligned, sampling_ratio, scale):
    torch = pytest.importorskip("torch")
    from torchvision.ops import roi_align as tv_roi_align

    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 12, 15)).astype(np.float32)
    rois = random_rois(rng, 40, 3, 12, 15, scale)  # 3 images, RoIs outside and under 1 px
    dout = rng.standard_normal((40, 4, 3, 5)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    ref = tv_roi_align(xt, torch.from_numpy(rois), (3, 5), scale, sampling_ratio, aligned)
    ref.backward(torch.from_numpy(dout))
    ours = roi_align(x, rois, (3, 5), scale, sampling_ratio, aligned)
    grad = roi_align_backward(dout, rois, x.shape, (3, 5), scale, sampling_ratio, aligned)
    # the same float32 operations in the same order (sample positions, weights, sums, and
    # each pixel's gradient accumulated RoI by RoI): bitwise equal on x86-64, where neither
    # side fuses a*b + c into an FMA. A half-pixel shift would change values by ~0.1.
    np.testing.assert_array_equal(ours, ref.detach().numpy())
    np.testing.assert_array_equal(grad, xt.grad.numpy())
