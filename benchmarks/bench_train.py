"""It learns: `maskrcnn_small` trained from scratch on the synthetic shapes, and its training
step against the same network assembled from torchvision's modules.

1. Time per training iteration (forward with losses, backward, clipping, SGD step) of ours and
   of torchvision's MaskRCNN built to the same sizes (a ResNet-18 body of the same narrow width
   from torchvision's BasicBlock, torchvision's FPN, anchors, RPN and RoI heads), starting
   from the same weights and fed the same batches, with torch.optim.SGD on the same schedule;
   the same thread count for both. Best of several repeats after a warm-up; prints the ratio
   ours/torch and where our step spends its time.
2. Training from scratch until mask AP50 >= 0.9 and box AP (AP@[.5:.95]) >= 0.7 on 100
   held-out images, evaluated every `--eval-every` steps; prints the curve and the training
   time (evaluations excluded) to reach the target.

    python benchmarks/bench_train.py [--skip-training] [--skip-timing] [--minutes 20]
                                     [--repeats 5] [--lr 0.01] [--iterations 1200] ...
"""

import argparse
import time
from collections import OrderedDict, defaultdict

import numba
import numpy as np
import torch
import torchvision
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.resnet import BasicBlock
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import mrcnn_np as mn
from mrcnn_np.data.shapes import ShapesDataset
from mrcnn_np.train.optim import learning_rate
from mrcnn_np.train.trainer import Trainer

# the benchmark's run: what the shapes data and the training loop are set to
DATA = {"num_train": 2000, "num_val": 100, "image_size": 128, "train_seed": 0,
        "val_seed": 10_000}
TRAIN = {"batch_size": 4, "lr": 0.01, "warmup_steps": 50, "iterations": 1200,
         "eval_every": 100}
TARGET = {"segm_AP50": 0.9, "bbox_AP": 0.7}


# -- the torchvision twin --------------------------------------------------------------------

def _torch_resnet_body(width, norm_layer):
    """ResNet-18's stem and layer1..4 with `width` stem channels (torchvision fixes 64)."""
    layers = [("conv1", torch.nn.Conv2d(3, width, 7, 2, 3, bias=False)),
              ("bn1", norm_layer(width)), ("relu", torch.nn.ReLU(inplace=True)),
              ("maxpool", torch.nn.MaxPool2d(3, 2, 1))]
    in_channels = width
    for index in range(4):
        planes, stride = width * 2**index, 1 if index == 0 else 2
        downsample = None
        if stride != 1 or in_channels != planes:
            downsample = torch.nn.Sequential(
                torch.nn.Conv2d(in_channels, planes, 1, stride, bias=False), norm_layer(planes))
        blocks = [BasicBlock(in_channels, planes, stride, downsample, norm_layer=norm_layer),
                  BasicBlock(planes, planes, norm_layer=norm_layer)]
        layers.append((f"layer{index + 1}", torch.nn.Sequential(*blocks)))
        in_channels = planes
    return torch.nn.Sequential(OrderedDict(layers))


def torch_twin(ours):
    """torchvision's MaskRCNN with our model's config and a copy of its weights."""
    c = ours.config
    if c.depth != 18 or c.norm != "batch":
        raise ValueError("torch_twin: expected a depth-18 model with BatchNorm2d (the preset)")
    body = _torch_resnet_body(c.width, torch.nn.BatchNorm2d)
    backbone = BackboneWithFPN(body, {f"layer{i}": str(i - 1) for i in range(1, 5)},
                               [c.width * 2**i for i in range(4)], c.fpn_channels,
                               extra_blocks=LastLevelMaxPool())
    anchors = torchvision.models.detection.anchor_utils.AnchorGenerator(c.anchor_sizes,
                                                                        c.aspect_ratios)
    model = torchvision.models.detection.MaskRCNN(
        backbone, num_classes=None, min_size=c.min_size, max_size=c.max_size,
        image_mean=list(c.image_mean), image_std=list(c.image_std),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=c.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=c.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=c.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=c.rpn_post_nms_top_n_test, rpn_nms_thresh=c.rpn_nms_thresh,
        rpn_fg_iou_thresh=c.rpn_fg_iou_thresh, rpn_bg_iou_thresh=c.rpn_bg_iou_thresh,
        rpn_batch_size_per_image=c.rpn_batch_size_per_image,
        rpn_positive_fraction=c.rpn_positive_fraction, rpn_score_thresh=c.rpn_score_thresh,
        box_head=TwoMLPHead(c.fpn_channels * 49, c.box_representation_size),
        box_predictor=FastRCNNPredictor(c.box_representation_size, c.num_classes),
        box_score_thresh=c.box_score_thresh, box_nms_thresh=c.box_nms_thresh,
        box_detections_per_img=c.box_detections_per_img,
        box_fg_iou_thresh=c.box_fg_iou_thresh, box_bg_iou_thresh=c.box_bg_iou_thresh,
        box_batch_size_per_image=c.box_batch_size_per_image,
        box_positive_fraction=c.box_positive_fraction, bbox_reg_weights=c.bbox_reg_weights,
        mask_head=MaskRCNNHeads(c.fpn_channels, c.mask_layers, 1),
        mask_predictor=MaskRCNNPredictor(c.mask_layers[-1], c.mask_layers[-1], c.num_classes))
    state = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    model.load_state_dict(state)
    return model


class TorchTrainer:
    """torch.optim.SGD with our Trainer's settings: no weight decay on norms and biases, the
    same learning-rate schedule and gradient clipping."""

    def __init__(self, model, trainer):
        self.model, self.trainer, self.step = model, trainer, 0
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        opt = trainer.optimizer
        self.optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": opt.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=opt.lr, momentum=opt.momentum)

    def train_step(self, images, targets):
        t = self.trainer
        self.model.train()
        images = [torch.from_numpy(i) for i in images]
        targets = [{k: torch.from_numpy(v) for k, v in target.items()} for target in targets]
        losses = self.model(images, targets)
        self.optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
        lr = learning_rate(self.step, t.base_lr, t.iterations, t.warmup_steps,
                           schedule=t.schedule, milestones=t.milestones)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in losses.items()}


# -- part 1: time per iteration ----------------------------------------------------------------

def make_run(iterations=None, seed=0):
    size = DATA["image_size"]  # the shapes are drawn at the size the model works at
    model = mn.models.maskrcnn_small(num_classes=4, min_size=size, max_size=size)
    train = ShapesDataset(DATA["num_train"], DATA["image_size"], seed=DATA["train_seed"])
    val = ShapesDataset(DATA["num_val"], DATA["image_size"], seed=DATA["val_seed"])
    trainer = Trainer(model, train, "runs/bench_train", iterations=iterations or
                      TRAIN["iterations"], batch_size=TRAIN["batch_size"], lr=TRAIN["lr"],
                      warmup_steps=TRAIN["warmup_steps"], val_dataset=val,
                      eval_every=TRAIN["eval_every"], class_names=train.class_names, seed=seed,
                      progress=False)
    return trainer


def time_iterations(repeats):
    trainer = make_run()
    twin = TorchTrainer(torch_twin(trainer.model), trainer)
    batches = [trainer.next_batch() for _ in range(repeats + 2)]
    ours, theirs = [], []
    for images, targets in batches:
        start = time.perf_counter()
        trainer.train_step(batch=(images, targets))
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        twin.train_step(images, targets)
        theirs.append(time.perf_counter() - start)
    best_ours, best_theirs = min(ours[2:]), min(theirs[2:])
    print(f"time per training iteration (batch {TRAIN['batch_size']}, "
          f"{DATA['image_size']} px, best of {repeats} after 2 warm-up steps)")
    print(f"  mrcnn_np     {best_ours * 1000:8.1f} ms   (median {np.median(ours[2:]) * 1000:.1f})")
    print(f"  torchvision  {best_theirs * 1000:8.1f} ms   (median "
          f"{np.median(theirs[2:]) * 1000:.1f})")
    print(f"  ratio ours/torch {best_ours / best_theirs:.2f}x")
    stage_breakdown(trainer, batches[2:])


def _timed(times, key, method):
    def run(*args, **kwargs):
        start = time.perf_counter()
        out = method(*args, **kwargs)
        times[key] += time.perf_counter() - start
        return out
    return run


def stage_breakdown(trainer, batches):
    """Our step's time by stage, forward and backward, averaged over `batches`."""
    model, heads = trainer.model, trainer.model.roi_heads
    stages = {"resnet body": model.backbone.body, "fpn": model.backbone.fpn,
              "rpn (head, anchors, targets, proposals)": model.rpn,
              "box branch (roi_align, fc6/fc7, predictor)": None,
              "mask branch (roi_align, 4 convs, deconv, 1x1)": None}
    parts = {"box branch (roi_align, fc6/fc7, predictor)": (heads.box_roi_pool, heads.box_head,
                                                            heads.box_predictor),
             "mask branch (roi_align, 4 convs, deconv, 1x1)": (heads.mask_roi_pool,
                                                               heads.mask_head,
                                                               heads.mask_predictor)}
    times = defaultdict(float)
    patched = []
    for name, module in stages.items():
        for m in parts.get(name, (module,)):
            for kind in ("forward", "backward"):
                patched.append((m, kind))
                setattr(m, kind, _timed(times, (name, kind), getattr(m, kind)))
    total = 0.0
    for batch in batches:
        start = time.perf_counter()
        trainer.train_step(batch=batch)
        total += time.perf_counter() - start
    for m, kind in patched:
        delattr(m, kind)
    n = len(batches)
    print(f"\nwhere our step goes ({total / n * 1000:.0f} ms per step)")
    print(f"  {'stage':<48}{'forward':>10}{'backward':>10}")
    accounted = 0.0
    for name in stages:
        f, b = times[(name, "forward")] / n, times[(name, "backward")] / n
        accounted += f + b
        print(f"  {name:<48}{f * 1000:8.0f}ms{b * 1000:8.0f}ms")
    print(f"  {'rest (losses, sampling, clipping, SGD, data)':<48}"
          f"{(total / n - accounted) * 1000:8.0f}ms")


# -- part 2: learning curve ------------------------------------------------------------------

def learning_curve(minutes):
    trainer = make_run()
    print(f"\ntraining maskrcnn_small from scratch: {DATA}, {TRAIN}")
    print(f"{'step':>6}{'time':>8}{'loss':>8}{'cls':>7}{'box':>7}{'mask':>7}{'obj':>7}"
          f"{'rpnbox':>7}{'boxAP':>7}{'AP50':>7}{'maskAP':>7}{'AP50':>7}")
    train_time, reached, losses = 0.0, None, defaultdict(list)
    while trainer.step < trainer.iterations and train_time < minutes * 60:
        start = time.perf_counter()
        record = trainer.train_step()
        train_time += time.perf_counter() - start
        for k, v in record.items():
            losses[k].append(v)
        if trainer.step % trainer.eval_every and trainer.step != trainer.iterations:
            continue
        ap = trainer.evaluate()
        mean = {k: float(np.mean(v)) for k, v in losses.items()}
        losses.clear()
        print(f"{trainer.step:6d}{train_time:7.0f}s{mean['loss']:8.3f}"
              f"{mean['loss_classifier']:7.3f}{mean['loss_box_reg']:7.3f}"
              f"{mean['loss_mask']:7.3f}{mean['loss_objectness']:7.3f}"
              f"{mean['loss_rpn_box_reg']:7.3f}{ap['bbox_AP']:7.3f}{ap['bbox_AP50']:7.3f}"
              f"{ap['segm_AP']:7.3f}{ap['segm_AP50']:7.3f}", flush=True)
        if reached is None and all(ap[k] >= v for k, v in TARGET.items()):
            reached = (trainer.step, train_time)
    if reached:
        print(f"target {TARGET} reached at step {reached[0]} after {reached[1] / 60:.1f} min "
              "of training")
    else:
        print(f"target {TARGET} not reached within {train_time / 60:.1f} min")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    for key, value in TRAIN.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    TRAIN.update({key: getattr(args, key) for key in TRAIN})
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    print(f"threads: {threads} (numba and torch)")
    if not args.skip_timing:
        time_iterations(args.repeats)
    if not args.skip_training:
        learning_curve(args.minutes)


if __name__ == "__main__":
    main()
