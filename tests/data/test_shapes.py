"""The synthetic shapes dataset: geometry, occlusion, determinism, argument errors."""

import numpy as np
import pytest

from mrcnn_np.data import ShapesDataset, masks_to_boxes
from mrcnn_np.data import shapes as shapes_module
from mrcnn_np.data.shapes import (
    MIN_COLOR_DISTANCE,
    MIN_VISIBLE_FRACTION,
    MIN_VISIBLE_PIXELS,
    _unhidden,
    shape_mask,
    visible_masks,
)


def rows(text):
    return np.array([[c == "1" for c in r] for r in text.split("/")])


def assert_items_equal(a, b):
    image_a, target_a = a
    image_b, target_b = b
    np.testing.assert_array_equal(image_a, image_b)
    assert target_a.keys() == target_b.keys()
    for key in target_a:
        np.testing.assert_array_equal(target_a[key], target_b[key], err_msg=key)


# ---- geometry, worked out by hand ------------------------------------------------------------


def test_circle_covers_pixel_centres_within_the_radius():
    # centre (2, 2), radius 2 on a 4x4 grid, pixel centres at 0.5 .. 3.5:
    # a corner pixel is 1.5 away on both axes: 1.5^2 + 1.5^2 = 4.5 > 4 -> outside;
    # an edge pixel (1.5, 0.5): 2.25 + 0.25 = 2.5 <= 4 -> inside
    expected = rows("0110/1111/1111/0110")
    np.testing.assert_array_equal(shape_mask("circle", 2.0, 2.0, 4.0, 4, 4), expected)


def test_square_is_axis_aligned_and_covers_centres_inside():
    # centre (2, 1.5) side 2: |px - 2| <= 1 keeps centres 1.5, 2.5 (columns 1, 2);
    # |py - 1.5| <= 1 keeps centres 0.5, 1.5, 2.5 (rows 0..2)
    expected = rows("01100/01100/01100/00000")
    np.testing.assert_array_equal(shape_mask("square", 2.0, 1.5, 2.0, 4, 5), expected)


def test_triangle_is_equilateral_apex_up():
    # side 4 centred at (2, 2): height 4*sqrt(3)/2 = 3.464, apex at y = 2 - 1.732 = 0.268.
    # At a depth d below the apex the half-width is d / sqrt(3):
    #   row 0 (py 0.5): d 0.232, half-width 0.134 -> no centre (nearest is 0.5 from x = 2)
    #   row 1 (py 1.5): d 1.232, half-width 0.711 -> centres 1.5, 2.5
    #   row 2 (py 2.5): d 2.232, half-width 1.289 -> centres 1.5, 2.5 (0.5 is 1.5 away)
    #   row 3 (py 3.5): d 3.232 <= 3.464, half-width 1.866 -> all four centres
    expected = rows("0000/0110/0110/1111")
    np.testing.assert_array_equal(shape_mask("triangle", 2.0, 2.0, 4.0, 4, 4), expected)


def test_masks_to_boxes_is_continuous_last_pixel_plus_one():
    masks = np.zeros((3, 5, 6), np.uint8)
    masks[0, 2, 3] = 1  # one pixel (y 2, x 3) covers [3, 4) x [2, 3)
    masks[1, 1:4, 0:2] = 1
    masks[1, 4, 5] = 1  # a far pixel stretches the box to its far corner (6, 5)
    np.testing.assert_array_equal(
        masks_to_boxes(masks), [[3, 2, 4, 3], [0, 1, 6, 5], [0, 0, 0, 0]]
    )
    assert masks_to_boxes(masks).dtype == np.float32


# ---- occlusion ------------------------------------------------------------------------------


def test_visible_masks_take_the_top_shape_for_each_pixel():
    full = np.stack([rows("1110/1110/0000"), rows("0111/0000/0000"), rows("0010/0010/0010")])
    # shape 2 is on top of everything; shape 1 loses (0, 2); shape 0 loses (0, 1), (0, 2), (1, 2)
    expected = np.stack([rows("1000/1100/0000"), rows("0101/0000/0000"), rows("0010/0010/0010")])
    np.testing.assert_array_equal(visible_masks(full), expected)


def test_mostly_hidden_shapes_are_removed_until_none_is():
    h, w = 20, 20
    bottom = np.zeros((h, w), bool)
    bottom[0:10, 0:10] = True  # 100 pixels
    middle = np.zeros((h, w), bool)
    middle[0:10, 0:8] = True  # covers 80 of bottom's 100: 20 left < 0.3 * 100
    top = np.zeros((h, w), bool)
    top[0:10, 0:7] = True  # covers 70 of middle's 80: 10 left < 16 pixels
    assert MIN_VISIBLE_FRACTION == 0.3 and MIN_VISIBLE_PIXELS == 16
    # middle is hidden; once it is gone bottom shows 30 pixels >= max(16, 30) -> kept
    np.testing.assert_array_equal(_unhidden(np.stack([bottom, middle, top])), [True, False, True])


def test_a_small_fully_visible_shape_is_kept():
    tiny = np.zeros((1, 8, 8), bool)
    tiny[0, 3:5, 3:5] = True  # 4 pixels < 16, but nothing hides it
    np.testing.assert_array_equal(_unhidden(tiny), [True])


@pytest.mark.parametrize("image_size", [64, (40, 72), (33, 17)])
def test_items_obey_the_occlusion_invariants(image_size):
    dataset = ShapesDataset(30, image_size=image_size, seed=7)
    h, w = dataset.image_size
    for index in range(len(dataset)):
        image, target = dataset[index]
        masks, boxes, labels = target["masks"], target["boxes"], target["labels"]
        n = len(labels)
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
        assert masks.shape == (n, h, w) and masks.dtype == np.uint8
        assert boxes.shape == (n, 4) and boxes.dtype == np.float32
        assert labels.dtype == np.int64 and target["iscrowd"].dtype == np.int64
        assert 1 <= n <= 4 and set(labels.tolist()) <= {1, 2, 3}
        assert target["image_id"] == index + 1
        assert masks.max(initial=0) <= 1 and masks.sum(axis=0).max() <= 1  # disjoint
        area = masks.sum(axis=(1, 2))
        assert area.min() > 0  # no empty mask
        np.testing.assert_array_equal(target["area"], area.astype(np.float32))
        np.testing.assert_array_equal(boxes, masks_to_boxes(masks))  # tight
        np.testing.assert_array_equal(target["iscrowd"], 0)
        # the picture shows exactly the labelled shapes: background outside every mask,
        # one flat colour per mask, far enough from the background
        background = image[masks.sum(axis=0) == 0]
        if len(background):
            assert (background == background[0]).all()
        for mask in masks.astype(bool):
            color = image[mask]
            assert (color == color[0]).all()
            if len(background):
                distance = np.linalg.norm(color[0].astype(float) - background[0])
                assert distance >= MIN_COLOR_DISTANCE - 1e-9


def test_a_single_square_fills_its_box():
    dataset = ShapesDataset(10, image_size=48, seed=3, max_objects=1, classes=("square",))
    for index in range(len(dataset)):
        _, target = dataset[index]
        x1, y1, x2, y2 = target["boxes"][0].astype(int)
        assert target["labels"].tolist() == [1]  # label 1 is classes[0] = "square"
        assert target["masks"][0].sum() == (x2 - x1) * (y2 - y1)
    assert dataset.class_names == ("__background__", "square")


# ---- determinism ----------------------------------------------------------------------------


def test_same_seed_same_items_other_seed_other_items():
    a = ShapesDataset(6, image_size=(32, 48), seed=11)
    b = ShapesDataset(6, image_size=(32, 48), seed=11)
    c = ShapesDataset(6, image_size=(32, 48), seed=12)
    for index in range(6):
        assert_items_equal(a[index], b[index])
    assert any(not np.array_equal(a[i][0], c[i][0]) for i in range(6))


def test_an_item_does_not_depend_on_access_order_or_dataset_length():
    first = ShapesDataset(8, image_size=40, seed=5)
    forward = [first[i] for i in range(8)]
    second = ShapesDataset(8, image_size=40, seed=5)
    backward = [second[i] for i in reversed(range(8))][::-1]
    for a, b in zip(forward, backward, strict=True):
        assert_items_equal(a, b)
    assert_items_equal(ShapesDataset(20, image_size=40, seed=5)[6], forward[6])
    assert_items_equal(first[-2], forward[6])


def test_transforms_are_applied_to_each_item():
    calls = []

    def record(image, target):
        calls.append(target["image_id"])
        return image[:, ::-1], target

    plain = ShapesDataset(3, image_size=24, seed=0)
    flipped = ShapesDataset(3, image_size=24, seed=0, transforms=record)
    np.testing.assert_array_equal(flipped[2][0], plain[2][0][:, ::-1])
    assert calls == [3]


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image_size": (3, 10)}, ValueError, "image_size"),
        ({"image_size": "big"}, ValueError, "image_size"),
        ({"image_size": (32.0, 32)}, TypeError, "image_size"),
        ({"min_objects": 3, "max_objects": 2}, ValueError, "min_objects"),
        ({"min_objects": 0}, ValueError, "min_objects"),
        ({"min_size": 2}, ValueError, "min_size"),
        ({"min_size": 10, "max_size": 8}, ValueError, "max_size"),
        ({"max_size": 100}, ValueError, "max_size"),
        ({"classes": ("circle", "hexagon")}, ValueError, "classes"),
        ({"classes": ()}, ValueError, "classes"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    args = {"num_images": 2, "image_size": 32, **kwargs}
    with pytest.raises(error, match=match):
        ShapesDataset(**args)


def test_index_out_of_range_is_an_index_error():
    dataset = ShapesDataset(2, image_size=16)
    with pytest.raises(IndexError, match="index"):
        dataset[2]
    with pytest.raises(TypeError, match="index"):
        dataset[0.0]
    assert len(list(dataset)) == 2  # iteration stops at the IndexError


def test_default_sizes_scale_with_the_image():
    dataset = ShapesDataset(1, image_size=(96, 128))
    # min(h, w) = 96: min_size = max(4, 96 / 8) = 12, max_size = 96 / 2 = 48
    assert (dataset.min_size, dataset.max_size) == (12.0, 48.0)
    assert ShapesDataset(1, image_size=16).min_size == shapes_module.MIN_SHAPE_SIZE
