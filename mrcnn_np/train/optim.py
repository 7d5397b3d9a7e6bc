"""SGD with momentum and weight decay (torch.optim.SGD's update), learning-rate schedules
(linear warm-up, then step or cosine decay), and gradient-norm clipping.

The update for a parameter p with gradient g, as torch writes it:

    g <- g + weight_decay * p                 (skipped for norms and biases if asked)
    v <- momentum * v + g                     (v = g on the first step)
    p <- p - lr * v
"""

import math

import numpy as np


class SGD:
    def __init__(self, named_parameters, lr, momentum=0.9, weight_decay=1e-4,
                 no_decay_on_norms_and_biases=False):
        self.params = [(name, p) for name, p in named_parameters if p.requires_grad]
        if not self.params:
            raise ValueError("named_parameters: no trainable parameters to optimise")
        if lr <= 0:
            raise ValueError(f"lr: expected a positive learning rate, got {lr}")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.decay = {name: not (no_decay_on_norms_and_biases and _is_norm_or_bias(name, p))
                      for name, p in self.params}
        self.velocity = {}
        self.step_count = 0

    def step(self, lr=None):
        lr = self.lr if lr is None else lr
        for name, p in self.params:
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay and self.decay[name]:
                g = g + self.weight_decay * p.data
            if self.momentum:
                v = self.velocity.get(name)
                v = g.copy() if v is None else self.momentum * v + g
                self.velocity[name] = v
                g = v
            p.data -= (lr * g).astype(p.data.dtype, copy=False)
        self.step_count += 1

    def zero_grad(self):
        for _, p in self.params:
            p.grad = None

    def state_dict(self):
        return {"step_count": self.step_count, "lr": self.lr,
                "velocity": {k: v.copy() for k, v in self.velocity.items()}}

    def load_state_dict(self, state):
        self.step_count = int(state["step_count"])
        self.lr = float(state["lr"])
        names = {name for name, _ in self.params}
        unknown = sorted(set(state["velocity"]) - names)
        if unknown:
            raise ValueError(f"state: momentum buffers for unknown parameters: {unknown[:5]}")
        self.velocity = {k: np.array(v, copy=True) for k, v in state["velocity"].items()}


def _is_norm_or_bias(name, param):
    return param.data.ndim <= 1 or name.endswith(".bias")


def learning_rate(step, base_lr, total_steps, warmup_steps=0, warmup_factor=0.001,
                  schedule="step", milestones=(), gamma=0.1, min_lr=0.0):
    """The learning rate at `step` (0-based): linear warm-up from base_lr * warmup_factor,
    then "step" (multiply by gamma at each milestone), "cosine" (to min_lr at total_steps)
    or "constant"."""
    if step < warmup_steps:
        alpha = step / warmup_steps
        warm = warmup_factor * (1 - alpha) + alpha
    else:
        warm = 1.0
    if schedule == "step":
        lr = base_lr * gamma ** sum(step >= m for m in milestones)
    elif schedule == "cosine":
        t = min(step, total_steps) / max(total_steps, 1)
        lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t))
    elif schedule == "constant":
        lr = base_lr
    else:
        raise ValueError(f"schedule: expected 'step', 'cosine' or 'constant', got {schedule!r}")
    return lr * warm


def clip_grad_norm(parameters, max_norm):
    """Scale all gradients so their global L2 norm is at most max_norm; return the norm
    before clipping (as torch.nn.utils.clip_grad_norm_)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    if max_norm is not None and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total
