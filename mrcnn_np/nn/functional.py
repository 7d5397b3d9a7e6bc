"""Forward/backward pairs for every layer and loss (the CS231n convention).

`out, cache = f(x, ...)` and `grads = f_backward(dout, cache)`; losses return
`(loss, dinput)`, the loss as a Python float and the gradient of that value with respect to
the input (a NaN in a loss's input gives a NaN loss, so a diverging run shows, not an error).
Arguments and weight layouts are PyTorch's (conv weight (Cout, Cin, kh, kw), transposed-conv
weight (Cin, Cout, kh, kw), linear weight (out, in)), so torchvision weights load as they are,
and every function computes what its torch.nn.functional namesake does (REFERENCE.md:
FrozenBatchNorm2d and max-pool ties §2.1, nearest resizing §1).
Arrays are float32; float64 works too (gradient checks) and keeps its dtype.

Convolution is im2col + one matrix product (BLAS), streamed over bands of output rows so the
im2col buffer stays cache-sized (`kernels` explains the layout). A cache keeps references to
the forward's inputs, not copies: do not modify them in place before the backward.
"""

import functools
from typing import NamedTuple

import numpy as np

from . import kernels

# -- argument checks ----------------------------------------------------------------------------


def _pair(value, name, minimum=0):
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < minimum for v in pair):
        raise ValueError(f"{name}: expected an int >= {minimum} or a pair of them, "
                         f"got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_float(x, name, ndim=None, layout=""):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating dtype (float32), got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dims {layout}, got shape {x.shape}")
    return x


def _check_vector(v, length, name):
    """A per-channel vector (bias, batch-norm weight and statistics)."""
    v = np.asarray(v)
    if not np.issubdtype(v.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {v.dtype}")
    if v.shape != (length,):
        raise ValueError(f"{name}: expected shape ({length},), got {v.shape}")
    return v


def _check_dout(dout, shape):
    _check_float(dout, "dout")
    if dout.shape != tuple(shape):
        raise ValueError(f"dout: expected shape {tuple(shape)} (the forward's output), "
                         f"got {dout.shape}")
    return dout



# -- convolution --------------------------------------------------------------------------------

class ConvGeometry(NamedTuple):
    """Kernel, stride, padding, dilation and the output size of a convolution."""

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    out_h: int
    out_w: int

    @property
    def taps(self):
        """The arguments the im2col/col2im kernels take after the band."""
        return self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw

    @property
    def pointwise(self):
        """A 1x1, stride-1, unpadded convolution is a plain matrix product: no im2col."""
        return self.taps[:6] == (1, 1, 1, 1, 0, 0)


def conv_output_size(size, kernel, stride, padding, dilation):
    """floor((size + 2p - d(k-1) - 1) / s) + 1, torch's Conv2d output size."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _conv_geometry(kernel, stride, padding, dilation, out_h, out_w):
    return ConvGeometry(*kernel, *stride, *padding, *dilation, out_h, out_w)


# One im2col band of at most ~4 MB stays in the L2/L3 caches between being written by the
# kernel and read by BLAS; at least 1024 columns keep the matrix product efficient, unless
# fewer are needed to give every worker thread two bands (a small map in one image).
_BAND_BYTES = 4 * 2**20
_MIN_BAND_COLUMNS = 1024


def _band_rows(g, k_rows, dtype, min_bands=1):
    """Output rows per band (an image's last band may have fewer), with at least `min_bands`
    bands per image where the image has that many rows."""
    rows = max(_BAND_BYTES // (max(k_rows, 1) * g.out_w * np.dtype(dtype).itemsize),
               -(-_MIN_BAND_COLUMNS // g.out_w), 1)
    return max(min(rows, -(-g.out_h // min_bands)), 1)


def _bands(g, rows):
    return [(i0, min(i0 + rows, g.out_h)) for i0 in range(0, g.out_h, rows)]


def _band_view(buffer, k_rows, i0, i1, g):
    """A C-contiguous (k_rows, (i1-i0)*out_w) view of the front of `buffer`."""
    columns = (i1 - i0) * g.out_w
    return buffer[:k_rows * columns].reshape(k_rows, columns)


def _im2col_matmul(x, w2d, g, bias=None):
    """out[n] = w2d @ im2col(x[n]) (+ bias): (N, M, out_h*out_w), band by band, the bands of
    all images shared among the worker threads (`kernels.run_in_workers`). Small images (the
    mask head's 14x14 RoIs) go several to a band, side by side, so each product is wide.
    This is conv2d's forward and conv_transpose2d's input gradient."""
    n_img, (m_rows, k_rows) = x.shape[0], w2d.shape
    area = g.out_h * g.out_w
    out = np.empty((n_img, m_rows, area), x.dtype)
    if g.pointwise:
        x = x.reshape(n_img, k_rows, area)
    elif bias is not None:
        # the bias is the weight of an extra im2col row of ones: BLAS adds it for free
        w2d = np.concatenate([w2d, bias[:, None]], axis=1)
    # two bands per worker at least, so that a worker that falls behind is not waited for
    min_pieces = 2 * kernels.worker_count()
    rows = _band_rows(g, w2d.shape[1], x.dtype, -(-min_pieces // max(n_img, 1)))
    group = 1 if rows < g.out_h else \
        max(min(-(-_MIN_BAND_COLUMNS // area), n_img // min_pieces), 1)
    if group > 1:  # (first image, last image + 1) per piece
        pieces = [(n, min(n + group, n_img)) for n in range(0, n_img, group)]
    else:  # (image, first row, last row + 1) per piece
        pieces = [(n, i0, i1) for n in range(n_img) for i0, i1 in _bands(g, rows)]

    def band(buffer, piece):
        if group > 1:
            images(buffer, *pieces[piece])
            return
        n, i0, i1 = pieces[piece]
        columns = slice(i0 * g.out_w, i1 * g.out_w)
        if g.pointwise:
            np.matmul(w2d, x[n, :, columns], out=out[n, :, columns])
            if bias is not None:
                out[n, :, columns] += bias[:, None]
            return
        cols = _band_view(buffer, w2d.shape[1], i0, i1, g)
        kernels.im2col_rows(x[n], cols[:k_rows], i0, i1, *g.taps)
        if bias is not None:
            cols[k_rows] = 1
        np.matmul(w2d, cols, out=out[n, :, columns])

    def images(buffer, n0, n1):
        count = n1 - n0
        cols = buffer[:w2d.shape[1] * count * area].reshape(w2d.shape[1], count, area)
        if g.pointwise:
            cols[:] = x[n0:n1].transpose(1, 0, 2)
        else:
            for n in range(n0, n1):
                kernels.im2col_rows_into(x[n], buffer, count * area, (n - n0) * area, 0,
                                         g.out_h, g.out_w, *g.taps)
            if bias is not None:
                cols[k_rows] = 1
        product = w2d @ cols.reshape(w2d.shape[1], count * area)
        out[n0:n1] = product.reshape(m_rows, count, area).transpose(1, 0, 2)
        if bias is not None and g.pointwise:
            out[n0:n1] += bias[:, None]

    columns = group * area if group > 1 else rows * g.out_w
    size = w2d.shape[1] * columns
    kernels.run_in_workers(band, len(pieces), lambda: np.empty(size, x.dtype))
    return out


def _matmul_col2im(y, w2d, g, image_shape):
    """image[n] = col2im(w2d^T @ y[n]), the adjoint of `_im2col_matmul`, band by band, the
    bands shared among the worker threads. Two bands of an image overlap in it only when
    they are neighbours, so the even bands run first, then the odd ones.
    This is conv2d's input gradient and conv_transpose2d's forward."""
    n_img, k_rows = y.shape[0], w2d.shape[1]
    image = np.zeros((n_img, *image_shape), y.dtype)
    flat = image.reshape(n_img, k_rows, g.out_h * g.out_w) if g.pointwise else None
    rows = _band_rows(g, k_rows, y.dtype, -(-2 * kernels.worker_count() // max(n_img, 1)))
    bands = _bands(g, rows)
    # the input rows of band b reach up to row (i1-1)*s - p + (k-1)*d, those of band b+2
    # start at (i1+rows)*s - p: apart when (rows + 1) * s > (k - 1) * d
    apart = g.pointwise or (rows + 1) * g.sh > (g.kh - 1) * g.dh
    # a piece is a list of bands (image, i0, i1) that one worker runs in order
    if apart:
        phases = [[[(n, i0, i1)] for n in range(n_img) for i0, i1 in bands[first::2]]
                  for first in (0, 1)]
    else:
        phases = [[[(n, i0, i1) for i0, i1 in bands] for n in range(n_img)]]

    def piece(pieces, buffer, i):
        for n, i0, i1 in pieces[i]:
            columns = slice(i0 * g.out_w, i1 * g.out_w)
            if g.pointwise:
                np.matmul(w2d.T, y[n, :, columns], out=flat[n, :, columns])
                continue
            cols = _band_view(buffer, k_rows, i0, i1, g)
            np.matmul(w2d.T, y[n, :, columns], out=cols)
            kernels.col2im_rows(cols, image[n], i0, i1, *g.taps)

    size = 0 if g.pointwise else k_rows * rows * g.out_w
    for pieces in phases:
        kernels.run_in_workers(functools.partial(piece, pieces), len(pieces),
                               lambda: np.empty(size, y.dtype))
    return image


def _weight_gradient(x, y, g):
    """sum over images of y[n] @ im2col(x[n])^T: the weight gradient (M, C*kh*kw) when
    y[n] (M, out_h*out_w) is the gradient of w2d @ im2col(x[n]). The bands are dealt into one
    fixed share per worker thread; each share is summed on its own, then the shares in
    order, so the result does not depend on which thread ran what (training reproduces)."""
    n_img, m_rows = y.shape[:2]
    k_rows = x.shape[1] * g.kh * g.kw
    rows = _band_rows(g, k_rows, y.dtype, -(-2 * kernels.worker_count() // max(n_img, 1)))
    pieces = [(n, i0, i1) for n in range(n_img) for i0, i1 in _bands(g, rows)]
    flat_x = x.reshape(n_img, k_rows, g.out_h * g.out_w) if g.pointwise else None
    shares = [np.zeros((m_rows, k_rows), y.dtype)
              for _ in range(max(min(kernels.worker_count(), len(pieces)), 1))]

    def share(buffer, j):
        for n, i0, i1 in pieces[j::len(shares)]:
            columns = slice(i0 * g.out_w, i1 * g.out_w)
            if g.pointwise:
                shares[j] += y[n, :, columns] @ flat_x[n, :, columns].T
                continue
            cols = _band_view(buffer, k_rows, i0, i1, g)
            kernels.im2col_rows(x[n], cols, i0, i1, *g.taps)
            shares[j] += y[n, :, columns] @ cols.T

    size = 0 if g.pointwise else k_rows * rows * g.out_w
    kernels.run_in_workers(share, len(shares), lambda: np.empty(size, y.dtype))
    return sum(shares[1:], shares[0])


def _conv_arguments(x, w, b, stride, padding, dilation, in_axis, out_axis, layout):
    """Checks shared by conv2d and conv_transpose2d; returns the common dtype and the pairs."""
    _check_float(x, "x", 4, "(N, C, H, W)")
    _check_float(w, "w", 4, layout)
    if x.shape[1] != w.shape[in_axis]:
        raise ValueError(f"x: has {x.shape[1]} channels but w expects {w.shape[in_axis]} "
                         f"(w shape {w.shape}, layout {layout})")
    if b is not None:
        _check_vector(b, w.shape[out_axis], "b")
    if 0 in w.shape[2:]:
        raise ValueError(f"w: kernel size must be positive, got shape {w.shape}")
    pairs = (_pair(stride, "stride", 1), _pair(padding, "padding"),
             _pair(dilation, "dilation", 1))
    return np.result_type(x.dtype, w.dtype), pairs


def conv2d_reference(x, w, b=None, stride=1, padding=0, dilation=1):
    """The definition, as loops (slow; for tests and notebooks). Returns the output only:
    out[n, co, i, j] = b[co] + sum_{ci, ky, kx} w[co, ci, ky, kx] * x_padded[n, ci, i*s + ky*d,
    j*s + kx*d]."""
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation", 1)
    n_img, _, height, width = x.shape
    c_out, c_in, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out_h = conv_output_size(height, kh, sh, ph, dh)
    out_w = conv_output_size(width, kw, sw, pw, dw)
    out = np.zeros((n_img, c_out, out_h, out_w), dtype=np.result_type(x, w))
    for n in range(n_img):
        for co in range(c_out):
            for i in range(out_h):
                for j in range(out_w):
                    total = 0.0 if b is None else float(b[co])
                    for ci in range(c_in):
                        for ky in range(kh):
                            for kx in range(kw):
                                total += w[co, ci, ky, kx] * xp[n, ci, i * sh + ky * dh,
                                                                 j * sw + kx * dw]
                    out[n, co, i, j] = total
    return out


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation (torch.nn.functional.conv2d without groups):
    out[n] = W (Cout, Cin*kh*kw) @ im2col(x[n]) (Cin*kh*kw, out_h*out_w) + b.
    Output size per axis: floor((H + 2p - d(k-1) - 1) / s) + 1."""
    dtype, (stride, padding, dilation) = _conv_arguments(
        x, w, b, stride, padding, dilation, 1, 0, "(Cout, Cin, kh, kw)")
    n_img, c_in, height, width = x.shape
    c_out, _, kh, kw = w.shape
    out_h = conv_output_size(height, kh, stride[0], padding[0], dilation[0])
    out_w = conv_output_size(width, kw, stride[1], padding[1], dilation[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"x: spatial size {(height, width)} is too small for a {kh}x{kw} "
                         f"kernel with padding {padding} and dilation {dilation}")
    g = _conv_geometry((kh, kw), stride, padding, dilation, out_h, out_w)
    x = np.ascontiguousarray(x, dtype=dtype)
    w2d = np.ascontiguousarray(w, dtype=dtype).reshape(c_out, c_in * kh * kw)
    bias = None if b is None else np.asarray(b, dtype=dtype)
    out = _im2col_matmul(x, w2d, g, bias).reshape(n_img, c_out, out_h, out_w)
    return out, (x, w2d, w.shape, g, b is not None)


def conv2d_backward(dout, cache):
    """dx = col2im(W^T dout), dW = sum over images of dout @ im2col(x)^T, db = sum of dout."""
    x, w2d, w_shape, g, has_bias = cache
    _check_dout(dout, (x.shape[0], w_shape[0], g.out_h, g.out_w))
    dout2 = np.ascontiguousarray(dout, dtype=x.dtype).reshape(x.shape[0], w_shape[0],
                                                             g.out_h * g.out_w)
    dx = _matmul_col2im(dout2, w2d, g, x.shape[1:])
    dw = _weight_gradient(x, dout2, g).reshape(w_shape)
    db = dout2.sum(axis=(0, 2)) if has_bias else None
    return dx, dw, db


def conv_transpose2d_reference(x, w, b=None, stride=1, padding=0, output_padding=0,
                               dilation=1):
    """The definition, as loops (slow; for tests): every input pixel (i, j) adds
    x[n, ci, i, j] * w[ci, co, ky, kx] to output pixel (i*s - p + ky*d, j*s - p + kx*d).
    Returns the output only."""
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding")
    oph, opw = _pair(output_padding, "output_padding")
    dh, dw = _pair(dilation, "dilation", 1)
    n_img, c_in, height, width = x.shape
    _, c_out, kh, kw = w.shape
    out_h = (height - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (width - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    out = np.zeros((n_img, c_out, out_h, out_w), dtype=np.result_type(x, w))
    for n in range(n_img):
        for ci in range(c_in):
            for i in range(height):
                for j in range(width):
                    for co in range(c_out):
                        for ky in range(kh):
                            for kx in range(kw):
                                y, xx = i * sh - ph + ky * dh, j * sw - pw + kx * dw
                                if 0 <= y < out_h and 0 <= xx < out_w:
                                    out[n, co, y, xx] += x[n, ci, i, j] * w[ci, co, ky, kx]
    if b is not None:
        out += np.asarray(b)[:, None, None]
    return out


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1):
    """Transposed convolution ("deconvolution"), the adjoint of conv2d: every input pixel
    scatters its channel's kernel w[ci] (Cout, kh, kw), scaled by its value, into the output:
    out[n] = col2im(W^T (Cout*kh*kw, Cin) @ x[n] (Cin, H*W)) + b. Weight (Cin, Cout, kh, kw);
    output size (H-1)*s - 2p + d*(k-1) + output_padding + 1."""
    dtype, (stride, padding, dilation) = _conv_arguments(
        x, w, b, stride, padding, dilation, 0, 1, "(Cin, Cout, kh, kw)")
    oph, opw = _pair(output_padding, "output_padding")
    if oph >= max(stride[0], dilation[0]) or opw >= max(stride[1], dilation[1]):
        raise ValueError(f"output_padding: expected smaller than stride or dilation, "
                         f"got {output_padding}")
    n_img, c_in, height, width = x.shape
    _, c_out, kh, kw = w.shape
    out_h = (height - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + oph + 1
    out_w = (width - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + opw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"x: spatial size {(height, width)} with padding {padding} gives an "
                         f"empty output")
    # x's grid is the output grid of a conv2d run on our output, with the same geometry
    g = _conv_geometry((kh, kw), stride, padding, dilation, height, width)
    x2d = np.ascontiguousarray(x, dtype=dtype).reshape(n_img, c_in, height * width)
    w2d = np.ascontiguousarray(w, dtype=dtype).reshape(c_in, c_out * kh * kw)
    out = _matmul_col2im(x2d, w2d, g, (c_out, out_h, out_w))
    if b is not None:
        out += np.asarray(b, dtype=dtype)[:, None, None]
    return out, (x2d, w2d, w.shape, g, b is not None, out.shape)


def conv_transpose2d_backward(dout, cache):
    """dx = W @ im2col(dout) (a conv2d of dout), dW = sum over images of x @ im2col(dout)^T."""
    x2d, w2d, w_shape, g, has_bias, out_shape = cache
    _check_dout(dout, out_shape)
    dout = np.ascontiguousarray(dout, dtype=x2d.dtype)
    dx = _im2col_matmul(dout, w2d, g).reshape(x2d.shape[0], x2d.shape[1], g.out_h, g.out_w)
    dw = _weight_gradient(dout, x2d, g).reshape(w_shape)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


# -- dense layers and activations ---------------------------------------------------------------

def linear(x, w, b=None):
    """y = x W^T + b, W of shape (out_features, in_features)."""
    _check_float(x, "x", 2, "(N, in_features)")
    _check_float(w, "w", 2, "(out_features, in_features)")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x: has {x.shape[1]} features but w expects {w.shape[1]} "
                         f"(w shape {w.shape})")
    if b is not None:
        _check_vector(b, w.shape[0], "b")
    out = _matmul_row_blocks(x, w.T)
    if b is not None:
        out += b
    return out, (x, w, b is not None)


def _matmul_row_blocks(a, b):
    """a @ b, blocks of a's rows shared among the worker threads (`kernels.run_in_workers`)."""
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a.dtype, b.dtype))
    block = max(-(-a.shape[0] // (2 * kernels.worker_count())), 64)

    def rows(_, i):
        np.matmul(a[i * block:(i + 1) * block], b, out=out[i * block:(i + 1) * block])

    kernels.run_in_workers(rows, -(-a.shape[0] // block))
    return out


def linear_backward(dout, cache):
    """dx = dout W, dW = dout^T x, db = sum of dout over rows."""
    x, w, has_bias = cache
    _check_dout(dout, (x.shape[0], w.shape[0]))
    return dout @ w, dout.T @ x, (dout.sum(axis=0) if has_bias else None)


def relu(x):
    """max(x, 0); the cache is the mask x > 0 where the gradient passes."""
    _check_float(x, "x")
    return np.maximum(x, x.dtype.type(0)), x > 0


def relu_backward(dout, cache):
    return dout * cache


def sigmoid(x):
    """1 / (1 + exp(-x)), computed from exp(-|x|) so it never overflows; the cache is the
    output, since d sigmoid / dx = sigmoid (1 - sigmoid)."""
    _check_float(x, "x")
    e = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    return out, out


def sigmoid_backward(dout, cache):
    return dout * cache * (1 - cache)


# -- pooling and normalisation ------------------------------------------------------------------

def max_pool2d_reference(x, kernel_size, stride=None, padding=0):
    """The definition, as loops (slow; for tests): the maximum of each window, the padding
    being -inf, and the flat index y*W + x of the first maximum in row-major order."""
    kh, kw = _pair(kernel_size, "kernel_size", 1)
    sh, sw = _pair(kernel_size if stride is None else stride, "stride", 1)
    ph, pw = _pair(padding, "padding")
    n_img, channels, height, width = x.shape
    out_h = conv_output_size(height, kh, sh, ph, 1)
    out_w = conv_output_size(width, kw, sw, pw, 1)
    out = np.empty((n_img, channels, out_h, out_w), x.dtype)
    argmax = np.empty((n_img, channels, out_h, out_w), np.int64)
    for n, c, i, j in np.ndindex(out.shape):
        best, best_index = -np.inf, None
        for y in range(i * sh - ph, i * sh - ph + kh):
            for xx in range(j * sw - pw, j * sw - pw + kw):
                if 0 <= y < height and 0 <= xx < width and (
                        best_index is None or x[n, c, y, xx] > best):
                    best, best_index = x[n, c, y, xx], y * width + xx
        out[n, c, i, j], argmax[n, c, i, j] = best, best_index
    return out, argmax


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling with torch's semantics: -inf padding (at most half the kernel), output
    size floor((H + 2p - k) / s) + 1, and the first maximum of a window in row-major order
    receives the gradient. The cache holds that argmax (flat y*W + x) per output pixel."""
    _check_float(x, "x", 4, "(N, C, H, W)")
    kh, kw = _pair(kernel_size, "kernel_size", 1)
    sh, sw = _pair(kernel_size if stride is None else stride, "stride", 1)
    ph, pw = _pair(padding, "padding")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"padding: expected at most half the kernel size {(kh, kw)}, "
                         f"got {padding}")
    out_h = conv_output_size(x.shape[2], kh, sh, ph, 1)
    out_w = conv_output_size(x.shape[3], kw, sw, pw, 1)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"x: spatial size {x.shape[2:]} is smaller than the kernel "
                         f"{(kh, kw)} with padding {(ph, pw)}")
    out, argmax = kernels.max_pool_forward(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw,
                                           out_h, out_w)
    return out, (argmax, x.shape)


def max_pool2d_backward(dout, cache):
    argmax, x_shape = cache
    _check_dout(dout, argmax.shape)
    return kernels.max_pool_backward(np.ascontiguousarray(dout), argmax, x_shape[2],
                                     x_shape[3])


def frozen_batch_norm2d(x, weight, bias, running_mean, running_var, eps=1e-5):
    """torchvision's FrozenBatchNorm2d: scale = weight / sqrt(running_var + eps),
    shift = bias - running_mean * scale, y = x * scale + shift, per channel, in x's dtype.
    (eps is 0.0 for torchvision's COCO checkpoints.) The cache is the scale."""
    _check_float(x, "x", 4, "(N, C, H, W)")
    c, dtype = x.shape[1], x.dtype
    weight, bias = _check_vector(weight, c, "weight"), _check_vector(bias, c, "bias")
    running_mean = _check_vector(running_mean, c, "running_mean")
    running_var = _check_vector(running_var, c, "running_var")
    scale = weight.astype(dtype) * (1 / np.sqrt(running_var.astype(dtype) + dtype.type(eps)))
    shift = bias.astype(dtype) - running_mean.astype(dtype) * scale
    out = np.empty(x.shape, dtype)
    kernels.scale_shift_channels(np.ascontiguousarray(x), scale, shift, out)
    return out, scale


def frozen_batch_norm2d_backward(dout, cache):
    return dout * cache[:, None, None]


def batch_norm2d(x, weight, bias, running_mean, running_var, training, momentum=0.1,
                 eps=1e-5):
    """Batch normalisation (Ioffe & Szegedy, 2015, Algorithm 1), as torch's batch_norm.

    Training: x_hat = (x - mean) / sqrt(var + eps) with the batch's per-channel mean and
    biased variance, and the running statistics are updated IN PLACE:
    running = (1 - momentum) * running + momentum * batch statistic, where the variance
    fed to running_var is the unbiased one (times count / (count - 1)).
    Eval: the same with running_mean and running_var (= frozen_batch_norm2d).
    y = weight * x_hat + bias."""
    _check_float(x, "x", 4, "(N, C, H, W)")
    c, dtype = x.shape[1], x.dtype
    weight, bias = _check_vector(weight, c, "weight"), _check_vector(bias, c, "bias")
    running_mean = _check_vector(running_mean, c, "running_mean")
    running_var = _check_vector(running_var, c, "running_var")
    if training:
        count = x.shape[0] * x.shape[2] * x.shape[3]
        if count < 2:
            raise ValueError(f"x: batch norm in training needs more than one value per "
                             f"channel, got shape {x.shape}")
        # statistics accumulated in float64: float32 sums over a large map drift
        mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
        centered = x - mean.astype(dtype)[:, None, None]
        var = np.square(centered).mean(axis=(0, 2, 3), dtype=np.float64)
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (count / (count - 1))
    else:
        centered = x - running_mean.astype(dtype)[:, None, None]
        var = running_var
    inv_std = (1 / np.sqrt(var.astype(dtype) + dtype.type(eps))).astype(dtype)
    x_hat = centered * inv_std[:, None, None]
    out = x_hat * weight.astype(dtype)[:, None, None] + bias.astype(dtype)[:, None, None]
    return out, (x_hat, inv_std, weight.astype(dtype), training)


def batch_norm2d_backward(dout, cache):
    """Returns (dx, dweight, dbias). In training the batch mean and variance depend on every
    x of the channel, which adds two terms:
    dx = inv_std * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))."""
    x_hat, inv_std, weight, training = cache
    _check_dout(dout, x_hat.shape)
    dweight = (dout * x_hat).sum(axis=(0, 2, 3))
    dbias = dout.sum(axis=(0, 2, 3))
    dx_hat = dout * weight[:, None, None]
    if training:
        dx_hat = (dx_hat - dx_hat.mean(axis=(0, 2, 3))[:, None, None]
                  - x_hat * (dx_hat * x_hat).mean(axis=(0, 2, 3))[:, None, None])
    return dx_hat * inv_std[:, None, None], dweight, dbias


# -- resizing -----------------------------------------------------------------------------------

def nearest_source_indices(n_in, n_out):
    """torch's 'nearest' rule (REFERENCE.md §1): output index d reads input index d when
    n_out == n_in, d >> 1 when n_out == 2 n_in, else min(floor(float32(d) * float32(n_in) /
    float32(n_out)), n_in - 1), all in float32 as torch computes it."""
    if n_out == n_in:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


def interpolate_nearest(x, size):
    """Nearest-neighbour resize of (N, C, H, W) to `size` = (out_h, out_w) or an int
    (the FPN's top-down upsampling). The cache holds the source rows and columns."""
    _check_float(x, "x", 4, "(N, C, H, W)")
    out_h, out_w = _pair(size, "size", 1)
    if 0 in x.shape[2:]:
        raise ValueError(f"x: cannot resize an empty map, got shape {x.shape}")
    rows = nearest_source_indices(x.shape[2], out_h)
    cols = nearest_source_indices(x.shape[3], out_w)
    return x[:, :, rows[:, None], cols[None, :]], (x.shape, rows, cols)


def interpolate_nearest_backward(dout, cache):
    """Each input pixel receives the sum of the gradients of the output pixels that copied it."""
    x_shape, rows, cols = cache
    n, c, height, width = x_shape
    _check_dout(dout, (n, c, len(rows), len(cols)))
    if len(rows) == 2 * height and len(cols) == 2 * width:
        # the FPN's exact 2x case: each input pixel feeds a 2x2 block, summed in row-major
        # order as torch does (bit-identical), 5x faster than a sum over reshaped axes
        dx = dout[:, :, 0::2, 0::2] + dout[:, :, 0::2, 1::2]
        dx += dout[:, :, 1::2, 0::2]
        dx += dout[:, :, 1::2, 1::2]
        return dx
    # in general: dx = R dout C^T with one-hot matrices R[y, d] = (rows[d] == y)
    row_hot = (rows[None, :] == np.arange(height)[:, None]).astype(dout.dtype)
    col_hot = (cols[None, :] == np.arange(width)[:, None]).astype(dout.dtype)
    return row_hot @ dout @ col_hot.T


# -- losses: (loss, gradient of the loss with respect to the input) ---------------------------

def cross_entropy(logits, labels, ignore_index=None):
    """Mean over rows of -log softmax(logits)[label] (torch's cross_entropy, reduction mean).

    Rows whose label equals `ignore_index` are left out of the mean and get zero gradient.
    With no row left (all ignored, or no rows) the loss is 0.0 and the gradient is zero,
    where torch would return NaN."""
    _check_float(logits, "logits", 2, "(N, num_classes)")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels: expected an integer dtype, got {labels.dtype}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels: expected shape ({logits.shape[0]},), got {labels.shape}")
    valid = np.ones(len(labels), bool) if ignore_index is None else labels != ignore_index
    used = labels[valid]
    if len(used) and (used.min() < 0 or used.max() >= logits.shape[1]):
        raise ValueError(f"labels: expected values in [0, {logits.shape[1]}) (or ignore_index "
                         f"{ignore_index}), got values from {used.min()} to {used.max()}")
    grad = np.zeros_like(logits)
    count = len(used)
    if count == 0:
        return 0.0, grad
    shifted = logits[valid] - logits[valid].max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(count)
    loss = float((log_sum - shifted[rows, used]).sum() / count)
    # d loss / d logits = (softmax - one_hot(label)) / count
    prob = np.exp(shifted - log_sum[:, None])
    prob[rows, used] -= 1
    grad[valid] = prob / count
    return loss, grad


def smooth_l1(pred, target, beta=1.0 / 9, reduction="sum"):
    """Smooth L1 (Girshick, 2015, Fast R-CNN eq. 3, with torch's beta): per element
    0.5 x^2 / beta where |x| < beta, else |x| - 0.5 beta (x = pred - target); beta = 0 is the
    L1 loss. reduction "sum" or "mean" (mean over elements; 0.0 when there are none)."""
    _check_float(pred, "pred")
    target = np.asarray(target)
    if target.shape != pred.shape:
        raise ValueError(f"target: expected shape {pred.shape} (like pred), got {target.shape}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    if beta < 0:
        raise ValueError(f"beta: expected >= 0, got {beta}")
    diff = pred - target.astype(pred.dtype)
    abs_diff = np.abs(diff)
    if beta == 0:
        loss, grad = abs_diff, np.sign(diff)
    else:
        quadratic = abs_diff < beta
        loss = np.where(quadratic, 0.5 * diff * diff / beta, abs_diff - 0.5 * beta)
        grad = np.where(quadratic, diff / beta, np.sign(diff))
    scale = 1.0 if reduction == "sum" or diff.size == 0 else 1.0 / diff.size
    return float(loss.sum()) * scale, (grad * scale).astype(pred.dtype, copy=False)


def binary_cross_entropy_with_logits(logits, targets):
    """Mean over elements of -[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], written as
    max(x, 0) - x t + log(1 + exp(-|x|)) so it is exact and finite even at |x| = 100.
    The gradient is (sigmoid(x) - t) / count. No elements: loss 0.0."""
    _check_float(logits, "logits")
    targets = np.asarray(targets)
    if targets.shape != logits.shape:
        raise ValueError(f"targets: expected shape {logits.shape} (like logits), got "
                         f"{targets.shape}")
    if logits.size == 0:
        return 0.0, np.zeros_like(logits)
    t = targets.astype(logits.dtype)
    loss = np.maximum(logits, 0) - logits * t + np.log1p(np.exp(-np.abs(logits)))
    prob, _ = sigmoid(logits)
    return float(loss.mean()), ((prob - t) / logits.size).astype(logits.dtype, copy=False)
