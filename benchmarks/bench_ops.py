"""Speed of mrcnn_np.ops against torchvision.ops, same process, same inputs, same threads.

Run: python benchmarks/bench_ops.py [case-name-substring ...]

Each case is a `Case(name, setup)`; `setup(rng)` builds the inputs once and returns two
zero-argument callables, (ours, reference). Append new cases to CASES. Both callables are
warmed up (Numba compilation, torch's first-call overheads) and then timed; the best of the
repeats is reported, with the ratio ours / reference (< 1 means we are faster).
"""

import sys
import time
from typing import NamedTuple

import numba
import numpy as np
import torch
import torchvision

import mrcnn_np as mn


class Case(NamedTuple):
    name: str
    setup: object  # rng -> (ours, reference)


def best_time(function, repeats=7, warmup=2):
    """Best wall-clock time of `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def realistic_boxes(rng, n, image=(800, 1333)):
    """Boxes 8..300 px wide and tall, centred anywhere in an 800x1333 image (float32)."""
    centre = rng.uniform(0, 1, size=(n, 2)) * np.float32([image[1], image[0]])
    size = rng.uniform(8, 300, size=(n, 2))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# cases: box geometry and NMS


def setup_nms(rng):
    boxes = realistic_boxes(rng, 5000)
    scores = rng.random(5000).astype(np.float32)
    boxes_t, scores_t = torch.from_numpy(boxes), torch.from_numpy(scores)
    return (lambda: mn.ops.nms(boxes, scores, 0.7),
            lambda: torchvision.ops.nms(boxes_t, scores_t, 0.7))


def setup_batched_nms(rng):
    # the RPN's case: ~5 levels x 1000 candidates, NMS per level (torchvision: vanilla path)
    boxes = realistic_boxes(rng, 5000)
    scores = rng.random(5000).astype(np.float32)
    levels = np.repeat(np.arange(5), 1000)
    tensors = [torch.from_numpy(a) for a in (boxes, scores, levels)]
    return (lambda: mn.ops.batched_nms(boxes, scores, levels, 0.7),
            lambda: torchvision.ops.batched_nms(*tensors, 0.7))


def setup_box_iou(rng):
    boxes1, boxes2 = realistic_boxes(rng, 2000), realistic_boxes(rng, 2000)
    tensor1, tensor2 = torch.from_numpy(boxes1), torch.from_numpy(boxes2)
    return (lambda: mn.ops.box_iou(boxes1, boxes2),
            lambda: torchvision.ops.box_iou(tensor1, tensor2))


CASES = [
    Case("nms 5000 boxes, IoU 0.7", setup_nms),
    Case("batched_nms 5x1000 boxes, IoU 0.7", setup_batched_nms),
    Case("box_iou 2000 x 2000", setup_box_iou),
]


def main(selected=()):
    torch.set_num_threads(numba.get_num_threads())
    print(f"threads: numba {numba.get_num_threads()}, torch {torch.get_num_threads()}; "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"{'case':<40} {'ours (ms)':>10} {'ref (ms)':>10} {'ratio':>7}")
    for case in CASES:
        if selected and not any(s in case.name for s in selected):
            continue
        ours, reference = case.setup(np.random.default_rng(0))
        t_ours, t_ref = best_time(ours), best_time(reference)
        print(f"{case.name:<40} {1e3 * t_ours:10.2f} {1e3 * t_ref:10.2f} {t_ours / t_ref:7.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
