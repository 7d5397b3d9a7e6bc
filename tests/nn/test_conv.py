"""Convolution: the im2col/col2im kernels, band streaming, the loop references, gradients and
torch parity of conv2d and conv_transpose2d."""

import numpy as np
import pytest

from mrcnn_np.nn import functional as F
from mrcnn_np.nn import kernels
from mrcnn_np.nn.gradcheck import gradcheck


@pytest.fixture(params=["one band", "row bands"])
def bands(request, monkeypatch):
    """Run a test with the default band size (tiny test maps fit in one band) and with one
    output row per band, so the band bookkeeping is exercised on small inputs too."""
    if request.param == "row bands":
        monkeypatch.setattr(F, "_BAND_BYTES", 1)
        monkeypatch.setattr(F, "_MIN_BAND_COLUMNS", 1)
    return request.param


# (x shape, w shape, stride, padding, dilation): batch 2, non-square maps and kernels, odd
# channel counts, stride 2, padding 3, dilation 2, per-axis pairs, and the 1x1 fast path
GEOMETRIES = [
    ((2, 3, 9, 7), (5, 3, 3, 2), 2, 3, 2),
    ((2, 5, 8, 11), (3, 5, 3, 3), 1, 1, 1),
    ((1, 3, 11, 10), (2, 3, 7, 7), 2, 3, 1),
    ((2, 3, 7, 6), (4, 3, 2, 3), (2, 1), (1, 2), (1, 2)),
    ((2, 6, 5, 4), (7, 6, 1, 1), 1, 0, 1),
    ((2, 6, 5, 4), (7, 6, 1, 1), 2, 0, 1),
]
GEOMETRY_IDS = ["3x2-s2-p3-d2", "3x3-s1-p1", "7x7-s2-p3", "pairs", "1x1", "1x1-s2"]


def _random(rng, *shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# -- hand-computed cases ------------------------------------------------------------------------

def test_conv2d_by_hand_sobel():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)  # x[i, j] = 4i + j
    w = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32).reshape(1, 1, 3, 3)
    out, _ = F.conv2d(x, w, np.array([0.5], np.float32))
    # every window: row weights (1, 2, 1) times (x[r, j] - x[r, j + 2]) = -2 -> 4 * -2 + 0.5
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), -7.5, np.float32))
    out, _ = F.conv2d(x, w, np.array([0.5], np.float32), padding=1)
    # corner (0, 0): the row above is padding; row 0 gives 2*0 - 2*x[0,1] = -2,
    # row 1 gives 1*0 - 1*x[1,1] = -5 -> -7 + 0.5
    assert out.shape == (1, 1, 4, 4) and out[0, 0, 0, 0] == -6.5


def test_conv2d_backward_by_hand():
    # one output pixel: out = sum(x * w) + b, so dx = dout * w, dw = dout * x, db = dout
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32).reshape(1, 1, 2, 2)
    w = np.array([[5.0, 6.0], [7.0, 8.0]], np.float32).reshape(1, 1, 2, 2)
    out, cache = F.conv2d(x, w, np.array([1.0], np.float32))
    assert out[0, 0, 0, 0] == 5 + 12 + 21 + 32 + 1
    dx, dw, db = F.conv2d_backward(np.full((1, 1, 1, 1), 2.0, np.float32), cache)
    np.testing.assert_array_equal(dx, 2 * w)
    np.testing.assert_array_equal(dw, 2 * x)
    np.testing.assert_array_equal(db, [2.0])
    # overlapping windows: x = (1, 2, 3), w = (1, 10) -> out = (1 + 20, 2 + 30) = (21, 32);
    # with dout = (1, 1) the middle pixel is in both windows: dx = (1, 1 + 10, 10);
    # dw = (x0 + x1, x1 + x2) = (3, 5)
    out, cache = F.conv2d(np.array([[[[1.0, 2.0, 3.0]]]]), np.array([[[[1.0, 10.0]]]]))
    np.testing.assert_array_equal(out.ravel(), [21, 32])
    dx, dw, db = F.conv2d_backward(np.ones((1, 1, 1, 2)), cache)
    np.testing.assert_array_equal(dx.ravel(), [1, 11, 10])
    np.testing.assert_array_equal(dw.ravel(), [3, 5])
    assert db is None


def test_conv2d_dilation_by_hand():
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)  # x[r, c] = 5r + c
    # a 2x2 kernel of ones with dilation 2 reads x[2i, 2j], x[2i, 2j+2], x[2i+2, 2j],
    # x[2i+2, 2j+2]; size floor((5 - 2*1 - 1) / 2) + 1 = 2 with stride 2
    out, _ = F.conv2d(x, np.ones((1, 1, 2, 2), np.float32), stride=2, dilation=2)
    # (0+2+10+12, 2+4+12+14; 10+12+20+22, 12+14+22+24)
    np.testing.assert_array_equal(out[0, 0], [[24, 32], [64, 72]])


def test_conv_transpose2d_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32).reshape(1, 1, 2, 2)
    ones = np.ones((1, 1, 2, 2), np.float32)
    # stride 1: each pixel adds itself to a 2x2 block; overlaps sum, e.g. the centre
    # receives 1 + 2 + 3 + 4 = 10; size (2 - 1) * 1 + (2 - 1) + 1 = 3
    out, _ = F.conv_transpose2d(x, ones)
    np.testing.assert_array_equal(out[0, 0], [[1, 3, 2], [4, 10, 6], [3, 7, 4]])
    # stride 2: the blocks no longer overlap (a 2x nearest upsampling)
    out, _ = F.conv_transpose2d(x, ones, stride=2)
    np.testing.assert_array_equal(out[0, 0], np.kron(x[0, 0], np.ones((2, 2))))
    # padding 1 crops one pixel on every side of the stride-1 result
    out, _ = F.conv_transpose2d(x, ones, padding=1)
    np.testing.assert_array_equal(out[0, 0], [[10]])


def test_im2col_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32).reshape(1, 1, 2, 2)
    # 2x2 kernel, padding 1 -> 3x3 outputs; tap (0, 0) of output (i, j) reads x_padded[i, j]
    cols = kernels.im2col(x, 2, 2, 1, 1, 1, 1, 1, 1, 3, 3)
    assert cols.shape == (1, 4, 9)
    np.testing.assert_array_equal(cols[0, 0], [0, 0, 0, 0, 1, 2, 0, 3, 4])
    # tap (1, 1) reads x_padded[i + 1, j + 1]
    np.testing.assert_array_equal(cols[0, 3], [1, 2, 0, 3, 4, 0, 0, 0, 0])


# -- kernels against their definition -----------------------------------------------------------

@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "dilation"), GEOMETRIES,
                         ids=GEOMETRY_IDS)
def test_im2col_and_col2im_are_adjoint(x_shape, w_shape, stride, padding, dilation):
    # <im2col(x), c> = <x, col2im(c)> for every x and c: col2im is im2col's transpose
    rng = np.random.default_rng(0)
    x = _random(rng, *x_shape)
    sh, sw = F._pair(stride, "stride")
    ph, pw = F._pair(padding, "padding")
    dh, dw = F._pair(dilation, "dilation")
    kh, kw = w_shape[2:]
    out_h = F.conv_output_size(x_shape[2], kh, sh, ph, dh)
    out_w = F.conv_output_size(x_shape[3], kw, sw, pw, dw)
    taps = (kh, kw, sh, sw, ph, pw, dh, dw)
    cols = kernels.im2col(x, *taps, out_h, out_w)
    c = rng.standard_normal(cols.shape)
    back = kernels.col2im(c, x_shape[1], *x_shape[2:], *taps, out_h, out_w)
    assert np.vdot(cols, c) == pytest.approx(np.vdot(x, back), rel=1e-12)


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "dilation"), GEOMETRIES,
                         ids=GEOMETRY_IDS)
def test_conv2d_matches_the_loop_reference(bands, x_shape, w_shape, stride, padding, dilation):
    rng = np.random.default_rng(1)
    x, w = _random(rng, *x_shape, dtype=np.float32), _random(rng, *w_shape, dtype=np.float32)
    b = _random(rng, w_shape[0], dtype=np.float32)
    out, _ = F.conv2d(x, w, b, stride, padding, dilation)
    assert out.dtype == np.float32
    # float32 sums of at most 42 products, accumulated in another order
    np.testing.assert_allclose(out, F.conv2d_reference(x, w, b, stride, padding, dilation),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("stride", "padding", "output_padding", "dilation"),
                         [(2, 1, 1, 1), (1, 0, 0, 2), ((2, 1), (0, 2), (1, 0), (1, 2))])
def test_conv_transpose2d_matches_the_loop_reference(bands, stride, padding, output_padding,
                                                     dilation):
    rng = np.random.default_rng(2)
    x = _random(rng, 2, 3, 4, 5, dtype=np.float32)
    w = _random(rng, 3, 5, 3, 2, dtype=np.float32)
    b = _random(rng, 5, dtype=np.float32)
    out, _ = F.conv_transpose2d(x, w, b, stride, padding, output_padding, dilation)
    ref = F.conv_transpose2d_reference(x, w, b, stride, padding, output_padding, dilation)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    # the same weight array w (Cout, Cin, kh, kw) read as a transposed-conv weight (Cin', Cout')
    # gives the adjoint: <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>
    rng = np.random.default_rng(3)
    x, w = _random(rng, 2, 3, 9, 9), _random(rng, 4, 3, 3, 2)
    y, _ = F.conv2d(x, w, stride=2, padding=1)
    y = rng.standard_normal(y.shape)  # (2, 4, 5, 5)
    # rows: (5-1)*2 - 2 + 2 + 1 = 9 already; columns: (5-1)*2 - 2 + 1 + 1 = 8, and
    # output_padding 1 restores the column that conv2d's floor division dropped
    back, _ = F.conv_transpose2d(y, w, stride=2, padding=1, output_padding=(0, 1))
    assert back.shape == x.shape
    assert np.vdot(F.conv2d(x, w, stride=2, padding=1)[0], y) == pytest.approx(
        np.vdot(x, back), rel=1e-12)


# -- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "dilation"), GEOMETRIES,
                         ids=GEOMETRY_IDS)
def test_conv2d_gradients_match_finite_differences(bands, x_shape, w_shape, stride, padding,
                                                   dilation):
    rng = np.random.default_rng(4)
    inputs = {"x": _random(rng, *x_shape), "w": _random(rng, *w_shape),
              "b": _random(rng, w_shape[0])}
    errors = gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation),
                       F.conv2d_backward, inputs)
    assert set(errors) == {"x", "w", "b"}
    assert max(errors.values()) < 1e-7, errors


def test_conv2d_without_bias_has_no_bias_gradient():
    rng = np.random.default_rng(5)
    x, w = _random(rng, 2, 3, 5, 4), _random(rng, 2, 3, 3, 3)
    errors = gradcheck(lambda x, w: F.conv2d(x, w, None, 1, 1),
                       lambda dout, cache: F.conv2d_backward(dout, cache)[:2], {"x": x, "w": w})
    assert max(errors.values()) < 1e-7, errors
    assert F.conv2d_backward(np.ones((2, 2, 5, 4)), F.conv2d(x, w, None, 1, 1)[1])[2] is None


@pytest.mark.parametrize(("stride", "padding", "output_padding", "dilation"),
                         [(2, 1, 1, 1), ((2, 1), (0, 2), (1, 0), (1, 2)), (2, 0, 0, 1)])
def test_conv_transpose2d_gradients_match_finite_differences(bands, stride, padding,
                                                             output_padding, dilation):
    rng = np.random.default_rng(6)
    inputs = {"x": _random(rng, 2, 3, 4, 5), "w": _random(rng, 3, 5, 3, 2),
              "b": _random(rng, 5)}
    errors = gradcheck(
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride, padding, output_padding, dilation),
        F.conv_transpose2d_backward, inputs)
    assert max(errors.values()) < 1e-7, errors


# -- dtypes, empty inputs, bad inputs -----------------------------------------------------------

def test_dtypes_are_kept():
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        x, w = _random(rng, 1, 2, 5, 5, dtype=dtype), _random(rng, 3, 2, 3, 3, dtype=dtype)
        out, cache = F.conv2d(x, w, padding=1)
        dx, dw, _ = F.conv2d_backward(np.ones_like(out), cache)
        out_t, cache_t = F.conv_transpose2d(x, w.transpose(1, 0, 2, 3), stride=2)
        dx_t, dw_t, _ = F.conv_transpose2d_backward(np.ones_like(out_t), cache_t)
        assert {a.dtype for a in (out, dx, dw, out_t, dx_t, dw_t)} == {np.dtype(dtype)}


def test_empty_batch_gives_empty_outputs():
    w = np.ones((4, 3, 3, 3), np.float32)
    for kernel_w in (w, w[:, :, :1, :1]):
        out, cache = F.conv2d(np.zeros((0, 3, 6, 5), np.float32), kernel_w, np.zeros(4), 2, 1)
        assert out.shape[:2] == (0, 4) and out.dtype == np.float32
        dx, dw, db = F.conv2d_backward(out, cache)
        assert dx.shape == (0, 3, 6, 5) and not dw.any() and not db.any()
    out, cache = F.conv_transpose2d(np.zeros((0, 4, 3, 3), np.float32), w, stride=2)
    assert out.shape == (0, 3, 7, 7)
    dx, dw, _ = F.conv_transpose2d_backward(out, cache)
    assert dx.shape == (0, 4, 3, 3) and dw.shape == w.shape


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: F.conv2d([[1.0]], np.zeros((1, 1, 1, 1))), TypeError, "x: expected a NumPy"),
        (lambda: F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3))), ValueError,
         "w: expected 4 dims"),
        (lambda: F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1), np.int64)), TypeError,
         "w: expected a floating"),
        (lambda: F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), np.zeros(1, int)),
         TypeError, "b: expected a floating"),
        (lambda: F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), stride=0),
         ValueError, "stride"),
        (lambda: F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), dilation=(1, 0)),
         ValueError, "dilation"),
        (lambda: F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), padding=-1),
         ValueError, "padding"),
        (lambda: F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), padding=1.5),
         ValueError, "padding"),
        (lambda: F.conv2d_backward(np.zeros((1, 2, 3, 3)),
                                   F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)))[1]),
         ValueError, "dout: expected shape"),
        (lambda: F.conv_transpose2d(np.zeros((1, 2, 3, 3)), np.zeros((3, 2, 2, 2))),
         ValueError, "x: has 2 channels but w expects 3"),
        (lambda: F.conv_transpose2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 2, 2, 2)),
                                    np.zeros(1)), ValueError, "b: expected shape \\(2,\\)"),
        (lambda: F.conv_transpose2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)), stride=2,
                                    output_padding=2), ValueError, "output_padding"),
        (lambda: F.conv_transpose2d(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1)),
                                    padding=1), ValueError, "empty output"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- parity with torch --------------------------------------------------------------------------

@pytest.mark.parity
@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "dilation"), GEOMETRIES,
                         ids=GEOMETRY_IDS)
def test_conv2d_matches_torch_with_bands(bands, x_shape, w_shape, stride, padding, dilation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x, w = _random(rng, *x_shape, dtype=np.float32), _random(rng, *w_shape, dtype=np.float32)
    b = _random(rng, w_shape[0], dtype=np.float32)
    tensors = [torch.from_numpy(a).requires_grad_(True) for a in (x, w, b)]
    ref = torch.nn.functional.conv2d(*tensors, stride, padding, dilation)
    dout = _random(rng, *ref.shape, dtype=np.float32)
    ref.backward(torch.from_numpy(dout))
    out, cache = F.conv2d(x, w, b, stride, padding, dilation)
    # float32 sums of up to 54 products (x, w) or 2*4*5 = 40 (b) in another order: ~1e-6
    # relative to the largest term, so compare with a tolerance scaled to the magnitude
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    for got, tensor in zip(F.conv2d_backward(dout, cache), tensors):
        want = tensor.grad.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parity
def test_conv_transpose2d_matches_torch_with_dilation_and_output_padding(bands):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x, w = _random(rng, 2, 5, 4, 6, dtype=np.float32), _random(rng, 5, 3, 3, 2,
                                                               dtype=np.float32)
    b = _random(rng, 3, dtype=np.float32)
    tensors = [torch.from_numpy(a).requires_grad_(True) for a in (x, w, b)]
    args = dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(1, 2))
    ref = torch.nn.functional.conv_transpose2d(*tensors, **args)
    dout = _random(rng, *ref.shape, dtype=np.float32)
    ref.backward(torch.from_numpy(dout))
    out, cache = F.conv_transpose2d(x, w, b, **args)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    for got, tensor in zip(F.conv_transpose2d_backward(dout, cache), tensors):
        want = tensor.grad.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
