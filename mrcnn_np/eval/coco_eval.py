"""COCO detection / segmentation / keypoint evaluation with pycocotools' exact numbers.

Reproduces `COCO.loadRes` + `COCOeval.evaluate/accumulate/summarize` of pycocotools 2.0.11
(COCOEVAL.md §2): same `stats`, same `precision` / `recall` / `scores` arrays, bit for bit.
The semantics worth knowing (COCOEVAL.md §4 lists them all):

* AP is averaged over IoU thresholds .50:.05:.95 and 101 recall thresholds, both made with
  `np.linspace` (index 8 of the IoU thresholds is 0.8999999999999999, not 0.9).
* A detection matches the unmatched gt of its image and category with the highest IoU >= the
  threshold; crowd gts absorb any number of detections, which are then neither TP nor FP.
* Areas come from the annotations' `area` field (gts) and from the results (dets: box w*h for
  results with a `bbox`, even segm results; mask area otherwise; keypoint extent).
* maxDets cuts are per image and category; ties in score keep the result-list order.
* -1 means "no non-ignored gt": such categories / areas are left out of the means. A category
  that has gts but no detection scores 0.

Where pycocotools crashes we return numbers or raise a clear error instead:

* an empty result list evaluates to AP 0 wherever there are gts (-1 elsewhere);
* segm results may be polygons or uncompressed RLEs, not only compressed RLEs;
* a result without a score, an unknown image id, duplicate gt ids or malformed RLEs raise
  ValueError; results of categories absent from the gt are dropped (as pycocotools does)
  with a warning;
* a gt without `iscrowd` counts as not crowd; the gt dict and the results are never modified
  (pycocotools writes RLEs, ids and areas into them).

Kept from pycocotools on purpose, for parity: keypoint evaluation with `useCats = 0` matches
nothing (pycocotools computes no OKS then), and gt ids of 0 cannot produce true positives.
"""

import json
import warnings
from pathlib import Path

import numpy as np

from .iou import group_iou, oks_matrix
from .matching import accumulate, match_groups
from .polygon import segmentations_to_batch
from .rle import check_batch, rle_encode

__all__ = ["COCOEvaluator", "Params", "detections_to_results", "write_results"]

_IOU_TYPES = ("bbox", "segm", "keypoints")


class Params:
    """Evaluation parameters under pycocotools' names (set them before `evaluate`).

    imgIds, catIds: images and categories to evaluate (default: all of the gt, sorted).
    iouThrs (T,), recThrs (R,): IoU and recall thresholds. maxDets: detections kept per image
    and category (1, 10, 100; 20 for keypoints). areaRng, areaRngLbl: [lo, hi] object-area
    ranges (both bounds inclusive) and their names. useCats: 0 pools all categories.
    kpt_oks_sigmas: per-keypoint OKS falloff (keypoints only).
    """

    def __init__(self, iou_type="bbox"):
        if iou_type not in _IOU_TYPES:
            raise ValueError(f"iou_type: expected one of {_IOU_TYPES}, got {iou_type!r}")
        self.iouType = iou_type
        self.imgIds, self.catIds = [], []
        # np.arange / i/100 would give slightly different thresholds (COCOEVAL.md §4.1)
        self.iouThrs = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
        self.recThrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)
        self.useCats = 1
        if iou_type == "keypoints":
            self.maxDets = [20]
            self.areaRng = [[0**2, 1e5**2], [32**2, 96**2], [96**2, 1e5**2]]
            self.areaRngLbl = ["all", "medium", "large"]
            # fmt: off
            sigmas = [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                      .89, .89]
            # fmt: on
            self.kpt_oks_sigmas = np.array(sigmas) / 10.0  # not the literals: 0.26/10 != .026
        else:
            self.maxDets = [1, 10, 100]
            self.areaRng = [[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]]
            self.areaRngLbl = ["all", "small", "medium", "large"]

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k not in ("imgIds",))
        return f"Params({fields}, imgIds=<{len(self.imgIds)} ids>)"


# ---------------------------------------------------------------------------------------------
# Ground truth and results as column arrays
# ---------------------------------------------------------------------------------------------


def _load_json(source):
    if isinstance(source, (str, Path)):
        with open(source) as f:
            return json.load(f)
    return source


def _require(ann, key, where):
    if key not in ann:
        raise ValueError(f"{where}: missing required field {key!r}")
    return ann[key]


def _float_rows(rows, width, where):
    if len(rows) == 0:
        return np.zeros((0, width))
    arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    if arr.shape[1] != width or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{where}: expected {width} finite numbers per entry, got shape {arr.shape}"
        )
    return arr


class _GroundTruth:
    """The gt json as arrays, with what `COCOeval._prepare` derives from it."""

    def __init__(self, dataset, iou_type):
        if not isinstance(dataset, dict):
            raise TypeError(
                f"gt: expected a COCO dict or a json path, got {type(dataset).__name__}"
            )
        images = dataset.get("images", [])
        self.image_ids = [_require(img, "id", f"gt images[{i}]") for i, img in enumerate(images)]
        self.image_index = {img_id: i for i, img_id in enumerate(self.image_ids)}
        if len(self.image_index) != len(self.image_ids):
            raise ValueError("gt images: image ids must be unique")
        # (h, w) of every image, -1 where unknown: polygons are rasterised on the image size
        self.image_hw = np.array(
            [[img.get("height", -1), img.get("width", -1)] for img in images], np.int64
        ).reshape(-1, 2)
        self.cat_ids = sorted(
            _require(c, "id", f"gt categories[{i}]")
            for i, c in enumerate(dataset.get("categories", []))
        )
        # annotations of images that are not in 'images' can never be evaluated
        anns = [a for a in dataset.get("annotations", []) if a.get("image_id") in self.image_index]
        ids = [_require(a, "id", f"gt annotation {i}") for i, a in enumerate(anns)]
        if len(set(ids)) != len(ids):
            raise ValueError(
                "gt annotations: annotation ids must be unique (pycocotools "
                "silently keeps only the last annotation of a repeated id)"
            )
        self.image = np.array([self.image_index[a["image_id"]] for a in anns], np.int64)
        self.category = np.array(
            [_require(a, "category_id", f"gt annotation id {a['id']}") for a in anns], np.int64
        )
        self.area = np.array(
            [_require(a, "area", f"gt annotation id {a['id']}") for a in anns], np.float64
        )
        iscrowd = [a.get("iscrowd", 0) for a in anns]
        # pycocotools: ignore = bool(iscrowd), while matching and IoU use int(iscrowd)
        self.ignore = np.array([bool(c) for c in iscrowd], np.bool_)
        self.crowd = np.array([int(c) != 0 for c in iscrowd], np.bool_)
        self.id_nonzero = np.array([i != 0 for i in ids], np.bool_)
        if iou_type in ("bbox", "keypoints"):
            where = "gt annotations 'bbox'"
            self.bbox = _float_rows([_require(a, "bbox", where) for a in anns], 4, where)
        if iou_type == "keypoints":
            self.keypoints = [
                np.asarray(_require(a, "keypoints", "gt annotations"), np.float64) for a in anns
            ]
            self.ignore |= np.array(
                [_require(a, "num_keypoints", "gt annotations") == 0 for a in anns], np.bool_
            )
        if iou_type == "segm":
            segms = [_require(a, "segmentation", f"gt annotation id {a['id']}") for a in anns]
            self.rles = segmentations_to_batch(segms, self.image_hw[self.image], "gt segmentation")
            _, self.bbox = check_batch(self.rles, "gt segmentation")


class _Detections:
    """Results as arrays, with `COCO.loadRes` semantics (COCOEVAL.md §2.2)."""

    def __init__(self, results, gt, iou_type):
        n = len(results)
        self.image = np.empty(n, np.int64)
        self.category = np.empty(n, np.int64)
        self.score = np.empty(n, np.float64)
        for i, r in enumerate(results):
            if not isinstance(r, dict):
                raise TypeError(f"results[{i}]: expected a dict, got {type(r).__name__}")
            img = _require(r, "image_id", f"results[{i}]")
            if img not in gt.image_index:
                raise ValueError(f"results[{i}]: image_id {img!r} is not a gt image")
            self.image[i] = gt.image_index[img]
            self.category[i] = _require(r, "category_id", f"results[{i}]")
            self.score[i] = _require(r, "score", f"results[{i}]")
        if np.isnan(self.score).any():
            raise ValueError(
                f"results: score must not be NaN (results[{np.isnan(self.score).argmax()}])"
            )
        self._sizes = gt.image_hw[self.image]
        getattr(self, f"_load_{self._branch(results)}")(results, iou_type)

    @staticmethod
    def _branch(results):
        """loadRes looks only at the first result to decide what all results are."""
        if not results:
            return "empty"
        first = results[0]
        if "bbox" in first and len(first["bbox"]) > 0:
            return "bbox"
        if "segmentation" in first:
            return "segmentation"
        if "keypoints" in first:
            return "keypoints"
        raise ValueError("results[0]: expected a 'bbox', 'segmentation' or 'keypoints' field")

    def _load_empty(self, results, iou_type):
        self.area, self.bbox, self.keypoints = np.zeros(0), np.zeros((0, 4)), []
        self._set_masks([])

    def _load_bbox(self, results, iou_type):
        self.bbox = _float_rows(
            [_require(r, "bbox", "results") for r in results], 4, "results bbox"
        )
        self.area = self.bbox[:, 2] * self.bbox[:, 3]  # even for segm results that carry a mask
        if iou_type == "segm":
            b = self.bbox
            x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
            polys = np.stack([x0, y0, x0, y1, x1, y1, x1, y0], axis=1)
            segms = [r.get("segmentation", [row]) for r, row in zip(results, polys, strict=True)]
            self._set_masks(segms)
        if iou_type == "keypoints":
            self._set_keypoints(results)

    def _load_segmentation(self, results, iou_type):
        segms = [_require(r, "segmentation", f"results[{i}]") for i, r in enumerate(results)]
        self._set_masks(segms)
        self.area = self.mask_area.astype(np.float64)
        if iou_type == "bbox":
            self.bbox = self.mask_box.copy()  # toBbox of the mask, unless a bbox is given
            for i, r in enumerate(results):
                if "bbox" in r:
                    self.bbox[i] = _float_rows([r["bbox"]], 4, f"results[{i}] bbox")[0]
        if iou_type == "keypoints":
            self._set_keypoints(results)

    def _load_keypoints(self, results, iou_type):
        if iou_type != "keypoints":
            raise ValueError(f"{iou_type} evaluation needs 'bbox' or 'segmentation' in results")
        self._set_keypoints(results)
        xy = [np.asarray(k, np.float64) for k in self.keypoints]
        x0 = np.array([k[0::3].min() for k in xy])
        x1 = np.array([k[0::3].max() for k in xy])
        y0 = np.array([k[1::3].min() for k in xy])
        y1 = np.array([k[1::3].max() for k in xy])
        self.area = (x1 - x0) * (y1 - y0)  # extent of all keypoints, even unlabelled (0, 0)
        self.bbox = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)

    def _set_masks(self, segms):
        self.rles = segmentations_to_batch(segms, self._sizes, "results segmentation")
        self.mask_area, self.mask_box = check_batch(self.rles, "results segmentation")

    def _set_keypoints(self, results):
        self.keypoints = [
            np.asarray(_require(r, "keypoints", f"results[{i}]"), np.float64)
            for i, r in enumerate(results)
        ]


# ---------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------


class COCOEvaluator:
    """pycocotools' COCOeval with the same numbers, computed in a few Numba kernels.

    >>> ev = COCOEvaluator("instances_val.json", iou_type="segm")
    >>> stats = ev.evaluate(results)      # list of result dicts or a json path
    >>> print(ev.summary())

    After `evaluate`: `stats` (12 floats, 10 for keypoints), `precision` (T, R, K, A, M),
    `recall` (T, K, A, M) and `scores` (T, R, K, A, M) as pycocotools' `eval` dict holds them.
    """

    def __init__(self, gt, iou_type="bbox", use_cats=True):
        self.params = Params(iou_type)
        self.iou_type = iou_type
        self._gt = _GroundTruth(_load_json(gt), iou_type)
        self.params.imgIds = sorted(self._gt.image_ids)
        self.params.catIds = list(self._gt.cat_ids)
        self.params.useCats = int(bool(use_cats))
        self.stats = self.precision = self.recall = self.scores = None
        self._lines = []

    # -- evaluate ---------------------------------------------------------------------------

    def evaluate(self, results):
        """Evaluate a result list (or json path); returns `stats` (float64, 12 or 10 values)."""
        results = _load_json(results)
        if not isinstance(results, list):
            raise TypeError(
                f"results: expected a list of dicts or a json path, got {type(results)}"
            )
        p = self._normalised_params()
        gt = self._gt
        dt = _Detections(results, gt, self.iou_type)
        unknown = sorted(set(dt.category.tolist()) - set(gt.cat_ids))
        if unknown:
            warnings.warn(
                f"results: dropping detections of categories {unknown[:10]} that are "
                "not among the gt categories",
                stacklevel=2,
            )

        cells = self._cells(p, gt, dt)
        iou, iou_ptr = self._ious(p, gt, dt, cells)
        gt_flat, dt_flat = cells["gt"], cells["dt"]
        matched, ignored, n_regular = match_groups(
            iou,
            iou_ptr,
            cells["dt_ptr"],
            cells["gt_ptr"],
            gt.area[gt_flat],
            gt.ignore[gt_flat],
            gt.crowd[gt_flat],
            gt.id_nonzero[gt_flat],
            dt.area[dt_flat],
            p.areaRng,
            p.iouThrs,
        )
        self.precision, self.recall, self.scores = accumulate(
            cells["cat_ptr"],
            cells["dt_ptr"],
            dt.score[dt_flat],
            matched,
            ignored,
            n_regular,
            p.recThrs,
            p.maxDets,
        )
        self._eval_params = p
        self.stats = self._summarize(p)
        return self.stats

    def _normalised_params(self):
        """What `COCOeval.evaluate` does to its params, on a copy, with clear errors."""
        src = self.params
        p = Params(src.iouType)
        vars(p).update(vars(src))
        p.imgIds = list(np.unique(src.imgIds)) if len(src.imgIds) else []
        missing = set(p.imgIds) - set(self._gt.image_index)
        if missing:
            raise ValueError(f"params.imgIds: {sorted(missing)[:10]} are not gt image ids")
        p.catIds = (
            list(np.unique(src.catIds)) if src.useCats and len(src.catIds) else list(src.catIds)
        )
        p.maxDets = sorted(int(m) for m in src.maxDets)
        if not p.maxDets or p.maxDets[0] < 0:
            raise ValueError(f"params.maxDets: expected non-negative ints, got {src.maxDets}")
        if src.iouType != "keypoints" and len(p.maxDets) < 3:
            raise ValueError(
                f"params.maxDets: the 12 summary stats need 3 values, got {src.maxDets}"
            )
        p.iouThrs = np.asarray(src.iouThrs, np.float64).reshape(-1)
        p.recThrs = np.asarray(src.recThrs, np.float64).reshape(-1)
        p.areaRng = np.asarray(src.areaRng, np.float64).reshape(-1, 2)
        if len(src.areaRngLbl) != p.areaRng.shape[0]:
            raise ValueError(
                f"params.areaRngLbl: expected {p.areaRng.shape[0]} labels, got "
                f"{len(src.areaRngLbl)}"
            )
        return p

    def _cells(self, p, gt, dt):
        """The (image, category) cells in accumulate order and their gts / dets (COCOEVAL §2.3)."""
        img_pos = np.full(len(gt.image_ids), -1, np.int64)
        img_pos[[gt.image_index[i] for i in p.imgIds]] = np.arange(len(p.imgIds))
        cat_index = {int(c): k for k, c in enumerate(p.catIds)}
        n_img, n_cat = len(p.imgIds), (len(p.catIds) if p.useCats else 1)

        def keys(image, category):
            cat_pos = np.array([cat_index.get(c, -1) for c in category.tolist()], np.int64)
            keep = (cat_pos >= 0) & (img_pos[image] >= 0)
            key = (cat_pos * n_img if p.useCats else 0) + img_pos[image]
            return keep, key, cat_pos

        g_keep, g_key, g_cat = keys(gt.image, gt.category)
        d_keep, d_key, d_cat = keys(dt.image, dt.category)
        g_idx, d_idx = np.flatnonzero(g_keep), np.flatnonzero(d_keep)
        # within a cell: gts in (category order, file order); dets by score, then the same
        g_idx = g_idx[np.lexsort((g_idx, g_cat[g_idx], g_key[g_idx]))]
        d_idx = d_idx[np.lexsort((d_idx, d_cat[d_idx], -dt.score[d_idx], d_key[d_idx]))]
        cell_keys = np.unique(np.concatenate([g_key[g_idx], d_key[d_idx]]))
        gt_ptr = np.searchsorted(g_key[g_idx], cell_keys, side="left")
        gt_ptr = np.append(gt_ptr, len(g_idx))
        d_first = np.searchsorted(d_key[d_idx], d_key[d_idx], side="left")
        d_idx = d_idx[np.arange(len(d_idx)) - d_first < p.maxDets[-1]]  # maxDets per cell
        dt_ptr = np.append(np.searchsorted(d_key[d_idx], cell_keys, side="left"), len(d_idx))
        cell_cat = cell_keys // n_img if p.useCats else np.zeros(len(cell_keys), np.int64)
        cat_ptr = np.searchsorted(cell_cat, np.arange(n_cat + 1), side="left")
        return {"gt": g_idx, "dt": d_idx, "gt_ptr": gt_ptr, "dt_ptr": dt_ptr, "cat_ptr": cat_ptr}

    def _ious(self, p, gt, dt, cells):
        gt_ptr, dt_ptr = cells["gt_ptr"], cells["dt_ptr"]
        if self.iou_type == "bbox":
            return group_iou(dt.bbox, gt.bbox, gt.crowd, cells["dt"], dt_ptr, cells["gt"], gt_ptr)
        if self.iou_type == "segm":
            return group_iou(
                dt.mask_box,
                gt.bbox,
                gt.crowd,
                cells["dt"],
                dt_ptr,
                cells["gt"],
                gt_ptr,
                dt.rles,
                gt.rles,
                dt.mask_area,
            )
        return self._oks(p, gt, dt, cells)

    def _oks(self, p, gt, dt, cells):
        """OKS blocks; pycocotools computes none when categories are pooled (useCats=0)."""
        gt_ptr, dt_ptr = cells["gt_ptr"], cells["dt_ptr"]
        n_cells = len(gt_ptr) - 1
        sizes = np.diff(dt_ptr) * np.diff(gt_ptr) if p.useCats else np.zeros(n_cells, np.int64)
        iou_ptr = np.zeros(n_cells + 1, np.int64)
        np.cumsum(sizes, out=iou_ptr[1:])
        iou = np.zeros(iou_ptr[-1])
        width = 3 * len(p.kpt_oks_sigmas)
        for c in np.flatnonzero(sizes):
            g = cells["gt"][gt_ptr[c] : gt_ptr[c + 1]]
            d = cells["dt"][dt_ptr[c] : dt_ptr[c + 1]]
            dk = _float_rows([dt.keypoints[i] for i in d], width, "results keypoints")
            gk = _float_rows([gt.keypoints[i] for i in g], width, "gt keypoints")
            block = oks_matrix(dk, gk, gt.bbox[g], gt.area[g], p.kpt_oks_sigmas)
            iou[iou_ptr[c] : iou_ptr[c + 1]] = block.ravel()
        return iou, iou_ptr

    # -- summaries --------------------------------------------------------------------------

    def _summarize_one(self, p, ap, iou_thr=None, area="all", max_dets=100):
        """pycocotools `_summarize`: one mean over the selected (T, R, K) block, -1 if empty."""
        aind = [i for i, lbl in enumerate(p.areaRngLbl) if lbl == area]
        mind = [i for i, m in enumerate(p.maxDets) if m == max_dets]
        s = self.precision if ap else self.recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == p.iouThrs)[0]]
        s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
        value = -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))
        iou_str = (
            f"{p.iouThrs[0]:0.2f}:{p.iouThrs[-1]:0.2f}" if iou_thr is None else f"{iou_thr:0.2f}"
        )
        title, kind = ("Average Precision", "(AP)") if ap else ("Average Recall", "(AR)")
        self._lines.append(
            f" {title:<18} {kind} @[ IoU={iou_str:<9} | area={area:>6s} | "
            f"maxDets={max_dets:>3d} ] = {value:0.3f}"
        )
        return value

    def _summarize(self, p):
        self._lines = []
        if self.iou_type == "keypoints":
            plan = [
                (1, None, "all"),
                (1, 0.5, "all"),
                (1, 0.75, "all"),
                (1, None, "medium"),
                (1, None, "large"),
                (0, None, "all"),
                (0, 0.5, "all"),
                (0, 0.75, "all"),
                (0, None, "medium"),
                (0, None, "large"),
            ]
            return np.array([self._summarize_one(p, ap, t, a, 20) for ap, t, a in plan])
        md = p.maxDets
        plan = [
            (1, None, "all", 100),
            (1, 0.5, "all", md[2]),
            (1, 0.75, "all", md[2]),
            (1, None, "small", md[2]),
            (1, None, "medium", md[2]),
            (1, None, "large", md[2]),
            (0, None, "all", md[0]),
            (0, None, "all", md[1]),
            (0, None, "all", md[2]),
            (0, None, "small", md[2]),
            (0, None, "medium", md[2]),
            (0, None, "large", md[2]),
        ]
        return np.array([self._summarize_one(p, ap, t, a, m) for ap, t, a, m in plan])

    def summary(self):
        """pycocotools' summary table (one line per stat) of the last `evaluate`."""
        if self.stats is None:
            raise RuntimeError("summary: call evaluate(results) first")
        return "\n".join(self._lines)

    def per_category_ap(self):
        """{category id: AP@[.50:.95]} over area 'all' at the largest maxDets (-1: no gt)."""
        if self.precision is None:
            raise RuntimeError("per_category_ap: call evaluate(results) first")
        p = self._eval_params
        a = p.areaRngLbl.index("all") if "all" in p.areaRngLbl else 0
        cat_ids = p.catIds if p.useCats else [-1]
        out = {}
        for k, cat in enumerate(cat_ids):
            s = self.precision[:, :, k, a, -1]
            out[int(cat)] = float(np.mean(s[s > -1])) if np.any(s > -1) else -1.0
        return out


# ---------------------------------------------------------------------------------------------
# Results in and out
# ---------------------------------------------------------------------------------------------


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("ascii")
    return value


def write_results(path, results):
    """Write results as pycocotools' result json (numpy values and bytes counts converted)."""
    with open(path, "w") as f:
        json.dump([_jsonable(r) for r in results], f)


def detections_to_results(
    image_id, boxes, scores, labels, masks=None, keypoints=None, mask_threshold=0.5
):
    """COCO result dicts of one image from model outputs (boxes x1, y1, x2, y2; labels =
    category ids). `masks` (N, [1,] H, W) probabilities become RLEs of `masks > mask_threshold`;
    `keypoints` (N, K, 3) become flat [x, y, v, ...] lists."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    out = [
        {"image_id": image_id, "category_id": int(c), "score": float(s), "bbox": b.tolist()}
        for b, s, c in zip(
            xywh, np.asarray(scores).reshape(-1), np.asarray(labels).reshape(-1), strict=True
        )
    ]
    if masks is not None:
        m = np.asarray(masks)
        m = m.reshape(m.shape[0], m.shape[-2], m.shape[-1])
        for r, rle in zip(out, rle_encode(m > mask_threshold) if len(m) else [], strict=True):
            r["segmentation"] = rle
    if keypoints is not None:
        for r, k in zip(out, np.asarray(keypoints, np.float64), strict=True):
            r["keypoints"] = k.reshape(-1).tolist()
    return out
