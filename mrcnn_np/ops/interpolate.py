"""Resizing with torch's `F.interpolate` formulas (align_corners=False), on the last two axes.

Used by the input transform (bilinear images, nearest masks), mask pasting (bilinear) and the
keypoint head (2x bilinear upsampling in training; bicubic resizing of heatmaps at inference).

For output index d along an axis of input length `n_in`, with scale `s` (`n_in / n_out` in
float32, or `1 / scale_factor` when the caller fixes the factor):

* bilinear: `src = max(s*(d+0.5) - 0.5, 0)`, `i0 = floor(src)` (at most n_in-1),
  `i1 = min(i0+1, n_in-1)`, weights `(1-l, l)` with `l = src - i0`;
* nearest: identity if n_out == n_in, `d >> 1` if n_out == 2*n_in, else
  `min(floor(d*s), n_in-1)`;
* bicubic: `src = s*(d+0.5) - 0.5` (not clamped), taps `floor(src)-1 .. floor(src)+2` clamped
  to the axis, Keys' cubic with A = -0.75.

Bilinear resizing is linear, so its backward is the transpose: the same indices and weights,
scattered instead of gathered.
"""

import math

import numpy as np

from ..nn.functional import nearest_source_indices as nearest_indices


def _check(x, name="x"):
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name}: expected an array with at least 2 dims (..., H, W), "
                         f"got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    return x


def _scale(n_in, n_out, scale_factor, dtype):
    if scale_factor is not None:
        return dtype(1.0 / scale_factor)
    return dtype(n_in) / dtype(n_out)


def _size_and_scales(x, size, scale_factor):
    n_h, n_w = x.shape[-2:]
    # torch's scales and source positions are in float for a float input, double for a double
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size=(h, w) and scale_factor")
    if size is None:
        sf = (scale_factor, scale_factor) if np.isscalar(scale_factor) else tuple(scale_factor)
        out_h, out_w = int(math.floor(n_h * sf[0])), int(math.floor(n_w * sf[1]))
        return (out_h, out_w), (_scale(n_h, out_h, sf[0], dtype), _scale(n_w, out_w, sf[1], dtype))
    out_h, out_w = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"size: expected positive sizes, got {(out_h, out_w)}")
    return (out_h, out_w), (_scale(n_h, out_h, None, dtype), _scale(n_w, out_w, None, dtype))


def linear_weights(n_in, n_out, scale):
    """Per output index: the two source indices and their weights (in the scale's dtype)."""
    dtype = np.asarray(scale).dtype.type
    d = np.arange(n_out, dtype=dtype)
    src = np.maximum(scale * (d + dtype(0.5)) - dtype(0.5), dtype(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = np.clip(src - i0, 0, 1).astype(dtype)
    return i0, i1, (dtype(1) - l1), l1


def resize_bilinear(x, size=None, scale_factor=None):
    """Bilinear resize of the last two axes; returns (out, cache) for `resize_bilinear_backward`."""
    x = _check(x)
    (out_h, out_w), (s_h, s_w) = _size_and_scales(x, size, scale_factor)
    hy0, hy1, wy0, wy1 = linear_weights(x.shape[-2], out_h, s_h)
    wx0, wx1, lx0, lx1 = linear_weights(x.shape[-1], out_w, s_w)
    dtype = x.dtype
    wy0, wy1, lx0, lx1 = (a.astype(dtype) for a in (wy0, wy1, lx0, lx1))
    rows = x[..., hy0, :] * wy0[:, None] + x[..., hy1, :] * wy1[:, None]
    out = rows[..., wx0] * lx0 + rows[..., wx1] * lx1
    cache = (x.shape, (hy0, hy1, wy0, wy1), (wx0, wx1, lx0, lx1))
    return out.astype(dtype, copy=False), cache


def resize_bilinear_backward(dout, cache):
    """Gradient of `resize_bilinear` with respect to its input."""
    shape, (hy0, hy1, wy0, wy1), (wx0, wx1, lx0, lx1) = cache
    lead = dout.shape[:-2]
    d = dout.reshape(-1, *dout.shape[-2:])
    drows = np.zeros((d.shape[0], d.shape[1], shape[-1]), dout.dtype)
    for idx, weight in ((wx0, lx0), (wx1, lx1)):
        np.add.at(drows, (slice(None), slice(None), idx), d * weight)
    dx = np.zeros((d.shape[0], shape[-2], shape[-1]), dout.dtype)
    for idx, weight in ((hy0, wy0), (hy1, wy1)):
        np.add.at(dx, (slice(None), idx), drows * weight[:, None])
    return dx.reshape(*lead, *shape[-2:])


def resize_nearest(x, size):
    """Nearest resize of the last two axes to `size` (works on any dtype, e.g. uint8 masks)."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x: expected at least 2 dims (..., H, W), got shape {x.shape}")
    out_h, out_w = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    rows = nearest_indices(x.shape[-2], out_h)
    cols = nearest_indices(x.shape[-1], out_w)
    return x[..., rows[:, None], cols[None, :]]


def _cubic_weights(t, a=-0.75):
    def near(v):  # |v| <= 1
        return ((a + 2) * v - (a + 3)) * v * v + 1

    def far(v):  # 1 < |v| < 2
        return ((a * v - 5 * a) * v + 8 * a) * v - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def resize_bicubic(x, size):
    """Bicubic resize (A = -0.75, align_corners=False), along x first and then y as torch."""
    x = _check(x)
    out_h, out_w = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    dtype = x.dtype

    def taps(n_in, n_out):
        scale = np.float32(n_in) / np.float32(n_out)
        src = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
        i = np.floor(src).astype(np.int64)
        t = (src - i).astype(np.float32)
        index = np.clip(i[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1)
        return index, _cubic_weights(t).astype(dtype)

    col_index, col_w = taps(x.shape[-1], out_w)
    row_index, row_w = taps(x.shape[-2], out_h)
    cols = (x[..., col_index] * col_w).sum(-1)  # (..., H, out_w)
    rows = cols[..., row_index, :] * row_w[:, :, None]  # (..., out_h, 4, out_w)
    return rows.sum(-2).astype(dtype, copy=False)
