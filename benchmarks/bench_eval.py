"""Segm COCO evaluation: mrcnn_np.eval.COCOEvaluator against pycocotools on the same data.

500 synthetic 128x128 images, 3-6 polygon gts each (rectangles and ellipses, a few crowd RLEs),
100 detections per image (jittered gt masks and random blobs, RLE-encoded, no bbox key).
Timed end to end from the gt dict and result list to the 12 stats:
  ours:        COCOEvaluator(gt, "segm") + evaluate(results)
  pycocotools: COCO(gt) + loadRes + COCOeval + evaluate + accumulate + summarize
Both must produce identical stats. Best of several repeats after a warm-up.

    python benchmarks/bench_eval.py [--images 500] [--dets 100] [--repeats 3]
"""

import argparse
import contextlib
import copy
import io
import time

import numba
import numpy as np

from mrcnn_np.eval import COCOEvaluator, rle_encode

SIZE = 128
CATEGORIES = [1, 2, 3]


def _ellipse_polygon(rng, cx, cy, rx, ry):
    angles = np.linspace(0, 2 * np.pi, int(rng.integers(12, 33)), endpoint=False)
    return np.round(np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1), 2).ravel()


def _shape(rng):
    """A random rectangle or ellipse: (polygon, bbox, mask)."""
    cx, cy = rng.uniform(10, SIZE - 10, 2)
    rx, ry = rng.uniform(3, 40, 2)
    if rng.random() < 0.5:
        x0, y0, x1, y1 = cx - rx, cy - ry, cx + rx, cy + ry
        poly = np.array([x0, y0, x1, y0, x1, y1, x0, y1])
    else:
        poly = _ellipse_polygon(rng, cx, cy, rx, ry)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    if poly.size == 8:
        mask = (xx >= poly[0]) & (xx < poly[2]) & (yy >= poly[1]) & (yy < poly[5])
    else:
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    return poly, mask


def make_data(n_images, n_dets, seed=0):
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for img in range(1, n_images + 1):
        images.append({"id": img, "height": SIZE, "width": SIZE})
        gts = []
        for _ in range(rng.integers(3, 7)):
            poly, mask = _shape(rng)
            cat = int(rng.choice(CATEGORIES))
            ann = {
                "id": len(anns) + 1,
                "image_id": img,
                "category_id": cat,
                "area": float(mask.sum()),
                "iscrowd": 0,
            }
            if rng.random() < 0.05:  # a crowd region as an uncompressed RLE
                ann["iscrowd"] = 1
                ann["segmentation"] = {"size": [SIZE, SIZE], "counts": _runs(mask)}
            else:
                ann["segmentation"] = [poly.tolist()]
            anns.append(ann)
            gts.append((mask, cat))
        masks, cats = [], []
        for _ in range(n_dets):
            if rng.random() < 0.6:
                mask, cat = gts[rng.integers(len(gts))]
                mask = np.roll(mask, rng.integers(-4, 5, 2), axis=(0, 1))
            else:
                _, mask = _shape(rng)
                cat = int(rng.choice(CATEGORIES))
            masks.append(mask)
            cats.append(cat)
        scores = np.round(rng.random(n_dets), 3)
        for rle, cat, score in zip(rle_encode(np.stack(masks)), cats, scores, strict=True):
            results.append(
                {"image_id": img, "category_id": cat, "score": float(score), "segmentation": rle}
            )
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": str(c)} for c in CATEGORIES],
    }
    return gt, results


def _runs(mask):
    """Uncompressed COCO counts: column-major run lengths, starting with a 0-run."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(np.r_[0, flat])) if flat.size else np.zeros(0, int)
    return np.diff(np.r_[0, edges, flat.size]).tolist()


def run_ours(gt, results):
    return COCOEvaluator(gt, "segm").evaluate(results)


def run_pycocotools(gt, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def best_time(fn, gt, results, repeats):
    """Best wall time of `repeats` runs; each run gets fresh copies (pycocotools edits them)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        gt_copy, res_copy = copy.deepcopy(gt), copy.deepcopy(results)
        t0 = time.perf_counter()
        out = fn(gt_copy, res_copy)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    gt, results = make_data(args.images, args.dets)
    small_gt, small_results = make_data(3, 10, seed=1)
    run_ours(small_gt, small_results)  # warm-up: load / compile the Numba kernels

    t_ours, stats_ours = best_time(run_ours, gt, results, args.repeats)
    t_ref, stats_ref = best_time(run_pycocotools, gt, results, args.repeats)
    same = np.array_equal(stats_ours, stats_ref)

    print(
        f"segm eval: {args.images} images x {args.dets} dets, {len(gt['annotations'])} gts, "
        f"numba threads: {numba.get_num_threads()}"
    )
    print(f"{'':<14}{'time (s)':>10}")
    print(f"{'mrcnn_np':<14}{t_ours:>10.3f}")
    print(f"{'pycocotools':<14}{t_ref:>10.3f}")
    print(f"{'ratio':<14}{t_ours / t_ref:>10.3f}   (ours / pycocotools)")
    print(f"stats identical: {same}  AP = {stats_ours[0]:.4f}")
    if not same:
        print("ours       ", stats_ours.tolist())
        print("pycocotools", stats_ref.tolist())


if __name__ == "__main__":
    main()
