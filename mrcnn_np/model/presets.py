"""Every hyper-parameter of the detector in one place, and the presets built from it.

`Config` lists each setting with its torchvision default and what it does; `Config.display()`
prints them. The presets take torchvision's keyword arguments as overrides:

    maskrcnn_resnet50_fpn(num_classes=91, **overrides)      torchvision's architecture
    keypointrcnn_resnet50_fpn(num_classes=2, num_keypoints=17, **overrides)
    maskrcnn_small(num_classes=4, **overrides)              narrow ResNet-18-FPN for CPU training

torchvision's COCO checkpoints were trained with FrozenBatchNorm2d eps = 0.0; pass
`frozen_bn_eps=0.0` (or use `load_coco_checkpoint`) when loading them.
"""

from dataclasses import asdict, dataclass, fields

import numpy as np

from .. import nn
from ..ops.anchors import AnchorGenerator
from ..ops.poolers import MultiScaleRoIAlign
from .backbone import resnet_fpn_backbone
from .mask_rcnn import MaskRCNN
from .roi_heads import (
    FastRCNNPredictor,
    KeypointRCNNPredictor,
    MaskRCNNPredictor,
    RoIHeads,
    TwoMLPHead,
    keypoint_rcnn_heads,
    mask_rcnn_heads,
)
from .rpn import RegionProposalNetwork, RPNHead
from .transform import GeneralizedRCNNTransform


@dataclass
class Config:
    num_classes: int = 91  # including the background class 0
    # -- input transform (Sec. "Implementation details": short side 800) --
    min_size: int | tuple = 800  # short side after resizing; a tuple = random pick in training
    max_size: int = 1333  # cap on the long side
    image_mean: tuple = (0.485, 0.456, 0.406)  # ImageNet statistics, images in [0, 1]
    image_std: tuple = (0.229, 0.224, 0.225)
    # -- backbone --
    depth: int = 50  # ResNet depth: 18, 34, 50, 101
    width: int = 64  # stem channels (64 in ResNet; smaller for the CPU preset)
    fpn_channels: int = 256  # channels of every FPN level
    norm: str = "frozen"  # "frozen" (FrozenBatchNorm2d) or "batch" (BatchNorm2d)
    frozen_bn_eps: float = 1e-5  # 0.0 for torchvision's COCO checkpoints
    trainable_backbone_layers: int = 3  # last k of (layer4, layer3, layer2, layer1, conv1)
    # -- anchors: one size per FPN level, three aspect ratios (h/w) --
    anchor_sizes: tuple = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple = ((0.5, 1.0, 2.0),) * 5
    # -- RPN --
    rpn_pre_nms_top_n_train: int = 2000  # per level, before NMS
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000  # per image, after NMS
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7  # anchors with IoU >= this are positive
    rpn_bg_iou_thresh: float = 0.3  # anchors with IoU < this are negative
    rpn_batch_size_per_image: int = 256  # anchors sampled per image for the loss
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0
    # -- RoI heads --
    pooler: str = "align"  # "align" (RoIAlign) or "pool" (RoIPool), for the paper's ablation
    box_representation_size: int = 1024  # fc6 / fc7 width
    box_score_thresh: float = 0.05  # detections need a class score above this
    box_nms_thresh: float = 0.5  # per-class NMS
    box_detections_per_img: int = 100
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512  # RoIs sampled per image for the loss
    box_positive_fraction: float = 0.25
    bbox_reg_weights: tuple = (10.0, 10.0, 5.0, 5.0)  # scale deltas to unit-ish variance
    mask: bool = True  # the mask branch
    mask_layers: tuple = (256, 256, 256, 256)  # convs of the mask head
    mask_loss: str = "sigmoid"  # per-class sigmoid BCE (paper), or "softmax" over classes
    mask_class_agnostic: bool = False  # one mask for every class (paper Table 2b ablation)
    num_keypoints: int = 0  # > 0 adds the keypoint branch (17 for COCO persons)
    keypoint_layers: tuple = (512,) * 8
    seed: int = 0  # initial weights and the samplers' random stream

    def __str__(self):
        return "\n".join(f"{f.name:<28}{getattr(self, f.name)}" for f in fields(self))

    def display(self):
        """Print every setting, one per line."""
        print(self)

    def replace(self, **overrides):
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(unknown)}; see Config.display()")
        return Config(**{**asdict(self), **overrides})


def build_model(config):
    """Assemble a MaskRCNN from a Config."""
    c = config
    rng = np.random.default_rng(c.seed)
    nn.init.manual_seed(c.seed)
    if c.norm == "frozen":
        def norm_layer(channels):
            return nn.FrozenBatchNorm2d(channels, eps=c.frozen_bn_eps)
    elif c.norm == "batch":
        norm_layer = nn.BatchNorm2d
    else:
        raise ValueError(f"norm: expected 'frozen' or 'batch', got {c.norm!r}")
    backbone = resnet_fpn_backbone(c.depth, c.width, c.fpn_channels, norm_layer,
                                   c.trainable_backbone_layers, rng)
    transform = GeneralizedRCNNTransform(c.min_size, c.max_size, c.image_mean, c.image_std,
                                         rng=rng)
    anchors = AnchorGenerator(c.anchor_sizes, c.aspect_ratios)
    num_anchors = len(c.anchor_sizes[0]) * len(c.aspect_ratios[0])
    rpn = RegionProposalNetwork(
        anchors, RPNHead(c.fpn_channels, num_anchors, rng), c.rpn_fg_iou_thresh,
        c.rpn_bg_iou_thresh, c.rpn_batch_size_per_image, c.rpn_positive_fraction,
        {"training": c.rpn_pre_nms_top_n_train, "testing": c.rpn_pre_nms_top_n_test},
        {"training": c.rpn_post_nms_top_n_train, "testing": c.rpn_post_nms_top_n_test},
        c.rpn_nms_thresh, c.rpn_score_thresh, rng=rng)

    def pooler(size):
        return MultiScaleRoIAlign(("0", "1", "2", "3"), size, 2, pooler=c.pooler)

    heads = {}
    if c.mask_class_agnostic and c.mask_loss == "softmax":
        raise ValueError("mask_loss: 'softmax' competes the classes for each pixel, which needs "
                         "a mask per class; use mask_class_agnostic=False with it")
    if c.mask:
        heads.update(mask_roi_pool=pooler(14),
                     mask_head=mask_rcnn_heads(c.fpn_channels, c.mask_layers, rng),
                     mask_predictor=MaskRCNNPredictor(
                         c.mask_layers[-1], c.mask_layers[-1],
                         1 if c.mask_class_agnostic else c.num_classes, rng))
    if c.num_keypoints:
        heads.update(keypoint_roi_pool=pooler(14),
                     keypoint_head=keypoint_rcnn_heads(c.fpn_channels, c.keypoint_layers, rng),
                     keypoint_predictor=KeypointRCNNPredictor(c.keypoint_layers[-1],
                                                              c.num_keypoints, rng))
    roi_heads = RoIHeads(
        pooler(7), TwoMLPHead(c.fpn_channels * 49, c.box_representation_size, rng),
        FastRCNNPredictor(c.box_representation_size, c.num_classes, rng),
        c.box_fg_iou_thresh, c.box_bg_iou_thresh, c.box_batch_size_per_image,
        c.box_positive_fraction, c.bbox_reg_weights, c.box_score_thresh, c.box_nms_thresh,
        c.box_detections_per_img, mask_loss=c.mask_loss, rng=rng, **heads)
    return MaskRCNN(transform, backbone, rpn, roi_heads, c.num_classes, config)


def maskrcnn_resnet50_fpn(num_classes=91, **overrides):
    """torchvision's maskrcnn_resnet50_fpn (v1) architecture and defaults."""
    return build_model(Config().replace(num_classes=num_classes, **overrides))


def keypointrcnn_resnet50_fpn(num_classes=2, num_keypoints=17, **overrides):
    """torchvision's keypointrcnn_resnet50_fpn (v1): no mask branch, a keypoint branch.
    (torchvision trains with min_size drawn from 640..800; pass min_size=(640, ..., 800).)"""
    return build_model(Config().replace(num_classes=num_classes, num_keypoints=num_keypoints,
                                        mask=False, **overrides))


SMALL = {
    # a narrow ResNet-18-FPN on ~256 px images, trainable from scratch on CPU in minutes
    "depth": 18, "width": 16, "fpn_channels": 64, "norm": "batch", "trainable_backbone_layers": 5,
    "min_size": 256, "max_size": 256, "anchor_sizes": ((16,), (32,), (64,), (128,), (256,)),
    "rpn_pre_nms_top_n_train": 600, "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_train": 300, "rpn_post_nms_top_n_test": 100,
    "box_representation_size": 256, "box_batch_size_per_image": 64,
    "mask_layers": (64, 64, 64, 64),
}


def maskrcnn_small(num_classes=4, **overrides):
    """The CPU-trainable preset (see SMALL for what differs from the ResNet-50 preset)."""
    return build_model(Config().replace(num_classes=num_classes, **{**SMALL, **overrides}))
