"""Anchors: reference boxes tiled over every feature-map location (REFERENCE.md §3).

Faster R-CNN §3.1.1 (Ren et al., 2015) places k = |sizes| x |aspect ratios| anchors at each
sliding-window position; the FPN paper (Lin et al., 2017, §4.1) gives each pyramid level one
size (32 on P2 ... 512 on P6) and three aspect ratios. Everything here reproduces
torchvision's `AnchorGenerator` number for number.

Where the anchor centres sit
----------------------------
Feature cell (y, x) of a level with stride (sh, sw) gets anchors centred on the image point
`(x * sw, y * sh)`: the **top-left corner** of the image patch the cell covers, not its
centre (there is no `+ stride/2`). With stride 4 the first anchors are centred on (0, 0),
then (4, 0), (8, 0), ...; the cell anchor [-16, -16, 16, 16] at cell (y=1, x=2) becomes the
box [-8, -12, 24, 20]. The offset is harmless (the regression learns it) but it explains why
anchors look shifted up and left when drawn. The stride of each axis is the **padded** image
size divided (integer division) by the feature size, so it can differ between x and y on the
coarse 'pool' level (padded 64x96 image, 1x2 map: strides 64 and 48). Anchors that cross the
image border are kept.

Layout: location-major. Anchor `a` of cell `(y, x)` on a level of width Wf is row
`(y * Wf + x) * A + a`; levels follow one another in order ('0', '1', '2', '3', 'pool').
"""

import numpy as np

__all__ = ["AnchorGenerator", "generate_anchors"]


def generate_anchors(sizes, aspect_ratios):
    """Cell anchors centred on (0, 0): (len(aspect_ratios) * len(sizes), 4) float32.

    An aspect ratio is height / width; the area stays size**2. In float32, as torchvision:
    `h_ratio = sqrt(r)`, `w_ratio = 1 / h_ratio`, `w = w_ratio * size`, `h = h_ratio * size`,
    anchor = `round([-w, -h, w, h] / 2)` with round-half-to-even (torch.round == np.round).
    Rows are ratio-major: all sizes of the first ratio, then the next ratio.

    >>> generate_anchors((32,), (0.5, 1.0, 2.0)).tolist()
    [[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]
    """
    sizes = np.asarray(sizes, dtype=np.float32).reshape(-1)
    aspect_ratios = np.asarray(aspect_ratios, dtype=np.float32).reshape(-1)
    if sizes.size == 0 or aspect_ratios.size == 0:
        raise ValueError(
            f"sizes and aspect_ratios: expected at least one of each, got {sizes.tolist()} and "
            f"{aspect_ratios.tolist()}"
        )
    if (sizes <= 0).any() or (aspect_ratios <= 0).any() or not np.isfinite(aspect_ratios).all():
        raise ValueError(
            f"sizes and aspect_ratios: expected positive numbers, got {sizes.tolist()} and "
            f"{aspect_ratios.tolist()}"
        )
    h_ratios = np.sqrt(aspect_ratios)
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2))


def _grid_anchors(cell_anchors, feature_size, stride):
    """Cell anchors shifted to `(x * stride_w, y * stride_h)` for every cell, location-major."""
    (height, width), (stride_h, stride_w) = feature_size, stride
    shift_x = np.arange(width, dtype=np.float32) * np.float32(stride_w)
    shift_y = np.arange(height, dtype=np.float32) * np.float32(stride_h)
    shift_y, shift_x = np.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4)
    return (shifts + cell_anchors[None, :, :]).reshape(-1, 4)


class AnchorGenerator:
    """Anchors for every level of a feature pyramid (torchvision's AnchorGenerator).

    sizes[l] and aspect_ratios[l] are the anchor sizes and height/width ratios of level l;
    level l has `len(sizes[l]) * len(aspect_ratios[l])` anchors per location. Defaults are
    Mask R-CNN's: one size per level (32..512) and ratios (0.5, 1, 2) everywhere. As in
    torchvision, flat tuples are shorthand: `sizes=(32, 64)` means one size per level and
    `aspect_ratios=(0.5, 1.0, 2.0)` the same ratios on every level.

    Call it with the padded batch size and the feature-map sizes; see the module docstring
    for where the anchors sit. Results are cached per (image_size, feature_sizes) and returned
    read-only, since every image of every batch of that size shares them.
    """

    _CACHE_ENTRIES = 8

    def __init__(self, sizes=((32,), (64,), (128,), (256,), (512,)),
                 aspect_ratios=((0.5, 1.0, 2.0),) * 5):
        if not isinstance(sizes[0], (list, tuple)):  # torchvision's shorthand: one size a level
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):  # the same ratios on every level
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"sizes and aspect_ratios: expected one entry per level for both, got "
                f"{len(sizes)} and {len(aspect_ratios)}"
            )
        self.sizes = tuple(tuple(s) for s in sizes)
        self.aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        self.cell_anchors = [generate_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]
        self._cache = {}

    def num_anchors_per_location(self):
        """Anchors per feature-map cell, for each level (3 everywhere by default)."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def __call__(self, image_size, feature_sizes):
        """Anchors of all levels for a padded batch.

        image_size: (Hp, Wp), the padded batch tensor's spatial size. feature_sizes: one
        (Hf, Wf) per level. Returns `anchors` (total, 4) float32 (the same for every image)
        and `num_anchors_per_level`, a list of `Hf * Wf * A`.
        """
        image_size = _int_pair("image_size", image_size)
        feature_sizes = tuple(_int_pair("feature_sizes[i]", f) for f in feature_sizes)
        if len(feature_sizes) != len(self.cell_anchors):
            raise ValueError(
                f"feature_sizes: expected {len(self.cell_anchors)} levels (one per anchor size), "
                f"got {len(feature_sizes)}"
            )
        key = (image_size, feature_sizes)
        if key not in self._cache:
            if len(self._cache) >= self._CACHE_ENTRIES:
                self._cache.pop(next(iter(self._cache)))  # oldest first
            self._cache[key] = self._compute(image_size, feature_sizes)
        anchors, num_anchors_per_level = self._cache[key]
        return anchors, list(num_anchors_per_level)

    def _compute(self, image_size, feature_sizes):
        per_level = []
        for feature_size, cell_anchors in zip(feature_sizes, self.cell_anchors):
            if feature_size[0] > image_size[0] or feature_size[1] > image_size[1]:
                raise ValueError(
                    f"feature_sizes: a level of size {feature_size} is larger than the image "
                    f"{image_size}; pass the padded image size first"
                )
            stride = (image_size[0] // feature_size[0], image_size[1] // feature_size[1])
            per_level.append(_grid_anchors(cell_anchors, feature_size, stride))
        anchors = np.concatenate(per_level, axis=0)
        anchors.flags.writeable = False
        return anchors, tuple(len(level) for level in per_level)


def _int_pair(name, pair):
    values = tuple(pair)
    if len(values) != 2 or not all(int(v) == v and v > 0 for v in values):
        raise ValueError(f"{name}: expected two positive integers (height, width), got {pair!r}")
    return tuple(int(v) for v in values)
