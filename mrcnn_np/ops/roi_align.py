"""RoIAlign (Mask R-CNN, He et al. 2017, Sec. 3 and Fig. 3), forward and backward, with
torchvision's exact rules (REFERENCE.md Sec. 6.5).

A RoI is cut into ph x pw bins *without rounding*; in each bin a gh x gw grid of points is
sampled by bilinear interpolation of the four nearest feature-map pixels, and the samples are
averaged (or, as an option the paper also allows, max-pooled). With `aligned=True` the RoI is
shifted by half a pixel first, so that pixel centres sit at integer + 0.5 (Detectron2's
correction); `aligned=False` is what torchvision's Mask R-CNN uses.

Rules of the sampling, per RoI (x1, y1, x2, y2) in image coordinates and `spatial_scale`:

* start = x1 * scale - offset (offset 0.5 if aligned), size = (x2 - x1) * scale; without
  `aligned` the size is at least 1 pixel;
* bin size = size / pooled size; grid gh = sampling_ratio, or ceil(size_h / ph) if it is <= 0;
* sample (iy, ix) of bin (i, j) at y = start_y + i*bin_h + (iy + 0.5) * bin_h / gh;
* a sample with y < -1 or y > H (same for x) contributes 0; otherwise y is clamped at 0 and a
  sample at or past the last row/column uses that row/column alone;
* bin value = sum of samples / max(gh * gw, 1) (dropped samples still count).

The backward sends each output gradient back to the four pixels of every sample with the
same bilinear weights (divided by the count).
"""

import math

import numba
import numpy as np

from ._roi_checks import check_features, check_rois, output_pair


def _geometry(roi, scale, ph, pw, sampling_ratio, aligned):
    """Start, bin sizes and grid of one RoI (plain Python, for the reference)."""
    offset = 0.5 if aligned else 0.0
    x1, y1 = roi[1] * scale - offset, roi[2] * scale - offset
    width, height = roi[3] * scale - offset - x1, roi[4] * scale - offset - y1
    if not aligned:
        width, height = max(width, 1.0), max(height, 1.0)
    gh = sampling_ratio if sampling_ratio > 0 else math.ceil(height / ph)
    gw = sampling_ratio if sampling_ratio > 0 else math.ceil(width / pw)
    return x1, y1, height / ph, width / pw, gh, gw


def bilinear_weights(y, x, height, width):
    """The four (row, col, weight) taps of a sample, or [] if it falls outside the map."""
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


def roi_align_reference(x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1,
                        aligned=False):
    """RoIAlign as plain loops over RoIs, bins and sampling points (slow; for reading)."""
    ph, pw = output_pair(output_size)
    height, width = x.shape[2:]
    out = np.zeros((len(rois), x.shape[1], ph, pw), dtype=x.dtype)
    for k, roi in enumerate(np.asarray(rois, np.float64)):
        n = int(roi[0])
        x1, y1, bin_h, bin_w, gh, gw = _geometry(roi, spatial_scale, ph, pw, sampling_ratio,
                                                 aligned)
        count = max(gh * gw, 1)
        for i in range(ph):
            for j in range(pw):
                total = np.zeros(x.shape[1])
                for iy in range(gh):
                    y = y1 + i * bin_h + (iy + 0.5) * bin_h / gh
                    for ix in range(gw):
                        xx = x1 + j * bin_w + (ix + 0.5) * bin_w / gw
                        for r, c, w in bilinear_weights(y, xx, height, width):
                            total += w * x[n, :, r, c]
                out[k, :, i, j] = total / count
    return out


@numba.njit(cache=True)
def _roi_samples(roi, scale, ph, pw, sampling_ratio, aligned, height, width):
    """Per bin and sample: the 4 flat pixel indices and weights (weight 0 for dropped samples).
    Returns (index (ph*pw, S, 4), weight (ph*pw, S, 4), count, S)."""
    offset = 0.5 if aligned else 0.0
    x1 = roi[1] * scale - offset
    y1 = roi[2] * scale - offset
    roi_w = roi[3] * scale - offset - x1
    roi_h = roi[4] * scale - offset - y1
    if not aligned:
        roi_w = max(roi_w, 1.0)
        roi_h = max(roi_h, 1.0)
    bin_h = roi_h / ph
    bin_w = roi_w / pw
    gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / ph))
    gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / pw))
    gh = max(gh, 0)
    gw = max(gw, 0)
    samples = gh * gw
    index = np.zeros((ph * pw, max(samples, 1), 4), np.int64)
    weight = np.zeros((ph * pw, max(samples, 1), 4), np.float64)
    for i in range(ph):
        for j in range(pw):
            b = i * pw + j
            for iy in range(gh):
                y = y1 + i * bin_h + (iy + 0.5) * bin_h / gh
                for ix in range(gw):
                    x = x1 + j * bin_w + (ix + 0.5) * bin_w / gw
                    s = iy * gw + ix
                    if y < -1.0 or y > height or x < -1.0 or x > width:
                        continue
                    yy = max(y, 0.0)
                    xx = max(x, 0.0)
                    r0 = int(yy)
                    c0 = int(xx)
                    if r0 >= height - 1:
                        r0 = height - 1
                        r1 = r0
                        yy = float(r0)
                    else:
                        r1 = r0 + 1
                    if c0 >= width - 1:
                        c0 = width - 1
                        c1 = c0
                        xx = float(c0)
                    else:
                        c1 = c0 + 1
                    ly = yy - r0
                    lx = xx - c0
                    hy = 1.0 - ly
                    hx = 1.0 - lx
                    index[b, s, 0] = r0 * width + c0
                    index[b, s, 1] = r0 * width + c1
                    index[b, s, 2] = r1 * width + c0
                    index[b, s, 3] = r1 * width + c1
                    weight[b, s, 0] = hy * hx
                    weight[b, s, 1] = hy * lx
                    weight[b, s, 2] = ly * hx
                    weight[b, s, 3] = ly * lx
    return index, weight, max(samples, 1), samples


@numba.njit(cache=True)
def _sample(plane, index, weight, b, s):
    """Bilinear value of sample s of bin b: the four taps' weighted sum."""
    return (weight[b, s, 0] * plane[index[b, s, 0]] + weight[b, s, 1] * plane[index[b, s, 1]]
            + weight[b, s, 2] * plane[index[b, s, 2]] + weight[b, s, 3] * plane[index[b, s, 3]])


@numba.njit(cache=True)
def _largest_sample(plane, index, weight, b, samples):
    """Which sample of bin b has the largest value (the first of equal ones), for mode max."""
    best, best_s = -np.inf, 0
    for s in range(samples):
        v = _sample(plane, index, weight, b, s)
        if v > best:
            best, best_s = v, s
    return best_s


@numba.njit(cache=True, parallel=True)
def _forward_kernel(x, rois, ph, pw, scale, sampling_ratio, aligned, use_max):
    n_img, channels, height, width = x.shape
    out = np.zeros((rois.shape[0], channels, ph, pw), x.dtype)
    for k in numba.prange(rois.shape[0]):
        n = int(rois[k, 0])
        index, weight, count, samples = _roi_samples(rois[k], scale, ph, pw, sampling_ratio,
                                                     aligned, height, width)
        for c in range(channels):
            plane = x[n, c].ravel()
            for b in range(ph * pw):
                if use_max:
                    best = _largest_sample(plane, index, weight, b, samples)
                    out[k, c, b // pw, b % pw] = _sample(plane, index, weight, b, best) \
                        if samples > 0 else 0.0
                else:
                    total = 0.0
                    for s in range(samples):
                        total += _sample(plane, index, weight, b, s)
                    out[k, c, b // pw, b % pw] = total / count
    return out


@numba.njit(cache=True, parallel=True)
def _backward_kernel(grad, x, rois, n_img, height, width, scale, sampling_ratio, aligned,
                     use_max, n_chunks):
    k_total, channels, ph, pw = grad.shape
    # one accumulation buffer per chunk of RoIs, so the parallel scatter is race-free
    partial = np.zeros((n_chunks, n_img, channels, height * width), grad.dtype)
    for t in numba.prange(n_chunks):
        for k in range(t, k_total, n_chunks):
            n = int(rois[k, 0])
            index, weight, count, samples = _roi_samples(rois[k], scale, ph, pw,
                                                         sampling_ratio, aligned, height, width)
            for c in range(channels):
                for b in range(ph * pw):
                    g = grad[k, c, b // pw, b % pw]
                    if g == 0 or samples == 0:
                        continue
                    if use_max:
                        best_s = _largest_sample(x[n, c].ravel(), index, weight, b, samples)
                        for q in range(4):
                            partial[t, n, c, index[b, best_s, q]] += g * weight[b, best_s, q]
                    else:
                        for s in range(samples):
                            for q in range(4):
                                partial[t, n, c, index[b, s, q]] += \
                                    g * weight[b, s, q] / count
    out = partial[0].copy()
    for t in range(1, n_chunks):
        out += partial[t]
    return out.reshape(n_img, channels, height, width)


def _check_mode(mode):
    if mode not in ("avg", "max"):
        raise ValueError(f"mode: expected 'avg' or 'max', got {mode!r}")
    return mode == "max"


def roi_align(x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False,
              mode="avg"):
    """Pool each RoI of `rois` (K, 5: batch index, x1, y1, x2, y2) from `x` (N, C, H, W)
    into (K, C, ph, pw). `mode="max"` takes the largest sample of a bin instead of the mean."""
    x = check_features(x)
    rois = check_rois(rois, x.shape[0], x.dtype)
    ph, pw = output_pair(output_size)
    use_max = _check_mode(mode)
    if len(rois) == 0:
        return np.zeros((0, x.shape[1], ph, pw), x.dtype)
    return _forward_kernel(np.ascontiguousarray(x), rois, ph, pw, float(spatial_scale),
                           int(sampling_ratio), bool(aligned), use_max)


def roi_align_backward(grad_out, rois, input_shape, output_size, spatial_scale=1.0,
                       sampling_ratio=-1, aligned=False, mode="avg", x=None):
    """Gradient of roi_align with respect to its input, (N, C, H, W). The max mode needs the
    forward's input `x=` to find each bin's largest sample again."""
    n_img, channels, height, width = (int(v) for v in input_shape)
    use_max = _check_mode(mode)
    grad_out = np.asarray(grad_out)
    if not np.issubdtype(grad_out.dtype, np.floating):
        raise TypeError(f"grad_out: expected a floating dtype, got {grad_out.dtype}")
    rois = check_rois(rois, n_img, grad_out.dtype)
    ph, pw = output_pair(output_size)
    if grad_out.shape != (len(rois), channels, ph, pw):
        raise ValueError(f"grad_out: expected shape {(len(rois), channels, ph, pw)}, "
                         f"got {grad_out.shape}")
    if use_max:
        if x is None or tuple(x.shape) != tuple(input_shape):
            raise ValueError("x: mode='max' needs the forward's input x of shape input_shape")
        x = np.ascontiguousarray(x, dtype=grad_out.dtype)
    else:
        x = np.zeros((1, 1, 1, 1), grad_out.dtype)
    if len(rois) == 0:
        return np.zeros(tuple(input_shape), grad_out.dtype)
    chunks = max(1, min(numba.get_num_threads(), len(rois)))
    return _backward_kernel(np.ascontiguousarray(grad_out), x, rois, n_img, height, width,
                            float(spatial_scale), int(sampling_ratio), bool(aligned),
                            use_max, chunks)
