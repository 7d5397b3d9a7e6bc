"""The detector: input transform, ResNet-FPN backbone, RPN, RoI heads, presets."""

from .mask_rcnn import MaskRCNN
from .presets import (
    Config,
    build_model,
    keypointrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn,
    maskrcnn_small,
)
from .transform import GeneralizedRCNNTransform, ImageList

__all__ = ["Config", "GeneralizedRCNNTransform", "ImageList", "MaskRCNN", "build_model",
           "keypointrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_small"]
