"""A synthetic instance-segmentation dataset small enough to train Mask R-CNN on a CPU.

In the spirit of matterport's "shapes" sample: each image is a flat random background with a
few circles, axis-aligned squares and upright equilateral triangles of random colour, size
and position, drawn one over the other. The ground truth follows COCO's conventions
(Lin et al., 2014): one mask per *visible* instance, its tight box, a class label.

Geometry (continuous pixel coordinates, as everywhere in mrcnn_np: pixel (y, x) covers
[x, x+1) x [y, y+1) and its centre is (x + 0.5, y + 0.5)). A shape of size `s` centred at
(cx, cy) covers exactly the pixels whose *centre* lies inside it:

* circle: diameter s, i.e. (px - cx)^2 + (py - cy)^2 <= (s/2)^2;
* square: side s, axis-aligned, |px - cx| <= s/2 and |py - cy| <= s/2;
* triangle: side s, equilateral, apex up, its bounding box (s wide, s*sqrt(3)/2 tall)
  centred at (cx, cy).

Every shape lies inside the image. Later shapes are drawn on top: each pixel belongs to at
most one instance (the top one), so masks are disjoint. An instance that ends up mostly
hidden (visible area below `MIN_VISIBLE_FRACTION` of its own area, or below
`MIN_VISIBLE_PIXELS`) is removed *before* drawing, so no unlabelled sliver of it remains in
the picture; the top shape is never hidden, so every image has at least one instance.
Boxes are the tight boxes of the visible masks: x1 = first column, x2 = last column + 1.

Colours: each shape's colour is at least `MIN_COLOR_DISTANCE` (Euclidean, in 0..255 RGB)
away from the background and from every shape drawn before it.

Determinism: item i is drawn from `numpy.random.default_rng([seed, i])`, so it depends only
on (seed, i, the constructor's arguments), never on which items were read before.
"""

import json
import os

import numpy as np
from PIL import Image

__all__ = [
    "CLASSES",
    "MIN_COLOR_DISTANCE",
    "MIN_VISIBLE_FRACTION",
    "MIN_VISIBLE_PIXELS",
    "ShapesDataset",
    "export_coco",
]

CLASSES = ("circle", "square", "triangle")
MIN_COLOR_DISTANCE = 100.0  # the RGB cube's diagonal is 441.7
MIN_VISIBLE_FRACTION = 0.3
MIN_VISIBLE_PIXELS = 16
MIN_SHAPE_SIZE = 4  # any circle, square or triangle this large covers at least one pixel centre
_COLOR_CANDIDATES = 64  # colours drawn per shape; the first far enough away is taken
_SQRT3 = np.sqrt(3.0)


def _int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    return int(value)


def _image_size(image_size):
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        h, w = image_size
    except (TypeError, ValueError):
        raise ValueError(f"image_size: expected an int or (h, w), got {image_size!r}") from None
    h, w = _int(h, "image_size[0]"), _int(w, "image_size[1]")
    if min(h, w) < MIN_SHAPE_SIZE:
        raise ValueError(f"image_size: expected h, w >= {MIN_SHAPE_SIZE}, got ({h}, {w})")
    return h, w


class ShapesDataset:
    """Synthetic circles, squares and triangles with instance masks (see the module docstring).

    Parameters
    ----------
    num_images : int
        Number of items.
    image_size : int or (h, w)
        Image height and width in pixels (an int means a square image). Default 128.
    seed : int
        Non-negative; with the other arguments it fixes every item. Default 0.
    min_objects, max_objects : int
        Shapes drawn per image, uniform in [min_objects, max_objects] (defaults 1 and 4).
        Fewer may remain after hidden ones are removed, never fewer than one.
    min_size, max_size : float
        Shape size in pixels (circle diameter, square side, triangle side), uniform in
        [min_size, max_size]. Defaults: max(4, min(h, w) / 8) and max(min_size, min(h, w) / 2),
        i.e. 16 and 64 for 128x128 images.
    classes : tuple of str
        Which of "circle", "square", "triangle" to draw; label k (1-based) is `classes[k-1]`
        and 0 is the background. Default all three in that order.
    transforms : callable or None
        Applied as `image, target = transforms(image, target)` to every item.

    Items are `(image (H, W, 3) uint8, target)` with target keys `boxes` (N, 4) float32,
    `labels` (N,) int64, `masks` (N, H, W) uint8, `image_id` int (index + 1, as COCO ids
    start at 1), `area` (N,) float32 visible pixel counts and `iscrowd` (N,) int64 zeros.
    Instances are listed bottom to top.
    """

    def __init__(self, num_images, image_size=128, seed=0, min_objects=1, max_objects=4,
                 min_size=None, max_size=None, classes=CLASSES, transforms=None):
        self.num_images = _int(num_images, "num_images")
        if self.num_images < 0:
            raise ValueError(f"num_images: expected >= 0, got {num_images}")
        self.image_size = _image_size(image_size)
        self.seed = _int(seed, "seed")
        if self.seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed}")
        self.min_objects = _int(min_objects, "min_objects")
        self.max_objects = _int(max_objects, "max_objects")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                "min_objects, max_objects: expected 1 <= min_objects <= max_objects, got "
                f"{min_objects}, {max_objects}"
            )
        short = min(self.image_size)
        self.min_size = float(max(MIN_SHAPE_SIZE, short / 8) if min_size is None else min_size)
        self.max_size = float(max(self.min_size, short / 2) if max_size is None else max_size)
        if not MIN_SHAPE_SIZE <= self.min_size <= self.max_size <= short:
            raise ValueError(
                f"min_size, max_size: expected {MIN_SHAPE_SIZE} <= min_size <= max_size <= "
                f"min(h, w) = {short}, got {self.min_size}, {self.max_size}"
            )
        classes = tuple(classes)
        unknown = [c for c in classes if c not in CLASSES]
        if not classes or unknown or len(set(classes)) != len(classes):
            raise ValueError(
                f"classes: expected distinct names from {CLASSES}, got {classes!r}"
            )
        self.classes = classes
        self.transforms = transforms

    @property
    def class_names(self):
        """Names indexed by label: ("__background__", *classes)."""
        return ("__background__", *self.classes)

    def __len__(self):
        return self.num_images

    def __getitem__(self, index):
        index = _int(index, "index")
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index: expected in [0, {self.num_images}), got {index}")
        index %= self.num_images
        image, target = self.render(np.random.default_rng([self.seed, index]))
        target["image_id"] = index + 1
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def render(self, rng):
        """One (image, target) drawn from `rng` (a numpy Generator); `image_id` left at 0."""
        h, w = self.image_size
        background = rng.integers(0, 256, size=3)
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        labels, full, colors = [], [], [background]
        for _ in range(n):
            label = int(rng.integers(1, len(self.classes) + 1))
            size = rng.uniform(self.min_size, self.max_size)
            cx = rng.uniform(size / 2, w - size / 2)
            cy = rng.uniform(size / 2, h - size / 2)
            colors.append(_contrasting_color(rng, colors))
            labels.append(label)
            full.append(shape_mask(self.classes[label - 1], cx, cy, size, h, w))
        full = np.stack(full)
        keep = _unhidden(full)
        visible = visible_masks(full[keep])
        image = np.empty((h, w, 3), np.uint8)
        image[:] = background
        for color, mask in zip(np.asarray(colors[1:])[keep], visible):
            image[mask] = color
        masks = visible.astype(np.uint8)
        target = {
            "boxes": masks_to_boxes(masks),
            "labels": np.asarray(labels, np.int64)[keep],
            "masks": masks,
            "image_id": 0,
            "area": masks.sum(axis=(1, 2)).astype(np.float32),
            "iscrowd": np.zeros(len(masks), np.int64),
        }
        return image, target


def shape_mask(kind, cx, cy, size, h, w):
    """(h, w) bool: pixels whose centre lies inside the shape (see the module docstring)."""
    px = np.arange(w) + 0.5
    py = (np.arange(h) + 0.5)[:, None]
    if kind == "circle":
        return (px - cx) ** 2 + (py - cy) ** 2 <= (size / 2) ** 2
    if kind == "square":
        return (np.abs(px - cx) <= size / 2) & (np.abs(py - cy) <= size / 2)
    if kind == "triangle":
        height = size * _SQRT3 / 2
        depth = py - (cy - height / 2)  # distance below the apex
        # the half-width grows by 1/sqrt(3) per unit of depth: (s/2) / (s*sqrt(3)/2)
        return (depth >= 0) & (depth <= height) & (np.abs(px - cx) <= depth / _SQRT3)
    raise ValueError(f"kind: expected one of {CLASSES}, got {kind!r}")


def visible_masks(full):
    """(n, h, w) bool: what is left of each shape under the ones drawn after it."""
    visible = np.empty_like(full)
    covered = np.zeros(full.shape[1:], bool)
    for i in range(len(full) - 1, -1, -1):
        visible[i] = full[i] & ~covered
        covered |= full[i]
    return visible


def _unhidden(full):
    """Bool (n,): the shapes kept once every mostly-hidden one is removed.

    Whether a shape is hidden depends only on the shapes above it, so the topmost hidden
    shape must go; removing it can only uncover shapes beneath, so repeat from there.
    """
    keep = np.ones(len(full), bool)
    full_area = full.sum(axis=(1, 2))
    enough = np.maximum(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * full_area)
    while True:
        area = np.zeros(len(full), np.int64)
        area[keep] = visible_masks(full[keep]).sum(axis=(1, 2))
        ok = (area > 0) & ((area == full_area) | (area >= enough))
        hidden = np.flatnonzero(keep & ~ok)
        if hidden.size == 0:
            return keep
        keep[hidden[-1]] = False


def _contrasting_color(rng, previous):
    """A random colour at least MIN_COLOR_DISTANCE from each previous one (else the farthest)."""
    candidates = rng.integers(0, 256, size=(_COLOR_CANDIDATES, 3))
    diff = candidates[:, None, :] - np.asarray(previous)[None, :, :]
    distance = np.sqrt((diff**2).sum(axis=2)).min(axis=1)
    far = np.flatnonzero(distance >= MIN_COLOR_DISTANCE)
    return candidates[far[0] if far.size else int(np.argmax(distance))]


def masks_to_boxes(masks):
    """(N, 4) float32 tight boxes x1, y1, x2, y2 (continuous: last pixel + 1) of (N, H, W) masks.

    An empty mask gives [0, 0, 0, 0].
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected shape (N, H, W), got {masks.shape}")
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if xs.size:
            boxes[i] = xs[0], ys[0], xs[-1] + 1, ys[-1] + 1
    return boxes


def export_coco(dataset, folder):
    """Write a dataset as COCO files: `folder/images/NNNNNN.png` and `folder/annotations.json`.

    `dataset[i]` must give an (H, W, 3) uint8 image and a target with `boxes`, `labels`,
    `masks` (and optionally `image_id`, `iscrowd`). Segmentations are RLEs with string counts
    (`mrcnn_np.eval.rle_encode`), `area` the mask's pixel count, `bbox` the target box as
    [x, y, w, h]. Category k is `dataset.classes[k-1]` when the dataset has `classes`.
    Image ids are `target["image_id"]` (index + 1 without one); annotation ids start at 1
    (pycocotools' matching treats id 0 as "unmatched"). Returns the annotations path.
    """
    from ..eval.rle import rle_encode

    image_dir = os.path.join(folder, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations, max_label = [], [], 0
    for index in range(len(dataset)):
        image, target = dataset[index]
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"dataset[{index}] image: expected (H, W, 3) uint8, got {image.dtype} "
                f"{image.shape}"
            )
        file_name = f"{index:06d}.png"
        Image.fromarray(image).save(os.path.join(image_dir, file_name))
        image_id = int(target.get("image_id", index + 1))
        h, w = image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        masks = np.asarray(target["masks"], np.uint8).reshape(-1, h, w)
        boxes = np.asarray(target["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(target["labels"], np.int64)
        crowd = np.asarray(target.get("iscrowd", np.zeros(len(labels))), np.int64)
        for box, label, rle, mask, is_crowd in zip(boxes, labels, rle_encode(masks), masks,
                                                   crowd, strict=True):
            max_label = max(max_label, int(label))
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                "segmentation": rle, "area": float(mask.sum()),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": int(is_crowd),
            })
    names = getattr(dataset, "classes", None)
    if names is None:
        names = [f"class_{k}" for k in range(1, max_label + 1)]
    categories = [{"id": k, "name": name} for k, name in enumerate(names, start=1)]
    path = os.path.join(folder, "annotations.json")
    with open(path, "w") as f:
        json.dump({"info": {"description": f"exported by mrcnn_np from {type(dataset).__name__}"},
                   "images": images, "annotations": annotations, "categories": categories}, f)
    return path
