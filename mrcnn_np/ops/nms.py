"""Greedy non-maximum suppression, torchvision semantics (REFERENCE.md §6.2, §6.3).

NMS as used by Faster R-CNN (Ren et al., 2015, §3.3) for proposals and by the detection
head per class: walk the boxes from the highest score down; keep a box unless a box kept
before it overlaps it with IoU strictly greater than the threshold.

Exact rules (those of torchvision's CPU kernel):
* order: scores sorted descending with a *stable* sort, so among equal scores the lower index
  comes first;
* suppression when `inter / (area_i + area_j - inter) > iou_threshold` (strict: an IoU exactly
  equal to the threshold is kept), computed in the boxes' float precision, no +1;
* the result is the kept indices (int64) in that order.
"""

import numba
import numpy as np

from .boxes import check_boxes, check_float_array

__all__ = ["batched_nms", "nms", "nms_reference"]


def _check_nms_args(boxes, scores, iou_threshold):
    boxes = check_boxes("boxes", boxes)
    scores = check_float_array("scores", scores)
    if scores.ndim != 1 or len(scores) != len(boxes):
        raise ValueError(
            f"scores: expected shape ({len(boxes)},) to match boxes {boxes.shape}, "
            f"got {scores.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError("scores: contain NaN")
    if np.isnan(iou_threshold):
        raise ValueError("iou_threshold: expected a number, got NaN")
    return boxes, scores, float(iou_threshold)


def _descending_order(scores):
    """Indices sorting scores from high to low; equal scores keep their index order."""
    return np.argsort(-scores, kind="stable")


def nms_reference(boxes, scores, iou_threshold):
    """Readable greedy NMS (the oracle for the Numba kernel); same contract as `nms`."""
    boxes, scores, iou_threshold = _check_nms_args(boxes, scores, iou_threshold)
    zero = boxes.dtype.type(0)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def iou(i, j):
        overlap_w = max(min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]), zero)
        overlap_h = max(min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]), zero)
        inter = overlap_w * overlap_h
        return inter / (areas[i] + areas[j] - inter)

    order = _descending_order(scores)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    with np.errstate(invalid="ignore"):  # two zero-area boxes: 0/0 = NaN, never > threshold
        for position, i in enumerate(order):
            if suppressed[i]:
                continue
            keep.append(i)
            for j in order[position + 1 :]:
                if not suppressed[j] and iou(i, j) > iou_threshold:
                    suppressed[j] = True
    return np.array(keep, dtype=np.int64)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _greedy_nms_kernel(x1, y1, x2, y2, segment_starts, iou_threshold, zero):
    """Greedy NMS on boxes already sorted by descending score, independently per segment.

    Segment s is `[segment_starts[s], segment_starts[s+1])` (one class in batched_nms, all
    boxes in nms). Sorting first lets the inner loop read contiguous memory. Returns a bool
    keep flag per (sorted) box.
    """
    n = x1.shape[0]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, dtype=np.bool_)
    keep = np.zeros(n, dtype=np.bool_)
    for s in numba.prange(segment_starts.shape[0] - 1):
        end = segment_starts[s + 1]
        for i in range(segment_starts[s], end):
            if suppressed[i]:
                continue
            keep[i] = True
            ix1, iy1, ix2, iy2, iarea = x1[i], y1[i], x2[i], y2[i], areas[i]
            for j in range(i + 1, end):
                overlap_w = max(min(ix2, x2[j]) - max(ix1, x1[j]), zero)
                overlap_h = max(min(iy2, y2[j]) - max(iy1, y1[j]), zero)
                inter = overlap_w * overlap_h
                # branch-free update (re-suppressing is harmless) so the loop vectorises
                suppressed[j] |= inter / (iarea + areas[j] - inter) > iou_threshold
    return keep


def _keep_sorted(boxes, segment_starts, iou_threshold):
    columns = [np.ascontiguousarray(boxes[:, k]) for k in range(4)]
    return _greedy_nms_kernel(*columns, segment_starts, iou_threshold, boxes.dtype.type(0))


def nms(boxes, scores, iou_threshold):
    """Greedy NMS: indices (int64) of the kept boxes, highest score first.

    boxes (N, 4) float, scores (N,) float. Ties in score: lower index first. IoU exactly equal
    to `iou_threshold` does not suppress. Raises TypeError for integer inputs, ValueError for
    bad shapes, NaN, or boxes with x2 < x1 or y2 < y1. Empty input gives an empty result.
    """
    boxes, scores, iou_threshold = _check_nms_args(boxes, scores, iou_threshold)
    order = _descending_order(scores)
    segment_starts = np.array([0, len(boxes)], dtype=np.int64)
    keep = _keep_sorted(boxes[order], segment_starts, iou_threshold)
    return order[keep].astype(np.int64, copy=False)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """NMS run independently for each category in `idxs`; boxes of different categories never
    suppress each other. Returns kept indices (int64) by descending score, ties by lower index.

    Kept set: exactly that of running `nms` separately on each category, i.e. torchvision's
    `_batched_nms_vanilla` (the path it takes above 1000 boxes on CPU). Below that torchvision
    uses the coordinate trick (shift each category by `idx * (boxes.max() + 1)` and run one
    nms); the shifted float32 coordinates can flip an IoU lying within rounding of the
    threshold, and with negative coordinates categories can even overlap. We always compute
    IoUs on the original coordinates, so in those corner cases our set is the vanilla one.

    Order among exactly tied scores: torchvision's vanilla path sorts the kept boxes with a
    non-stable sort (ties in arbitrary order) while its trick path keeps index order; we always
    use the stable descending order (lower index first), which is deterministic.
    """
    boxes, scores, iou_threshold = _check_nms_args(boxes, scores, iou_threshold)
    idxs = np.asarray(idxs)
    if not np.issubdtype(idxs.dtype, np.integer):
        raise TypeError(f"idxs: expected an integer array of category ids, got dtype {idxs.dtype}")
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs: expected shape {scores.shape} to match scores, got {idxs.shape}")
    order = _descending_order(scores)
    # group by category, each group still in descending score order
    by_category = order[np.argsort(idxs[order], kind="stable")]
    category = idxs[by_category]
    boundaries = np.flatnonzero(category[1:] != category[:-1]) + 1
    segment_starts = np.concatenate([[0], boundaries, [len(boxes)]]).astype(np.int64)
    keep_sorted = _keep_sorted(boxes[by_category], segment_starts, iou_threshold)
    keep = np.zeros(len(boxes), dtype=bool)
    keep[by_category[keep_sorted]] = True
    return order[keep[order]].astype(np.int64, copy=False)
