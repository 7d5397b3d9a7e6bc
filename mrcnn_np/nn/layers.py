"""Layer modules: each wraps one forward/backward pair of `functional` and holds its weights.

Weight layouts and state_dict names are PyTorch's (Conv2d (out, in, kh, kw), ConvTranspose2d
(in, out, kh, kw), Linear (out, in)), and the default initialisation follows PyTorch's formulas,
so a torchvision state_dict loads unchanged.
"""

import math

import numpy as np

from . import functional as F
from . import init
from .module import Module, Parameter

__all__ = [
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "Flatten",
    "FrozenBatchNorm2d",
    "Linear",
    "MaxPool2d",
    "ReLU",
    "Sigmoid",
]


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


class Conv2d(Module):
    """2-D convolution (cross-correlation), as torch.nn.Conv2d without groups."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, rng=None):
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = (kh, kw), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        shape = (out_channels, in_channels, kh, kw)
        self.weight = Parameter(init.kaiming_uniform(shape, a=math.sqrt(5), rng=rng))
        fan_in = in_channels * kh * kw
        self.bias = Parameter(init.uniform((out_channels,), 1 / math.sqrt(fan_in), rng)) \
            if bias else None

    def forward(self, x):
        b = self.bias.data if self.bias is not None else None
        out, cache = F.conv2d(x, self.weight.data, b, self.stride, self.padding, self.dilation)
        self._save(cache)
        return out

    def backward(self, dout):
        dx, dw, db = F.conv2d_backward(dout, self._take_cache())
        self.weight.accumulate_grad(dw)
        if self.bias is not None:
            self.bias.accumulate_grad(db)
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class ConvTranspose2d(Module):
    """Transposed convolution (the adjoint of Conv2d), weight (in, out, kh, kw) as in torch."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, dilation=1, bias=True, rng=None):
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = (kh, kw), _pair(stride)
        self.padding, self.output_padding = _pair(padding), _pair(output_padding)
        self.dilation = _pair(dilation)
        shape = (in_channels, out_channels, kh, kw)
        # torch computes the fan from dim 1 of this weight, i.e. out_channels * kh * kw
        self.weight = Parameter(init.kaiming_uniform(shape, a=math.sqrt(5), rng=rng))
        fan_in = out_channels * kh * kw
        self.bias = Parameter(init.uniform((out_channels,), 1 / math.sqrt(fan_in), rng)) \
            if bias else None

    def forward(self, x):
        b = self.bias.data if self.bias is not None else None
        out, cache = F.conv_transpose2d(x, self.weight.data, b, self.stride, self.padding,
                                        self.output_padding, self.dilation)
        self._save(cache)
        return out

    def backward(self, dout):
        dx, dw, db = F.conv_transpose2d_backward(dout, self._take_cache())
        self.weight.accumulate_grad(dw)
        if self.bias is not None:
            self.bias.accumulate_grad(db)
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        shape = (out_features, in_features)
        self.weight = Parameter(init.kaiming_uniform(shape, a=math.sqrt(5), rng=rng))
        self.bias = Parameter(init.uniform((out_features,), 1 / math.sqrt(in_features), rng)) \
            if bias else None

    def forward(self, x):
        b = self.bias.data if self.bias is not None else None
        out, cache = F.linear(x, self.weight.data, b)
        self._save(cache)
        return out

    def backward(self, dout):
        dx, dw, db = F.linear_backward(dout, self._take_cache())
        self.weight.accumulate_grad(dw)
        if self.bias is not None:
            self.bias.accumulate_grad(db)
        return dx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class ReLU(Module):
    def forward(self, x):
        out, cache = F.relu(x)
        self._save(cache)
        return out

    def backward(self, dout):
        return F.relu_backward(dout, self._take_cache())


class Sigmoid(Module):
    def forward(self, x):
        out, cache = F.sigmoid(x)
        self._save(cache)
        return out

    def backward(self, dout):
        return F.sigmoid_backward(dout, self._take_cache())


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        out, cache = F.max_pool2d(x, self.kernel_size, self.stride, self.padding)
        self._save(cache)
        return out

    def backward(self, dout):
        return F.max_pool2d_backward(dout, self._take_cache())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Flatten(Module):
    """(N, ...) -> (N, prod(...)), as the box head does before fc6."""

    def forward(self, x):
        self._save(x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._take_cache())


class FrozenBatchNorm2d(Module):
    """Batch norm with fixed statistics and affine parameters, all buffers (torchvision).

    y = x * scale + shift with scale = weight / sqrt(running_var + eps) and
    shift = bias - running_mean * scale. torchvision's COCO checkpoints expect eps = 0.0.
    """

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", np.ones(num_features, np.float32))
        self.register_buffer("bias", np.zeros(num_features, np.float32))
        self.register_buffer("running_mean", np.zeros(num_features, np.float32))
        self.register_buffer("running_var", np.ones(num_features, np.float32))

    def forward(self, x):
        out, cache = F.frozen_batch_norm2d(x, self.weight, self.bias, self.running_mean,
                                           self.running_var, self.eps)
        self._save(cache)
        return out

    def backward(self, dout):
        return F.frozen_batch_norm2d_backward(dout, self._take_cache())

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}"


class BatchNorm2d(Module):
    """Batch norm: batch statistics (and a running-stat update) in train mode, running
    statistics in eval mode, as torch.nn.BatchNorm2d."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, np.float32))
        self.bias = Parameter(np.zeros(num_features, np.float32))
        self.register_buffer("running_mean", np.zeros(num_features, np.float32))
        self.register_buffer("running_var", np.ones(num_features, np.float32))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    def forward(self, x):
        out, cache = F.batch_norm2d(x, self.weight.data, self.bias.data, self.running_mean,
                                    self.running_var, self.training, self.momentum, self.eps)
        if self.training:
            self.num_batches_tracked = self.num_batches_tracked + 1
        self._save(cache)
        return out

    def backward(self, dout):
        dx, dweight, dbias = F.batch_norm2d_backward(dout, self._take_cache())
        self.weight.accumulate_grad(dweight)
        self.bias.accumulate_grad(dbias)
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
