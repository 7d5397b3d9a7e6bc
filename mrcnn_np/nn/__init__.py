"""The layer library: forward/backward pairs, modules, gradient checks."""

from . import functional, init
from .gradcheck import (
    format_gradcheck_table,
    gradcheck,
    layer_gradcheck_table,
    loss_gradcheck,
    numerical_gradient,
    relative_error,
)
from .layers import *  # noqa: F403
from .layers import __all__ as _layers
from .module import Module, ModuleList, Parameter, Sequential, no_grad

__all__ = ["Module", "ModuleList", "Parameter", "Sequential", "format_gradcheck_table",
           "functional", "gradcheck", "init", "layer_gradcheck_table", "loss_gradcheck",
           "no_grad", "numerical_gradient", "relative_error", *_layers]
