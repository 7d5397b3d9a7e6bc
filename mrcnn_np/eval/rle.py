"""Run-length encoded (RLE) binary masks, byte-for-byte compatible with pycocotools.mask.

Implements COCOEVAL.md §1.1-§1.7 (pycocotools 2.0.11, whose C layer `maskApi.c` comes from
the ppwwyyxx/cocoapi fork): column-major runs that start with a 0-run, the LEB128-like
compressed string, decode, area, the fork's `rleToBbox` and merge.

An RLE is the dict pycocotools uses: `{'size': [h, w], 'counts': ...}`.

* Inputs may carry `counts` as a compressed `str` (what JSON holds), compressed `bytes`
  (what `pycocotools.mask.encode` returns) or an uncompressed list / int array of run
  lengths. Every function here accepts all three.
* Outputs always carry `counts` as a compressed `str`, so they go straight into JSON.
  pycocotools returns `bytes`; `counts.encode()` converts when you need its exact type.
* The counts of an RLE must sum to exactly `h*w`. pycocotools raises for a longer RLE and
  reads uninitialised memory (decode) or loops forever (iou) for a shorter one; we raise
  `ValueError` for both.

Deviation, on purpose: `rle_encode` binarises its input (any non-zero pixel is foreground).
pycocotools starts a new run whenever the *value* changes, so a non-binary mask such as
`[0, 2, 1, 0]` comes out as four runs and decodes to `[0, 1, 0, 1]`. For 0/1 masks both agree.

Every hot loop exists twice: a plain-Python `*_reference` that reads like the spec and a
Numba kernel used by the public functions. Tests assert that they agree.
"""

from typing import NamedTuple

import numba
import numpy as np

__all__ = [
    "RleBatch",
    "counts_to_string",
    "counts_to_string_reference",
    "rle_area",
    "rle_decode",
    "rle_encode",
    "rle_merge",
    "rle_to_bbox",
    "string_to_counts",
    "string_to_counts_reference",
]

# The compressed alphabet is chr(48) ('0') .. chr(111) ('o'): 5 payload bits + a continue bit.
_CHAR_OFFSET = 48
_MAX_CHARS_PER_VALUE = 7  # 35 bits: enough for any uint32 run length, signed deltas included


class RleBatch(NamedTuple):
    """Many RLEs in flat arrays: RLE i has runs `counts[ptr[i]:ptr[i+1]]` and size `size[i]`."""

    counts: np.ndarray  # (total_runs,) int64
    ptr: np.ndarray  # (n + 1,) int64
    size: np.ndarray  # (n, 2) int64, rows (h, w)

    def __len__(self):
        return self.size.shape[0]


# ---------------------------------------------------------------------------------------------
# Readable references (COCOEVAL.md §1.2-§1.6, written as the spec words them)
# ---------------------------------------------------------------------------------------------


def mask_to_counts_reference(mask):
    """Runs of a binary (h, w) mask in column-major order; the first run counts zeros."""
    pixels = [int(v != 0) for v in np.asarray(mask).T.ravel()]  # x*h + y order
    counts, previous, run = [], 0, 0
    for value in pixels:
        if value != previous:
            counts.append(run)
            run, previous = 0, value
        run += 1
    counts.append(run)
    return counts


def counts_to_mask_reference(counts, h, w):
    """Inverse of `mask_to_counts_reference`: alternate 0 and 1 runs, column-major."""
    pixels, value = [], 0
    for run in counts:
        pixels += [value] * int(run)
        value = 1 - value
    return np.array(pixels, dtype=np.uint8).reshape(w, h).T


def counts_to_string_reference(counts):
    """pycocotools' `rleToString` (§1.3): deltas for i >= 3, 5 bits per char, LSB first."""
    chars = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # Python's >> floors, like C's arithmetic shift of a signed long
            # bit 0x10 of the last chunk is the sign bit, so a chunk that looks negative
            # only ends the number if what is left is all ones (-1)
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + _CHAR_OFFSET))
    return "".join(chars)


def string_to_counts_reference(s):
    """pycocotools' `rleFrString` (§1.3): the inverse of `counts_to_string_reference`."""
    counts, p = [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - _CHAR_OFFSET
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x % 2**32)  # C stores the value in a uint32
    return counts


def counts_to_bbox_reference(counts, h, w):
    """The fork's `rleToBbox` (§1.6): tight pixel box [x, y, w, h] from the foreground runs."""
    m = 2 * (len(counts) // 2)  # a trailing 0-run cannot extend the box
    if m == 0:
        return [0.0, 0.0, 0.0, 0.0]
    xs, ys, xe, ye, end = w, h, 0, 0, 0
    for j in range(m):
        start = end
        end += int(counts[j])
        if j % 2 == 0 or counts[j] == 0:
            continue
        x_start, x_end = start // h, (end - 1) // h
        xs, xe = min(xs, x_start), max(xe, x_end)
        if x_start < x_end:  # a run through a column boundary touches rows h-1 and 0
            ys, ye = 0, h - 1
        else:
            ys, ye = min(ys, start % h), max(ye, (end - 1) % h)
    # uint32 arithmetic in C: only a non-canonical RLE with no foreground pixel wraps here
    return [float(xs), float(ys), float((xe - xs + 1) % 2**32), float((ye - ys + 1) % 2**32)]


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _encode_runs(flat):
    """Runs of each row of `flat` (n, h*w) uint8 0/1, already in column-major pixel order."""
    n, length = flat.shape
    ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        runs, previous = 1, 0
        for j in range(length):
            if flat[i, j] != previous:
                runs += 1
                previous = flat[i, j]
        ptr[i + 1] = ptr[i] + runs
    counts = np.empty(ptr[n], np.int64)
    for i in range(n):
        k, previous, run = ptr[i], 0, 0
        for j in range(length):
            if flat[i, j] != previous:
                counts[k] = run
                k += 1
                run = 0
                previous = flat[i, j]
            run += 1
        counts[k] = run
    return counts, ptr


@numba.njit(cache=True)
def _decode_runs(counts, ptr, length):
    """(n, length) uint8 column-major pixels of n RLEs whose runs sum to `length`."""
    n = ptr.shape[0] - 1
    out = np.zeros((n, length), np.uint8)
    for i in range(n):
        pos, value = 0, 0
        for j in range(ptr[i], ptr[i + 1]):
            if value:
                out[i, pos : pos + counts[j]] = 1
            pos += counts[j]
            value = 1 - value
    return out


@numba.njit(cache=True)
def _counts_to_chars(counts, ptr):
    """Compressed strings of n RLEs as one uint8 buffer plus offsets (see the reference)."""
    n = ptr.shape[0] - 1
    chars = np.empty(max(1, counts.shape[0] * _MAX_CHARS_PER_VALUE), np.uint8)
    cptr = np.zeros(n + 1, np.int64)
    p = 0
    for i in range(n):
        for j in range(ptr[i], ptr[i + 1]):
            x = counts[j]
            if j - ptr[i] > 2:
                x -= counts[j - 2]
            more = True
            while more:
                c = x & 0x1F
                x >>= 5
                more = (x != -1) if (c & 0x10) else (x != 0)
                if more:
                    c |= 0x20
                chars[p] = c + _CHAR_OFFSET
                p += 1
        cptr[i + 1] = p
    return chars[:p], cptr


@numba.njit(cache=True)
def _chars_to_counts(chars, cptr):
    """Inverse of `_counts_to_chars`. Returns (counts, ptr, index of a malformed string or -1)."""
    n = cptr.shape[0] - 1
    ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        values = 0
        for p in range(cptr[i], cptr[i + 1]):
            c = np.int64(chars[p]) - _CHAR_OFFSET
            if c < 0 or c > 63:
                return np.zeros(0, np.int64), ptr, i
            if not c & 0x20:
                values += 1
        if cptr[i + 1] > cptr[i] and (np.int64(chars[cptr[i + 1] - 1]) - _CHAR_OFFSET) & 0x20:
            return np.zeros(0, np.int64), ptr, i  # the last value never ends
        ptr[i + 1] = ptr[i] + values
    counts = np.empty(ptr[n], np.int64)
    for i in range(n):
        m, p = ptr[i], cptr[i]
        while p < cptr[i + 1]:
            x, k, more = np.int64(0), 0, True
            while more:
                if k == _MAX_CHARS_PER_VALUE:
                    return np.zeros(0, np.int64), ptr, i  # no uint32 needs this many chars
                c = np.int64(chars[p]) - _CHAR_OFFSET
                x |= (c & 0x1F) << (5 * k)
                more = (c & 0x20) != 0
                p += 1
                k += 1
                if not more and (c & 0x10):
                    x |= np.int64(-1) << (5 * k)
            if m - ptr[i] > 2:
                x += counts[m - 2]
            counts[m] = x & 0xFFFFFFFF
            m += 1
    return counts, ptr, -1


@numba.njit(cache=True)
def _rle_stats(counts, ptr, size):
    """Per RLE: the sum of its runs, its area (sum of 1-runs) and the fork's toBbox."""
    n = ptr.shape[0] - 1
    total = np.zeros(n, np.int64)
    area = np.zeros(n, np.int64)
    bbox = np.zeros((n, 4), np.float64)
    for i in range(n):
        h, w = size[i, 0], size[i, 1]
        m = 2 * ((ptr[i + 1] - ptr[i]) // 2)
        xs, ys, xe, ye, end = w, h, 0, 0, 0
        for j in range(ptr[i + 1] - ptr[i]):
            start = end
            end += counts[ptr[i] + j]
            if j % 2 == 0 or counts[ptr[i] + j] == 0:
                continue
            area[i] += counts[ptr[i] + j]
            if h == 0:
                continue
            x_start, x_end = start // h, (end - 1) // h
            xs, xe = min(xs, x_start), max(xe, x_end)
            if x_start < x_end:
                ys, ye = 0, h - 1
            else:
                ys, ye = min(ys, start % h), max(ye, (end - 1) % h)
        total[i] = end
        if m > 0:
            bbox[i, 0], bbox[i, 1] = xs, ys
            bbox[i, 2], bbox[i, 3] = (xe - xs + 1) % 2**32, (ye - ys + 1) % 2**32
    return total, area, bbox


# ---------------------------------------------------------------------------------------------
# Conversions between RLE dicts and batches
# ---------------------------------------------------------------------------------------------


def _check_size(size, where):
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'size' must be [h, w], got {size!r}") from None
    if h < 0 or w < 0:
        raise ValueError(f"{where}: 'size' must be non-negative, got {size!r}")
    return h, w


def _uncompressed_counts(counts, where):
    arr = np.asarray(counts)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(
            f"{where}: uncompressed 'counts' must be a 1-D list of ints, got {arr.dtype} "
            f"with shape {arr.shape}"
        )
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= 2**32):
        raise ValueError(
            f"{where}: run lengths must be in [0, 2**32), got {arr.min()}..{arr.max()}"
        )
    return arr


def strings_to_batch(strings, sizes, name="rles"):
    """Decode many compressed `counts` strings (str or bytes) in one kernel call."""
    try:
        encoded = [s.encode("ascii") if isinstance(s, str) else bytes(s) for s in strings]
    except UnicodeEncodeError:
        raise ValueError(f"{name}: compressed counts must use the characters '0'..'o'") from None
    cptr = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(s) for s in encoded], out=cptr[1:])
    chars = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    counts, ptr, bad = _chars_to_counts(chars, cptr)
    if bad >= 0:
        raise ValueError(
            f"{name}[{bad}]: malformed compressed counts {strings[bad]!r} (characters must be "
            "'0'..'o' and the last one must end its value)"
        )
    return RleBatch(counts, ptr, np.asarray(sizes, np.int64).reshape(-1, 2))


def concat_batches(batches, owner, index):
    """Interleave several RleBatch into one: RLE i is `batches[owner[i]]`'s RLE `index[i]`."""
    owner, index = np.asarray(owner, np.int64), np.asarray(index, np.int64)
    n = owner.shape[0]
    if not batches or n == 0:
        return RleBatch(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros((0, 2), np.int64))
    base = np.cumsum([0] + [b.counts.shape[0] for b in batches[:-1]])
    all_counts = np.concatenate([b.counts for b in batches])
    starts = np.empty(n, np.int64)
    lengths = np.empty(n, np.int64)
    size = np.empty((n, 2), np.int64)
    for b, batch in enumerate(batches):
        sel = owner == b
        starts[sel] = base[b] + batch.ptr[index[sel]]
        lengths[sel] = batch.ptr[index[sel] + 1] - batch.ptr[index[sel]]
        size[sel] = batch.size[index[sel]]
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=ptr[1:])
    gather = np.repeat(starts - ptr[:-1], lengths) + np.arange(ptr[-1])
    return RleBatch(all_counts[gather], ptr, size)


def rles_to_batch(rles, name="rles"):
    """Pack RLE dicts (str / bytes / list counts) into a RleBatch; `check_batch` validates it."""
    if isinstance(rles, dict):
        rles = [rles]
    kinds, sizes, compressed, uncompressed = [], [], [], []
    for i, rle in enumerate(rles):
        where = f"{name}[{i}]"
        if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
            raise TypeError(f"{where}: expected a dict with 'size' and 'counts', got {rle!r:.80}")
        sizes.append(_check_size(rle["size"], where))
        counts = rle["counts"]
        if isinstance(counts, (str, bytes)):
            kinds.append(0)
            compressed.append(counts)
        else:
            kinds.append(1)
            uncompressed.append(_uncompressed_counts(counts, where))
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    kinds = np.asarray(kinds, np.int64)
    batches = [strings_to_batch(compressed, sizes[kinds == 0], name), _list_batch(uncompressed)]
    index = np.zeros(len(kinds), np.int64)
    for k in (0, 1):
        index[kinds == k] = np.arange(np.count_nonzero(kinds == k))
    batch = concat_batches(batches, kinds, index)
    return RleBatch(batch.counts, batch.ptr, sizes)


def _list_batch(arrays):
    ptr = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([a.shape[0] for a in arrays], out=ptr[1:])
    counts = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return RleBatch(counts, ptr, np.zeros((len(arrays), 2), np.int64))


def check_batch(batch, name="rles"):
    """Raise ValueError unless every RLE's runs sum to exactly h*w. Returns (area, bbox)."""
    total, area, bbox = _rle_stats(batch.counts, batch.ptr, batch.size)
    expected = batch.size[:, 0] * batch.size[:, 1]
    bad = np.flatnonzero(total != expected)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}]: run lengths sum to {total[i]} but 'size' {batch.size[i].tolist()} "
            f"has {expected[i]} pixels (RLE counts must cover the image exactly)"
        )
    return area, bbox


def batch_to_rles(batch):
    """RLE dicts (compressed str counts) of a RleBatch."""
    chars, cptr = _counts_to_chars(batch.counts, batch.ptr)
    text = chars.tobytes().decode("ascii")
    return [
        {"size": [int(h), int(w)], "counts": text[cptr[i] : cptr[i + 1]]}
        for i, (h, w) in enumerate(batch.size)
    ]


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def counts_to_string(counts):
    """Compressed `counts` string of a list of run lengths (pycocotools' `rleToString`)."""
    arr = _uncompressed_counts(counts, "counts")
    chars, _ = _counts_to_chars(arr, np.array([0, arr.shape[0]], np.int64))
    return chars.tobytes().decode("ascii")


def string_to_counts(s):
    """Run lengths (int64, values wrapped to uint32 like C) of a compressed `counts` string."""
    if not isinstance(s, (str, bytes)):
        raise TypeError(f"s: expected a compressed counts str or bytes, got {type(s).__name__}")
    return strings_to_batch([s], [[0, 0]], name="s").counts


def _binary_masks(mask):
    """(n, h, w) masks -> (n, w*h) uint8 0/1 in column-major pixel order."""
    m = np.asarray(mask)
    if not (m.dtype == np.bool_ or np.issubdtype(m.dtype, np.integer)):
        raise TypeError(
            f"mask: expected a bool or integer array, got {m.dtype}; threshold float masks "
            "first (e.g. mask >= 0.5)"
        )
    n, h, w = m.shape
    return np.ascontiguousarray((m != 0).transpose(0, 2, 1)).reshape(n, w * h).view(np.uint8)


def rle_encode(mask):
    """Encode a (h, w) mask as an RLE dict, or an (n, h, w) stack as a list of n dicts.

    Any non-zero pixel is foreground (see the module docstring for how that differs from
    pycocotools on non-binary input). Counts come back as a compressed `str`.
    """
    m = np.asarray(mask)
    if m.ndim not in (2, 3):
        raise ValueError(f"mask: expected shape (h, w) or (n, h, w), got {m.shape}")
    stack = m[None] if m.ndim == 2 else m
    counts, ptr = _encode_runs(_binary_masks(stack))
    size = np.tile(np.array(stack.shape[1:], np.int64), (stack.shape[0], 1))
    rles = batch_to_rles(RleBatch(counts, ptr, size))
    return rles[0] if m.ndim == 2 else rles


def rle_decode(rle):
    """(h, w) uint8 mask of one RLE dict, or (n, h, w) for a list of same-size RLEs."""
    batch = rles_to_batch(rle, "rle")
    check_batch(batch, "rle")
    single = isinstance(rle, dict)
    if len(batch) == 0:
        return np.zeros((0, 0, 0), np.uint8)
    if np.any(batch.size != batch.size[0]):
        raise ValueError(f"rle: all RLEs of a list must have one size, got {batch.size.tolist()}")
    h, w = (int(v) for v in batch.size[0])
    flat = _decode_runs(batch.counts, batch.ptr, h * w)
    masks = np.ascontiguousarray(flat.reshape(-1, w, h).transpose(0, 2, 1))
    return masks[0] if single else masks


def rle_area(rle):
    """Foreground pixel count: an int for one RLE dict, an int64 array for a list."""
    area, _ = check_batch(rles_to_batch(rle, "rle"), "rle")
    return int(area[0]) if isinstance(rle, dict) else area


def rle_to_bbox(rle):
    """Tight pixel box [x, y, w, h] (float64) of one RLE, or (n, 4) for a list (fork toBbox).

    An empty mask gives [0, 0, 0, 0]. No half-pixel offset: one pixel at (y, x) is [x, y, 1, 1].
    """
    _, bbox = check_batch(rles_to_batch(rle, "rle"), "rle")
    return bbox[0] if isinstance(rle, dict) else bbox


def rle_merge(rles, intersect=False):
    """Union (or intersection) of same-size RLEs as one canonical RLE (pycocotools `merge`).

    One RLE comes back with its counts unchanged, as pycocotools does. Unlike pycocotools,
    which returns an empty 0x0 RLE, differing sizes raise ValueError.
    """
    batch = rles_to_batch(rles, "rles")
    check_batch(batch, "rles")
    if len(batch) == 0:
        raise ValueError("rles: need at least one RLE to merge, got an empty list")
    if len(batch) == 1:
        return batch_to_rles(batch)[0]
    if np.any(batch.size != batch.size[0]):
        raise ValueError(f"rles: all RLEs must have one size, got {batch.size.tolist()}")
    h, w = (int(v) for v in batch.size[0])
    flat = _decode_runs(batch.counts, batch.ptr, h * w)
    merged = flat.min(axis=0) if intersect else flat.max(axis=0)
    counts, ptr = _encode_runs(merged[None])
    return batch_to_rles(RleBatch(counts, ptr, batch.size[:1]))[0]
