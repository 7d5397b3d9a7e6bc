"""mrcnn_np: Mask R-CNN (He et al., 2017) written out in NumPy, with Numba for the hot loops.

Every stage is an explicit function with a hand-written backward, checked against finite
differences and against torchvision. See DESIGN.md for the data flow and conventions.
"""

__version__ = "0.1.0"

from . import data, eval, io, model, nn, ops, train, viz  # noqa: E402
from .log import log  # noqa: E402
from .model import presets as models  # noqa: E402

__all__ = ["__version__", "data", "eval", "io", "log", "model", "models", "nn", "ops",
           "train", "viz"]
