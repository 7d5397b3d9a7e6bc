"""ResNet body and Feature Pyramid Network."""

from .fpn import BackboneWithFPN, FeaturePyramidNetwork, resnet_fpn_backbone
from .resnet import BasicBlock, Bottleneck, ResNetBody

__all__ = ["BackboneWithFPN", "BasicBlock", "Bottleneck", "FeaturePyramidNetwork",
           "ResNetBody", "resnet_fpn_backbone"]
