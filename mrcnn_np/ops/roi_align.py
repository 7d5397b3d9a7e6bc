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

The Numba kernels do their arithmetic in the input's dtype, in torchvision's order of
operations (the four taps of every sample computed once per RoI and reused for all channels,
as torchvision's `pre_calc`): float32 results are bitwise torchvision's, forward and backward.
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


def _bin_taps(roi, i, j, geometry, height, width):
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
                for s, taps in enumerate(_bin_taps(roi, i, j, geometry, height, width)):
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
                samples = _bin_taps(roi, i, j, geometry, height, width)
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
# Numba kernels


@numba.njit(cache=True)
def _roi_taps(roi, scale, ph, pw, sampling_ratio, aligned, height, width):
    """The four taps of every sample of one RoI, in the RoI's dtype and torchvision's order of
    operations. Returns (index (ph*pw*S, 4) flat pixel indices, -1 for a dropped sample;
    weight (ph*pw*S, 4); S = samples per bin; count = max(S, 1))."""
    T = roi.dtype.type
    offset = T(0.5) if aligned else T(0.0)
    start_w = roi[1] * T(scale) - offset
    start_h = roi[2] * T(scale) - offset
    roi_w = (roi[3] * T(scale) - offset) - start_w
    roi_h = (roi[4] * T(scale) - offset) - start_h
    if not aligned:
        roi_w = max(roi_w, T(1))
        roi_h = max(roi_h, T(1))
    bin_h = roi_h / T(ph)
    bin_w = roi_w / T(pw)
    gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / T(ph)))
    gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / T(pw)))
    samples = gh * gw
    index = np.full((ph * pw * samples, 4), -1, np.int64)
    weight = np.zeros((ph * pw * samples, 4), roi.dtype)
    row = 0
    for i in range(ph):
        for j in range(pw):
            for iy in range(gh):
                y = start_h + T(i) * bin_h + (T(iy) + T(0.5)) * bin_h / T(gh)
                for ix in range(gw):
                    x = start_w + T(j) * bin_w + (T(ix) + T(0.5)) * bin_w / T(gw)
                    if not (y < -1.0 or y > height or x < -1.0 or x > width):
                        _fill_taps(y, x, height, width, index[row], weight[row])
                    row += 1
    return index, weight, samples, T(max(samples, 1))


@numba.njit(cache=True)
def _fill_taps(y, x, height, width, index, weight):
    """Bilinear taps of one sample inside the map (see `bilinear_weights`)."""
    T = weight.dtype.type
    y = max(y, T(0))
    x = max(x, T(0))
    y0 = int(y)
    x0 = int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = T(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = T(x0)
    else:
        x1 = x0 + 1
    ly = y - T(y0)
    lx = x - T(x0)
    hy = T(1) - ly
    hx = T(1) - lx
    index[0], index[1] = y0 * width + x0, y0 * width + x1
    index[2], index[3] = y1 * width + x0, y1 * width + x1
    weight[0], weight[1], weight[2], weight[3] = hy * hx, hy * lx, ly * hx, ly * lx


@numba.njit(cache=True)
def _sample_value(plane, index, weight, s):
    """Bilinear value of sample s on a flat (H*W) plane; a dropped sample reads 0."""
    if index[s, 0] < 0:
        return plane.dtype.type(0)
    return (weight[s, 0] * plane[index[s, 0]] + weight[s, 1] * plane[index[s, 1]]
            + weight[s, 2] * plane[index[s, 2]] + weight[s, 3] * plane[index[s, 3]])


@numba.njit(cache=True)
def _largest_sample(plane, index, weight, first, samples):
    """Row of the largest of samples first .. first+samples-1 (the first of equal ones)."""
    best, best_s = _sample_value(plane, index, weight, first), first
    for s in range(first + 1, first + samples):
        v = _sample_value(plane, index, weight, s)
        if v > best:
            best, best_s = v, s
    return best_s


@numba.njit(cache=True, parallel=True)
def _forward_kernel(x, rois, height, width, ph, pw, scale, sampling_ratio, aligned, use_max):
    """x (N, C, H*W) -> (K, C, ph*pw); parallel over RoIs, which write disjoint outputs."""
    channels = x.shape[1]
    out = np.zeros((rois.shape[0], channels, ph * pw), x.dtype)
    for k in numba.prange(rois.shape[0]):
        n = int(rois[k, 0])
        index, weight, samples, count = _roi_taps(rois[k], scale, ph, pw, sampling_ratio,
                                                  aligned, height, width)
        if samples == 0:
            continue  # an empty grid (aligned RoIs only) pools to 0
        for c in range(channels):
            plane = x[n, c]
            for b in range(ph * pw):
                first = b * samples
                if use_max:
                    best = _largest_sample(plane, index, weight, first, samples)
                    out[k, c, b] = _sample_value(plane, index, weight, best)
                else:
                    total = x.dtype.type(0)
                    for s in range(first, first + samples):
                        total += _sample_value(plane, index, weight, s)
                    out[k, c, b] = total / count
    return out


@numba.njit(cache=True, parallel=True)
def _backward_kernel(grad, x, rois, n_img, height, width, ph, pw, scale, sampling_ratio,
                     aligned, use_max, n_chunks):
    """grad (K, C, ph*pw) -> (N, C, H*W). The (image, channel) planes are split into
    `n_chunks` contiguous ranges, one per thread: a thread scatters only into its own planes,
    so there is no race, and it visits the RoIs in order, so every pixel receives its
    contributions in torchvision's order (bitwise the same sums)."""
    channels = grad.shape[1]
    grad_x = np.zeros((n_img, channels, height * width), grad.dtype)
    planes = n_img * channels
    for t in numba.prange(n_chunks):
        lo, hi = t * planes // n_chunks, (t + 1) * planes // n_chunks
        for k in range(rois.shape[0]):
            n = int(rois[k, 0])
            c_lo, c_hi = max(lo - n * channels, 0), min(hi - n * channels, channels)
            if c_lo >= c_hi:
                continue  # this RoI's image has no plane in this chunk
            index, weight, samples, count = _roi_taps(rois[k], scale, ph, pw, sampling_ratio,
                                                      aligned, height, width)
            if samples == 0:
                continue
            for c in range(c_lo, c_hi):
                target = grad_x[n, c]
                for b in range(ph * pw):
                    g = grad[k, c, b]
                    first = b * samples
                    if use_max:
                        s = _largest_sample(x[n, c], index, weight, first, samples)
                        if index[s, 0] >= 0:
                            for q in range(4):
                                target[index[s, q]] += g * weight[s, q]
                        continue
                    for s in range(first, first + samples):
                        if index[s, 0] >= 0:
                            for q in range(4):
                                target[index[s, q]] += g * weight[s, q] / count
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
    flat = np.ascontiguousarray(x).reshape(n_img, channels, height * width)
    out = _forward_kernel(flat, rois, height, width, ph, pw, float(spatial_scale),
                          int(sampling_ratio), bool(aligned), use_max)
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
        x = np.zeros((1, 1, 1), grad_out.dtype)  # unused
    if len(rois) == 0 or n_img * channels * height * width == 0:
        return np.zeros(input_shape, grad_out.dtype)
    grad = np.ascontiguousarray(grad_out).reshape(len(rois), channels, ph * pw)
    chunks = min(numba.get_num_threads(), n_img * channels)
    grad_x = _backward_kernel(grad, x, rois, n_img, height, width, ph, pw,
                              float(spatial_scale), int(sampling_ratio), bool(aligned),
                              use_max, chunks)
    return grad_x.reshape(input_shape)
