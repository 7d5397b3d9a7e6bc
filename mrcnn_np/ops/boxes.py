"""Box geometry: area, pairwise IoU, clipping, small-box removal and the box coder.

Semantics are torchvision's (`torchvision.ops.boxes`, `models/detection/_utils.BoxCoder`),
REFERENCE.md §4.3, §6.1 and §6.4. The box parameterisation is eq. (2) of Faster R-CNN
(Ren et al., 2015), scaled by the "magic" weights of Fast R-CNN's target normalisation.

Pixel model: a box is `(x1, y1, x2, y2)` in continuous image coordinates, width `x2 - x1`
and height `y2 - y1`, with no "+1". A box of zero width or height is legal (its area is 0).

Inputs must be floating point (float32, or float64 which is kept); integer boxes raise
TypeError rather than being cast silently, because torchvision's arithmetic is float32 and a
silent cast hides where the precision was chosen.
"""

import math

import numba
import numpy as np

# ln(1000/16): decoded boxes are at most 1000/16 = 62.5 times wider / taller than their reference
DEFAULT_BBOX_XFORM_CLIP = math.log(1000.0 / 16)

__all__ = [
    "BoxCoder",
    "box_area",
    "box_iou",
    "box_iou_reference",
    "clip_boxes_to_image",
    "remove_small_boxes",
]


# --------------------------------------------------------------------------------------------
# argument checks shared by the ops in this package


def check_float_array(name, array):
    """Return `array` as an ndarray, raising TypeError unless its dtype is floating point."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"{name}: expected a float32/float64 array, got dtype {array.dtype} "
            f"(cast it with .astype(np.float32))"
        )
    return array


def check_boxes(name, boxes, ordered=True, leading_dims=False):
    """Validate an (N, 4) float box array and return it as an ndarray.

    ordered: also require `x1 <= x2`, `y1 <= y2` and no NaN (what IoU and NMS need to mean
    anything). leading_dims: accept any `(..., 4)` shape instead of exactly (N, 4).
    """
    boxes = check_float_array(name, boxes)
    if leading_dims:
        shape_ok, expected = boxes.ndim >= 1 and boxes.shape[-1] == 4, "(..., 4)"
    else:
        shape_ok, expected = boxes.ndim == 2 and boxes.shape[1] == 4, "(N, 4)"
    if not shape_ok:
        raise ValueError(f"{name}: expected boxes of shape {expected}, got shape {boxes.shape}")
    if ordered and boxes.size:
        if np.isnan(boxes).any():
            raise ValueError(f"{name}: boxes contain NaN")
        flat = boxes.reshape(-1, 4)
        inverted = np.flatnonzero((flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1]))
        if inverted.size:
            raise ValueError(
                f"{name}: expected x1 <= x2 and y1 <= y2, got box {flat[inverted[0]].tolist()} "
                f"at row {inverted[0]}"
            )
    return boxes


# --------------------------------------------------------------------------------------------
# area and IoU


def box_area(boxes):
    """Area `(x2 - x1) * (y2 - y1)` of each box: (N, 4) -> (N,), in the boxes' dtype."""
    boxes = check_boxes("boxes", boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou_reference(boxes1, boxes2):
    """Readable IoU: for every pair, intersection over union, in the boxes' float precision.

    Same contract as `box_iou`; kept as the oracle that the Numba kernel is tested against.
    """
    boxes1, boxes2 = _check_iou_args(boxes1, boxes2)
    area1, area2 = box_area(boxes1), box_area(boxes2)
    zero = boxes1.dtype.type(0)
    iou = np.empty((len(boxes1), len(boxes2)), dtype=boxes1.dtype)
    with np.errstate(invalid="ignore"):  # 0/0 -> NaN for two disjoint zero-area boxes
        for i, (ax1, ay1, ax2, ay2) in enumerate(boxes1):
            for j, (bx1, by1, bx2, by2) in enumerate(boxes2):
                overlap_w = max(min(ax2, bx2) - max(ax1, bx1), zero)
                overlap_h = max(min(ay2, by2) - max(ay1, by1), zero)
                inter = overlap_w * overlap_h
                iou[i, j] = inter / (area1[i] + area2[j] - inter)
    return iou


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _box_iou_kernel(boxes1, boxes2, zero):
    n, m = boxes1.shape[0], boxes2.shape[0]
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    iou = np.empty((n, m), dtype=boxes1.dtype)
    for i in numba.prange(n):
        ax1, ay1, ax2, ay2 = boxes1[i, 0], boxes1[i, 1], boxes1[i, 2], boxes1[i, 3]
        area1 = (ax2 - ax1) * (ay2 - ay1)
        for j in range(m):
            overlap_w = max(min(ax2, boxes2[j, 2]) - max(ax1, boxes2[j, 0]), zero)
            overlap_h = max(min(ay2, boxes2[j, 3]) - max(ay1, boxes2[j, 1]), zero)
            inter = overlap_w * overlap_h
            iou[i, j] = inter / (area1 + area2[j] - inter)
    return iou


def _check_iou_args(boxes1, boxes2):
    boxes1 = check_boxes("boxes1", boxes1)
    boxes2 = check_boxes("boxes2", boxes2)
    dtype = np.result_type(boxes1.dtype, boxes2.dtype)
    return (np.ascontiguousarray(boxes1, dtype=dtype), np.ascontiguousarray(boxes2, dtype=dtype))


def box_iou(boxes1, boxes2):
    """Pairwise intersection over union: (N, 4), (M, 4) -> (N, M).

    `inter = max(min(x2) - max(x1), 0) * max(min(y2) - max(y1), 0)` and
    `iou = inter / (area1 + area2 - inter)`, with no +1 and no epsilon, in float32 (float64 if
    either input is float64), the same operations in the same order as torchvision.
    Touching boxes have IoU 0. Two zero-area boxes that do not overlap give 0/0 = NaN, exactly
    as torchvision does; a zero-area box against a box of positive area gives 0.

    Raises TypeError for integer boxes, ValueError for a shape other than (N, 4), for NaN
    coordinates and for boxes with x2 < x1 or y2 < y1.
    """
    boxes1, boxes2 = _check_iou_args(boxes1, boxes2)
    if len(boxes1) == 0 or len(boxes2) == 0:
        return np.zeros((len(boxes1), len(boxes2)), dtype=boxes1.dtype)
    return _box_iou_kernel(boxes1, boxes2, boxes1.dtype.type(0))


# --------------------------------------------------------------------------------------------
# clipping and filtering


def clip_boxes_to_image(boxes, size):
    """Clamp x to [0, W] and y to [0, H] for `size = (H, W)`; boxes of any shape (..., 4).

    The interval is closed and ends at W and H themselves (not W-1, H-1): with continuous
    coordinates the right edge of the last pixel column is x = W. Returns a new array.
    """
    boxes = check_boxes("boxes", boxes, ordered=False, leading_dims=True)
    if len(size) != 2:
        raise ValueError(f"size: expected (height, width), got {size!r}")
    height, width = size
    clipped = boxes.copy()
    clipped[..., 0::2] = np.clip(boxes[..., 0::2], 0, width)
    clipped[..., 1::2] = np.clip(boxes[..., 1::2], 0, height)
    return clipped


def remove_small_boxes(boxes, min_size):
    """Indices (int64, ascending) of the boxes whose width and height are both >= min_size."""
    boxes = check_boxes("boxes", boxes, ordered=False)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return np.flatnonzero((widths >= min_size) & (heights >= min_size)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# box coder


class BoxCoder:
    """Box regression targets `(dx, dy, dw, dh)` relative to a reference box, and back.

    Faster R-CNN eq. (2), each term multiplied by a weight `(wx, wy, ww, wh)`:

    .. math::
        d_x = w_x (x - x_a) / w_a,\\quad d_y = w_y (y - y_a) / h_a,\\quad
        d_w = w_w \\log(w / w_a),\\quad d_h = w_h \\log(h / h_a)

    with `(x, y, w, h)` the centre and size of the target box and `(x_a, y_a, w_a, h_a)` those
    of the anchor / proposal. The weights rescale the targets to roughly unit variance: the
    RPN uses (1, 1, 1, 1), the box head (10, 10, 5, 5). When decoding, `dw` and `dh` are clamped
    from above at `bbox_xform_clip = ln(1000/16)` so that `exp` cannot overflow (a box at
    most 62.5 times wider than its reference); there is no lower clamp.

    Arithmetic is float32 in torchvision's order of operations. `np.log`/`np.exp` may differ
    from torch's by one unit in the last place, so parity holds to ~1e-6 relative, not bitwise.
    """

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=DEFAULT_BBOX_XFORM_CLIP):
        if len(weights) != 4:
            raise ValueError(f"weights: expected 4 numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def encode(self, reference_boxes, proposals):
        """Targets that move each proposal onto its reference (gt) box: (K, 4), (K, 4) -> (K, 4).

        Argument order is torchvision's: `encode(matched_gt_boxes, anchors_or_proposals)`.
        Both must have positive width and height (ValueError otherwise: a log of 0 or a
        division by 0 would give inf/NaN targets). float32 unless an input is float64.
        """
        reference_boxes = check_boxes("reference_boxes", reference_boxes)
        proposals = check_boxes("proposals", proposals)
        if reference_boxes.shape != proposals.shape:
            raise ValueError(
                f"reference_boxes and proposals: expected the same shape (K, 4), got "
                f"{reference_boxes.shape} and {proposals.shape}"
            )
        for name, boxes in (("reference_boxes", reference_boxes), ("proposals", proposals)):
            if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
                raise ValueError(f"{name}: every box needs a positive width and height to encode")
        dtype = np.result_type(reference_boxes.dtype, proposals.dtype)
        reference_boxes = reference_boxes.astype(dtype, copy=False)
        proposals = proposals.astype(dtype, copy=False)
        wx, wy, ww, wh = (dtype.type(w) for w in self.weights)

        ex_w, ex_h, ex_cx, ex_cy = _sizes_and_centres(proposals)
        gt_w, gt_h, gt_cx, gt_cy = _sizes_and_centres(reference_boxes)
        dx = wx * (gt_cx - ex_cx) / ex_w
        dy = wy * (gt_cy - ex_cy) / ex_h
        dw = ww * np.log(gt_w / ex_w)
        dh = wh * np.log(gt_h / ex_h)
        return np.stack([dx, dy, dw, dh], axis=1)

    def decode(self, deltas, boxes):
        """Apply regression deltas to reference boxes.

        deltas (K, 4) -> boxes (K, 4); deltas (K, 4C) with C > 1 (one group of 4 per class,
        class c in columns 4c..4c+3) -> boxes (K, C, 4). Each group is applied to the same
        reference box. The result has the deltas' dtype; NaN deltas propagate.
        """
        deltas = check_float_array("deltas", deltas)
        boxes = check_boxes("boxes", boxes)
        if deltas.ndim != 2 or deltas.shape[1] % 4 != 0 or deltas.shape[1] == 0:
            raise ValueError(f"deltas: expected shape (K, 4*C), got {deltas.shape}")
        if len(deltas) != len(boxes):
            raise ValueError(
                f"deltas and boxes: expected the same number of rows, got {len(deltas)} and "
                f"{len(boxes)}"
            )
        dtype = deltas.dtype
        num_classes = deltas.shape[1] // 4
        boxes = boxes.astype(dtype, copy=False)
        widths, heights, ctr_x, ctr_y = (v[:, None] for v in _sizes_and_centres(boxes))

        wx, wy, ww, wh = self.weights
        clip = dtype.type(self.bbox_xform_clip)
        # dividing by the Python-float weight rounds like torch's tensor / scalar
        dx = deltas[:, 0::4] / dtype.type(wx)
        dy = deltas[:, 1::4] / dtype.type(wy)
        dw = np.minimum(deltas[:, 2::4] / dtype.type(ww), clip)
        dh = np.minimum(deltas[:, 3::4] / dtype.type(wh), clip)

        pred_cx = dx * widths + ctr_x
        pred_cy = dy * heights + ctr_y
        half_w = dtype.type(0.5) * (np.exp(dw) * widths)
        half_h = dtype.type(0.5) * (np.exp(dh) * heights)
        pred = np.stack(
            [pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h], axis=2
        )
        return pred[:, 0, :] if num_classes == 1 else pred


def _sizes_and_centres(boxes):
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    half = boxes.dtype.type(0.5)
    return widths, heights, boxes[:, 0] + half * widths, boxes[:, 1] + half * heights
