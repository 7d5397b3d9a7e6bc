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


# --------------------------------------------------------------------------------------------
# cases: RoI pooling (1000 RoIs, 256 channels, 7x7, one 200x272 map: P2 of an 800x1088 input)


def roi_inputs(rng):
    x = rng.standard_normal((1, 256, 200, 272)).astype(np.float32)
    boxes = realistic_boxes(rng, 1000, image=(800, 1088))
    boxes = mn.ops.clip_boxes_to_image(boxes, (800, 1088))
    rois = np.concatenate([np.zeros((1000, 1), np.float32), boxes], axis=1)
    return x, rois, torch.from_numpy(x), torch.from_numpy(rois)


def setup_roi_align_forward(rng):
    x, rois, xt, rt = roi_inputs(rng)
    return (lambda: mn.ops.roi_align(x, rois, 7, 0.25, 2),
            lambda: torchvision.ops.roi_align(xt, rt, 7, 0.25, 2))


def setup_roi_align_backward(rng):
    x, rois, xt, rt = roi_inputs(rng)
    grad = rng.standard_normal((1000, 256, 7, 7)).astype(np.float32)
    xt.requires_grad_(True)
    out = torchvision.ops.roi_align(xt, rt, 7, 0.25, 2)
    grad_t = torch.from_numpy(grad)

    def reference():  # autograd's backward of roi_align alone
        torch.autograd.grad(out, xt, grad_t, retain_graph=True)

    return (lambda: mn.ops.roi_align_backward(grad, rois, x.shape, 7, 0.25, 2), reference)


def setup_roi_pool_forward(rng):
    x, rois, xt, rt = roi_inputs(rng)
    return (lambda: mn.ops.roi_pool(x, rois, 7, 0.25),
            lambda: torchvision.ops.roi_pool(xt, rt, 7, 0.25))


def setup_roi_pool_backward(rng):
    x, rois, xt, rt = roi_inputs(rng)
    grad = rng.standard_normal((1000, 256, 7, 7)).astype(np.float32)
    _, argmax = mn.ops.roi_pool(x, rois, 7, 0.25)
    xt.requires_grad_(True)
    out = torchvision.ops.roi_pool(xt, rt, 7, 0.25)
    grad_t = torch.from_numpy(grad)

    def reference():  # autograd's backward of roi_pool alone
        torch.autograd.grad(out, xt, grad_t, retain_graph=True)

    return (lambda: mn.ops.roi_pool_backward(grad, argmax, x.shape, rois), reference)


CASES = [
    Case("nms 5000 boxes, IoU 0.7", setup_nms),
    Case("batched_nms 5x1000 boxes, IoU 0.7", setup_batched_nms),
    Case("box_iou 2000 x 2000", setup_box_iou),
    Case("roi_align forward 1000x256x7x7", setup_roi_align_forward),
    Case("roi_align backward 1000x256x7x7", setup_roi_align_backward),
    Case("roi_pool forward 1000x256x7x7", setup_roi_pool_forward),
    Case("roi_pool backward 1000x256x7x7", setup_roi_pool_backward),
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
