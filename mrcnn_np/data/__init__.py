"""Datasets and augmentation: synthetic shapes, COCO json files, image loading, transforms.

Every dataset item is `(image (H, W, 3) uint8, target dict)` with `boxes` (N, 4) float32
x1, y1, x2, y2 in continuous pixel coordinates, `labels` (N,) int64 (0 is the background),
`masks` (N, H, W) uint8, `image_id`, `area` and `iscrowd` (plus `keypoints` for COCO people).
"""

from .coco import CocoDataset, LoadReport
from .images import ImageLoadError, load_image
from .shapes import ShapesDataset, export_coco, masks_to_boxes
from .transforms import (
    COCO_PERSON_KEYPOINT_FLIP_INDEX,
    COCO_PERSON_KEYPOINT_NAMES,
    Compose,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
    hflip,
    resize,
    to_tensor,
)

__all__ = [
    "COCO_PERSON_KEYPOINT_FLIP_INDEX",
    "COCO_PERSON_KEYPOINT_NAMES",
    "CocoDataset",
    "Compose",
    "ImageLoadError",
    "LoadReport",
    "RandomHorizontalFlip",
    "Resize",
    "ShapesDataset",
    "ToTensor",
    "export_coco",
    "hflip",
    "load_image",
    "masks_to_boxes",
    "resize",
    "to_tensor",
]
