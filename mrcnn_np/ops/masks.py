"""Masks between the 28x28 head and the image (Mask R-CNN, Sec. 3, "Mask Representation").

* `project_masks_on_boxes`: the training target of a positive RoI is its gt mask cropped to
  the RoI and resampled to M x M, i.e. RoIAlign of the binary mask (soft values, not
  thresholded), as torchvision does.
* `paste_masks_in_image`: at inference the M x M probabilities of a detection are resized to
  its box and pasted into a full-size map. torchvision first pads the map by one pixel of
  zeros and grows the box by (M+2)/M to match, so the resized mask fades to 0 at the box edge
  instead of being cut off; the grown box is truncated to integers and covers x1..x2
  inclusive (hence the +1). The resize is torch's bilinear, align_corners=False
  (`interpolate.resize_bilinear`, REFERENCE.md Sec. 1 and 5.7).
"""

import numpy as np

from .interpolate import resize_bilinear
from .roi_align import roi_align


def project_masks_on_boxes(gt_masks, boxes, matched_idxs, M):
    """gt_masks (G, H, W) of one image, boxes (K, 4) and the gt index of each -> (K, M, M)."""
    gt_masks = np.asarray(gt_masks)
    if gt_masks.ndim != 3:
        raise ValueError(f"gt_masks: expected (G, H, W), got shape {gt_masks.shape}")
    # float64 boxes (of a float64 model) keep float64, as torchvision's `gt_masks.to(rois)`
    dtype = np.float64 if np.asarray(boxes).dtype == np.float64 else np.float32
    boxes = np.asarray(boxes, dtype).reshape(-1, 4)
    matched_idxs = np.asarray(matched_idxs).reshape(-1)
    if len(matched_idxs) != len(boxes):
        raise ValueError(f"matched_idxs: expected {len(boxes)} entries, got {len(matched_idxs)}")
    if len(boxes) == 0:
        return np.zeros((0, M, M), dtype)
    if not np.issubdtype(matched_idxs.dtype, np.integer) or matched_idxs.min() < 0 \
            or matched_idxs.max() >= len(gt_masks):
        raise ValueError(f"matched_idxs: expected integer gt indices in [0, {len(gt_masks)}), "
                         f"got {matched_idxs.dtype} values in "
                         f"[{matched_idxs.min()}, {matched_idxs.max()}]")
    rois = np.concatenate([matched_idxs[:, None].astype(dtype), boxes], axis=1)
    masks = gt_masks[:, None].astype(dtype)
    return roi_align(masks, rois, (M, M), 1.0, sampling_ratio=-1, aligned=False)[:, 0]


def _expand_boxes(boxes, scale):
    half = np.float32(0.5)
    w_half = (boxes[:, 2] - boxes[:, 0]) * half * np.float32(scale)
    h_half = (boxes[:, 3] - boxes[:, 1]) * half * np.float32(scale)
    x_c = (boxes[:, 2] + boxes[:, 0]) * half
    y_c = (boxes[:, 3] + boxes[:, 1]) * half
    return np.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=1)


def paste_masks_in_image(masks, boxes, image_shape, padding=1):
    """masks (D, 1, M, M) or (D, M, M) probabilities, boxes (D, 4) in image coordinates ->
    (D, 1, H, W) float32 probabilities (not thresholded)."""
    masks = np.asarray(masks, np.float32)
    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks: expected (D, 1, M, M) or (D, M, M), got {np.shape(masks)}")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) != len(masks):
        raise ValueError(f"boxes: expected {len(masks)} boxes, got {len(boxes)}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes: contains NaN or infinite values")
    im_h, im_w = (int(v) for v in image_shape)
    m = masks.shape[-1]
    padded = np.pad(masks, ((0, 0), (padding, padding), (padding, padding)))
    # .to(int64) in torch truncates toward zero
    boxes = np.trunc(_expand_boxes(boxes, (m + 2 * padding) / m)).astype(np.int64)
    out = np.zeros((len(masks), 1, im_h, im_w), np.float32)
    for d, (mask, (x1, y1, x2, y2)) in enumerate(zip(padded, boxes)):
        w, h = max(int(x2 - x1 + 1), 1), max(int(y2 - y1 + 1), 1)
        resized = resize_bilinear(mask, size=(h, w))[0]
        x0, x_end = max(x1, 0), min(x2 + 1, im_w)
        y0, y_end = max(y1, 0), min(y2 + 1, im_h)
        if x_end > x0 and y_end > y0:
            out[d, 0, y0:y_end, x0:x_end] = resized[y0 - y1:y_end - y1, x0 - x1:x_end - x1]
    return out
