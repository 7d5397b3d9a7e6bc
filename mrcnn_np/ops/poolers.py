"""MultiScaleRoIAlign: pool each RoI from the FPN level that matches its size
(FPN, Lin et al. 2017, Eq. 1), with torchvision's numbers (REFERENCE.md Sec. 5.2).

    k = floor(k0 + log2(sqrt(w*h) / 224) + 1e-6), clamped to [k_min, k_max]

with k0 = 4: a 224x224 RoI (ImageNet's canonical size) is pooled from P4, one half that size
from P3, and so on. The scale of each level (1/4 ... 1/32) is read off the feature map's height
against the largest image. `pooler="pool"` swaps RoIAlign for RoIPool so the same pipeline
can run either way (the paper's Table 2c ablation).
"""

import math

import numpy as np

from .boxes import box_area
from .roi_align import roi_align, roi_align_backward
from .roi_pool import roi_pool, roi_pool_backward


def assign_levels(boxes, k_min=2, k_max=5, canonical_scale=224, canonical_level=4, eps=1e-6):
    """FPN level of each box (k_min..k_max), computed in float32 as torchvision does."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    size = np.sqrt(box_area(boxes)).astype(np.float32)
    level = np.floor(np.float32(canonical_level) + np.log2(size / np.float32(canonical_scale))
                     + np.float32(eps))
    return np.clip(level, k_min, k_max).astype(np.int64)


class MultiScaleRoIAlign:
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
        self._cache = None

    def scales(self, features, image_sizes):
        """2 ** round(log2(H_level / H_max)) per level (1/4, 1/8, ... for an FPN)."""
        max_h = max(h for h, _ in image_sizes)
        return [2.0 ** round(math.log2(features[name].shape[-2] / max_h))
                for name in self.featmap_names]

    def __call__(self, features, boxes, image_sizes):
        return self.forward(features, boxes, image_sizes)

    def forward(self, features, boxes, image_sizes):
        """features: dict name -> (N, C, h, w); boxes: one (K_i, 4) array per image.
        Returns (sum K_i, C, ph, pw) in the order of the boxes."""
        missing = [n for n in self.featmap_names if n not in features]
        if missing:
            raise ValueError(f"features: missing levels {missing}")
        if len(boxes) != len(image_sizes):
            raise ValueError(f"boxes: expected one array per image ({len(image_sizes)}), "
                             f"got {len(boxes)}")
        scales = self.scales(features, image_sizes)
        k_min, k_max = round(-math.log2(scales[0])), round(-math.log2(scales[-1]))
        all_boxes = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes])
        batch = np.repeat(np.arange(len(boxes), dtype=np.float32), [len(b) for b in boxes])
        rois = np.concatenate([batch[:, None], all_boxes], axis=1)
        first = features[self.featmap_names[0]]
        out = np.zeros((len(rois), first.shape[1], *self.output_size), first.dtype)
        levels = assign_levels(all_boxes, k_min, k_max, self.canonical_scale,
                               self.canonical_level) - k_min
        per_level = []
        for index, (name, scale) in enumerate(zip(self.featmap_names, scales)):
            picks = np.flatnonzero(levels == index)
            feature = features[name]
            argmax = None
            if len(picks):
                if self.pooler == "align":
                    out[picks] = roi_align(feature, rois[picks], self.output_size, scale,
                                           self.sampling_ratio, aligned=False)
                else:
                    out[picks], argmax = roi_pool(feature, rois[picks], self.output_size, scale)
            per_level.append((name, picks, scale, feature.shape, argmax))
        self._cache = (rois, per_level)
        return out

    def backward(self, dout):
        """Gradient of the pooled features -> dict level name -> gradient of that level."""
        if self._cache is None:
            raise RuntimeError("MultiScaleRoIAlign.backward: run forward first")
        rois, per_level = self._cache
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
