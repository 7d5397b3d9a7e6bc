"""Numba hot loops of the layer library: im2col / col2im and max pooling.

im2col turns a convolution into one matrix product (Chellapilla et al., 2006, "High
performance convolutional neural networks for document processing"): row (c, ky, kx) and
column (i, j) of the im2col matrix hold the input pixel that kernel tap (ky, kx) of channel c
sees when the kernel sits at output pixel (i, j). col2im is its adjoint (a scatter-add), which
is both the input gradient of a convolution and the forward pass of a transposed convolution.

The kernels work on a band of output rows `i0 <= i < i1` of one image, so `functional` can
stream a large feature map through a cache-sized buffer instead of materialising the whole
im2col matrix (9x the input for a 3x3 kernel). `im2col` and `col2im` are the whole-image
versions that notebooks and tests look at. `functional.conv2d_reference` is the readable loop
these are tested against.

im2col and col2im are serial on purpose: they run between two BLAS calls, whose worker
threads keep spinning for a while after a product, and a parallel Numba loop fighting them
for the cores made a 3x3 convolution 5x slower (benchmarks/bench_layers.py). With the valid
column range of every row computed up front, the inner loops are contiguous copies that LLVM
vectorises, so one core streams a band at memory speed. The pooling kernels are parallel over
(image, channel) planes, which they write race-free.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def _valid_columns(offset, stride, width, out_w):
    """The output columns j whose input column j*stride + offset lies inside [0, width)."""
    j_lo = min(out_w, max(0, -(offset // stride)))
    j_hi = max(j_lo, min(out_w, (width - 1 - offset) // stride + 1))
    return j_lo, j_hi


# The kernels index flat views with unsigned integers: Numba then skips its negative-index
# wraparound check, and LLVM vectorises the contiguous inner loops (2-3x faster than slices).
@numba.njit(cache=True)
def im2col_rows(x, cols, i0, i1, kh, kw, sh, sw, ph, pw, dh, dw):
    """Fill `cols` (C*kh*kw, (i1-i0)*out_w) with the receptive fields of output rows
    [i0, i1) of the image `x` (C, H, W), both C-contiguous. Taps in the zero padding read 0."""
    channels, height, width = x.shape
    out_w = cols.shape[1] // (i1 - i0)
    flat_x, flat_cols = x.ravel(), cols.ravel()
    for row in range(channels * kh * kw):
        c = row // (kh * kw)
        ky = (row // kw) % kh
        offset = (row % kw) * dw - pw
        j_lo, j_hi = _valid_columns(offset, sw, width, out_w)
        for i in range(i0, i1):
            y = i * sh - ph + ky * dh
            base = row * cols.shape[1] + (i - i0) * out_w  # where output pixel (i, 0) goes
            if y < 0 or y >= height:
                j_lo_row, j_hi_row = 0, 0  # the whole row of taps is in the padding
            else:
                j_lo_row, j_hi_row = j_lo, j_hi
            for j in range(j_lo_row):
                flat_cols[np.uintp(base + j)] = 0
            start = (c * height + y) * width + offset  # where input column j*sw + offset is
            if sw == 2:  # a constant stride vectorises (LLVM handles stride 1 by itself)
                for j in range(j_lo_row, j_hi_row):
                    flat_cols[np.uintp(base + j)] = flat_x[np.uintp(start + j * 2)]
            else:
                for j in range(j_lo_row, j_hi_row):
                    flat_cols[np.uintp(base + j)] = flat_x[np.uintp(start + j * sw)]
            for j in range(j_hi_row, out_w):
                flat_cols[np.uintp(base + j)] = 0


@numba.njit(cache=True)
def col2im_rows(cols, x, i0, i1, kh, kw, sh, sw, ph, pw, dh, dw):
    """The adjoint of `im2col_rows`: add every entry of `cols` into the pixel of `x`
    (C, H, W) it was read from (entries in the padding are dropped)."""
    channels, height, width = x.shape
    out_w = cols.shape[1] // (i1 - i0)
    flat_x, flat_cols = x.ravel(), cols.ravel()
    for row in range(channels * kh * kw):
        c = row // (kh * kw)
        ky = (row // kw) % kh
        offset = (row % kw) * dw - pw
        j_lo, j_hi = _valid_columns(offset, sw, width, out_w)
        for i in range(i0, i1):
            y = i * sh - ph + ky * dh
            if y < 0 or y >= height:
                continue
            base = row * cols.shape[1] + (i - i0) * out_w
            start = (c * height + y) * width + offset
            if sw == 2:
                for j in range(j_lo, j_hi):
                    flat_x[np.uintp(start + j * 2)] += flat_cols[np.uintp(base + j)]
            else:
                for j in range(j_lo, j_hi):
                    flat_x[np.uintp(start + j * sw)] += flat_cols[np.uintp(base + j)]


def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):
    """Whole-image im2col: (N, C, H, W) -> (N, C*kh*kw, out_h*out_w), rows ordered
    (c, ky, kx) like a flattened weight (Cout, C, kh, kw)."""
    x = np.ascontiguousarray(x)
    n_img, channels = x.shape[:2]
    cols = np.empty((n_img, channels * kh * kw, out_h * out_w), dtype=x.dtype)
    for n in range(n_img):
        im2col_rows(x[n], cols[n], 0, out_h, kh, kw, sh, sw, ph, pw, dh, dw)
    return cols


def col2im(cols, channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):
    """Whole-image col2im: (N, C*kh*kw, out_h*out_w) -> (N, C, H, W), summing overlaps."""
    cols = np.ascontiguousarray(cols)
    x = np.zeros((cols.shape[0], channels, height, width), dtype=cols.dtype)
    for n in range(cols.shape[0]):
        col2im_rows(cols[n], x[n], 0, out_h, kh, kw, sh, sw, ph, pw, dh, dw)
    return x


@numba.njit(cache=True, parallel=True)
def max_pool_forward(x, kh, kw, sh, sw, ph, pw, out_h, out_w):
    """Max over each window, the padding counting as -inf. `argmax` is the flat index
    y*W + x of the first maximum in row-major scan order (torch's tie rule); a NaN wins and
    stays, so NaN propagates as in torch."""
    n_img, channels, height, width = x.shape
    planes = x.reshape(n_img * channels, height * width)
    out = np.empty((n_img * channels, out_h * out_w), dtype=x.dtype)
    argmax = np.empty((n_img * channels, out_h * out_w), dtype=np.int64)
    for plane in numba.prange(n_img * channels):
        src = planes[plane]
        for i in range(out_h):
            y_lo, y_hi = max(i * sh - ph, 0), min(i * sh - ph + kh, height)
            for j in range(out_w):
                x_lo, x_hi = max(j * sw - pw, 0), min(j * sw - pw + kw, width)
                best, best_index = -np.inf, y_lo * width + x_lo
                for y in range(y_lo, y_hi):
                    for index in range(y * width + x_lo, y * width + x_hi):
                        v = src[np.uintp(index)]
                        if v > best or np.isnan(v):
                            best, best_index = v, index
                out[plane, i * out_w + j] = best
                argmax[plane, i * out_w + j] = best_index
    return (out.reshape(n_img, channels, out_h, out_w),
            argmax.reshape(n_img, channels, out_h, out_w))


@numba.njit(cache=True, parallel=True)
def max_pool_backward(dout, argmax, height, width):
    """Route each output gradient to the input pixel its maximum came from."""
    n_img, channels, out_h, out_w = dout.shape
    grads = dout.reshape(n_img * channels, out_h * out_w)
    sources = argmax.reshape(n_img * channels, out_h * out_w)
    dx = np.zeros((n_img * channels, height * width), dtype=dout.dtype)
    for plane in numba.prange(n_img * channels):
        for k in range(out_h * out_w):
            dx[plane, np.uintp(sources[plane, k])] += grads[plane, k]
    return dx.reshape(n_img, channels, height, width)


@numba.njit(cache=True, parallel=True)
def _parallel_probe(n):
    total = 0
    for i in numba.prange(n):
        total += i
    return total


def warm_up_parallel():
    """Run a tiny parallel kernel so Numba picks (and reports) its threading layer."""
    return _parallel_probe(8)
