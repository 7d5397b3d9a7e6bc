"""A dataset over a COCO-format annotation file (Lin et al., 2014, "Microsoft COCO").

Reads `instances_*.json` / `person_keypoints_*.json` style files, or anything written by
`export_coco`, and gives items in the same form as `ShapesDataset`:
`(image (H, W, 3) uint8, target)` with `boxes` (N, 4) float32 x1, y1, x2, y2, `labels` (N,)
int64, `masks` (N, H, W) uint8, `image_id` int, `area` (N,) float32, `iscrowd` (N,) int64,
and `keypoints` (N, K, 3) float32 when the file has keypoints.

What each field means (COCO's own conventions, as torchvision's references read them):

* boxes: the annotation's `bbox` [x, y, w, h] as [x, y, x + w, y + h], clipped to the image.
* masks: polygons are rasterised with pycocotools' exact rule (`mrcnn_np.eval.poly_to_rle`)
  and the parts of one annotation unioned, as `COCO.annToMask` does (a flat [x0, y0, ...]
  list is also read as one polygon, which pycocotools rejects); RLEs (compressed string or
  uncompressed list counts) are decoded as they are. A polygon too thin to cover any pixel
  centre gives an empty mask and is kept, as torchvision's references keep it.
* labels: categories sorted by id get the contiguous labels 1..C (0 is the background);
  `category_ids[label - 1]` maps back, `classes[label - 1]` is the name.
* crowd annotations (`iscrowd` 1) are kept and flagged; a trainer should leave them out of
  the positives (torchvision's references drop them for training).
* keypoints: (x, y, v) per keypoint, K from the categories' `keypoints` lists; an annotation
  without keypoints gets zeros (v = 0, "not labelled").
* area: the annotation's `area` when present (COCO's size ranges use it), else the mask's
  pixel count (or the box's area without masks).

Images are read by `mrcnn_np.data.images.load_image` (any Pillow mode to RGB, alpha dropped,
EXIF orientation applied).

Bad records never stop loading. Each one is skipped, with its reason and id recorded in
`dataset.report` (a `LoadReport`, printable) and one warning that says how many:

images       missing_file, corrupt_file (Pillow cannot read or verify it), size_mismatch (the
             file's displayed size differs from the record's height/width), duplicate_id,
             bad_record (no integer id or no file_name)
annotations  bad_record, unknown_image, image_skipped (its image was skipped),
             unknown_category, invalid_box (missing, non-finite, width or height <= 0),
             polygon_too_few_points (no part with >= 3 points), polygon_outside_image (no
             vertex box overlap with the image), bad_segmentation (neither polygons nor a
             valid RLE of the image's size), missing_segmentation (none or an empty one, in a
             file where other annotations have masks; a file without any gives no `masks`),
             box_outside_image (nothing left after clipping), bad_keypoints
categories   bad_record (no integer id), duplicate_id

A polygon part with fewer than 3 points (or an odd or non-finite coordinate list) is dropped
from an otherwise valid annotation; such annotations are listed under `repaired`.

`check_images` sets how much of each image file is read when the dataset is built:
"exists" (only that the file is there: fastest, corrupt files then fail in `__getitem__`),
"header" (default: Pillow opens it and runs `verify`, which catches truncated or damaged
PNGs but not every damaged JPEG), or "decode" (every image fully decoded: slow, complete).
An image that still cannot be read in `__getitem__` raises `ImageLoadError` naming the file.
"""

import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .images import ImageLoadError, check_image, load_image

__all__ = ["CocoDataset", "LoadReport"]

_CHECK_MODES = ("exists", "header", "decode")
_SHOWN_IDS = 10  # ids listed per reason in str(report)


@dataclass
class LoadReport:
    """What a `CocoDataset` kept and skipped, with reasons (see the coco module docstring).

    `skipped_images`, `skipped_annotations`, `skipped_categories` and `repaired_annotations`
    map a reason to the list of ids it applies to (a record without a usable id is named
    "#<position in its list>"). `image_errors` maps an image id to the file error message.
    """

    annotation_file: str
    images_kept: int = 0
    annotations_kept: int = 0
    skipped_images: dict = field(default_factory=dict)
    skipped_annotations: dict = field(default_factory=dict)
    skipped_categories: dict = field(default_factory=dict)
    repaired_annotations: dict = field(default_factory=dict)
    image_errors: dict = field(default_factory=dict)

    @property
    def num_skipped_images(self):
        return sum(len(v) for v in self.skipped_images.values())

    @property
    def num_skipped_annotations(self):
        return sum(len(v) for v in self.skipped_annotations.values())

    @property
    def clean(self):
        """True when nothing was skipped or repaired."""
        return not (self.skipped_images or self.skipped_annotations or self.skipped_categories
                    or self.repaired_annotations)

    def summary(self):
        """One line: what was kept and how much was skipped."""
        line = (f"{self.annotation_file}: kept {self.images_kept} images, "
                f"{self.annotations_kept} annotations")
        parts = [f"{n} {what}" for n, what in (
            (self.num_skipped_images, "images"),
            (self.num_skipped_annotations, "annotations"),
            (sum(len(v) for v in self.skipped_categories.values()), "categories"),
        ) if n]
        if parts:
            line += "; skipped " + ", ".join(parts)
        repaired = sum(len(v) for v in self.repaired_annotations.values())
        if repaired:
            line += f"; repaired {repaired} annotations"
        return line

    def __str__(self):
        lines = [self.summary()]
        for title, table in (("skipped images", self.skipped_images),
                             ("skipped annotations", self.skipped_annotations),
                             ("skipped categories", self.skipped_categories),
                             ("repaired annotations", self.repaired_annotations)):
            if table:
                lines.append(f"{title}:")
            for reason, ids in table.items():
                shown = ", ".join(str(i) for i in ids[:_SHOWN_IDS])
                more = f", ... ({len(ids) - _SHOWN_IDS} more)" if len(ids) > _SHOWN_IDS else ""
                lines.append(f"  {reason} ({len(ids)}): {shown}{more}")
        if self.image_errors:
            lines.append("image file errors:")
        for image_id, message in self.image_errors.items():
            lines.append(f"  image {image_id}: {message}")
        return "\n".join(lines)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _skip(table, reason, record_id):
    table.setdefault(reason, []).append(record_id)


def _record_id(record, position):
    value = record.get("id") if isinstance(record, dict) else None
    if _is_int(value):
        return int(value), True
    return f"#{position}", False


def _positive_int(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and value == int(value) and value > 0)


def _polygon_parts(segmentation):
    """Usable parts (float64 arrays of >= 6 finite coordinates) and whether any was dropped."""
    if len(segmentation) > 0 and np.ndim(segmentation[0]) == 0:
        segmentation = [segmentation]  # one flat polygon
    good = []
    for part in segmentation:
        try:
            xy = np.asarray(part, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if xy.ndim == 1 and xy.size >= 6 and xy.size % 2 == 0 and np.all(np.isfinite(xy)):
            good.append(xy)
    return good, len(good) != len(segmentation)


def _valid_rle(rle, h, w):
    from ..eval.rle import rle_area

    if not isinstance(rle.get("counts"), (str, list)) or list(rle.get("size", ())) != [h, w]:
        return False
    try:
        rle_area(rle)
    except (TypeError, ValueError):
        return False
    return True


class CocoDataset:
    """Images and instance annotations of a COCO json file (see the module docstring).

    Parameters
    ----------
    annotation_file : path
        The COCO json (`images`, `annotations`, `categories`).
    image_folder : path
        Folder that `file_name` of each image is relative to.
    check_images : "exists" | "header" | "decode"
        How much of each image file to read when building the index (default "header").
    transforms : callable or None
        Applied as `image, target = transforms(image, target)` to every item.

    Images are ordered by id. Attributes: `image_ids`, `category_ids`, `classes`,
    `class_names` ("__background__" first, indexable by label), `num_keypoints`,
    `keypoint_names`, `has_masks`, `report`.
    """

    def __init__(self, annotation_file, image_folder, check_images="header", transforms=None):
        if check_images not in _CHECK_MODES:
            raise ValueError(f"check_images: expected one of {_CHECK_MODES}, got {check_images!r}")
        self.annotation_file = os.fspath(annotation_file)
        self.image_folder = os.fspath(image_folder)
        self.transforms = transforms
        self.report = LoadReport(self.annotation_file)
        data = self._read_json()
        annotations = data.get("annotations") or []
        self._index_categories(data.get("categories") or [])
        self._index_keypoints(data.get("categories") or [], annotations)
        # detection-only files often carry "segmentation": [] everywhere: those have no masks
        self.has_masks = any(isinstance(a, dict) and a.get("segmentation") for a in annotations)
        self._index_images(data["images"], check_images)
        self._index_annotations(annotations)
        self.report.images_kept = len(self.images)
        self.report.annotations_kept = sum(len(a) for a in self._annotations)
        if not self.report.clean:
            warnings.warn(f"CocoDataset: {self.report.summary()} (details: dataset.report)",
                          stacklevel=2)

    # -- building the index ------------------------------------------------------------------

    def _read_json(self):
        try:
            with open(self.annotation_file) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"annotation_file {self.annotation_file!r}: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise ValueError(
                f"annotation_file {self.annotation_file!r}: expected a COCO json object with an "
                "'images' list"
            )
        return data

    def _index_categories(self, categories):
        names = {}
        for position, category in enumerate(categories):
            category_id, ok = _record_id(category, position)
            if not ok:
                _skip(self.report.skipped_categories, "bad_record", category_id)
            elif category_id in names:
                _skip(self.report.skipped_categories, "duplicate_id", category_id)
            else:
                names[category_id] = str(category.get("name", category_id))
        self.category_ids = sorted(names)
        self.category_id_to_label = {c: k for k, c in enumerate(self.category_ids, start=1)}
        self.classes = tuple(names[c] for c in self.category_ids)

    def _index_keypoints(self, categories, annotations):
        named = [c["keypoints"] for c in categories
                 if isinstance(c, dict) and isinstance(c.get("keypoints"), list) and c["keypoints"]]
        if named:
            longest = max(named, key=len)
            self.num_keypoints, self.keypoint_names = len(longest), tuple(longest)
            return
        lengths = [len(a["keypoints"]) for a in annotations
                   if isinstance(a, dict) and isinstance(a.get("keypoints"), list)]
        self.num_keypoints, self.keypoint_names = max(lengths, default=0) // 3, None

    def _index_images(self, images, check_images):
        self.images, seen = [], set()
        for position, record in enumerate(images):
            image_id, ok = _record_id(record, position)
            file_name = record.get("file_name") if isinstance(record, dict) else None
            if ok and image_id in seen:
                _skip(self.report.skipped_images, "duplicate_id", image_id)
                continue
            if ok:
                seen.add(image_id)  # its annotations then count as "image_skipped" if need be
            if not ok or not isinstance(file_name, str) or not file_name:
                _skip(self.report.skipped_images, "bad_record", image_id)
                continue
            info = {"id": image_id, "file_name": file_name,
                    "path": os.path.join(self.image_folder, file_name),
                    "height": record.get("height"), "width": record.get("width")}
            reason = self._check_file(info, check_images)
            if reason is None:
                self.images.append(info)
            else:
                _skip(self.report.skipped_images, reason, image_id)
        self._skipped_image_ids = seen - {info["id"] for info in self.images}
        self.images.sort(key=lambda info: info["id"])
        self.image_ids = [info["id"] for info in self.images]

    def _check_file(self, info, check_images):
        """None if the file is usable (filling in a missing height/width), else the reason."""
        path = info["path"]
        if not os.path.isfile(path):
            self.report.image_errors[info["id"]] = f"image file {path!r}: no such file"
            return "missing_file"
        sized = _positive_int(info["height"]) and _positive_int(info["width"])
        if check_images == "exists" and sized:
            info["height"], info["width"] = int(info["height"]), int(info["width"])
            return None
        try:
            h, w = check_image(path, decode=check_images == "decode")
        except ImageLoadError as error:
            self.report.image_errors[info["id"]] = str(error)
            return "corrupt_file"
        if sized and (int(info["height"]), int(info["width"])) != (h, w):
            self.report.image_errors[info["id"]] = (
                f"image file {path!r}: is {h}x{w} (after EXIF orientation) but the annotation "
                f"file says {info['height']}x{info['width']}"
            )
            return "size_mismatch"
        info["height"], info["width"] = h, w
        return None

    def _index_annotations(self, annotations):
        position_of = {info["id"]: i for i, info in enumerate(self.images)}
        self._annotations = [[] for _ in self.images]
        for position, ann in enumerate(annotations):
            ann_id, ok = _record_id(ann, position)
            if not ok:
                _skip(self.report.skipped_annotations, "bad_record", ann_id)
                continue
            image_id = ann.get("image_id")
            if not _is_int(image_id):
                reason = "unknown_image"
            elif image_id in self._skipped_image_ids:
                reason = "image_skipped"
            elif image_id not in position_of:
                reason = "unknown_image"
            else:
                record, reason = self._annotation_record(ann, self.images[position_of[image_id]])
            if reason is not None:
                _skip(self.report.skipped_annotations, reason, ann_id)
                continue
            if record.pop("repaired"):
                _skip(self.report.repaired_annotations, "polygon_part_dropped", ann_id)
            self._annotations[position_of[image_id]].append(record)

    def _annotation_record(self, ann, info):
        """(record, None) for a usable annotation, else (None, reason)."""
        h, w = info["height"], info["width"]
        category_id = ann.get("category_id")
        label = self.category_id_to_label.get(category_id) if _is_int(category_id) else None
        if label is None:
            return None, "unknown_category"
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            return None, "invalid_box"
        try:
            x, y, bw, bh = (float(v) for v in bbox)
        except (TypeError, ValueError):
            return None, "invalid_box"
        if not np.all(np.isfinite([x, y, bw, bh])) or bw <= 0 or bh <= 0:
            return None, "invalid_box"
        record = {"label": label, "iscrowd": int(bool(ann.get("iscrowd", 0))), "repaired": False}
        if self.has_masks:
            reason = self._add_segmentation(record, ann.get("segmentation"), h, w)
            if reason is not None:
                return None, reason
        box = np.clip([x, y, x + bw, y + bh], 0, [w, h, w, h])
        if box[2] <= box[0] or box[3] <= box[1]:
            return None, "box_outside_image"
        record["box"] = box
        area = ann.get("area")
        valid_area = isinstance(area, (int, float)) and not isinstance(area, bool)
        record["area"] = float(area) if valid_area and np.isfinite(area) else None
        if self.num_keypoints:
            keypoints = ann.get("keypoints") or [0.0] * (3 * self.num_keypoints)
            try:
                keypoints = np.asarray(keypoints, np.float32).reshape(self.num_keypoints, 3)
            except (TypeError, ValueError):
                return None, "bad_keypoints"
            if not np.all(np.isfinite(keypoints)):
                return None, "bad_keypoints"
            record["keypoints"] = keypoints
        return record, None

    def _add_segmentation(self, record, segmentation, h, w):
        """Store a usable segmentation in `record`; return None, or the reason it is not."""
        if segmentation is None or (isinstance(segmentation, list) and not segmentation):
            return "missing_segmentation"
        if isinstance(segmentation, dict):
            if not _valid_rle(segmentation, h, w):
                return "bad_segmentation"
            record["rle"] = segmentation
            return None
        if not isinstance(segmentation, list):
            return "bad_segmentation"
        parts, dropped = _polygon_parts(segmentation)
        if not parts:
            return "polygon_too_few_points"
        xs = np.concatenate([p[0::2] for p in parts])
        ys = np.concatenate([p[1::2] for p in parts])
        if xs.max() <= 0 or xs.min() >= w or ys.max() <= 0 or ys.min() >= h:
            return "polygon_outside_image"
        record["polygons"], record["repaired"] = parts, dropped
        return None

    # -- items -------------------------------------------------------------------------------

    @property
    def class_names(self):
        """Names indexed by label: ("__background__", *classes)."""
        return ("__background__", *self.classes)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected in [0, {len(self)}), got {index}")
        info = self.images[int(index)]
        image = load_image(info["path"])
        h, w = info["height"], info["width"]
        if image.shape[:2] != (h, w):
            raise ImageLoadError(
                f"image file {info['path']!r}: is {image.shape[0]}x{image.shape[1]} but the "
                f"annotation file says {h}x{w} (check_images='header' would have skipped it)"
            )
        target = self.target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def target(self, index):
        """The target dict of item `index` without reading its image."""
        info = self.images[int(index)]
        records = self._annotations[int(index)]
        h, w = info["height"], info["width"]
        n = len(records)
        target = {
            "boxes": np.array([r["box"] for r in records], np.float32).reshape(n, 4),
            "labels": np.array([r["label"] for r in records], np.int64),
            "image_id": info["id"],
            "iscrowd": np.array([r["iscrowd"] for r in records], np.int64),
        }
        if self.has_masks:
            target["masks"] = self._masks(records, h, w)
            pixel_area = target["masks"].sum(axis=(1, 2))
        else:
            boxes = target["boxes"]
            pixel_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        target["area"] = np.array(
            [pixel_area[i] if r["area"] is None else r["area"] for i, r in enumerate(records)],
            np.float32,
        )
        if self.num_keypoints:
            target["keypoints"] = np.array(
                [r["keypoints"] for r in records], np.float32
            ).reshape(n, self.num_keypoints, 3)
        return target

    def _masks(self, records, h, w):
        from ..eval import poly_to_rle, rle_decode

        if not records:
            return np.zeros((0, h, w), np.uint8)
        rles = [r["rle"] if "rle" in r else poly_to_rle(r["polygons"], h, w) for r in records]
        return rle_decode(rles).reshape(len(records), h, w)
