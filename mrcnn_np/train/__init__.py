"""Training (paper Sec. 3.1): SGD and its schedules, the training loop with checkpoints and
COCO evaluation, and whole runs as the command line starts them."""

from .evaluate import coco_ground_truth, evaluate_model
from .optim import SGD, clip_grad_norm, learning_rate
from .trainer import NonFiniteLossError, Trainer

__all__ = ["SGD", "NonFiniteLossError", "Trainer", "clip_grad_norm", "coco_ground_truth",
           "evaluate_model", "learning_rate"]
