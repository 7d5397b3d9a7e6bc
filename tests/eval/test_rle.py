"""RLE encode / decode / string codec / area / toBbox / merge (COCOEVAL.md §1.1-1.7, §3.1)."""

import numpy as np
import pytest

from mrcnn_np.eval import (
    counts_to_string,
    rle_area,
    rle_decode,
    rle_encode,
    rle_merge,
    rle_to_bbox,
    string_to_counts,
)
from mrcnn_np.eval.rle import (
    counts_to_bbox_reference,
    counts_to_mask_reference,
    counts_to_string_reference,
    mask_to_counts_reference,
    string_to_counts_reference,
)


def rows(text):
    """'0110/0100' -> uint8 mask, one string per row."""
    return np.array([[int(c) for c in r] for r in text.split("/")], np.uint8)


def block(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def col40():
    m = np.zeros((40, 3), np.uint8)
    m[:, 0], m[5:30, 1], m[0, 2] = 1, 1, 1
    return m


def two_pixels():
    m = np.zeros((5, 5), np.uint8)
    m[4, 0] = m[0, 1] = 1
    return m


# COCOEVAL.md §3.1, produced by pycocotools 2.0.11: mask, counts, string, area, toBbox
TABLE = [
    # column-major pixels of 0110/0100/1100: col0 = 0,0,1  col1 = 1,1,1  col2 = 1,0,0  col3 = 0,0,0
    # -> runs 0,0 | 1,1,1,1,1 (col0 row2 .. col2 row0) | 0 x5  = [2, 5, 5]
    (rows("0110/0100/1100"), [2, 5, 5], "255", 5, [0, 0, 3, 3]),
    # starts with a 1: the first (zero) run has length 0
    (rows("10/11"), [0, 2, 1, 1], "021O", 3, [0, 0, 2, 2]),
    (rows("00/00"), [4], "4", 0, [0, 0, 0, 0]),
    (rows("11/11"), [0, 4], "04", 4, [0, 0, 2, 2]),
    (rows("0"), [1], "1", 0, [0, 0, 0, 0]),
    (rows("1"), [0, 1], "01", 1, [0, 0, 1, 1]),
    # 8x6, rows 2..6 x cols 1..3: 8 + 2 zeros before, then 5 ones / 3 zeros per column
    (block(8, 6, 2, 7, 1, 4), [10, 5, 3, 5, 3, 5, 17], ":53000>", 15, [1, 2, 3, 5]),
    # (y4,x0) and (y0,x1) are adjacent in column-major order: one run crossing a column,
    # which forces the full height into the box
    (two_pixels(), [4, 2, 19], "42c0", 2, [0, 0, 2, 5]),
    (col40(), [0, 40, 5, 25, 10, 1, 39], "0X15A5XOm0", 66, [0, 0, 3, 40]),
    (
        block(100, 100, 10, 60, 20, 22),
        [2010, 50, 50, 50, 7840],
        "jn1b1b10^c7",
        100,
        [20, 10, 2, 50],
    ),
]


@pytest.mark.parametrize("mask, counts, string, area, bbox", TABLE)
def test_table(mask, counts, string, area, bbox):
    rle = rle_encode(mask)
    assert rle == {"size": list(mask.shape), "counts": string}
    assert string_to_counts(string).tolist() == counts
    assert counts_to_string(counts) == string
    assert rle_area(rle) == area
    assert rle_to_bbox(rle).tolist() == bbox
    np.testing.assert_array_equal(rle_decode(rle), mask)
    # the readable references give the same
    assert mask_to_counts_reference(mask) == counts
    assert counts_to_string_reference(counts) == string
    assert string_to_counts_reference(string) == counts
    assert counts_to_bbox_reference(counts, *mask.shape) == bbox
    np.testing.assert_array_equal(counts_to_mask_reference(counts, *mask.shape), mask)


def test_string_worked_example():
    # counts [0,40,5,25,10,1,39]; from index 3 on, each value is written minus counts[i-2]:
    #   0 -> '0' (48+0);  40 = 8 + 1*32 -> chunk 8 with the continue bit 0x20: chr(48+40)='X',
    #   then 1 -> '1';  5 -> '5';  25-40 = -15 -> chunk -15 & 31 = 17 (sign bit 0x10 set) and
    #   -15 >> 5 = -1, so it ends: chr(48+17) = 'A';  10-5 = 5 -> '5';
    #   1-25 = -24 -> chunk 8, -24 >> 5 = -1 but bit 0x10 of 8 is clear: continue 'X', then
    #   -1 -> chunk 31 with the sign bit and nothing left: 'O';
    #   39-10 = 29 -> chunk 29 has the sign bit but 29 >> 5 = 0 != -1: continue 'm', then '0'
    assert counts_to_string([0, 40, 5, 25, 10, 1, 39]) == "0" + "X1" + "5" + "A" + "5" + "XO" + "m0"


def test_non_canonical_counts():
    # zero-length runs are legal; toBbox (fork) skips them, and with no foreground run left
    # the box wraps like C's uint32: [w, h, 1-w mod 2^32, 1-h mod 2^32] = [1, 5, 0, 2^32-4]
    rle = {"size": [5, 1], "counts": [2, 0, 3]}
    assert rle_merge([rle])["counts"] == "203"  # one RLE is copied unchanged
    assert rle_area(rle) == 0
    assert rle_to_bbox(rle).tolist() == [1, 5, 0, 4294967292]
    rle = {"size": [5, 2], "counts": [2, 0, 3, 2, 3]}  # ones at rows 0-1 of column 1
    assert counts_to_string(rle["counts"]) == "20320"
    assert rle_area(rle) == 2
    assert rle_to_bbox(rle).tolist() == [1, 0, 1, 2]


def test_encode_binarises():
    # pycocotools toggles on every value change ([0,2,1,0] -> counts [1,1,1,1], decoding to
    # [0,1,0,1]); we binarise first: runs 0 | 2,1 | 0 -> [1, 2, 1]
    rle = rle_encode(np.array([[0], [2], [1], [0]]))
    assert rle["counts"] == "121"
    assert rle_decode(rle)[:, 0].tolist() == [0, 1, 1, 0]
    assert rle_encode(np.array([[0], [255]], np.uint8)) == rle_encode(np.array([[False], [True]]))


def test_counts_input_kinds_and_stacks():
    mask = rows("0110/0100/1100")
    for counts in ("255", b"255", [2, 5, 5], np.array([2, 5, 5])):
        np.testing.assert_array_equal(rle_decode({"size": [3, 4], "counts": counts}), mask)
    stack = np.stack([mask, 1 - mask, np.zeros_like(mask)])
    rles = rle_encode(stack)
    # 1 - mask: runs [0, 2, 5, 5], the last written as 5 - 2 = 3; all zero: [12] -> chr(48+12)
    assert [r["counts"] for r in rles] == ["255", "0253", "<"]
    np.testing.assert_array_equal(rle_decode(rles), stack)
    assert rle_area(rles).tolist() == [5, 7, 0]
    assert rle_to_bbox(rles).shape == (3, 4)


def test_empty_inputs():
    assert rle_encode(np.zeros((0, 3, 4), bool)) == []
    assert rle_decode([]).shape == (0, 0, 0)
    assert rle_area([]).shape == (0,)
    assert rle_to_bbox([]).shape == (0, 4)
    # a 0-pixel image: one empty 0-run, as pycocotools' encode writes it
    assert rle_encode(np.zeros((0, 5), bool)) == {"size": [0, 5], "counts": "0"}
    assert string_to_counts("").tolist() == []


def test_invalid_inputs():
    with pytest.raises(ValueError, match="sum to 12 but 'size' \\[3, 3\\] has 9"):
        rle_decode({"size": [3, 3], "counts": "<"})  # counts [12]
    with pytest.raises(ValueError, match="sum to 8"):
        rle_area({"size": [3, 3], "counts": [4, 4]})  # too short: rejected, never garbage
    with pytest.raises(ValueError, match="malformed"):
        string_to_counts("X")  # continue bit on the last character
    with pytest.raises(ValueError, match="malformed"):
        string_to_counts("0 1")  # ' ' is outside '0'..'o'
    with pytest.raises(ValueError, match="characters"):
        string_to_counts("0é")
    with pytest.raises(ValueError, match="run lengths must be"):
        rle_decode({"size": [1, 1], "counts": [-1, 2]})
    with pytest.raises(TypeError, match="threshold float masks"):
        rle_encode(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        rle_encode(np.zeros(4, bool))
    with pytest.raises(TypeError, match="'size' and 'counts'"):
        rle_decode({"counts": "4"})
    with pytest.raises(ValueError, match="one size"):
        rle_decode([rle_encode(np.zeros((2, 2), bool)), rle_encode(np.zeros((2, 3), bool))])


def test_merge_hand_computed():
    a = rows("1110/1110/0000/0000")
    b = rows("0000/0110/0110/0110")
    ra, rb = rle_encode(a), rle_encode(b)
    assert (ra["counts"], rb["counts"]) == ("0220004", "53103")
    union, inter = rle_merge([ra, rb]), rle_merge([ra, rb], intersect=True)
    np.testing.assert_array_equal(rle_decode(union), a | b)
    np.testing.assert_array_equal(rle_decode(inter), a & b)
    # a|b column-major: col0 1,1,0,0  col1 1,1,1,1  col2 1,1,1,1  col3 0,0,0,0
    assert string_to_counts(union["counts"]).tolist() == [0, 2, 2, 8, 4]
    with pytest.raises(ValueError, match="one size"):
        rle_merge([ra, rle_encode(np.zeros((2, 2), bool))])
    with pytest.raises(ValueError, match="at least one"):
        rle_merge([])


def test_reference_and_kernels_agree_on_random_masks(rng):
    for _ in range(200):
        h, w = rng.integers(1, 12, 2)
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        counts = mask_to_counts_reference(mask)
        rle = rle_encode(mask)
        assert string_to_counts(rle["counts"]).tolist() == counts
        assert rle["counts"] == counts_to_string_reference(counts)
        assert rle_to_bbox(rle).tolist() == counts_to_bbox_reference(counts, h, w)
        np.testing.assert_array_equal(rle_decode(rle), counts_to_mask_reference(counts, h, w))
        # the tight pixel box, written directly
        ys, xs = np.nonzero(mask)
        box = [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1] if len(xs) else [0, 0, 0, 0]
        assert rle_to_bbox(rle).tolist() == box


def test_string_codec_on_random_counts(rng):
    for _ in range(300):
        counts = rng.integers(0, 2 ** rng.integers(1, 31), rng.integers(0, 12)).tolist()
        s = counts_to_string(counts)
        assert s == counts_to_string_reference(counts)
        assert string_to_counts(s).tolist() == counts == string_to_counts_reference(s)


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_parity_encode_decode_area_bbox(rng):
    mask_api = pytest.importorskip("pycocotools.mask")
    for _ in range(300):
        h, w = rng.integers(1, 30, 2)
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if rng.random() < 0.3:
            mask[:] = 0
            mask[rng.integers(h) :, rng.integers(w) :] = 1
        ref = mask_api.encode(np.asfortranarray(mask))
        ours = rle_encode(mask)
        assert ours["counts"] == ref["counts"].decode() and ours["size"] == ref["size"]
        assert rle_area(ours) == mask_api.area(ref)
        assert rle_to_bbox(ours).tolist() == mask_api.toBbox(ref).tolist()
        np.testing.assert_array_equal(rle_decode(ours), mask_api.decode(ref))


@pytest.mark.parity
def test_parity_strings_of_random_counts(rng):
    mask_api = pytest.importorskip("pycocotools.mask")
    for _ in range(300):
        counts = rng.integers(0, 2 ** rng.integers(1, 26), rng.integers(1, 12)).tolist()
        total = sum(counts)
        ref = mask_api.frPyObjects({"size": [total, 1], "counts": counts}, total, 1)
        assert counts_to_string(counts) == ref["counts"].decode()
        assert string_to_counts(ref["counts"]).tolist() == counts
        if total:
            rle = {"size": [total, 1], "counts": counts}
            assert rle_to_bbox(rle).tolist() == mask_api.toBbox(ref).tolist()


@pytest.mark.parity
def test_parity_merge(rng):
    mask_api = pytest.importorskip("pycocotools.mask")
    for _ in range(200):
        h, w = rng.integers(1, 15, 2)
        masks = (rng.random((rng.integers(1, 5), h, w)) < 0.4).astype(np.uint8)
        ref_rles = [mask_api.encode(np.asfortranarray(m)) for m in masks]
        for intersect in (False, True):
            ref = mask_api.merge(ref_rles, intersect=intersect)
            ours = rle_merge(rle_encode(masks), intersect=intersect)
            assert ours["counts"] == ref["counts"].decode()
