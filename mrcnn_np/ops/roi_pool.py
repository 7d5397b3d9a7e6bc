"""RoIPool (Fast R-CNN, Girshick 2015, Sec. 2.1), forward and backward, with torchvision's
rules (REFERENCE.md Sec. 6.6). Mask R-CNN replaces it with RoIAlign; it is here so the two can
be compared on real numbers (and `MultiScaleRoIAlign(pooler="pool")` runs the model with it).

The RoI is *quantised twice*: its corners are rounded to whole feature-map pixels (C's round,
half away from zero) and made inclusive (+1: x1..x2 covers x2 - x1 + 1 pixels), and each bin
spans whole pixels from floor(i * bin_h) to ceil((i + 1) * bin_h), clipped to the map. Each
output is the maximum over its bin, the first one in row-major order if several are equal;
`argmax` records where (the flat index h*W + w in the RoI's own image's map; -1 for an empty
bin, which outputs 0). The backward adds each output gradient to the pixel its maximum came
from; `argmax` holds no image index, so with several images it needs `rois=` as well.

The arithmetic (products with spatial_scale, bin sizes) is done in the input's dtype, as in
torchvision, so float32 bins are exactly torchvision's.
"""

import math

import numba
import numpy as np

from ._roi_checks import check_features, check_rois, output_pair

FLT_MAX = 3.4028234663852886e38  # torchvision starts every bin's max at -FLT_MAX

# --------------------------------------------------------------------------------------------
# reference


def c_round(v):
    """C's round(): halves go away from zero (np.round would go to even)."""
    v = float(v)  # v + 0.5 is exact in float64, not in float32
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def roi_pool_bins(roi, output_size, spatial_scale, height, width):
    """The (hstart, hend, wstart, wend) pixel ranges of every bin of one RoI (ph, pw, 4),
    computed in the RoI's floating dtype (float32 for a float32 RoI, as torchvision)."""
    ph, pw = output_pair(output_size)
    roi = np.asarray(roi)
    T = roi.dtype.type if np.issubdtype(roi.dtype, np.floating) else np.float64
    x1, y1, x2, y2 = (c_round(T(v) * T(spatial_scale)) for v in roi[1:5])
    bin_h = T(max(y2 - y1 + 1, 1)) / T(ph)
    bin_w = T(max(x2 - x1 + 1, 1)) / T(pw)
    bins = np.zeros((ph, pw, 4), np.int64)
    for i in range(ph):
        for j in range(pw):
            bins[i, j] = (min(max(math.floor(T(i) * bin_h) + y1, 0), height),
                          min(max(math.ceil(T(i + 1) * bin_h) + y1, 0), height),
                          min(max(math.floor(T(j) * bin_w) + x1, 0), width),
                          min(max(math.ceil(T(j + 1) * bin_w) + x1, 0), width))
    return bins


def roi_pool_reference(x, rois, output_size, spatial_scale=1.0):
    """RoIPool as loops over RoIs and bins (slow; for reading). Returns (out, argmax)."""
    ph, pw = output_pair(output_size)
    k_total, channels = len(rois), x.shape[1]
    height, width = x.shape[2:]
    out = np.zeros((k_total, channels, ph, pw), x.dtype)
    argmax = np.full((k_total, channels, ph, pw), -1, np.int64)
    for k, roi in enumerate(np.asarray(rois, x.dtype)):
        n = int(roi[0])
        for i, row in enumerate(roi_pool_bins(roi, (ph, pw), spatial_scale, height, width)):
            for j, (h0, h1, w0, w1) in enumerate(row):
                if h1 <= h0 or w1 <= w0:
                    continue  # empty bin: 0, argmax -1
                for c in range(channels):
                    window = x[n, c, h0:h1, w0:w1]
                    flat = int(np.argmax(window))  # the first maximum in row-major order
                    out[k, c, i, j] = window.flat[flat]
                    argmax[k, c, i, j] = (h0 + flat // (w1 - w0)) * width + w0 + flat % (w1 - w0)
    return out, argmax


def roi_pool_backward_reference(grad_out, argmax, input_shape, batch):
    """Each output gradient added to the pixel its maximum came from (batch: image per RoI)."""
    grad_x = np.zeros(input_shape, grad_out.dtype)
    planes = grad_x.reshape(input_shape[0], input_shape[1], -1)
    for k, c, i, j in np.ndindex(*grad_out.shape):
        if argmax[k, c, i, j] >= 0:
            planes[batch[k], c, argmax[k, c, i, j]] += grad_out[k, c, i, j]
    return grad_x


# --------------------------------------------------------------------------------------------
# fast path: the bin edges of all RoIs at once (NumPy; they are separable, a bin's rows depend
# on its row only), then Numba kernels that run channel by channel over all RoIs, so that a
# channel's plane stays in cache (as for RoIAlign)


def _bin_edges(rois, ph, pw, scale, height, width):
    """(K, ph, 2) row ranges [hstart, hend) and (K, pw, 2) column ranges of every bin: the
    vectorised `roi_pool_bins`, in the RoIs' dtype (NumPy rounds each elementwise float32
    operation exactly as C does)."""
    T = rois.dtype.type
    corners = (rois[:, 1:5] * T(scale)).astype(np.float64)  # + 0.5 is exact in float64
    x1, y1, x2, y2 = np.where(corners >= 0, np.floor(corners + 0.5),
                              -np.floor(-corners + 0.5)).astype(np.int64).T  # C round

    def ranges(lo, hi, pooled, size):
        bin_size = np.maximum(hi - lo + 1, 1).astype(T) / T(pooled)
        steps = np.arange(pooled + 1).astype(T)
        start = np.floor(steps[:-1] * bin_size[:, None]).astype(np.int64) + lo[:, None]
        end = np.ceil(steps[1:] * bin_size[:, None]).astype(np.int64) + lo[:, None]
        return np.stack([np.clip(start, 0, size), np.clip(end, 0, size)], axis=-1)

    return ranges(y1, y2, ph, height), ranges(x1, x2, pw, width)


@numba.njit(cache=True, parallel=True)
def _forward_kernel(x, batch, rows, cols, width, n_blocks):
    """x (N, C, H*W) -> (out, argmax) (K, C, ph, pw). A work unit is (channel, block of RoIs),
    writing disjoint outputs."""
    k_total, channels = batch.shape[0], x.shape[1]
    ph, pw = rows.shape[1], cols.shape[1]
    out = np.zeros((k_total, channels, ph, pw), x.dtype)
    argmax = np.full((k_total, channels, ph, pw), -1, np.int64)
    for unit in numba.prange(channels * n_blocks):
        c, block = unit // n_blocks, unit % n_blocks
        for k in range(block * k_total // n_blocks, (block + 1) * k_total // n_blocks):
            plane = x[batch[k], c]
            for i in range(ph):
                for j in range(pw):
                    if rows[k, i, 1] <= rows[k, i, 0] or cols[k, j, 1] <= cols[k, j, 0]:
                        continue  # empty bin: 0, argmax -1
                    best, best_index = x.dtype.type(-FLT_MAX), -1
                    for h in range(rows[k, i, 0], rows[k, i, 1]):
                        for w in range(cols[k, j, 0], cols[k, j, 1]):
                            if plane[h * width + w] > best:
                                best, best_index = plane[h * width + w], h * width + w
                    out[k, c, i, j] = best
                    argmax[k, c, i, j] = best_index
    return out, argmax


@numba.njit(cache=True, parallel=True)
def _backward_kernel(grad, argmax, batch, n_img, hw):
    """grad, argmax (K, C, ph, pw) -> (N, C, hw). A work unit is one (image, channel) plane,
    written by that unit alone; it visits the image's RoIs in order (torchvision's order)."""
    k_total, channels, ph, pw = grad.shape
    grad_x = np.zeros((n_img, channels, hw), grad.dtype)
    for unit in numba.prange(n_img * channels):
        n, c = unit // channels, unit % channels
        for k in range(k_total):
            if batch[k] != n:
                continue
            for i in range(ph):
                for j in range(pw):
                    if argmax[k, c, i, j] >= 0:
                        grad_x[n, c, argmax[k, c, i, j]] += grad[k, c, i, j]
    return grad_x


# --------------------------------------------------------------------------------------------
# public functions


def roi_pool(x, rois, output_size, spatial_scale=1.0):
    """Max-pool each RoI (K, 5: batch index, x1, y1, x2, y2) of x (N, C, H, W) into
    (K, C, ph, pw). Returns (out in x's dtype, argmax int64: flat h*W + w, -1 if empty)."""
    x = check_features(x)
    rois = check_rois(rois, x.shape[0], x.dtype)
    ph, pw = output_pair(output_size)
    n_img, channels, height, width = x.shape
    if len(rois) == 0 or x.size == 0:
        shape = (len(rois), channels, ph, pw)
        return np.zeros(shape, x.dtype), np.full(shape, -1, np.int64)
    rows, cols = _bin_edges(rois, ph, pw, float(spatial_scale), height, width)
    # enough work units for every thread even when there are few channels
    blocks = min(len(rois), -(-4 * numba.get_num_threads() // channels))
    return _forward_kernel(np.ascontiguousarray(x).reshape(n_img, channels, height * width),
                           rois[:, 0].astype(np.int64), rows, cols, width, blocks)


def roi_pool_backward(grad_out, argmax, input_shape, rois=None):
    """Gradient of roi_pool with respect to x (N, C, H, W) = `input_shape`: each output
    gradient goes to the pixel its maximum came from. `argmax` indexes the RoI's own image,
    so when N > 1 the forward's `rois` are needed too (for their batch index)."""
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 4:
        raise ValueError(f"input_shape: expected (N, C, H, W), got {input_shape}")
    n_img, channels, height, width = input_shape
    grad_out, argmax = np.asarray(grad_out), np.asarray(argmax)
    if not np.issubdtype(grad_out.dtype, np.floating):
        raise TypeError(f"grad_out: expected a floating dtype, got {grad_out.dtype}")
    if not np.issubdtype(argmax.dtype, np.integer):
        raise TypeError(f"argmax: expected an integer dtype, got {argmax.dtype}")
    if grad_out.ndim != 4 or grad_out.shape[1] != channels or argmax.shape != grad_out.shape:
        raise ValueError(f"grad_out, argmax: expected the same shape (K, {channels}, ph, pw), "
                         f"got {grad_out.shape} and {argmax.shape}")
    if argmax.size and (argmax.min() < -1 or argmax.max() >= height * width):
        raise ValueError(f"argmax: expected flat indices in [-1, H*W = {height * width}), "
                         f"got values in [{argmax.min()}, {argmax.max()}]")
    if rois is None:
        if n_img != 1:
            raise ValueError(f"rois: needed to find each RoI's image when input_shape has "
                             f"{n_img} images")
        batch = np.zeros(len(grad_out), np.int64)
    else:
        batch = check_rois(rois, n_img, np.float64)[:, 0].astype(np.int64)
        if len(batch) != len(grad_out):
            raise ValueError(f"rois: expected {len(grad_out)} rows (one per RoI of grad_out), "
                             f"got {len(batch)}")
    if len(grad_out) == 0 or n_img * channels * height * width == 0:
        return np.zeros(input_shape, grad_out.dtype)
    grad_x = _backward_kernel(np.ascontiguousarray(grad_out),
                              np.ascontiguousarray(argmax, np.int64), batch, n_img,
                              height * width)
    return grad_x.reshape(input_shape)
