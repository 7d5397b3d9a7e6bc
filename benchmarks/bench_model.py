"""Mask R-CNN ResNet-50-FPN inference on one 800x1066 image: mrcnn_np vs torchvision with the
same weights, same process, same thread count. Prints the end-to-end ratio, each stage's share
of our time, and both peak memories (each measured in a fresh subprocess holding only that
model: the peak resident set size during one inference minus the resident size before it;
Linux's high-water mark is reset first through /proc/self/clear_refs).

    python benchmarks/bench_model.py [--repeats 3]
"""

import argparse
import gc
import json
import subprocess
import sys
import time

import numba
import numpy as np
import torch
import torchvision

import mrcnn_np as mn


def build(seed=0):
    torch.manual_seed(seed)
    theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None,
                                                                weights_backbone=None).eval()
    with torch.no_grad():  # spread the scores so that ~100 detections reach the mask head
        theirs.roi_heads.box_predictor.cls_score.weight.mul_(40)
    ours = mn.models.maskrcnn_resnet50_fpn()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    image = np.random.default_rng(seed).random((3, 800, 1066), dtype=np.float32)
    return theirs, ours.eval(), image


def stage_times(model, image):
    """Seconds per stage of one inference, stage by stage through the public API."""
    times = {}
    with mn.nn.no_grad():
        start = time.perf_counter()
        image_list, _ = model.transform([image])
        times["transform"] = time.perf_counter() - start
        start = time.perf_counter()
        features = model.backbone(image_list.tensors)
        times["backbone (ResNet-50 + FPN)"] = time.perf_counter() - start
        start = time.perf_counter()
        proposals, _ = model.rpn(image_list, features)
        times["rpn"] = time.perf_counter() - start
        start = time.perf_counter()
        detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
        times["roi heads (box + mask)"] = time.perf_counter() - start
        start = time.perf_counter()
        model.transform.postprocess(detections, image_list.image_sizes, [image.shape[-2:]])
        times["postprocess (paste masks)"] = time.perf_counter() - start
    return times


def peak_memory(which):
    """Run one inference of `which` in a subprocess; return its growth of max RSS in MB."""
    out = subprocess.run([sys.executable, __file__, "--memory-of", which], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["mb"]


def _status_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure_memory(which):
    image = np.random.default_rng(0).random((3, 800, 1066), dtype=np.float32)
    if which == "ours":
        model = mn.models.maskrcnn_resnet50_fpn().eval()
        model.roi_heads.box_predictor.cls_score.weight.data *= 40
        model([image])  # compile the kernels first: their memory is not the model's

        def run():
            model([image])
    else:
        model = torchvision.models.detection.maskrcnn_resnet50_fpn(
            weights=None, weights_backbone=None).eval()

        def run():
            with torch.no_grad():
                model([torch.from_numpy(image)])

        run()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak-RSS high-water mark (VmHWM)
    before = _status_kb("VmRSS")
    run()
    print(json.dumps({"mb": (_status_kb("VmHWM") - before) / 1024}))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-of", choices=["ours", "torch"])
    args = parser.parse_args()
    torch.set_num_threads(numba.get_num_threads())
    if args.memory_of:
        _measure_memory(args.memory_of)
        return
    theirs, ours, image = build()
    timage = torch.from_numpy(image)
    ours([image])  # warm-up: Numba compilation, BLAS threads
    with torch.no_grad():
        theirs([timage])
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        detections = ours([image])
        t_ours.append(time.perf_counter() - start)
        with torch.no_grad():
            start = time.perf_counter()
            theirs([timage])
            t_theirs.append(time.perf_counter() - start)
    best_ours, best_theirs = min(t_ours), min(t_theirs)
    print(f"threads: {numba.get_num_threads()}; {len(detections[0]['boxes'])} detections")
    print(f"end to end: ours {best_ours:.2f} s, torchvision {best_theirs:.2f} s, "
          f"ratio {best_ours / best_theirs:.2f}")
    stages = stage_times(ours, image)
    total = sum(stages.values())
    for name, seconds in stages.items():
        print(f"  {name:<30}{seconds:7.2f} s  {100 * seconds / total:5.1f} %")
    mem_ours, mem_theirs = peak_memory("ours"), peak_memory("torch")
    print(f"peak memory of one inference: ours {mem_ours:.0f} MB, torchvision {mem_theirs:.0f} MB,"
          f" ratio {mem_ours / mem_theirs:.2f}")


if __name__ == "__main__":
    main()
