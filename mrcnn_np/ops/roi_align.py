"""RoIAlign (Mask R-CNN, He et al. 2017, Sec. 3 and Fig. 3), forward and backward, with
torchvision's exact rules (REFERENCE.md Sec. 6.5).

A RoI is cut into ph x pw bins *without rounding*; in each bin a gh x gw grid of points is
sampled by bilinear interpolation of the four nearest feature-map pixels, and the samples are
averaged (or, as an option the paper also allows, max-pooled: `mode="max"`). With
`aligned=True` the RoI is shifted by half a pixel first, so that pixel centres sit at
integer + 0.5 (Detectron2's correction); `aligned=False` is what torchvision's Mask R-CNN uses.

Rules of the sampling, per RoI (x1, y1, x2, y2) in image coordinates and `spatial_scale`:

* start = x1 * scale - offset (offset 0.5 if aligned), size = x2 * scale - offset - start;
  without `aligned` the size is at least 1 pixel;
* bin size = size / pooled size; grid gh = sampling_ratio, or ceil(size_h / ph) if it is <= 0
  (adaptive, per RoI; 0 is possible only with `aligned`);
* sample (iy, ix) of bin (i, j) at y = start_y + i*bin_h + (iy + 0.5) * bin_h / gh;
* a sample with y < -1 or y > H (same for x) is dropped: it reads 0 and has no gradient;
  otherwise y is clamped at 0, and a sample at or past the last row/column uses that row or
  column alone;
* avg: bin value = sum of samples / max(gh * gw, 1) (dropped samples still count; an empty
  grid gives 0). max: the largest sample (dropped ones read 0), the first of equal ones.

The backward sends each output gradient back to the four pixels of every sample with the
same bilinear weights (divided by the count); in max mode only the largest sample's four
pixels receive it, so `roi_align_backward(..., mode="max", x=x)` needs the forward's input to
find that sample again (nothing else is stored between the two calls).

The Numba kernels do their arithmetic in the input's dtype and in torchvision's order of
operations (sample positions, weights hy*hx ..., sums, and each pixel's gradient accumulated
RoI by RoI), so float32 results are bitwise torchvision's, forward and backward.
"""

import math

import numba
import numpy as np

from ._roi_checks import check_features, check_rois, output_pair

# --------------------------------------------------------------------------------------------
# reference: the paper's Figure 3 as plain loops


def _geometry(roi, scale, ph, pw, sampling_ratio, aligned):
    """Start (x, y), bin sizes (h, w) and sampling grid (gh, gw) of one RoI."""
    offset = 0.5 if aligned else 0.0
    x1, y1 = roi[1] * scale - offset, roi[2] * scale - offset
    width, height = roi[3] * scale - offset - x1, roi[4] * scale - offset - y1
    if not aligned:
        width, height = max(width, 1.0), max(height, 1.0)
    gh = sampling_ratio if sampling_ratio > 0 else math.ceil(height / ph)
    gw = sampling_ratio if sampling_ratio > 0 else math.ceil(width / pw)
    return x1, y1, height / ph, width / pw, gh, gw


def bilinear_weights(y, x, height, width):
    """The four (row, col, weight) taps of a sample at (y, x), or [] if it is dropped."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    return [(y0, x0, hy * hx), (y0, x1, hy * lx), (y1, x0, ly * hx), (y1, x1, ly * lx)]


def sampling_points(roi, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """(y, x) of every sampling point of one RoI, shape (ph, pw, gh*gw, 2), for figures."""
    ph, pw = output_pair(output_size)
    x1, y1, bin_h, bin_w, gh, gw = _geometry(np.asarray(roi, np.float64), spatial_scale, ph,
                                             pw, sampling_ratio, aligned)
    points = np.zeros((ph, pw, gh * gw, 2))
    for i in range(ph):
        for j in range(pw):
            for iy in range(gh):
                for ix in range(gw):
                    points[i, j, iy * gw + ix] = (y1 + i * bin_h + (iy + 0.5) * bin_h / gh,
                                                  x1 + j * bin_w + (ix + 0.5) * bin_w / gw)
    return points


def _bin_taps(i, j, geometry, height, width):
    """Per sample of bin (i, j): its bilinear taps (possibly [] for a dropped sample)."""
    x1, y1, bin_h, bin_w, gh, gw = geometry
    return [bilinear_weights(y1 + i * bin_h + (iy + 0.5) * bin_h / gh,
                             x1 + j * bin_w + (ix + 0.5) * bin_w / gw, height, width)
            for iy in range(gh) for ix in range(gw)]


def roi_align_reference(x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1,
                        aligned=False, mode="avg"):
    """RoIAlign as plain loops over RoIs, bins and sampling points (slow; for reading)."""
    use_max = _check_mode(mode)
    ph, pw = output_pair(output_size)
    height, width = x.shape[2:]
    out = np.zeros((len(rois), x.shape[1], ph, pw), dtype=x.dtype)
    for k, roi in enumerate(np.asarray(rois, np.float64)):
        n = int(roi[0])
        geometry = _geometry(roi, spatial_scale, ph, pw, sampling_ratio, aligned)
        gh, gw = geometry[4:]
        for i in range(ph):
            for j in range(pw):
                # one row per sample, one column per channel; a dropped sample reads 0
                values = np.zeros((max(gh * gw, 1), x.shape[1]))
                for s, taps in enumerate(_bin_taps(i, j, geometry, height, width)):
                    for r, c, w in taps:
                        values[s] += w * x[n, :, r, c]
                if use_max:
                    out[k, :, i, j] = values.max(axis=0)
                else:
                    out[k, :, i, j] = values.sum(axis=0) / max(gh * gw, 1)
    return out


def roi_align_backward_reference(grad_out, rois, input_shape, output_size, spatial_scale=1.0,
                                 sampling_ratio=-1, aligned=False, mode="avg", x=None):
    """The gradient of roi_align_reference as plain loops: every bin's gradient goes back to
    the taps of its samples (avg), or of its largest sample, channel by channel (max)."""
    use_max = _check_mode(mode)
    ph, pw = output_pair(output_size)
    height, width = input_shape[2:]
    grad_x = np.zeros(input_shape, np.float64)
    for k, roi in enumerate(np.asarray(rois, np.float64)):
        n = int(roi[0])
        geometry = _geometry(roi, spatial_scale, ph, pw, sampling_ratio, aligned)
        count = max(geometry[4] * geometry[5], 1)
        for i in range(ph):
            for j in range(pw):
                samples = _bin_taps(i, j, geometry, height, width)
                if not use_max:
                    for taps in samples:
                        for r, c, w in taps:
                            grad_x[n, :, r, c] += w * grad_out[k, :, i, j] / count
                    continue
                for channel in range(input_shape[1]):
                    values = [sum(w * x[n, channel, r, c] for r, c, w in taps)
                              for taps in samples]
                    if values:
                        for r, c, w in samples[int(np.argmax(values))]:
                            grad_x[n, channel, r, c] += w * grad_out[k, channel, i, j]
    return grad_x.astype(grad_out.dtype)


# --------------------------------------------------------------------------------------------
# fast path
#
# Bilinear sampling is separable: a sample's row taps depend only on (bin row, grid row) and
# its column taps only on (bin column, grid column), and it is dropped if either coordinate
# is out of range. So each RoI needs ph*gh row taps and pw*gw column taps, not ph*pw*gh*gw
# sample taps; the four weights are recomputed as products where they are used, exactly as
# torchvision computes them (w1 = hy*hx, ...). The tables of all RoIs are small and are built
# with NumPy; the Numba kernels then run channel by channel over all RoIs, so that a
# channel's plane stays in cache.


def _axis_taps(start, bin_size, grid, pooled, size, stride):
    """Taps along one axis, for the RoIs' pooled*grid sample coordinates
    t = start + p*bin + (g + 0.5)*bin/grid (one RoI after another): the two pixels (low,
    high) times `stride`, -1 if t < -1 or t > size (dropped), and their weights (1 - frac,
    frac); in the dtype of `start`, with torchvision's operations (NumPy rounds each
    elementwise float32 operation exactly as C does)."""
    T = start.dtype.type
    counts = pooled * grid
    k = np.repeat(np.arange(len(start)), counts)  # RoI of each entry
    entry = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    p, g = entry // grid[k], entry % grid[k]
    t = start[k] + p.astype(T) * bin_size[k] + (g.astype(T) + T(0.5)) * bin_size[k] \
        / grid[k].astype(T)
    dropped = (t < -1) | (t > size)
    t = np.clip(t, T(0), T(size))  # below 0 -> 0; dropped ones are masked below
    low = t.astype(np.int64)
    last = low >= size - 1  # at or past the last pixel: that pixel alone, weight 1
    low[last] = size - 1
    high = np.where(last, low, low + 1)
    frac = np.where(last, T(0), t - low.astype(T))
    low_high = np.stack([low * stride, high * stride], axis=1).astype(np.int32)
    low_high[dropped] = -1
    return low_high, np.stack([T(1) - frac, frac], axis=1)


def _grid_taps(rois, height, width, ph, pw, scale, sampling_ratio, aligned):
    """Row and column taps of every RoI. Returns (grid (K, 2) = (gh, gw), first (K, 2) = each
    RoI's first row / column entry, rows (., 2) = (y_low*W, y_high*W), row_w (., 2) = (hy, ly),
    cols (., 2) = (x_low, x_high), col_w (., 2) = (hx, lx)); -1 marks a dropped coordinate."""
    T = rois.dtype.type
    offset = T(0.5) if aligned else T(0)
    pooled = np.array([ph, pw])
    start = rois[:, [2, 1]] * T(scale) - offset  # (y, x)
    size = (rois[:, [4, 3]] * T(scale) - offset) - start
    if not aligned:  # torchvision forces malformed RoIs to 1x1
        size = np.maximum(size, T(1))
    bins = size / pooled.astype(T)
    if sampling_ratio > 0:
        grid = np.full(size.shape, sampling_ratio, np.int64)
    else:
        grid = np.ceil(size / pooled.astype(T)).astype(np.int64)
    first = np.cumsum(pooled * grid, axis=0) - pooled * grid
    rows, row_w = _axis_taps(start[:, 0], bins[:, 0], grid[:, 0], ph, height, width)
    cols, col_w = _axis_taps(start[:, 1], bins[:, 1], grid[:, 1], pw, width, 1)
    return grid, first, rows, row_w, cols, col_w


@numba.njit(cache=True)
def _largest_sample(plane, rows, row_w, cols, col_w, r0, c0, gh, gw):
    """(value, row entry, column entry) of the largest of the gh x gw samples starting at row
    entry r0 and column entry c0 (the first of equal ones; dropped samples read 0)."""
    best, best_r, best_c = plane.dtype.type(0), -1, -1
    for r in range(r0, r0 + gh):
        for c in range(c0, c0 + gw):
            v = plane.dtype.type(0)
            if rows[r, 0] >= 0 and cols[c, 0] >= 0:
                hy, ly, hx, lx = row_w[r, 0], row_w[r, 1], col_w[c, 0], col_w[c, 1]
                v = (hy * hx * plane[rows[r, 0] + cols[c, 0]]
                     + hy * lx * plane[rows[r, 0] + cols[c, 1]]
                     + ly * hx * plane[rows[r, 1] + cols[c, 0]]
                     + ly * lx * plane[rows[r, 1] + cols[c, 1]])
            if best_r < 0 or v > best:
                best, best_r, best_c = v, r, c
    return best, best_r, best_c


@numba.njit(cache=True)
def _scatter_sample(target, g, rows, row_w, cols, col_w, r, c):
    """Add g * weight to each of the four pixels of sample (r, c), unless it is dropped."""
    if rows[r, 0] < 0 or cols[c, 0] < 0:
        return
    hy, ly, hx, lx = row_w[r, 0], row_w[r, 1], col_w[c, 0], col_w[c, 1]
    target[rows[r, 0] + cols[c, 0]] += g * (hy * hx)
    target[rows[r, 0] + cols[c, 1]] += g * (hy * lx)
    target[rows[r, 1] + cols[c, 0]] += g * (ly * hx)
    target[rows[r, 1] + cols[c, 1]] += g * (ly * lx)


@numba.njit(cache=True, parallel=True)
def _forward_kernel(x, batch, taps, ph, pw, use_max, n_blocks):
    """x (N, C, H*W) -> (K, C, ph*pw). A work unit is (channel, block of RoIs): units write
    disjoint outputs, and within a unit every RoI reads the same channel plane (in cache)."""
    grid, first, rows, row_w, cols, col_w = taps
    k_total, channels = batch.shape[0], x.shape[1]
    T = x.dtype.type
    out = np.zeros((k_total, channels, ph * pw), x.dtype)
    for unit in numba.prange(channels * n_blocks):
        c, block = unit // n_blocks, unit % n_blocks
        for k in range(block * k_total // n_blocks, (block + 1) * k_total // n_blocks):
            plane = x[batch[k], c]
            gh, gw = grid[k, 0], grid[k, 1]
            if gh * gw == 0:
                continue  # an empty grid (aligned RoIs only) pools to 0
            for i in range(ph):
                r0 = first[k, 0] + i * gh
                for j in range(pw):
                    c0 = first[k, 1] + j * gw
                    if use_max:
                        out[k, c, i * pw + j] = _largest_sample(plane, rows, row_w, cols,
                                                                col_w, r0, c0, gh, gw)[0]
                        continue
                    # (written out rather than a call per sample, which is several times slower)
                    total = T(0)
                    for r in range(r0, r0 + gh):
                        if rows[r, 0] < 0:
                            continue
                        ya, yb, hy, ly = rows[r, 0], rows[r, 1], row_w[r, 0], row_w[r, 1]
                        for q in range(c0, c0 + gw):
                            if cols[q, 0] < 0:
                                continue
                            xa, xb, hx, lx = cols[q, 0], cols[q, 1], col_w[q, 0], col_w[q, 1]
                            total += (hy * hx * plane[ya + xa] + hy * lx * plane[ya + xb]
                                      + ly * hx * plane[yb + xa] + ly * lx * plane[yb + xb])
                    out[k, c, i * pw + j] = total / T(gh * gw)
    return out


@numba.njit(cache=True, parallel=True)
def _backward_kernel(grad, x, batch, taps, n_img, hw, ph, pw, use_max):
    """grad (K, C, ph*pw) -> (N, C, hw = H*W); x (N, C, H*W) is read in max mode only. A unit
    is one (image, channel) plane, written by that unit alone (no race); it visits the image's
    RoIs in order, so every pixel receives its contributions in torchvision's order."""
    grid, first, rows, row_w, cols, col_w = taps
    k_total, channels = grad.shape[0], grad.shape[1]
    T = grad.dtype.type
    grad_x = np.zeros((n_img, channels, hw), grad.dtype)
    for unit in numba.prange(n_img * channels):
        n, c = unit // channels, unit % channels
        target = grad_x[n, c]
        for k in range(k_total):
            gh, gw = grid[k, 0], grid[k, 1]
            if batch[k] != n or gh * gw == 0:
                continue
            for i in range(ph):
                r0 = first[k, 0] + i * gh
                for j in range(pw):
                    c0 = first[k, 1] + j * gw
                    g = grad[k, c, i * pw + j]
                    if use_max:
                        _, r, q = _largest_sample(x[n, c], rows, row_w, cols, col_w, r0, c0,
                                                  gh, gw)
                        _scatter_sample(target, g, rows, row_w, cols, col_w, r, q)
                        continue
                    # g * w / count, in torchvision's order (not g/count * w)
                    count = T(gh * gw)
                    for r in range(r0, r0 + gh):
                        if rows[r, 0] < 0:
                            continue
                        ya, yb, hy, ly = rows[r, 0], rows[r, 1], row_w[r, 0], row_w[r, 1]
                        for q in range(c0, c0 + gw):
                            if cols[q, 0] < 0:
                                continue
                            xa, xb, hx, lx = cols[q, 0], cols[q, 1], col_w[q, 0], col_w[q, 1]
                            target[ya + xa] += g * (hy * hx) / count
                            target[ya + xb] += g * (hy * lx) / count
                            target[yb + xa] += g * (ly * hx) / count
                            target[yb + xb] += g * (ly * lx) / count
    return grad_x


# --------------------------------------------------------------------------------------------
# public functions


def _check_mode(mode):
    if mode not in ("avg", "max"):
        raise ValueError(f"mode: expected 'avg' or 'max', got {mode!r}")
    return mode == "max"


def roi_align(x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False,
              mode="avg"):
    """Pool each RoI of `rois` (K, 5: batch index, x1, y1, x2, y2) from `x` (N, C, H, W)
    into (K, C, ph, pw), in x's dtype. `mode="max"` takes the largest sample of a bin instead
    of the mean."""
    x = check_features(x)
    rois = check_rois(rois, x.shape[0], x.dtype)
    ph, pw = output_pair(output_size)
    use_max = _check_mode(mode)
    n_img, channels, height, width = x.shape
    if len(rois) == 0 or x.size == 0:
        return np.zeros((len(rois), channels, ph, pw), x.dtype)
    taps = _grid_taps(rois, height, width, ph, pw, float(spatial_scale), int(sampling_ratio),
                      bool(aligned))
    # enough work units for every thread even when there are few channels (mask targets: 1)
    blocks = min(len(rois), -(-4 * numba.get_num_threads() // channels))
    out = _forward_kernel(np.ascontiguousarray(x).reshape(n_img, channels, height * width),
                          rois[:, 0].astype(np.int64), taps, ph, pw, use_max, blocks)
    return out.reshape(len(rois), channels, ph, pw)


def roi_align_backward(grad_out, rois, input_shape, output_size, spatial_scale=1.0,
                       sampling_ratio=-1, aligned=False, mode="avg", x=None):
    """Gradient of roi_align with respect to its input: (N, C, H, W) = `input_shape`, in
    grad_out's dtype. `mode="max"` also needs the forward's input `x=` (of `input_shape`), to
    find each bin's largest sample again."""
    use_max = _check_mode(mode)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 4:
        raise ValueError(f"input_shape: expected (N, C, H, W), got {input_shape}")
    n_img, channels, height, width = input_shape
    grad_out = np.asarray(grad_out)
    if not np.issubdtype(grad_out.dtype, np.floating):
        raise TypeError(f"grad_out: expected a floating dtype, got {grad_out.dtype}")
    rois = check_rois(rois, n_img, grad_out.dtype)
    ph, pw = output_pair(output_size)
    if grad_out.shape != (len(rois), channels, ph, pw):
        raise ValueError(f"grad_out: expected shape {(len(rois), channels, ph, pw)} "
                         f"(K, C, ph, pw), got {grad_out.shape}")
    if use_max:
        if x is None or np.shape(x) != input_shape:
            raise ValueError(f"x: mode='max' needs the forward's input, of shape {input_shape},"
                             f" got {None if x is None else np.shape(x)}")
        x = np.ascontiguousarray(x, grad_out.dtype).reshape(n_img, channels, height * width)
    else:
        x = np.zeros((n_img, channels, 1), grad_out.dtype)  # not read
    if len(rois) == 0 or n_img * channels * height * width == 0:
        return np.zeros(input_shape, grad_out.dtype)
    taps = _grid_taps(rois, height, width, ph, pw, float(spatial_scale), int(sampling_ratio),
                      bool(aligned))
    grad = np.ascontiguousarray(grad_out).reshape(len(rois), channels, ph * pw)
    grad_x = _backward_kernel(grad, x, rois[:, 0].astype(np.int64), taps, n_img,
                              height * width, ph, pw, use_max)
    return grad_x.reshape(input_shape)
