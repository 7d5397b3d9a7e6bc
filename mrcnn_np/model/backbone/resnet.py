"""ResNet body (He et al., 2016) as torchvision builds it for detection: the stem and layer1..4,
returning C2..C5 (strides 4, 8, 16, 32); no avgpool or fc. Bottleneck is torchvision's "v1.5"
(the stride sits in the 3x3 conv). Names match torchvision's state_dict (`conv1`, `bn1`,
`layer1.0.conv1`, `layer1.0.downsample.0`, ...).

Freezing follows torchvision's `trainable_layers`: the last t of (conv1+bn1, layer1, ..., layer4)
train, the others get `requires_grad=False`, and the backward pass stops where the frozen part
begins (their input gradients are never needed).
"""

from ... import nn
from ...nn.module import Module, Sequential


def _norm(norm_layer, channels):
    return norm_layer(channels)


class BasicBlock(Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels, planes, stride=1, norm_layer=nn.FrozenBatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm_layer, planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _norm(norm_layer, planes)
        self.relu_out = nn.ReLU()
        self.downsample = _downsample(in_channels, planes, stride, norm_layer)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu_out(out + identity)

    def backward(self, dout):
        d = self.relu_out.backward(dout)
        dx = self.conv1.backward(self.bn1.backward(self.relu1.backward(
            self.conv2.backward(self.bn2.backward(d)))))
        return dx + (self.downsample.backward(d) if self.downsample is not None else d)


class Bottleneck(Module):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand x4, plus the identity (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, norm_layer=nn.FrozenBatchNorm2d):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = _norm(norm_layer, planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _norm(norm_layer, planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = _norm(norm_layer, out_channels)
        self.relu_out = nn.ReLU()
        self.downsample = _downsample(in_channels, out_channels // self.expansion, stride,
                                      norm_layer, self.expansion)

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu_out(out + identity)

    def backward(self, dout):
        d = self.relu_out.backward(dout)
        dx = self.bn3.backward(d)
        dx = self.conv3.backward(dx)
        dx = self.conv2.backward(self.bn2.backward(self.relu2.backward(dx)))
        dx = self.conv1.backward(self.bn1.backward(self.relu1.backward(dx)))
        return dx + (self.downsample.backward(d) if self.downsample is not None else d)


def _downsample(in_channels, planes, stride, norm_layer, expansion=1):
    """The 1x1 projection of the identity when the block changes size or channels."""
    out_channels = planes * expansion
    if stride == 1 and in_channels == out_channels:
        return None
    return Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                      _norm(norm_layer, out_channels))


RESNET_BLOCKS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}
# torchvision's order of layers to unfreeze: the last t of these train
_TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")


class ResNetBody(Module):
    """Stem + layer1..layer4; `forward(x)` returns [C2, C3, C4, C5]."""

    def __init__(self, depth=50, width=64, norm_layer=nn.FrozenBatchNorm2d,
                 trainable_layers=3):
        super().__init__()
        if depth not in RESNET_BLOCKS:
            raise ValueError(f"depth: expected one of {sorted(RESNET_BLOCKS)}, got {depth}")
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers: expected 0..5, got {trainable_layers}")
        block, counts = RESNET_BLOCKS[depth]
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(norm_layer, width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = width
        self.out_channels = []
        for index, count in enumerate(counts):
            planes = width * 2**index
            blocks = []
            for b in range(count):
                stride = 2 if (b == 0 and index > 0) else 1
                blocks.append(block(in_channels, planes, stride, norm_layer))
                in_channels = planes * block.expansion
            setattr(self, f"layer{index + 1}", Sequential(*blocks))
            self.out_channels.append(in_channels)
        self.freeze(trainable_layers)

    def freeze(self, trainable_layers):
        """torchvision's rule: train the last `trainable_layers` stages (bn1 only with all 5)."""
        trainable = list(_TRAINABLE_ORDER[:trainable_layers])
        if trainable_layers == 5:
            trainable.append("bn1")
        for name, param in self.named_parameters():
            param.requires_grad = any(name.startswith(layer) for layer in trainable)
        self.trainable_layers = trainable_layers
        return self

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features

    def backward(self, dfeatures):
        """`dfeatures`: gradients of C2..C5 (None for a level that received none).
        Returns the gradient of the input image, or None if the stem is frozen."""
        d = None
        for index in range(4, 0, -1):
            if dfeatures[index - 1] is not None:
                d = dfeatures[index - 1] if d is None else d + dfeatures[index - 1]
            if self.trainable_layers < 5 - index:
                # this stage and every earlier one are frozen: nothing below needs a gradient
                return None
            if d is not None:
                d = getattr(self, f"layer{index}").backward(d)
        if self.trainable_layers < 5 or d is None:
            return None
        return self.conv1.backward(self.bn1.backward(self.relu.backward(
            self.maxpool.backward(d))))
