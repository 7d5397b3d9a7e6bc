"""Input checks shared by the RoI pooling ops: errors that name the argument."""

import numpy as np


def output_pair(output_size):
    pair = (output_size, output_size) if np.isscalar(output_size) else tuple(output_size)
    if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
        raise ValueError(f"output_size: expected a positive int or (ph, pw), got {output_size!r}")
    return int(pair[0]), int(pair[1])


def check_features(x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a NumPy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x: expected a floating dtype, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"x: expected (N, C, H, W), got shape {x.shape}")
    return x


def check_rois(rois, num_images, dtype):
    """(K, 5) rows of (batch index, x1, y1, x2, y2): finite, integral in-range batch index,
    x2 >= x1 and y2 >= y1. Returned contiguous in `dtype`."""
    rois = np.asarray(rois)
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois: expected shape (K, 5) = (batch index, x1, y1, x2, y2), "
                         f"got {rois.shape}")
    if len(rois) == 0:
        return np.zeros((0, 5), dtype)
    if not np.isfinite(rois).all():
        raise ValueError("rois: contains NaN or infinite values")
    batch = rois[:, 0]
    if (batch != np.round(batch)).any() or batch.min() < 0 or batch.max() >= num_images:
        raise ValueError(f"rois: column 0 must hold integer image indices in [0, {num_images}),"
                         f" got values in [{batch.min()}, {batch.max()}]")
    bad = np.flatnonzero((rois[:, 3] < rois[:, 1]) | (rois[:, 4] < rois[:, 2]))
    if len(bad):
        raise ValueError(f"rois: row {int(bad[0])} {rois[bad[0]].tolist()} has x2 < x1 or y2 < y1")
    return np.ascontiguousarray(rois, dtype=dtype)
