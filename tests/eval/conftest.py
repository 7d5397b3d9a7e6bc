"""Shared helpers for the evaluation tests: the COCOEVAL.md vectors and random COCO scenarios."""

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from mrcnn_np.eval import poly_to_rle, rle_decode, rle_encode, string_to_counts

# The repo is cloned with shared/ beside it (in CI and on dev machines): never skip if absent.
VECTORS = Path(__file__).parents[2].parent / "shared" / "coco_vectors"


@pytest.fixture(scope="session")
def vectors_dir():
    if not VECTORS.is_dir():
        raise FileNotFoundError(
            f"COCO test vectors not found at {VECTORS} (shared/ beside the repo)"
        )
    return VECTORS


@pytest.fixture(scope="session")
def vectors(vectors_dir):
    """load(name) -> a fresh copy of a COCOEVAL.md vector file's json."""

    def load(name):
        return json.loads((vectors_dir / name).read_text())

    return load


def _rect_mask(rng, h, w):
    m = np.zeros((h, w), np.uint8)
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    m[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = 1
    return m


def _jitter_box(rng, box, scale):
    x, y, w, h = box
    dx, dy, dw, dh = rng.normal(0, scale, 4) * [w, h, w, h]
    return [x + dx, y + dy, max(w + dw, 0.5), max(h + dh, 0.5)]


def _polygon_from_box(rng, box):
    """A random star-ish polygon roughly inside box (sometimes crossing the image border)."""
    x, y, w, h = box
    k = rng.integers(3, 9)
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radius = rng.uniform(0.3, 0.6, k)
    px = x + w / 2 + np.cos(angles) * radius * w
    py = y + h / 2 + np.sin(angles) * radius * h
    return np.round(np.stack([px, py], 1).ravel(), 1).tolist()


def make_scenario(seed, iou_type):
    """A random gt dict and result list exercising COCOEVAL.md's rules.

    Crowd gts, images without gts, categories without detections, a category id missing from
    the gt, >100 dets in one image, gt areas on the 1024 / 9216 boundaries, tied scores, a gt
    with id 0 and (keypoints) gts without labelled keypoints.
    """
    rng = np.random.default_rng(seed)
    cat_ids = sorted(rng.choice(np.arange(1, 30), size=rng.integers(1, 5), replace=False).tolist())
    images, anns, results = [], [], []
    n_kp = 17
    ann_id = 0 if rng.random() < 0.2 else 1
    for img_id in rng.choice(np.arange(1, 100), size=rng.integers(2, 7), replace=False).tolist():
        h, w = int(rng.integers(20, 140)), int(rng.integers(20, 140))
        images.append({"id": img_id, "height": h, "width": w})
        gts_here = []
        for _ in range(rng.integers(0, 7) if rng.random() < 0.85 else 0):
            box = [
                float(rng.integers(-5, w)),
                float(rng.integers(-5, h)),
                float(rng.integers(1, w)),
                float(rng.integers(1, h)),
            ]
            if rng.random() < 0.3:
                box = np.round(rng.uniform(-3, 1, 4) + box, 2).tolist()
                box[2], box[3] = abs(box[2]) + 0.5, abs(box[3]) + 0.5
            crowd = int(rng.random() < 0.15)
            area = float(rng.choice([box[2] * box[3], 1024, 9216, rng.uniform(0, 2e4), 32 * 33]))
            ann = {
                "id": ann_id,
                "image_id": img_id,
                "category_id": int(rng.choice(cat_ids)),
                "bbox": box,
                "area": area,
                "iscrowd": crowd,
            }
            ann_id += 1
            if iou_type == "segm":
                if crowd:
                    counts = [int(c) for c in _uncompressed(_rect_mask(rng, h, w))]
                    ann["segmentation"] = {"size": [h, w], "counts": counts}
                else:
                    parts = [_polygon_from_box(rng, box) for _ in range(1 + (rng.random() < 0.2))]
                    ann["segmentation"] = parts
            if iou_type == "keypoints":
                kp = np.zeros((n_kp, 3))
                kp[:, 0] = rng.uniform(box[0], box[0] + box[2], n_kp)
                kp[:, 1] = rng.uniform(box[1], box[1] + box[3], n_kp)
                kp[:, 2] = rng.integers(0, 3, n_kp) * (rng.random() < 0.8)
                kp[kp[:, 2] == 0, :2] = 0
                ann["keypoints"] = np.round(kp, 1).ravel().tolist()
                ann["num_keypoints"] = int(np.count_nonzero(kp[:, 2]))
            anns.append(ann)
            gts_here.append(ann)
        crowded = seed % 3 == 0 and not images[:-1]  # >100 dets of one category in one image
        n_dets = 130 if crowded or rng.random() < 0.1 else int(rng.integers(0, 25))
        for _ in range(n_dets):
            if gts_here and rng.random() < 0.7:
                src = gts_here[rng.integers(len(gts_here))]
                box, cat = _jitter_box(rng, src["bbox"], 0.1), src["category_id"]
            else:
                src = None
                box = [rng.uniform(-5, w), rng.uniform(-5, h), rng.uniform(1, w), rng.uniform(1, h)]
                cat = int(rng.choice(cat_ids))
            if crowded:
                cat = cat_ids[0]
            elif rng.random() < 0.03:
                cat = 99  # not a gt category: dropped
            score = (
                float(rng.choice([0.5, 0.7, 0.9])) if rng.random() < 0.3 else float(rng.random())
            )
            res = {"image_id": img_id, "category_id": cat, "score": score, "bbox": box}
            if iou_type == "segm":
                x0, y0 = int(max(box[0], 0)), int(max(box[1], 0))
                m = np.zeros((h, w), np.uint8)
                m[y0 : int(box[1] + box[3]) + 1, x0 : int(box[0] + box[2]) + 1] = 1
                if src is not None and "segmentation" in src and rng.random() < 0.5:
                    m = _gt_mask(src["segmentation"], h, w)
                res["segmentation"] = rle_encode(m)
            if iou_type == "keypoints":
                if src is not None and "keypoints" in src:
                    kp = np.array(src["keypoints"], float).reshape(-1, 3)
                    kp[:, :2] += rng.normal(0, 2, (n_kp, 2))
                else:
                    kp = np.stack(
                        [rng.uniform(0, w, n_kp), rng.uniform(0, h, n_kp), np.ones(n_kp)], 1
                    )
                kp[:, 2] = 1
                res["keypoints"] = np.round(kp, 2).ravel().tolist()
            results.append(res)
    if iou_type != "bbox" and rng.random() < 0.7:
        for res in results:
            del res["bbox"]  # area from the mask / keypoint extent instead of w*h
    categories = [{"id": c, "name": f"c{c}"} for c in cat_ids]
    gt = {"images": images, "categories": categories, "annotations": anns}
    return gt, results


def _uncompressed(mask):
    return string_to_counts(rle_encode(mask)["counts"])


def _gt_mask(segm, h, w):
    return rle_decode(poly_to_rle(segm, h, w)) if isinstance(segm, list) else rle_decode(segm)


def run_pycocotools(gt, results, iou_type, use_cats=1):
    """pycocotools' COCOeval on deep copies (it edits its inputs), its printing silenced."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.useCats = use_cats
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.fixture(scope="session")
def scenario():
    """scenario(seed, iou_type) -> (gt dict, result list)."""
    return make_scenario


@pytest.fixture(scope="session")
def pycocotools_eval():
    """pycocotools_eval(gt, results, iou_type, use_cats) -> finished COCOeval (skips if absent)."""
    pytest.importorskip("pycocotools")
    return run_pycocotools
