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
from .interpolate import resize_bicubic, resize_bilinear, resize_nearest
from .masks import paste_masks_in_image, project_masks_on_boxes
from .matcher import BalancedPositiveNegativeSampler, Matcher
from .nms import batched_nms, nms, nms_reference
from .poolers import MultiScaleRoIAlign, assign_levels
from .roi_align import roi_align, roi_align_backward, roi_align_reference
from .roi_pool import roi_pool, roi_pool_backward, roi_pool_reference

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
    "MultiScaleRoIAlign",
    "assign_levels",
    "paste_masks_in_image",
    "project_masks_on_boxes",
    "resize_bicubic",
    "resize_bilinear",
    "resize_nearest",
    "roi_align",
    "roi_align_backward",
    "roi_align_reference",
    "roi_pool",
    "roi_pool_backward",
    "roi_pool_reference",
]

