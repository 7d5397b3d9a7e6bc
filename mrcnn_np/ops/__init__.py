"""Detection ops with torchvision.ops semantics: box geometry, anchors, NMS, matching, pooling."""

from .anchors import AnchorGenerator, generate_anchors
from .boxes import (
    BoxCoder,
    box_area,
    box_iou,
    box_iou_reference,
    clip_boxes_to_image,
    remove_small_boxes,
)
from .matcher import BalancedPositiveNegativeSampler, Matcher
from .nms import batched_nms, nms, nms_reference

__all__ = [
    "AnchorGenerator",
    "BalancedPositiveNegativeSampler",
    "BoxCoder",
    "Matcher",
    "batched_nms",
    "box_area",
    "box_iou",
    "box_iou_reference",
    "clip_boxes_to_image",
    "generate_anchors",
    "nms",
    "nms_reference",
    "remove_small_boxes",
]

# ---- pooling and mask exports (roi_align.py, roi_pool.py, poolers.py, masks.py) go below ----
