"""The input transform (torchvision's GeneralizedRCNNTransform) and the postprocessing back to
each image's original size.

Per image, in this order: normalise with the ImageNet mean/std; resize so the short side is
`min_size` unless that makes the long side exceed `max_size` (bilinear for the image, nearest
for masks, boxes and keypoints scaled by the float32 size ratios); then batch the images into
one zero-padded (N, 3, H, W) array whose H and W are multiples of 32, so that every stride-2
step of the backbone halves the size exactly. The padding is 0 *after* normalisation.
"""

import math
from dataclasses import dataclass

import numpy as np

from ..nn.module import Module
from ..ops.interpolate import resize_bilinear, resize_nearest


@dataclass
class ImageList:
    """A padded batch and the (h, w) of each image inside it before padding."""

    tensors: np.ndarray
    image_sizes: list


def check_images(images):
    """Validate a list of (3, H, W) float images in [0, 1]; return it as a list."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, list | tuple):
        raise TypeError(f"images: expected a list of (3, H, W) float arrays, "
                        f"got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("images: expected at least one image, got an empty list")
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"images[{i}]: expected a NumPy array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"images[{i}]: expected shape (3, H, W), got {image.shape}")
        if not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"images[{i}]: expected float values in [0, 1], got dtype "
                            f"{image.dtype} (convert uint8 images with "
                            "mrcnn_np.data.to_tensor, which divides by 255)")
        if image.shape[1] < 1 or image.shape[2] < 1:
            raise ValueError(f"images[{i}]: empty image of shape {image.shape}")
        if not np.isfinite(image).all():
            raise ValueError(f"images[{i}]: contains NaN or infinite values")
    return list(images)


def resized_size(height, width, min_size, max_size):
    """torchvision's output size: scale = min(min_size/short, max_size/long), floor(h*scale)."""
    scale = min(float(min_size) / min(height, width), float(max_size) / max(height, width))
    return int(math.floor(height * scale)), int(math.floor(width * scale)), scale


class GeneralizedRCNNTransform(Module):
    """Normalise, resize and batch images (and resize their targets) for the detector."""

    def __init__(self, min_size=800, max_size=1333, image_mean=(0.485, 0.456, 0.406),
                 image_std=(0.229, 0.224, 0.225), size_divisible=32, rng=None):
        super().__init__()
        self.min_size = (min_size,) if np.isscalar(min_size) else tuple(min_size)
        self.max_size = max_size
        # kept as given and cast to each image's dtype, as torchvision does
        self.image_mean = np.asarray(image_mean, np.float64)
        self.image_std = np.asarray(image_std, np.float64)
        self.size_divisible = size_divisible
        # picks a training size when min_size has several choices
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def forward(self, images, targets=None):
        images = check_images(images)
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"targets: expected one per image ({len(images)}), "
                             f"got {len(targets)}")
        targets = [dict(t) for t in targets] if targets is not None else None
        resized = []
        for i, image in enumerate(images):
            image = self.normalize(image)
            image, target = self.resize(image, targets[i] if targets is not None else None)
            resized.append(image)
            if targets is not None:
                targets[i] = target
        image_sizes = [tuple(img.shape[-2:]) for img in resized]
        return ImageList(self.batch_images(resized), image_sizes), targets

    def normalize(self, image):
        """(image - mean) / std in the image's dtype (float32 at least)."""
        image = image.astype(np.result_type(image.dtype, np.float32), copy=False)
        mean = self.image_mean.astype(image.dtype)[:, None, None]
        return (image - mean) / self.image_std.astype(image.dtype)[:, None, None]

    def _pick_size(self):
        if not self.training or len(self.min_size) == 1:
            return self.min_size[-1]
        return self.min_size[int(self.rng.integers(len(self.min_size)))]

    def resize(self, image, target=None):
        h, w = image.shape[-2:]
        new_h, new_w, scale = resized_size(h, w, self._pick_size(), self.max_size)
        image = resize_bilinear(image, size=(new_h, new_w))[0]
        if target is None:
            return image, None
        target = resize_target(target, (h, w), (new_h, new_w), image.dtype)
        return image, target

    def batch_images(self, images):
        d = self.size_divisible
        max_h = max(img.shape[1] for img in images)
        max_w = max(img.shape[2] for img in images)
        batch = np.zeros((len(images), 3, int(math.ceil(max_h / d) * d),
                          int(math.ceil(max_w / d) * d)), images[0].dtype)
        for i, img in enumerate(images):
            batch[i, :, : img.shape[1], : img.shape[2]] = img
        return batch

    def postprocess(self, result, image_shapes, original_image_sizes):
        """Rescale boxes/keypoints to the original sizes and paste masks into the images."""
        from ..ops.masks import paste_masks_in_image

        for pred, (h, w), (h0, w0) in zip(result, image_shapes, original_image_sizes):
            ratio_w = np.float32(w0) / np.float32(w)
            ratio_h = np.float32(h0) / np.float32(h)
            boxes = pred["boxes"] * np.array([ratio_w, ratio_h, ratio_w, ratio_h], np.float32)
            pred["boxes"] = boxes
            if "masks" in pred:
                pred["masks"] = paste_masks_in_image(pred["masks"], boxes, (h0, w0))
            if "keypoints" in pred:
                kp = pred["keypoints"].copy()
                kp[..., 0] *= ratio_w
                kp[..., 1] *= ratio_h
                pred["keypoints"] = kp
        return result


def resize_target(target, old_size, new_size, dtype=np.float32):
    """Scale boxes (as `dtype`, the image's) and keypoints (float32, which torchvision requires
    of them) by the float32 size ratios; nearest-resize masks."""
    (h, w), (new_h, new_w) = old_size, new_size
    ratio_h = np.float32(new_h) / np.float32(h)
    ratio_w = np.float32(new_w) / np.float32(w)
    target = dict(target)
    if "boxes" in target:
        boxes = np.asarray(target["boxes"], dtype)
        target["boxes"] = boxes * np.array([ratio_w, ratio_h, ratio_w, ratio_h], dtype)
    if "masks" in target:
        target["masks"] = resize_nearest(np.asarray(target["masks"]), (new_h, new_w))
    if "keypoints" in target:
        kp = np.array(target["keypoints"], np.float32, copy=True)
        kp[..., 0] *= ratio_w
        kp[..., 1] *= ratio_h
        target["keypoints"] = kp
    return target
