"""Detection-to-ground-truth overlaps as pycocotools computes them (COCOEVAL.md §1.9, §2.4).

* Box IoU on [x, y, w, h] floats with no +1: touching boxes give 0. For a *crowd* gt the
  union is the detection's own area, so a detection inside a crowd region scores 1.
* Mask IoU on RLEs, straight from the runs (no decoding): first the box IoU of the tight
  pixel boxes (`rle_to_bbox`) as an exact prefilter, then intersection and union by walking
  both run lists. Masks of different sizes whose boxes overlap give -1.
* Object keypoint similarity (OKS), evaluated in numpy with pycocotools' operation order so
  that `exp` and the sum round identically.

All matrices are (detections, ground truths). Empty inputs give an empty (D, G) matrix
(pycocotools returns `[]`).
"""

import numba
import numpy as np

from .rle import check_batch, rle_decode, rle_to_bbox, rles_to_batch

__all__ = [
    "bbox_iou_xywh",
    "bbox_iou_xywh_reference",
    "group_iou",
    "oks_matrix",
    "rle_iou",
    "rle_iou_reference",
]

_EPS = np.spacing(1.0)


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


def _box_iou_reference(d, g, crowd):
    iw = min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0])
    if iw <= 0:
        return 0.0
    ih = min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1])
    if ih <= 0:
        return 0.0
    inter = iw * ih
    union = d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - inter
    return inter / union


def bbox_iou_xywh_reference(dt, gt, iscrowd):
    """Box IoU matrix, one pair at a time (pycocotools `bbIou`)."""
    return np.array(
        [[_box_iou_reference(d, g, c) for g, c in zip(gt, iscrowd, strict=True)] for d in dt]
    ).reshape(len(dt), len(gt))


def rle_iou_reference(dt_rles, gt_rles, iscrowd):
    """Mask IoU matrix by decoding both masks and counting pixels (pycocotools `rleIou`)."""
    out = np.zeros((len(dt_rles), len(gt_rles)))
    for i, d in enumerate(dt_rles):
        for j, (g, crowd) in enumerate(zip(gt_rles, iscrowd, strict=True)):
            if _box_iou_reference(rle_to_bbox(d), rle_to_bbox(g), crowd) <= 0:
                continue  # tight pixel boxes apart: no common pixel
            if list(d["size"]) != list(g["size"]):
                out[i, j] = -1.0
                continue
            dm, gm = rle_decode(d).astype(bool), rle_decode(g).astype(bool)
            inter = int(np.count_nonzero(dm & gm))
            union = int(dm.sum()) if crowd else int(np.count_nonzero(dm | gm))
            out[i, j] = inter / union if inter else 0.0
    return out


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _box_iou(d, g, crowd):
    iw = min(d[2] + d[0], g[2] + g[0]) - max(d[0], g[0])
    if iw <= 0:
        return 0.0
    ih = min(d[3] + d[1], g[3] + g[1]) - max(d[1], g[1])
    if ih <= 0:
        return 0.0
    inter = iw * ih
    dt_area = d[2] * d[3]
    union = dt_area if crowd else dt_area + g[2] * g[3] - inter
    return inter / union


@numba.njit(cache=True)
def _runs_inter_union(a, b):
    """Intersection and union pixel counts of two RLEs of one size, walking both run lists."""
    ca, cb = a[0], b[0]
    ia, ib = 1, 1
    va, vb = False, False
    inter, union = 0, 0
    remaining = 1
    while remaining > 0:
        c = min(ca, cb)
        if va or vb:
            union += c
            if va and vb:
                inter += c
        ca -= c
        if ca == 0 and ia < a.shape[0]:
            ca = a[ia]
            ia += 1
            va = not va
        cb -= c
        if cb == 0 and ib < b.shape[0]:
            cb = b[ib]
            ib += 1
            vb = not vb
        remaining = ca + cb
    return inter, union


# Serial on purpose, like the matching kernels: on 500 images x 100 detections all eval kernels
# together take ~50 ms (parsing the result dicts dominates), while parallel=True cost ~4 s more
# cold compile time and thread wake-ups that dominate small evaluations.
@numba.njit(cache=True)
def _group_iou_kernel(
    dt_box,
    gt_box,
    gt_crowd,
    dt_counts,
    dt_ptr,
    dt_size,
    dt_area,
    gt_counts,
    gt_ptr,
    gt_size,
    grp_dt,
    grp_dt_ptr,
    grp_gt,
    grp_gt_ptr,
    out_ptr,
    use_masks,
):
    out = np.zeros(out_ptr[-1])
    for g in range(grp_dt_ptr.shape[0] - 1):
        n_gt = grp_gt_ptr[g + 1] - grp_gt_ptr[g]
        for a in range(grp_dt_ptr[g + 1] - grp_dt_ptr[g]):
            i = grp_dt[grp_dt_ptr[g] + a]
            for b in range(n_gt):
                j = grp_gt[grp_gt_ptr[g] + b]
                o = _box_iou(dt_box[i], gt_box[j], gt_crowd[j])
                if use_masks and o > 0:
                    if dt_size[i, 0] != gt_size[j, 0] or dt_size[i, 1] != gt_size[j, 1]:
                        o = -1.0
                    else:
                        inter, union = _runs_inter_union(
                            dt_counts[dt_ptr[i] : dt_ptr[i + 1]],
                            gt_counts[gt_ptr[j] : gt_ptr[j + 1]],
                        )
                        if inter == 0:
                            o = 0.0
                        else:
                            o = inter / (dt_area[i] if gt_crowd[j] else union)
                out[out_ptr[g] + a * n_gt + b] = o
    return out


_NO_RUNS = (np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros((0, 2), np.int64))


def group_iou(
    dt_box,
    gt_box,
    gt_crowd,
    grp_dt,
    grp_dt_ptr,
    grp_gt,
    grp_gt_ptr,
    dt_rles=None,
    gt_rles=None,
    dt_area=None,
):
    """IoU blocks of many (image, category) groups in one kernel call.

    Group g pairs detections `grp_dt[grp_dt_ptr[g]:grp_dt_ptr[g+1]]` (rows, in that order)
    with gts `grp_gt[grp_gt_ptr[g]:...]` (columns). Returns (flat values, block offsets);
    block g is a row-major (D_g, G_g) matrix. With `dt_rles`/`gt_rles` (RleBatch) it is mask
    IoU and `dt_box`/`gt_box` must be their tight boxes; `dt_area` is then the mask area.
    """
    n_dt = np.diff(grp_dt_ptr)
    n_gt = np.diff(grp_gt_ptr)
    out_ptr = np.zeros(n_dt.shape[0] + 1, np.int64)
    np.cumsum(n_dt * n_gt, out=out_ptr[1:])
    use_masks = dt_rles is not None
    dt_runs = (dt_rles.counts, dt_rles.ptr, dt_rles.size) if use_masks else _NO_RUNS
    gt_runs = (gt_rles.counts, gt_rles.ptr, gt_rles.size) if use_masks else _NO_RUNS
    area = np.asarray(dt_area, np.int64) if use_masks else np.zeros(0, np.int64)
    out = _group_iou_kernel(
        np.ascontiguousarray(dt_box, np.float64),
        np.ascontiguousarray(gt_box, np.float64),
        np.asarray(gt_crowd, np.bool_),
        *dt_runs,
        area,
        *gt_runs,
        np.asarray(grp_dt, np.int64),
        np.asarray(grp_dt_ptr, np.int64),
        np.asarray(grp_gt, np.int64),
        np.asarray(grp_gt_ptr, np.int64),
        out_ptr,
        use_masks,
    )
    return out, out_ptr


def _crowd_flags(iscrowd, n_gt):
    crowd = np.asarray(iscrowd).reshape(-1)
    if crowd.shape[0] != n_gt:
        raise ValueError(f"iscrowd: expected {n_gt} flags (one per gt), got {crowd.shape[0]}")
    return crowd.astype(np.int64) != 0


def _single_group(n_dt, n_gt):
    return (np.arange(n_dt), np.array([0, n_dt]), np.arange(n_gt), np.array([0, n_gt]))


def _boxes(boxes, name):
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name}: expected shape (n, 4) boxes [x, y, w, h], got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: box values must be finite")
    return arr


def bbox_iou_xywh(dt, gt, iscrowd):
    """(len dt, len gt) IoU of [x, y, w, h] boxes; a crowd gt divides by the dt's area."""
    dt, gt = _boxes(dt, "dt"), _boxes(gt, "gt")
    crowd = _crowd_flags(iscrowd, gt.shape[0])
    out, _ = group_iou(dt, gt, crowd, *_single_group(dt.shape[0], gt.shape[0]))
    return out.reshape(dt.shape[0], gt.shape[0])


def rle_iou(dt_rles, gt_rles, iscrowd):
    """(len dt, len gt) mask IoU of RLE lists; -1 where sizes differ but the boxes overlap."""
    dt, gt = rles_to_batch(dt_rles, "dt_rles"), rles_to_batch(gt_rles, "gt_rles")
    dt_area, dt_box = check_batch(dt, "dt_rles")
    _, gt_box = check_batch(gt, "gt_rles")
    crowd = _crowd_flags(iscrowd, len(gt))
    out, _ = group_iou(dt_box, gt_box, crowd, *_single_group(len(dt), len(gt)), dt, gt, dt_area)
    return out.reshape(len(dt), len(gt))


def oks_matrix(dt_keypoints, gt_keypoints, gt_bbox, gt_area, sigmas):
    """(D, G) object keypoint similarity, pycocotools `computeOks` bit for bit.

    e_i = (dx_i^2 + dy_i^2) / (2 sigma_i)^2 / (area + eps) / 2 and OKS = mean_i exp(-e_i) over
    the gt's labelled keypoints (v > 0). A gt with none labelled measures each keypoint's
    distance to its box enlarged by one box size on every side, averaged over all keypoints.
    """
    d = np.asarray(dt_keypoints, np.float64).reshape(len(dt_keypoints), -1)
    out = np.zeros((d.shape[0], len(gt_keypoints)))
    if out.size == 0:
        return out
    variances = (np.asarray(sigmas) * 2) ** 2
    xd, yd = d[:, 0::3], d[:, 1::3]
    for j, (g, bb, area) in enumerate(zip(gt_keypoints, gt_bbox, gt_area, strict=True)):
        g = np.asarray(g, np.float64)
        xg, yg, vg = g[0::3], g[1::3], g[2::3]
        visible = vg > 0
        if visible.any():
            dx, dy = xd - xg, yd - yg
        else:
            x0, x1 = bb[0] - bb[2], bb[0] + bb[2] * 2
            y0, y1 = bb[1] - bb[3], bb[1] + bb[3] * 2
            dx = np.maximum(0, x0 - xd) + np.maximum(0, xd - x1)
            dy = np.maximum(0, y0 - yd) + np.maximum(0, yd - y1)
        e = (dx**2 + dy**2) / variances / (area + _EPS) / 2
        if visible.any():
            e = np.ascontiguousarray(e[:, visible])
        out[:, j] = np.sum(np.exp(-e), axis=1) / e.shape[1]
    return out
