"""Polygon and box rasterisation exactly as pycocotools' `rleFrPoly` / `rleFrBbox`.

Implements COCOEVAL.md §1.8. The polygon is upsampled x5 onto an integer grid, each edge is
sampled densely, and every crossing of a pixel-column centre (upsampled position 5c+2 -> 5c+3)
becomes a boundary point; sorted boundary points toggle inside/outside down each column.
All roundings are C `(int)` casts, i.e. truncation toward zero, never floor.

Roughly: pixel (y, x) is inside when its centre (x+.5, y+.5) is inside the polygon, so a box
with integer corners [x0, y0, x1, y1] covers exactly columns x0..x1-1 and rows y0..y1-1.

`segmentations_to_batch` is COCO's `annToRLE` for many annotations at once: polygon parts
are *unioned*, uncompressed RLEs keep their own size, compressed ones are used as they are.
"""

import math

import numba
import numpy as np

from .rle import (
    RleBatch,
    _decode_runs,
    _encode_runs,
    batch_to_rles,
    concat_batches,
    rles_to_batch,
    strings_to_batch,
)

__all__ = ["bbox_to_rle", "poly_to_counts_reference", "poly_to_rle", "segmentations_to_batch"]

_SCALE = 5  # upsampling factor of the integer grid


def poly_to_counts_reference(xy, h, w):
    """pycocotools' frPoly on a flat [x0, y0, x1, y1, ...] list, in plain Python."""
    k = len(xy) // 2  # an odd trailing value is ignored
    # 1. scale the vertices onto the x5 grid (C cast: truncate toward zero) and close the ring
    xs = [int(_SCALE * xy[2 * j] + 0.5) for j in range(k)]
    ys = [int(_SCALE * xy[2 * j + 1] + 0.5) for j in range(k)]
    xs, ys = xs + xs[:1], ys + ys[:1]
    # 2. sample every edge densely; flipping makes an edge rasterise the same either way round
    u, v = [], []
    for j in range(k):
        x0, x1, y0, y1 = xs[j], xs[j + 1], ys[j], ys[j + 1]
        dx, dy = abs(x1 - x0), abs(y1 - y0)
        flip = (dx >= dy and x0 > x1) or (dx < dy and y0 > y1)
        if flip:
            x0, x1, y0, y1 = x1, x0, y1, y0
        if dx >= dy:
            s = (y1 - y0) / dx if dx else 0.0  # dx == dy == 0: its row is never used
            for d in range(dx + 1):
                t = dx - d if flip else d
                u.append(x0 + t)
                v.append(int(y0 + s * t + 0.5))
        else:
            s = (x1 - x0) / dy
            for d in range(dy + 1):
                t = dy - d if flip else d
                v.append(y0 + t)
                u.append(int(x0 + s * t + 0.5))
    # 3. crossings of a pixel-column centre become boundary points (x*h + y)
    points = []
    for j in range(1, len(u)):
        if u[j] == u[j - 1]:
            continue
        xd = ((u[j] if u[j] < u[j - 1] else u[j] - 1) + 0.5) / _SCALE - 0.5
        if math.floor(xd) != xd or xd < 0 or xd > w - 1:
            continue
        yd = (min(v[j], v[j - 1]) + 0.5) / _SCALE - 0.5
        yd = math.ceil(min(max(yd, 0.0), h))  # clamped to [0, h], not h-1
        points.append(int(xd) * h + yd)
    # 4. sorted points -> run lengths; coincident points cancel in pairs
    points = sorted(points + [h * w])
    diffs = [b - a for a, b in zip([0] + points[:-1], points, strict=True)]
    counts, j = [diffs[0]], 1
    while j < len(diffs):
        if diffs[j] > 0:
            counts.append(diffs[j])
            j += 1
        else:
            j += 1
            if j < len(diffs):
                counts[-1] += diffs[j]
                j += 1
    return counts


@numba.njit(cache=True)
def _heapsort(a):
    """In-place ascending sort (a few loops compile much faster than Numba's np.sort)."""
    n = a.shape[0]
    for start in range(n // 2 - 1, -1, -1):  # build a max-heap
        _sift_down(a, start, n)
    for end in range(n - 1, 0, -1):
        a[0], a[end] = a[end], a[0]
        _sift_down(a, 0, end)


@numba.njit(cache=True)
def _sift_down(a, root, end):
    while 2 * root + 1 < end:
        child = 2 * root + 1
        if child + 1 < end and a[child] < a[child + 1]:
            child += 1
        if a[root] >= a[child]:
            return
        a[root], a[child] = a[child], a[root]
        root = child


@numba.njit(cache=True)
def _polygons_to_runs(xy, part_ptr, size):
    """Numba twin of `poly_to_counts_reference` for many polygons at once.

    Polygon i is `xy[part_ptr[i]:part_ptr[i+1]]` on an image of `size[i]`; returns the flat
    runs and their offsets. (One loop body, not a helper per polygon: Numba would re-optimise
    an inlined helper, which costs seconds of cold compile time.)
    """
    n = part_ptr.shape[0] - 1
    counts = np.empty(1024, np.int64)
    ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        h, w = size[i, 0], size[i, 1]
        off, k = part_ptr[i], (part_ptr[i + 1] - part_ptr[i]) // 2
        xs = np.empty(k + 1, np.int64)
        ys = np.empty(k + 1, np.int64)
        for j in range(k):
            xs[j] = int(_SCALE * xy[off + 2 * j] + 0.5)
            ys[j] = int(_SCALE * xy[off + 2 * j + 1] + 0.5)
        if k > 0:
            xs[k], ys[k] = xs[0], ys[0]
        m = 0
        for j in range(k):
            m += max(abs(xs[j + 1] - xs[j]), abs(ys[j + 1] - ys[j])) + 1
        u = np.empty(m, np.int64)
        v = np.empty(m, np.int64)
        m = 0
        for j in range(k):
            x0, x1, y0, y1 = xs[j], xs[j + 1], ys[j], ys[j + 1]
            dx, dy = abs(x1 - x0), abs(y1 - y0)
            flip = (dx >= dy and x0 > x1) or (dx < dy and y0 > y1)
            if flip:
                x0, x1, y0, y1 = x1, x0, y1, y0
            if dx >= dy:
                s = (y1 - y0) / dx if dx > 0 else 0.0
                for d in range(dx + 1):
                    t = dx - d if flip else d
                    u[m] = x0 + t
                    v[m] = int(y0 + s * t + 0.5)
                    m += 1
            else:
                s = (x1 - x0) / dy
                for d in range(dy + 1):
                    t = dy - d if flip else d
                    v[m] = y0 + t
                    u[m] = int(x0 + s * t + 0.5)
                    m += 1
        points = np.empty(m + 1, np.int64)
        n_pts = 0
        for j in range(1, m):
            if u[j] == u[j - 1]:
                continue
            xd = ((u[j] if u[j] < u[j - 1] else u[j] - 1) + 0.5) / _SCALE - 0.5
            if math.floor(xd) != xd or xd < 0 or xd > w - 1:
                continue
            yd = (min(v[j], v[j - 1]) + 0.5) / _SCALE - 0.5
            if yd < 0:
                yd = 0.0
            elif yd > h:
                yd = float(h)
            points[n_pts] = int(xd) * h + int(math.ceil(yd))
            n_pts += 1
        points[n_pts] = h * w
        points = points[: n_pts + 1]
        _heapsort(points)
        # runs: differences of sorted points; a zero difference cancels a pair of points
        if ptr[i] + n_pts + 1 > counts.shape[0]:  # grow the output buffer geometrically
            bigger = np.empty(2 * (ptr[i] + n_pts + 1), np.int64)
            bigger[: ptr[i]] = counts[: ptr[i]]
            counts = bigger
        c = ptr[i]
        counts[c] = points[0]
        c += 1
        j = 1
        while j <= n_pts:
            diff = points[j] - points[j - 1]
            if diff > 0:
                counts[c] = diff
                c += 1
                j += 1
            else:
                j += 1
                if j <= n_pts:
                    counts[c - 1] += points[j] - points[j - 1]
                    j += 1
        ptr[i + 1] = c
    return counts[: ptr[n]].copy(), ptr


def _flat_polygon(poly, where):
    arr = np.asarray(poly, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{where}: a polygon must be a flat [x0, y0, x1, y1, ...] list")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: polygon coordinates must be finite")
    return arr


def _polygon_parts(segm, where):
    """A polygon segmentation as a list of flat float64 arrays (a flat list is one polygon)."""
    if len(segm) > 0 and np.ndim(segm[0]) == 0:
        return [_flat_polygon(segm, where)]
    return [_flat_polygon(p, f"{where}[{j}]") for j, p in enumerate(segm)]


def polygons_to_batch(polygons, sizes, name="polygons"):
    """RleBatch of many annotations, each a list of polygon parts (unioned, as `annToRLE`)."""
    size = np.asarray(sizes, np.int64).reshape(-1, 2)
    if np.any(size < 0):
        i = int(np.flatnonzero((size < 0).any(axis=1))[0])
        raise ValueError(f"{name}[{i}]: polygons need the image height and width, got {size[i]}")
    parts, owner = [], []
    for i, segm in enumerate(polygons):
        ann_parts = _polygon_parts(segm, f"{name}[{i}]")
        parts += ann_parts
        owner += [i] * len(ann_parts)
    owner = np.asarray(owner, np.int64)
    part_ptr = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([p.shape[0] for p in parts], out=part_ptr[1:])
    xy = np.concatenate(parts) if parts else np.zeros(0)
    counts, ptr = _polygons_to_runs(xy, part_ptr, size[owner])
    n_parts = np.bincount(owner, minlength=len(size))
    if np.all(n_parts == 1):
        return RleBatch(counts, ptr, size)
    # annotations with several parts (or none): OR the parts' pixels and re-encode
    batches = [RleBatch(counts, ptr, size[owner])]
    index = np.searchsorted(owner, np.arange(len(size)))  # each annotation's first part
    for i in np.flatnonzero(n_parts != 1):
        h, w = size[i]
        first = index[i]
        pixels = _decode_runs(counts, ptr[first : first + n_parts[i] + 1], h * w)
        runs, run_ptr = _encode_runs(pixels.max(axis=0, initial=0)[None])
        batches.append(RleBatch(runs, run_ptr, size[i : i + 1]))
        index[i] = 0
    source = np.zeros(len(size), np.int64)
    source[n_parts != 1] = np.arange(1, len(batches))
    return concat_batches(batches, source, index)


def _check_hw(h, w):
    if int(h) != h or int(w) != w or h < 0 or w < 0:
        raise ValueError(f"h, w: expected non-negative integers, got {h!r}, {w!r}")
    return int(h), int(w)


def poly_to_rle(polygons, h, w):
    """RLE of a polygon segmentation on an h x w image (COCO `annToRLE` for polygons).

    `polygons` is a list of flat [x0, y0, x1, y1, ...] lists (the parts are unioned) or one
    flat list. Unlike pycocotools' `frPyObjects`, a first part with only 4 numbers is a
    (degenerate) polygon, not a box.
    """
    h, w = _check_hw(h, w)
    return batch_to_rles(polygons_to_batch([polygons], [[h, w]]))[0]


def bbox_to_rle(bbox, h, w):
    """RLE of box [x, y, w, h] (pycocotools `frBbox`); an (n, 4) array gives a list of n RLEs."""
    h, w = _check_hw(h, w)
    boxes = np.asarray(bbox, dtype=np.float64)
    if boxes.shape[-1:] != (4,) or boxes.ndim not in (1, 2):
        raise ValueError(f"bbox: expected shape (4,) or (n, 4), got {boxes.shape}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError("bbox: values must be finite")
    b = boxes.reshape(-1, 4)
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    polys = [[row.tolist()] for row in np.stack([x0, y0, x0, y1, x1, y1, x1, y0], axis=1)]
    rles = batch_to_rles(polygons_to_batch(polys, [[h, w]] * len(polys), "bbox"))
    return rles[0] if boxes.ndim == 1 else rles


def segmentations_to_batch(segmentations, image_sizes, name="segmentation"):
    """COCO `annToRLE` for many annotations: polygons -> union of parts on the image size;
    uncompressed RLE -> its own size; compressed RLE (str or bytes) -> as it is."""
    kinds, compressed, comp_sizes, uncompressed, polygons, poly_sizes = [], [], [], [], [], []
    for i, segm in enumerate(segmentations):
        if isinstance(segm, dict):
            if isinstance(segm.get("counts"), (str, bytes)):
                kinds.append(0)
                compressed.append(segm["counts"])
                comp_sizes.append(segm.get("size"))
            else:
                kinds.append(1)
                uncompressed.append(segm)
        elif isinstance(segm, (list, tuple, np.ndarray)):
            kinds.append(2)
            polygons.append(segm)
            poly_sizes.append(image_sizes[i])
        else:
            raise TypeError(
                f"{name}[{i}]: expected polygons (list) or an RLE dict, got {type(segm).__name__}"
            )
    kinds = np.asarray(kinds, np.int64)
    if np.all(kinds == 0):  # the usual detection results: skip the dict round trip
        batch = strings_to_batch(compressed, [[0, 0]] * len(compressed), name)
        return RleBatch(batch.counts, batch.ptr, _sizes(comp_sizes, name))
    rle_dicts = [segmentations[i] for i in np.flatnonzero(kinds < 2)]
    rle_batch = rles_to_batch(rle_dicts, name)
    poly_batch = polygons_to_batch(polygons, poly_sizes, name)
    index = np.zeros(len(kinds), np.int64)
    index[kinds < 2] = np.arange(np.count_nonzero(kinds < 2))
    index[kinds == 2] = np.arange(len(polygons))
    return concat_batches([rle_batch, poly_batch], (kinds == 2).astype(np.int64), index)


def _sizes(sizes, name):
    try:
        arr = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: every RLE needs 'size' [h, w]") from None
    if arr.shape[0] != len(sizes) or np.any(arr < 0):
        raise ValueError(f"{name}: every RLE needs a non-negative 'size' [h, w]")
    return arr
