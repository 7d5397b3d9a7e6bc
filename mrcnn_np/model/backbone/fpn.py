"""Feature Pyramid Network (Lin et al., 2017, Sec. 3) on top of the ResNet body, as torchvision
builds it: a 1x1 lateral conv per level, a top-down pathway that adds the 2x nearest-upsampled
coarser map, a 3x3 output conv per level, and an extra 'pool' level (P6 = P5 subsampled by 2,
torchvision's LastLevelMaxPool with kernel 1, stride 2) used only by the RPN.

Outputs are a dict '0', '1', '2', '3', 'pool' = P2..P6 at strides 4, 8, 16, 32, 64.
"""

from collections import OrderedDict

import numpy as np

from ... import nn
from ...nn import functional as F
from ...nn import init
from ...nn.module import Module, ModuleList, Sequential
from .resnet import ResNetBody

LEVEL_NAMES = ("0", "1", "2", "3")


def _fpn_conv(in_channels, out_channels, kernel_size, rng=None):
    # torchvision: kaiming_uniform_(a=1) weights and zero biases
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    conv.weight.data = init.kaiming_uniform(conv.weight.shape, a=1.0, rng=rng)
    conv.bias.data = np.zeros_like(conv.bias.data)
    return Sequential(conv)  # torchvision wraps each conv: names end in ".0.weight"


class FeaturePyramidNetwork(Module):
    def __init__(self, in_channels_list, out_channels, rng=None):
        super().__init__()
        self.inner_blocks = ModuleList(
            [_fpn_conv(c, out_channels, 1, rng) for c in in_channels_list])
        self.layer_blocks = ModuleList(
            [_fpn_conv(out_channels, out_channels, 3, rng) for _ in in_channels_list])
        self.out_channels = out_channels

    def forward(self, features):
        """features: [C2, C3, C4, C5] -> OrderedDict '0'..'3' (P2..P5) and 'pool' (P6)."""
        last = self.inner_blocks[-1](features[-1])
        outputs = [self.layer_blocks[-1](last)]
        upsample_caches = []
        for index in range(len(features) - 2, -1, -1):
            lateral = self.inner_blocks[index](features[index])
            top_down, cache = F.interpolate_nearest(last, lateral.shape[-2:])
            upsample_caches.append(cache)
            last = lateral + top_down
            outputs.insert(0, self.layer_blocks[index](last))
        result = OrderedDict(zip(LEVEL_NAMES, outputs))
        p5 = outputs[-1]
        result["pool"] = p5[:, :, ::2, ::2]  # max_pool2d(kernel 1, stride 2) picks these
        self._save((upsample_caches, p5.shape))
        return result

    def backward(self, dfeatures):
        """dfeatures: dict of gradients per output level (missing or None = no gradient).
        Returns the gradients of [C2, C3, C4, C5]."""
        upsample_caches, p5_shape = self._take_cache()
        n = len(self.inner_blocks)
        grads = [dfeatures.get(name) for name in LEVEL_NAMES[:n]]
        if dfeatures.get("pool") is not None:
            dp5 = np.zeros(p5_shape, dfeatures["pool"].dtype) if grads[-1] is None \
                else grads[-1].copy()
            dp5[:, :, ::2, ::2] += dfeatures["pool"]
            grads[-1] = dp5
        dinputs = [None] * n
        dlast = None  # gradient flowing down the top-down pathway
        # forward built levels n-1, n-2, ..., 0; the backward walks 0, 1, ..., n-1
        for index in range(n):
            d = dlast
            if grads[index] is not None:
                dl = self.layer_blocks[index].backward(grads[index])
                d = dl if d is None else d + dl
            dlast = None
            if d is None:
                continue
            dinputs[index] = self.inner_blocks[index].backward(d)
            if index < n - 1:
                dlast = F.interpolate_nearest_backward(d, upsample_caches[n - 2 - index])
        return dinputs


class BackboneWithFPN(Module):
    """`body` (ResNet) + `fpn`; state_dict names `body.*` and `fpn.*` as in torchvision."""

    def __init__(self, body, fpn):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = fpn.out_channels

    def forward(self, x):
        return self.fpn(self.body(x))

    def backward(self, dfeatures):
        return self.body.backward(self.fpn.backward(dfeatures))


def resnet_fpn_backbone(depth=50, width=64, out_channels=256, norm_layer=None,
                        trainable_layers=3, rng=None):
    """ResNet-`depth` body with `width` stem channels, and an FPN with `out_channels`."""
    norm_layer = norm_layer or nn.FrozenBatchNorm2d
    body = ResNetBody(depth, width, norm_layer, trainable_layers)
    fpn = FeaturePyramidNetwork(body.out_channels, out_channels, rng)
    return BackboneWithFPN(body, fpn)
