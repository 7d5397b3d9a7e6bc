"""Reading and writing weights: `.npz` and torchvision `.pth` checkpoints (without torch)."""

from .weights import (
    CheckpointError,
    load_npz,
    load_torchvision_checkpoint,
    save_npz,
    upgrade_torchvision_keys,
)

__all__ = [
    "CheckpointError",
    "load_npz",
    "load_torchvision_checkpoint",
    "save_npz",
    "upgrade_torchvision_keys",
]
