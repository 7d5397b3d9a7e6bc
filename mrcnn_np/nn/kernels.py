"""Numba hot loops of the layer library: im2col / col2im and max pooling.

Each kernel runs in parallel over (image, channel) pairs, which write disjoint slices of
their output, so the parallel loops are race-free. `conv2d_reference` in `functional` is the
readable loop version these are tested against.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def _valid_columns(kx, width, sw, pw, dw, out_w):
    """The output columns j whose input column j*sw - pw + kx*dw lies inside [0, width)."""
    first = kx * dw - pw  # input column of output column 0
    j_lo = 0 if first >= 0 else (-first + sw - 1) // sw
    j_hi = min(out_w, (width - 1 - first) // sw + 1) if width - 1 - first >= 0 else 0
    return j_lo, max(j_hi, j_lo)


@numba.njit(cache=True, parallel=True)
def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):
    """(N, C, H, W) -> (N, C*kh*kw, out_h*out_w): column (i, j) holds the receptive field
    of output pixel (i, j), rows ordered (c, ky, kx) like a flattened weight (Cout, C, kh, kw).
    Positions in the zero padding read 0."""
    n_img, channels, height, width = x.shape
    cols = np.empty((n_img, channels * kh * kw, out_h * out_w), dtype=x.dtype)
    for nc in numba.prange(n_img * channels):
        n = nc // channels
        c = nc % channels
        for ky in range(kh):
            for kx in range(kw):
                row = (c * kh + ky) * kw + kx
                j_lo, j_hi = _valid_columns(kx, width, sw, pw, dw, out_w)
                x0 = j_lo * sw - pw + kx * dw
                for i in range(out_h):
                    y = i * sh - ph + ky * dh
                    base = i * out_w
                    if y < 0 or y >= height:
                        cols[n, row, base:base + out_w] = 0
                        continue
                    cols[n, row, base:base + j_lo] = 0
                    # a branch-free copy of the columns inside the map
                    if j_hi > j_lo:
                        cols[n, row, base + j_lo:base + j_hi] = \
                            x[n, c, y, x0:x0 + (j_hi - j_lo - 1) * sw + 1:sw]
                    cols[n, row, base + j_hi:base + out_w] = 0
    return cols


@numba.njit(cache=True, parallel=True)
def col2im(cols, channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):
    """The adjoint of im2col: scatter-add each column entry back to its input pixel."""
    n_img = cols.shape[0]
    x = np.zeros((n_img, channels, height, width), dtype=cols.dtype)
    for nc in numba.prange(n_img * channels):
        n = nc // channels
        c = nc % channels
        for ky in range(kh):
            for kx in range(kw):
                row = (c * kh + ky) * kw + kx
                j_lo, j_hi = _valid_columns(kx, width, sw, pw, dw, out_w)
                x0 = j_lo * sw - pw + kx * dw
                for i in range(out_h):
                    y = i * sh - ph + ky * dh
                    if y < 0 or y >= height:
                        continue
                    base = i * out_w + j_lo
                    for j in range(j_hi - j_lo):
                        x[n, c, y, x0 + j * sw] += cols[n, row, base + j]
    return x


@numba.njit(cache=True, parallel=True)
def max_pool_forward(x, kh, kw, sh, sw, ph, pw, out_h, out_w):
    """Max over each window; the padding counts as -inf. `argmax` is the flat index y*W + x of
    the first maximum in row-major scan order (torch's tie rule)."""
    n_img, channels, height, width = x.shape
    out = np.empty((n_img, channels, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((n_img, channels, out_h, out_w), dtype=np.int64)
    for nc in numba.prange(n_img * channels):
        n = nc // channels
        c = nc % channels
        for i in range(out_h):
            for j in range(out_w):
                best = -np.inf
                best_index = -1
                for ky in range(kh):
                    y = i * sh - ph + ky
                    if y < 0 or y >= height:
                        continue
                    for kx in range(kw):
                        xx = j * sw - pw + kx
                        if xx < 0 or xx >= width:
                            continue
                        v = x[n, c, y, xx]
                        # torch: a NaN always wins, so NaN propagates
                        if v > best or best_index < 0 or np.isnan(v):
                            best = v
                            best_index = y * width + xx
                out[n, c, i, j] = best
                argmax[n, c, i, j] = best_index
    return out, argmax


@numba.njit(cache=True, parallel=True)
def max_pool_backward(dout, argmax, height, width):
    n_img, channels, out_h, out_w = dout.shape
    dx = np.zeros((n_img, channels, height, width), dtype=dout.dtype)
    for nc in numba.prange(n_img * channels):
        n = nc // channels
        c = nc % channels
        for i in range(out_h):
            for j in range(out_w):
                k = argmax[n, c, i, j]
                dx[n, c, k // width, k % width] += dout[n, c, i, j]
    return dx


@numba.njit(cache=True, parallel=True)
def _parallel_probe(n):
    total = 0
    for i in numba.prange(n):
        total += i
    return total


def warm_up_parallel():
    """Run a tiny parallel kernel so Numba picks (and reports) its threading layer."""
    return _parallel_probe(8)
