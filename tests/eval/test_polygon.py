"""Polygon / box rasterisation, pycocotools' frPoly and frBbox (COCOEVAL.md §1.8, §3.2)."""

import numpy as np
import pytest

from mrcnn_np.eval import bbox_to_rle, poly_to_rle, rle_area, rle_decode, rle_to_bbox
from mrcnn_np.eval.polygon import (
    _polygons_to_runs,
    poly_to_counts_reference,
    segmentations_to_batch,
)
from mrcnn_np.eval.rle import batch_to_rles, counts_to_string, string_to_counts


def rows(text):
    return np.array([[int(c) for c in r] for r in text.split("/")], np.uint8)


# COCOEVAL.md §3.2 (pycocotools 2.0.11): polygon, h, w, counts, string, area, toBbox, mask
POLYGONS = [
    # right triangle (1,1),(4,1),(4,4): pixel centres strictly inside the diagonal x = y edge,
    # plus the centres on it that the C rounding keeps: (y1,x2),(y1,x3),(y2,x3)
    (
        [1, 1, 4, 1, 4, 4],
        6,
        6,
        [13, 1, 5, 2, 15],
        "=151:",
        3,
        [2, 1, 2, 2],
        "000000/001100/000100/000000/000000/000000",
    ),
    # integer corners: covers exactly columns 0..2, rows 0..1
    (
        [0, 0, 3, 0, 3, 2, 0, 2],
        4,
        4,
        [0, 2, 2, 2, 2, 2, 6],
        "0220004",
        6,
        [0, 0, 3, 2],
        "1110/1110/0000/0000",
    ),
    # half-integer edges 0.5..3.5 cover pixel centres 1.5, 2.5, 3.5 -> pixels 1..3
    (
        [0.5, 0.5, 3.5, 0.5, 3.5, 2.5, 0.5, 2.5],
        4,
        4,
        [5, 2, 2, 2, 2, 2, 1],
        "522000O",
        6,
        [1, 1, 3, 2],
        "0000/0111/0111/0000",
    ),
    # negative and out-of-image vertices: clipped to columns 0..1 (centres 0.5, 1.5 < 2.2)
    (
        [-2, -1, 2.2, -1, 2.2, 9, -2, 9],
        4,
        5,
        [0, 8, 12],
        "08<",
        8,
        [0, 0, 2, 4],
        "11000/11000/11000/11000",
    ),
    (
        [1.2, 0.3, 4.9, 2.1, 2.0, 4.8],
        6,
        6,
        [6, 2, 5, 3, 3, 2, 5, 1, 9],
        "6251NO2O4",
        8,
        [1, 0, 4, 4],
        "010000/011100/001110/001000/000000/000000",
    ),
    # x = 2.4, 2.5 and 2.6 all scale and truncate (5x + .5) to 12 or 13 -> the same pixel
    (
        [2.4, 1, 4, 1, 4, 3],
        5,
        6,
        [16, 1, 13],
        "`01=",
        1,
        [3, 1, 1, 1],
        "000000/000100/000000/000000/000000",
    ),
    ([2.5, 1, 4, 1, 4, 3], 5, 6, [16, 1, 13], "`01=", 1, [3, 1, 1, 1], None),
    ([2.6, 1, 4, 1, 4, 3], 5, 6, [16, 1, 13], "`01=", 1, [3, 1, 1, 1], None),
]

BOXES = [
    # [x, y, w, h] = [1.5, 2, 3, 4.5]: x edges 1.5 and 4.5 -> centres 2.5..4.5 -> cols 2..4;
    # y edges 2 and 6.5 -> rows 2..6
    ([1.5, 2.0, 3.0, 4.5], [18, 5, 3, 5, 3, 5, 25], "b053000f0", 15, [2, 2, 3, 5]),
    ([0, 0, 3, 2], [0, 2, 6, 2, 6, 2, 46], "026000X1", 6, [0, 0, 3, 2]),
    # smaller than a pixel pair, yet 2x2: 5*0.4+.5 = 2.5 -> 2 and 5*1.6+.5 = 8.5 -> 8 on the
    # x5 grid, which spans the centres 2 and 7 of pixels 0 and 1
    ([0.4, 0.4, 1.2, 1.2], [0, 2, 6, 2, 54], "0260`1", 4, [0, 0, 2, 2]),
    ([2, 1, 0.3, 3], [64], "P2", 0, [0, 0, 0, 0]),  # too thin to contain a pixel centre
]


@pytest.mark.parametrize("xy, h, w, counts, string, area, bbox, mask", POLYGONS)
def test_polygon_table(xy, h, w, counts, string, area, bbox, mask):
    rle = poly_to_rle([xy], h, w)
    assert rle == {"size": [h, w], "counts": string}
    assert string_to_counts(string).tolist() == counts
    assert poly_to_counts_reference(xy, h, w) == counts
    assert rle_area(rle) == area and rle_to_bbox(rle).tolist() == bbox
    if mask is not None:
        np.testing.assert_array_equal(rle_decode(rle), rows(mask))
    assert poly_to_rle(xy, h, w) == rle  # a flat list is one polygon


@pytest.mark.parametrize("box, counts, string, area, bbox", BOXES)
def test_box_table(box, counts, string, area, bbox):
    rle = bbox_to_rle(box, 8, 8)
    assert rle == {"size": [8, 8], "counts": string}
    assert string_to_counts(string).tolist() == counts
    assert rle_area(rle) == area and rle_to_bbox(rle).tolist() == bbox


def test_boxes_as_array():
    rles = bbox_to_rle(np.array([b[0] for b in BOXES]), 8, 8)
    assert [r["counts"] for r in rles] == [b[2] for b in BOXES]


def test_multi_polygon_is_a_union():
    # a 32x32 square (area 1024) and a triangle overlapping its right side: union, not XOR
    parts = [[100, 150, 132, 150, 132, 182, 100, 182], [140, 150, 150, 150, 150, 160]]
    rle = poly_to_rle(parts, 200, 300)
    assert rle["counts"] == (
        "fec0P1X50000000000000000000000000000000000000000000000000000000000000Xh1QOgXN1O1O1O1O1"
        "O1O1O1iTm0"
    )
    assert rle_area(rle) == 1069 and rle_to_bbox(rle).tolist() == [100, 150, 50, 32]
    diamond = poly_to_rle([[30, 128, 42, 140, 30, 152, 18, 140]], 200, 300)
    assert diamond["counts"] == "kd31V62N2N2N2N2N2N2N2N2N2N2O01N2N2N2N2N2N2N2N2N2N2NVXb1"
    assert rle_area(diamond) == 288 and rle_to_bbox(diamond).tolist() == [18, 128, 24, 23]
    # pycocotools would read a 4-number first part as a box; here it is a degenerate polygon
    assert poly_to_rle([[1, 1, 4, 1, 4, 4], [1, 1, 4, 4]], 6, 6)["counts"] == "=151:"
    assert poly_to_rle([[1, 1, 4, 4]], 6, 6)["counts"] == "T1"  # [36]: empty
    assert poly_to_rle([], 6, 6)["counts"] == "T1"


def test_segmentations_of_every_kind():
    polygon = [[0, 0, 3, 0, 3, 2, 0, 2]]
    batch = segmentations_to_batch(
        [
            polygon,
            {"size": [4, 4], "counts": [0, 2, 2, 2, 2, 2, 6]},
            {"size": [4, 4], "counts": "0220004"},
            {"size": [4, 4], "counts": b"0220004"},
        ],
        [[4, 4]] * 4,
    )
    assert [r["counts"] for r in batch_to_rles(batch)] == ["0220004"] * 4
    with pytest.raises(ValueError, match="height and width"):
        segmentations_to_batch([polygon], [[-1, -1]])
    with pytest.raises(TypeError, match="polygons"):
        segmentations_to_batch([3.0], [[4, 4]])
    with pytest.raises(ValueError, match="finite"):
        poly_to_rle([[0, 0, np.nan, 1, 2, 2]], 4, 4)
    with pytest.raises(ValueError, match="shape"):
        bbox_to_rle([1, 2, 3], 4, 4)


def random_polygon(rng):
    """Vertices on a 0.1 grid, some negative / beyond the image, repeated vertices at times."""
    k = rng.integers(1, 9)
    xy = np.round(rng.uniform(-4, 16, 2 * k), 1)
    if rng.random() < 0.3:
        xy = np.round(xy)
    if rng.random() < 0.2 and k > 1:
        xy[2:4] = xy[0:2]  # duplicate vertex: a degenerate edge
    if rng.random() < 0.1:
        xy = np.append(xy, 3.0)  # odd trailing value, ignored
    return xy.tolist()


def test_reference_and_kernel_agree(rng):
    polys = [random_polygon(rng) for _ in range(500)]
    sizes = rng.integers(1, 14, (500, 2))
    parts = [np.asarray(p, float) for p in polys]
    ptr = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    counts, run_ptr = _polygons_to_runs(np.concatenate(parts), ptr, sizes)
    for i, (poly, (h, w)) in enumerate(zip(polys, sizes, strict=True)):
        expected = poly_to_counts_reference(poly, h, w)
        assert counts[run_ptr[i] : run_ptr[i + 1]].tolist() == expected
        assert sum(expected) == h * w


@pytest.mark.parity
def test_parity_random_polygons(rng):
    mask_api = pytest.importorskip("pycocotools.mask")
    for _ in range(1000):
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        poly = random_polygon(rng)
        if len(poly) < 6:
            continue  # frPyObjects reads short first polygons as boxes (COCOEVAL.md §1.8)
        ref = mask_api.frPyObjects([poly], h, w)[0]
        assert poly_to_rle([poly], h, w)["counts"] == ref["counts"].decode()
        assert counts_to_string(poly_to_counts_reference(poly, h, w)) == ref["counts"].decode()


@pytest.mark.parity
def test_parity_random_multipolygons_and_boxes(rng):
    mask_api = pytest.importorskip("pycocotools.mask")
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        parts = [p for p in (random_polygon(rng) for _ in range(3)) if len(p) >= 6]
        if parts:
            ref = mask_api.merge(mask_api.frPyObjects(parts, h, w))
            assert poly_to_rle(parts, h, w)["counts"] == ref["counts"].decode()
        boxes = np.round(rng.uniform(-3, 12, (4, 4)), rng.integers(0, 3))
        refs = mask_api.frPyObjects(boxes, h, w)
        assert [r["counts"] for r in bbox_to_rle(boxes, h, w)] == [
            r["counts"].decode() for r in refs
        ]
