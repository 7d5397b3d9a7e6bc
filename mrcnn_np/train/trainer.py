"""The training loop: batches from a dataset, forward with losses, `model.backward()`, an SGD
step; a progress bar with the losses, a JSON-lines log, periodic COCO evaluation, and
checkpoints that resume exactly (weights, momentum, step and every random generator's state).
"""

import json
import math
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.transforms import RandomHorizontalFlip, to_tensor
from ..io.weights import load_npz
from .evaluate import evaluate_model
from .optim import SGD, clip_grad_norm, learning_rate


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the loss and the step."""


class Trainer:
    def __init__(self, model, dataset, out_dir, iterations=1000, batch_size=2, lr=0.02,
                 momentum=0.9, weight_decay=1e-4, warmup_steps=100, schedule="cosine",
                 milestones=(), max_grad_norm=10.0, hflip=True, val_dataset=None,
                 eval_every=0, checkpoint_every=0, class_names=None, seed=0, progress=True):
        if len(dataset) == 0:
            raise ValueError("dataset: expected at least one training image")
        self.model, self.dataset = model, dataset
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.iterations, self.batch_size = iterations, batch_size
        self.base_lr, self.warmup_steps = lr, warmup_steps
        self.schedule, self.milestones = schedule, milestones
        self.max_grad_norm, self.hflip = max_grad_norm, hflip
        self.val_dataset, self.class_names = val_dataset, class_names
        self.eval_every, self.checkpoint_every = eval_every, checkpoint_every
        self.progress = progress
        self.optimizer = SGD(model.named_parameters(), lr, momentum, weight_decay,
                             no_decay_on_norms_and_biases=True)
        self.rng = np.random.default_rng(seed)
        # the flip draws from the trainer's generator, which checkpoints save and restore
        self.flip = RandomHorizontalFlip(0.5, rng=self.rng) if hflip else None
        self.step = 0
        self._order = np.zeros(0, np.int64)
        self.log_path = self.out_dir / "log.jsonl"

    # -- data ------------------------------------------------------------------------------

    def _next_indices(self):
        """Walk a fresh permutation of the dataset each epoch."""
        if len(self._order) < self.batch_size:
            self._order = np.concatenate([self._order,
                                          self.rng.permutation(len(self.dataset))])
        batch, self._order = self._order[:self.batch_size], self._order[self.batch_size:]
        return batch

    def _load(self, index):
        """dataset[index] as the model takes it: crowd regions dropped (as torchvision's
        reference training does), flipped left-right with probability 1/2, image as a tensor."""
        image, target = self.dataset[int(index)]
        keep = np.asarray(target.get("iscrowd", np.zeros(len(target["boxes"]))), bool) == 0
        target = {"boxes": np.asarray(target["boxes"], np.float32).reshape(-1, 4)[keep],
                  "labels": np.asarray(target["labels"], np.int64)[keep],
                  "masks": np.asarray(target["masks"], np.uint8)[keep]}
        if self.flip is not None:
            image, target = self.flip(image, target)
        return to_tensor(image), target

    def next_batch(self):
        """The next `batch_size` training images and targets, as `train_step` takes them."""
        batch = [self._load(i) for i in self._next_indices()]
        return [image for image, _ in batch], [target for _, target in batch]

    # -- one step --------------------------------------------------------------------------

    def train_step(self, batch=None):
        """One SGD step on `batch` = (images, targets), by default the next one."""
        self.model.train()
        images, targets = self.next_batch() if batch is None else batch
        losses = self.model(images, targets)
        for name, value in losses.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(f"{name} is {value} at step {self.step}; lower the "
                                         "learning rate or check the targets of this batch")
        self.model.zero_grad()
        self.model.backward()
        grad_norm = clip_grad_norm(self.model.parameters(), self.max_grad_norm)
        lr = learning_rate(self.step, self.base_lr, self.iterations, self.warmup_steps,
                           schedule=self.schedule, milestones=self.milestones)
        self.optimizer.step(lr)
        self.step += 1
        return {**losses, "loss": float(sum(losses.values())), "lr": lr, "grad_norm": grad_norm}

    # -- the loop --------------------------------------------------------------------------

    def fit(self, until=None, seconds=None):
        """Train until step `until` (default: `iterations`), or for about `seconds`; returns
        the logged records.

        With `seconds`, the iteration count, and with it the learning-rate schedule, is set
        after every step to what fits in the time left at the mean step time so far. The first
        step is left out of that mean: on a fresh machine it compiles Numba's kernels. Steps
        slow down as training goes on (more proposals become positive and reach the mask
        head), so a plan made once from the first few steps overran a 2.5-minute budget by a
        third."""
        if until is not None and seconds is not None:
            raise ValueError("until, seconds: give at most one of them")
        stop = self.iterations if until is None else min(until, self.iterations)
        history = []
        # with a time budget the step count is known from the second step on
        bar = tqdm(total=None if seconds is not None else self.iterations, initial=self.step,
                   disable=not self.progress, desc="train", dynamic_ncols=True)
        start = time.perf_counter()
        first_step_end = None
        with open(self.log_path, "a") as log:
            while self.step < (self.iterations if seconds is not None else stop):
                record = {"step": self.step + 1, **self.train_step(),
                          "time": time.perf_counter() - start}
                if self.eval_every and self.val_dataset is not None and \
                        (self.step % self.eval_every == 0 or self.step == self.iterations):
                    record.update(self.evaluate())
                if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                    self.save_checkpoint(self.out_dir / "checkpoint.npz")
                log.write(json.dumps(record) + "\n")
                log.flush()
                history.append(record)
                if seconds is not None:
                    now = time.perf_counter()
                    if first_step_end is None:
                        first_step_end = now
                    else:
                        per_step = (now - first_step_end) / (len(history) - 1)
                        left = seconds - (now - start)
                        self.iterations = self.step + max(int(left / per_step), 0)
                        bar.total = self.iterations
                bar.set_postfix(loss=f"{record['loss']:.3f}",
                                mask=f"{record.get('loss_mask', 0):.3f}")
                bar.update(1)
        bar.close()
        return history

    def evaluate(self):
        evaluators = evaluate_model(self.model, self.val_dataset,
                                    class_names=self.class_names)
        return {f"{kind}_AP": float(ev.stats[0]) for kind, ev in evaluators.items()} | \
            {f"{kind}_AP50": float(ev.stats[1]) for kind, ev in evaluators.items()}

    # -- checkpoints -----------------------------------------------------------------------

    def _generators(self):
        """Every random stream the run draws from, by name."""
        gens = {"trainer": self.rng}
        for name, module in self.model.named_modules():
            if hasattr(module, "rng") and isinstance(module.rng, np.random.Generator):
                gens.setdefault(f"model.{name}", module.rng)
        return gens

    def save_checkpoint(self, path):
        meta = {"step": self.step, "order": self._order.tolist(),
                "optimizer": {"step_count": self.optimizer.step_count,
                              "lr": self.optimizer.lr},
                "rng": {name: g.bit_generator.state for name, g in self._generators().items()}}
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        arrays |= {f"velocity/{k}": v for k, v in self.optimizer.velocity.items()}
        np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
        return path

    def load_checkpoint(self, path):
        state = load_npz(path)
        meta = json.loads(str(state.pop("meta")))
        self.model.load_state_dict({k[6:]: v for k, v in state.items()
                                    if k.startswith("model/")})
        self.optimizer.load_state_dict({
            **meta["optimizer"],
            "velocity": {k[9:]: v for k, v in state.items() if k.startswith("velocity/")}})
        self.step = int(meta["step"])
        self._order = np.asarray(meta["order"], np.int64)
        gens = self._generators()
        for name, rng_state in meta["rng"].items():
            if name not in gens:
                raise ValueError(f"checkpoint: random stream {name!r} does not exist here")
            gens[name].bit_generator.state = rng_state
        return self
