"""Weight initialisation with PyTorch's formulas, drawn from a seedable NumPy generator.

`manual_seed(s)` makes every layer built afterwards deterministic; a layer also takes an
explicit `rng=` when a caller wants its own stream.
"""

import math

import numpy as np

_rng = np.random.default_rng(0)


def manual_seed(seed):
    """Reset the generator that layers draw their initial weights from."""
    global _rng
    _rng = np.random.default_rng(seed)


def default_rng():
    return _rng


def fan_in_and_fan_out(shape):
    """PyTorch's fans: dim 1 is fan-in and dim 0 fan-out, times the receptive field."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def uniform(shape, bound, rng=None):
    rng = rng or _rng
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def normal(shape, std, mean=0.0, rng=None):
    rng = rng or _rng
    return (mean + std * rng.standard_normal(size=shape)).astype(np.float32)


def kaiming_uniform(shape, a=0.0, mode="fan_in", rng=None):
    """He et al. (2015) uniform init; `a=sqrt(5)` is PyTorch's default for Conv2d/Linear."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    gain = math.sqrt(2.0 / (1 + a * a))
    return uniform(shape, gain * math.sqrt(3.0 / fan), rng)


def kaiming_normal(shape, mode="fan_out", rng=None):
    """He et al. (2015) normal init for ReLU layers (torchvision's heads use fan_out)."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    return normal(shape, math.sqrt(2.0) / math.sqrt(fan), rng=rng)
