"""Data augmentation that moves an image and its annotations together.

Each transform is a callable `image, target = t(image, target)` (target may be None), like
torchvision's detection references (`references/detection/transforms.py`). Images are
(H, W, 3) uint8 until `ToTensor`, which should come last. Target keys that are understood:
`boxes` (N, 4) x1, y1, x2, y2, `masks` (N, H, W), `keypoints` (N, K, 3) x, y, visibility and
`area` (N,); other keys pass through unchanged.

Coordinates are continuous (pixel (y, x) covers [x, x+1) x [y, y+1)), so a horizontal flip
of an image W pixels wide is the mirror x -> W - x about the line x = W/2:

* boxes: x1' = W - x2, x2' = W - x1 (the pixel columns [x1, x2) become [W-x2, W-x1));
* keypoints: x' = W - x, and left/right keypoints swap places through `flip_index`
  (a left eye becomes a right eye). As in torchvision's references, keypoints with
  visibility 0 are set to (0, 0, 0), COCO's "not labelled".

Resizing scales x by W'/W and y by H'/H (boxes, keypoints of every visibility, and `area` by
both). Images are resampled with Pillow's bilinear filter (which widens its support when
shrinking, i.e. it antialiases); masks with nearest neighbour, each output pixel taking the
input pixel under its centre: src = floor((dst + 0.5) * in / out).
"""

import numpy as np
from PIL import Image

__all__ = [
    "COCO_PERSON_KEYPOINT_FLIP_INDEX",
    "COCO_PERSON_KEYPOINT_NAMES",
    "Compose",
    "RandomHorizontalFlip",
    "Resize",
    "ToTensor",
    "hflip",
    "resize",
    "to_tensor",
]

COCO_PERSON_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# keypoint j of the flipped person is keypoint FLIP_INDEX[j] of the original
COCO_PERSON_KEYPOINT_FLIP_INDEX = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


def _check_image(image, name="image"):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3), got {image.shape}")
    return image


def _check_uint8_image(image):
    image = _check_image(image)
    if image.dtype != np.uint8:
        raise TypeError(f"image: expected dtype uint8, got {image.dtype}")
    return image


def _field(target, key, shape):
    """target[key] as an array of `shape`, whose None entries match any length."""
    value = np.asarray(target[key])
    if value.ndim != len(shape) or any(
        d is not None and n != d for n, d in zip(value.shape, shape)
    ):
        wanted = "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"
        raise ValueError(f"target['{key}']: expected shape {wanted}, got {value.shape}")
    return value


def _flip_index(flip_index, k):
    index = np.asarray(flip_index)
    if index.shape != (k,) or not np.array_equal(np.sort(index), np.arange(k)):
        raise ValueError(
            f"flip_index: expected a permutation of 0..{k - 1} for {k} keypoints, got "
            f"{list(index.ravel())}"
        )
    return index


def hflip(image, target=None, flip_index=None):
    """Mirror an image and its target left-right (see the module docstring).

    `flip_index` (a permutation of the K keypoints, e.g. `COCO_PERSON_KEYPOINT_FLIP_INDEX`)
    is required when the target has keypoints.
    """
    image = _check_image(image)
    h, w = image.shape[:2]
    flipped = np.ascontiguousarray(image[:, ::-1])
    if target is None:
        return flipped, None
    target = dict(target)
    if "boxes" in target:
        boxes = _field(target, "boxes", (None, 4))
        out = boxes.copy()
        out[:, 0] = w - boxes[:, 2]
        out[:, 2] = w - boxes[:, 0]
        target["boxes"] = out
    if "masks" in target:
        masks = _field(target, "masks", (None, h, w))
        target["masks"] = np.ascontiguousarray(masks[:, :, ::-1])
    if "keypoints" in target:
        keypoints = _field(target, "keypoints", (None, None, 3))
        if flip_index is None:
            raise ValueError(
                "flip_index: required to flip keypoints (which keypoint becomes which), got "
                "None; for COCO people use COCO_PERSON_KEYPOINT_FLIP_INDEX"
            )
        out = keypoints[:, _flip_index(flip_index, keypoints.shape[1])].copy()
        out[..., 0] = w - out[..., 0]
        out[out[..., 2] == 0] = 0
        target["keypoints"] = out
    return flipped, target


def _output_size(h, w, size, scale):
    if (size is None) == (scale is None):
        raise ValueError(f"size, scale: expected exactly one of them, got {size!r}, {scale!r}")
    if size is not None:
        try:
            new_h, new_w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"size: expected (height, width), got {size!r}") from None
        if new_h < 1 or new_w < 1:
            raise ValueError(f"size: expected positive (height, width), got {size!r}")
        return new_h, new_w
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale: expected a positive finite number, got {scale!r}")
    return max(1, int(np.floor(h * scale + 0.5))), max(1, int(np.floor(w * scale + 0.5)))


def _nearest_index(n_in, n_out):
    """Input index under each output pixel's centre: floor((dst + 0.5) * n_in / n_out)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize(image, target=None, size=None, scale=None):
    """Resize to `size` = (height, width), or by a factor `scale` (sizes rounded, at least 1).

    Boxes and keypoints are scaled by the actual ratios W'/W and H'/H (see the module
    docstring for the resampling). Returns (image, target).
    """
    image = _check_uint8_image(image)
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"image: cannot resize an empty image of shape {image.shape}")
    new_h, new_w = _output_size(h, w, size, scale)
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), Image.BILINEAR)
    )
    if target is None:
        return resized, None
    sx, sy = new_w / w, new_h / h
    target = dict(target)
    if "boxes" in target:
        boxes = _field(target, "boxes", (None, 4))
        target["boxes"] = (boxes * np.array([sx, sy, sx, sy])).astype(boxes.dtype)
    if "keypoints" in target:
        keypoints = _field(target, "keypoints", (None, None, 3))
        target["keypoints"] = (keypoints * np.array([sx, sy, 1.0])).astype(keypoints.dtype)
    if "masks" in target:
        masks = _field(target, "masks", (None, h, w))
        rows, cols = _nearest_index(h, new_h), _nearest_index(w, new_w)
        target["masks"] = masks[:, rows[:, None], cols[None, :]]
    if "area" in target:
        area = np.asarray(target["area"])
        target["area"] = (area * (sx * sy)).astype(area.dtype)
    return resized, target


def to_tensor(image):
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1] (value / 255), the model's input."""
    image = _check_uint8_image(image)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


class Compose:
    """Apply transforms in order: `Compose([Resize(scale=0.5), RandomHorizontalFlip(rng=g)])`."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target=None):
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self):
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class RandomHorizontalFlip:
    """`hflip` with probability `p`, drawn from `rng` (a numpy Generator, or a seed; None
    means a fresh unseeded generator)."""

    def __init__(self, p=0.5, rng=None, flip_index=None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
        self.p, self.rng, self.flip_index = p, np.random.default_rng(rng), flip_index

    def __call__(self, image, target=None):
        if self.rng.random() < self.p:
            return hflip(image, target, self.flip_index)
        return image, target

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Resize:
    """`resize` to a fixed `size` = (height, width) or by a factor `scale`."""

    def __init__(self, size=None, scale=None):
        _output_size(1, 1, size, scale)  # validate now, not on the first image
        self.size, self.scale = size, scale

    def __call__(self, image, target=None):
        return resize(image, target, self.size, self.scale)

    def __repr__(self):
        return f"Resize(size={self.size}, scale={self.scale})"


class ToTensor:
    """`to_tensor` on the image; the target passes through. Put it last in a Compose."""

    def __call__(self, image, target=None):
        return to_tensor(image), target

    def __repr__(self):
        return "ToTensor()"
