"""RoIPool (Fast R-CNN, Girshick 2015, Sec. 2.1), forward and backward, with torchvision's
rules (REFERENCE.md Sec. 6.6). Mask R-CNN replaces it with RoIAlign; it is here so the two can
be compared on real numbers.

The RoI is *quantised twice*: its corners are rounded to whole feature-map pixels (C's round,
half away from zero), and each bin spans whole pixels from floor(i * bin_h) to
ceil((i + 1) * bin_h). Each output is the maximum over its bin; `argmax` records where
(the flat index h*W + w in the RoI's image's map, -1 for an empty bin, which outputs 0).
"""

import math

import numba
import numpy as np

from ._roi_checks import check_features, check_rois, output_pair


def c_round(v):
    """C's round(): halves go away from zero (np.round would go to even)."""
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def roi_pool_bins(roi, output_size, spatial_scale, height, width):
    """The (hstart, hend, wstart, wend) pixel ranges of every bin of one RoI, for figures and
    the reference."""
    ph, pw = output_pair(output_size)
    xs, ys = c_round(roi[1] * spatial_scale), c_round(roi[2] * spatial_scale)
    xe, ye = c_round(roi[3] * spatial_scale), c_round(roi[4] * spatial_scale)
    bin_h = max(ye - ys + 1, 1) / ph
    bin_w = max(xe - xs + 1, 1) / pw
    bins = np.zeros((ph, pw, 4), np.int64)
    for i in range(ph):
        for j in range(pw):
            bins[i, j] = (min(max(math.floor(i * bin_h) + ys, 0), height),
                          min(max(math.ceil((i + 1) * bin_h) + ys, 0), height),
                          min(max(math.floor(j * bin_w) + xs, 0), width),
                          min(max(math.ceil((j + 1) * bin_w) + xs, 0), width))
    return bins


def roi_pool_reference(x, rois, output_size, spatial_scale=1.0):
    """RoIPool as loops (slow; for reading). Returns (out, argmax)."""
    ph, pw = output_pair(output_size)
    k_total, channels = len(rois), x.shape[1]
    height, width = x.shape[2:]
    out = np.zeros((k_total, channels, ph, pw), x.dtype)
    argmax = np.full((k_total, channels, ph, pw), -1, np.int64)
    for k, roi in enumerate(np.asarray(rois, np.float64)):
        n = int(roi[0])
        for i, row in enumerate(roi_pool_bins(roi, (ph, pw), spatial_scale, height, width)):
            for j, (h0, h1, w0, w1) in enumerate(row):
                if h1 <= h0 or w1 <= w0:
                    continue
                for c in range(channels):
                    window = x[n, c, h0:h1, w0:w1]
                    flat = int(np.argmax(window))  # the first maximum in row-major order
                    out[k, c, i, j] = window.flat[flat]
                    argmax[k, c, i, j] = (h0 + flat // (w1 - w0)) * width + w0 + flat % (w1 - w0)
    return out, argmax


@numba.njit(cache=True)
def _c_round(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


@numba.njit(cache=True, parallel=True)
def _forward_kernel(x, rois, ph, pw, scale):
    n_img, channels, height, width = x.shape
    k_total = rois.shape[0]
    out = np.zeros((k_total, channels, ph, pw), x.dtype)
    argmax = np.full((k_total, channels, ph, pw), -1, np.int64)
    for k in numba.prange(k_total):
        n = int(rois[k, 0])
        xs = _c_round(rois[k, 1] * scale)
        ys = _c_round(rois[k, 2] * scale)
        xe = _c_round(rois[k, 3] * scale)
        ye = _c_round(rois[k, 4] * scale)
        bin_h = max(ye - ys + 1, 1) / ph
        bin_w = max(xe - xs + 1, 1) / pw
        for i in range(ph):
            h0 = min(max(int(math.floor(i * bin_h)) + ys, 0), height)
            h1 = min(max(int(math.ceil((i + 1) * bin_h)) + ys, 0), height)
            for j in range(pw):
                w0 = min(max(int(math.floor(j * bin_w)) + xs, 0), width)
                w1 = min(max(int(math.ceil((j + 1) * bin_w)) + xs, 0), width)
                if h1 <= h0 or w1 <= w0:
                    continue
                for c in range(channels):
                    best = -3.4028234663852886e38  # -FLT_MAX, as torchvision
                    best_index = -1
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            if x[n, c, h, w] > best:
                                best = x[n, c, h, w]
                                best_index = h * width + w
                    out[k, c, i, j] = best
                    argmax[k, c, i, j] = best_index
    return out, argmax


@numba.njit(cache=True, parallel=True)
def _backward_kernel(grad, argmax, batch, n_img, height, width):
    k_total, channels, ph, pw = grad.shape
    dx = np.zeros((n_img, channels, height * width), grad.dtype)
    for c in numba.prange(channels):  # channels write disjoint slices
        for k in range(k_total):
            n = batch[k]
            for i in range(ph):
                for j in range(pw):
                    index = argmax[k, c, i, j]
                    if index >= 0:
                        dx[n, c, index] += grad[k, c, i, j]
    return dx.reshape(n_img, channels, height, width)


def roi_pool(x, rois, output_size, spatial_scale=1.0):
    """Max-pool each RoI (K, 5) of x (N, C, H, W) into (K, C, ph, pw); returns (out, argmax)."""
    x = check_features(x)
    rois = check_rois(rois, x.shape[0], np.float64)
    ph, pw = output_pair(output_size)
    if len(rois) == 0:
        return np.zeros((0, x.shape[1], ph, pw), x.dtype), np.zeros((0, x.shape[1], ph, pw),
                                                                    np.int64)
    return _forward_kernel(np.ascontiguousarray(x), rois, ph, pw, float(spatial_scale))


def roi_pool_backward(grad_out, argmax, input_shape, rois=None):
    """Scatter each output gradient to the pixel its maximum came from. `argmax` indexes the
    RoI's own image's map, so with several images the `rois` (for their batch index) are
    needed too."""
    n_img, channels, height, width = (int(v) for v in input_shape)
    grad_out, argmax = np.asarray(grad_out), np.asarray(argmax)
    if grad_out.shape != argmax.shape or grad_out.ndim != 4 or grad_out.shape[1] != channels:
        raise ValueError(f"grad_out/argmax: expected matching (K, {channels}, ph, pw), got "
                         f"{grad_out.shape} and {argmax.shape}")
    if rois is None:
        if n_img != 1:
            raise ValueError("rois: needed to find each RoI's image when input_shape has "
                             f"{n_img} images")
        batch = np.zeros(len(grad_out), np.int64)
    else:
        batch = check_rois(rois, n_img, np.float64)[:, 0].astype(np.int64)
        if len(batch) != len(grad_out):
            raise ValueError(f"rois: expected {len(grad_out)} rows, got {len(batch)}")
    if argmax.max(initial=-1) >= height * width:
        raise ValueError(f"argmax: indices must be < H*W = {height * width}")
    return _backward_kernel(np.ascontiguousarray(grad_out), np.ascontiguousarray(argmax),
                            batch, n_img, height, width)
