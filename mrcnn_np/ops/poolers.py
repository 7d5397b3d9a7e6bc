"""MultiScaleRoIAlign: pool each RoI from the FPN level that matches its size
(FPN, Lin et al. 2017, Eq. 1), with torchvision's numbers (REFERENCE.md Sec. 5.2).

    k = floor(k0 + log2(sqrt(w*h) / 224) + 1e-6), clamped to [k_min, k_max]

with k0 = 4: a 224x224 RoI (ImageNet's canonical size) is pooled from P4, one half that size
from P3, and so on. The scale of each level (1/4 ... 1/32) is read off the feature map's height
against the largest (unpadded) image height, 2 ** round(log2(h_level / h_max)); as torchvision
does, the scales are found on the first call and then kept. Every level runs RoIAlign with
`aligned=False`. `pooler="pool"` swaps RoIAlign for RoIPool, so the same pipeline can run
either way (the paper's Table 2c ablation).
"""

import math

import numpy as np

from .boxes import box_area
from .roi_align import roi_align, roi_align_backward
from .roi_pool import roi_pool, roi_pool_backward


def assign_levels(boxes, k_min=2, k_max=5, canonical_scale=224, canonical_level=4, eps=1e-6):
    """FPN level (k_min..k_max) of each box (N, 4), computed in the boxes' floating dtype
    (float32 unless they are float64) as torchvision's LevelMapper does."""
    boxes = np.asarray(boxes)
    dtype = np.float64 if boxes.dtype == np.float64 else np.float32
    boxes = boxes.astype(dtype).reshape(-1, 4)
    size = np.sqrt(box_area(boxes))
    level = np.floor(dtype(canonical_level) + np.log2(size / dtype(canonical_scale)) + dtype(eps))
    return np.clip(level, k_min, k_max).astype(np.int64)


def infer_scale(feature_height, max_image_height):
    """2 ** round(log2(feature / image)), the log taken in float32 as torchvision does."""
    log = np.log2(np.float32(float(feature_height) / float(max_image_height)))
    return 2.0 ** float(np.round(log))


class MultiScaleRoIAlign:
    """Pools (sum K_i, C, ph, pw) features for the boxes of every image from the levels
    `featmap_names` of an FPN feature dict; `backward` returns the gradient of each level."""

    def __init__(self, featmap_names=("0", "1", "2", "3"), output_size=7, sampling_ratio=2,
                 canonical_scale=224, canonical_level=4, pooler="align"):
        if pooler not in ("align", "pool"):
            raise ValueError(f"pooler: expected 'align' or 'pool', got {pooler!r}")
        self.featmap_names = tuple(featmap_names)
        self.output_size = (output_size, output_size) if np.isscalar(output_size) \
            else tuple(output_size)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level
        self.pooler = pooler
        self.scales = None  # one per level, found on the first call (as torchvision)
        self._cache = None

    def __call__(self, features, boxes, image_sizes):
        return self.forward(features, boxes, image_sizes)

    def _levels(self, features, image_sizes):
        """The pooled levels, in the features' order as torchvision filters them."""
        missing = [n for n in self.featmap_names if n not in features]
        if missing:
            raise ValueError(f"features: missing levels {missing} of featmap_names "
                             f"{list(self.featmap_names)}")
        names = [name for name in features if name in self.featmap_names]
        if self.scales is None:
            max_h = max(int(h) for h, _ in image_sizes)
            self.scales = [infer_scale(features[n].shape[-2], max_h) for n in names]
        return names

    def forward(self, features, boxes, image_sizes):
        """features: dict name -> (N, C, h, w); boxes: one (K_i, 4) array per image;
        image_sizes: the (h, w) of each image before padding. Returns (sum K_i, C, ph, pw)
        in the order of the boxes."""
        if len(image_sizes) == 0:
            raise ValueError("image_sizes: expected the (h, w) of at least one image, got none")
        if len(boxes) != len(image_sizes):
            raise ValueError(f"boxes: expected one array per image ({len(image_sizes)}), "
                             f"got {len(boxes)}")
        names = self._levels(features, image_sizes)
        k_min = round(-math.log2(self.scales[0]))
        k_max = round(-math.log2(self.scales[-1]))
        all_boxes = np.concatenate([np.asarray(b).reshape(-1, 4) for b in boxes])
        batch = np.repeat(np.arange(len(boxes)), [len(np.asarray(b).reshape(-1, 4))
                                                   for b in boxes])
        rois = np.concatenate([batch[:, None].astype(all_boxes.dtype), all_boxes], axis=1)
        levels = assign_levels(all_boxes, k_min, k_max, self.canonical_scale,
                               self.canonical_level) - k_min
        first = features[names[0]]
        out = np.zeros((len(rois), first.shape[1], *self.output_size), first.dtype)
        per_level = []  # what the backward needs: (name, RoI indices, scale, shape, argmax)
        for index, (name, scale) in enumerate(zip(names, self.scales)):
            picks = np.flatnonzero(levels == index)
            feature, argmax = features[name], None
            if len(picks) and self.pooler == "align":
                out[picks] = roi_align(feature, rois[picks], self.output_size, scale,
                                       self.sampling_ratio, aligned=False)
            elif len(picks):
                out[picks], argmax = roi_pool(feature, rois[picks], self.output_size, scale)
            per_level.append((name, picks, scale, feature.shape, argmax))
        self._cache = (rois, per_level)
        return out

    def backward(self, dout):
        """Gradient of the pooled features (sum K_i, C, ph, pw) -> dict level name -> gradient
        of that level's feature map (zeros for a level that pooled no RoI)."""
        if self._cache is None:
            raise RuntimeError("MultiScaleRoIAlign.backward: run forward first")
        rois, per_level = self._cache
        dout = np.asarray(dout)
        if dout.shape[0] != len(rois):
            raise ValueError(f"dout: expected {len(rois)} rows (one per pooled RoI), "
                             f"got shape {dout.shape}")
        self._cache = None
        grads = {}
        for name, picks, scale, shape, argmax in per_level:
            if len(picks) == 0:
                grads[name] = np.zeros(shape, dout.dtype)
            elif self.pooler == "align":
                grads[name] = roi_align_backward(dout[picks], rois[picks], shape,
                                                 self.output_size, scale, self.sampling_ratio,
                                                 aligned=False)
            else:
                grads[name] = roi_pool_backward(dout[picks], argmax, shape, rois[picks])
        return grads
