"""COCO evaluation with pycocotools' exact numbers: RLE masks, polygons, IoU and COCOeval.

See COCOEVAL.md for the reference semantics. Everything here is NumPy + Numba; pycocotools is
only needed by the parity tests.
"""

from .coco_eval import COCOEvaluator, Params, detections_to_results, write_results
from .iou import bbox_iou_xywh, rle_iou
from .polygon import bbox_to_rle, poly_to_rle
from .rle import (
    counts_to_string,
    rle_area,
    rle_decode,
    rle_encode,
    rle_merge,
    rle_to_bbox,
    string_to_counts,
)

__all__ = [
    "COCOEvaluator",
    "Params",
    "bbox_iou_xywh",
    "bbox_to_rle",
    "counts_to_string",
    "detections_to_results",
    "poly_to_rle",
    "rle_area",
    "rle_decode",
    "rle_encode",
    "rle_iou",
    "rle_merge",
    "rle_to_bbox",
    "string_to_counts",
    "write_results",
]
