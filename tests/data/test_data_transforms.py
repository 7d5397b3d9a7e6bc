"""Flip, resize, to_tensor and Compose move images, boxes, masks and keypoints together."""

import numpy as np
import pytest

from mrcnn_np.data import (
    COCO_PERSON_KEYPOINT_FLIP_INDEX,
    COCO_PERSON_KEYPOINT_NAMES,
    Compose,
    RandomHorizontalFlip,
    Resize,
    ShapesDataset,
    ToTensor,
    hflip,
    masks_to_boxes,
    resize,
    to_tensor,
)
from mrcnn_np.data.transforms import _nearest_index


def small_target():
    """A 6 x 10 image with one box, its mask and three keypoints (flip index 0, 2, 1)."""
    image = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
    masks = np.zeros((1, 6, 10), np.uint8)
    masks[0, 2:5, 1:4] = 1  # rows 2..4, columns 1..3: the box [1, 2, 4, 5]
    target = {
        "boxes": np.array([[1, 2, 4, 5]], np.float32),
        "masks": masks,
        "keypoints": np.array([[[1, 1, 2], [2, 3, 2], [7, 3, 1]]], np.float32),
        "labels": np.array([3], np.int64),
        "area": np.array([9.0], np.float32),
    }
    return image, target


def test_hflip_by_hand():
    image, target = small_target()
    flipped, out = hflip(image, target, flip_index=[0, 2, 1])
    np.testing.assert_array_equal(flipped[:, 0], image[:, 9])
    # x1' = W - x2 = 10 - 4 = 6, x2' = W - x1 = 10 - 1 = 9
    np.testing.assert_array_equal(out["boxes"], [[6, 2, 9, 5]])
    # columns 1..3 mirror to 10 - 1 - (1..3) = 8..6: the tight box of the flipped mask is
    # the flipped box, so the two conventions agree
    np.testing.assert_array_equal(masks_to_boxes(out["masks"]), out["boxes"])
    # keypoint j comes from keypoint flip_index[j], x' = 10 - x:
    #   0 <- 0 (1, 1) -> (9, 1);  1 <- 2 (7, 3) -> (3, 3);  2 <- 1 (2, 3) -> (8, 3)
    np.testing.assert_array_equal(out["keypoints"], [[[9, 1, 2], [3, 3, 1], [8, 3, 2]]])
    np.testing.assert_array_equal(out["labels"], target["labels"])  # passed through
    assert out["boxes"].dtype == np.float32 and out["keypoints"].dtype == np.float32


def test_hflip_zeroes_unlabelled_keypoints():
    image, target = small_target()
    target["keypoints"][0, 1] = [4, 4, 0]  # v = 0: not labelled
    _, out = hflip(image, target, flip_index=[0, 1, 2])
    np.testing.assert_array_equal(out["keypoints"][0, 1], [0, 0, 0])  # not (10 - 4, 4, 0)


def test_hflip_twice_is_the_identity(rng):
    h, w = 9, 13
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    keypoints = np.zeros((2, 17, 3), np.float32)
    keypoints[..., :2] = rng.uniform(0, w, (2, 17, 2)).round(2)
    keypoints[..., 2] = rng.integers(0, 3, (2, 17))
    keypoints[keypoints[..., 2] == 0] = 0  # COCO writes unlabelled keypoints as zeros
    target = {"boxes": rng.uniform(0, w, (2, 4)).astype(np.float32),
              "masks": rng.integers(0, 2, (2, h, w), dtype=np.uint8), "keypoints": keypoints}
    once = hflip(image, target, COCO_PERSON_KEYPOINT_FLIP_INDEX)
    back_image, back = hflip(*once, COCO_PERSON_KEYPOINT_FLIP_INDEX)
    np.testing.assert_array_equal(back_image, image)
    np.testing.assert_array_equal(back["masks"], target["masks"])
    np.testing.assert_array_equal(back["keypoints"][..., 2], keypoints[..., 2])
    # 13 - (13 - x) in float32 rounds twice: within one ulp of 13 (~1e-6)
    np.testing.assert_allclose(back["boxes"], target["boxes"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(back["keypoints"], keypoints, rtol=0, atol=2e-6)
    assert not np.array_equal(once[1]["keypoints"], keypoints)


def test_coco_person_flip_index_swaps_left_and_right():
    names = COCO_PERSON_KEYPOINT_NAMES
    for j, k in enumerate(COCO_PERSON_KEYPOINT_FLIP_INDEX):
        assert names[k] == names[j].replace("left", "@").replace("right", "left").replace(
            "@", "right")


def test_hflip_needs_a_flip_index_for_keypoints():
    image, target = small_target()
    with pytest.raises(ValueError, match="flip_index: required"):
        hflip(image, target)
    with pytest.raises(ValueError, match="flip_index: expected a permutation"):
        hflip(image, target, flip_index=[0, 0, 1])
    del target["keypoints"]
    hflip(image, target)  # fine without keypoints


def test_resize_by_scale_doubles_everything():
    image, target = small_target()
    resized, out = resize(image, target, scale=2)
    assert resized.shape == (12, 20, 3) and resized.dtype == np.uint8
    np.testing.assert_array_equal(out["boxes"], [[2, 4, 8, 10]])
    np.testing.assert_array_equal(out["keypoints"], [[[2, 2, 2], [4, 6, 2], [14, 6, 1]]])
    np.testing.assert_array_equal(out["area"], [36.0])
    # output pixel y samples input floor((y + 0.5) / 2): rows 2k and 2k+1 both read row k,
    # so the mask's tight box is exactly the doubled box
    np.testing.assert_array_equal(masks_to_boxes(out["masks"]), out["boxes"])
    assert out["masks"].dtype == np.uint8 and out["masks"].sum() == 36


def test_resize_to_a_size_scales_each_axis_by_its_own_ratio():
    image, target = small_target()
    resized, out = resize(image, target, size=(3, 25))
    assert resized.shape == (3, 25, 3)
    # sx = 25 / 10 = 2.5, sy = 3 / 6 = 0.5: [1, 2, 4, 5] -> [2.5, 1, 10, 2.5]
    np.testing.assert_array_equal(out["boxes"], [[2.5, 1, 10, 2.5]])
    np.testing.assert_array_equal(out["area"], [9.0 * 2.5 * 0.5])
    assert out["masks"].shape == (1, 3, 25)


def test_nearest_index_samples_under_each_output_centre():
    # shrinking 4 -> 2: centres 0.5, 1.5 map to 1.0, 3.0 -> input pixels 1, 3
    np.testing.assert_array_equal(_nearest_index(4, 2), [1, 3])
    # growing 2 -> 3: (0.5, 1.5, 2.5) * 2 / 3 = 0.33, 1.0, 1.67 -> 0, 1, 1
    np.testing.assert_array_equal(_nearest_index(2, 3), [0, 1, 1])


def test_resize_keeps_a_flat_image_flat_and_rounds_sizes():
    image = np.full((7, 9, 3), 77, np.uint8)
    out, target = resize(image, None, scale=0.5)
    assert target is None
    assert out.shape == (4, 5, 3)  # 3.5 -> 4, 4.5 -> 5: round half up
    np.testing.assert_array_equal(out, 77)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({}, "exactly one"), ({"size": (2, 2), "scale": 2}, "exactly one"),
     ({"scale": 0}, "scale"), ({"scale": float("nan")}, "scale"), ({"size": (0, 3)}, "size"),
     ({"size": 5}, "size")],
)
def test_resize_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resize(np.zeros((4, 4, 3), np.uint8), None, **kwargs)
    with pytest.raises(ValueError, match=match):
        Resize(**kwargs)


def test_a_mask_of_the_wrong_size_is_rejected():
    image, target = small_target()
    target["masks"] = target["masks"][:, :5]
    with pytest.raises(ValueError, match=r"target\['masks'\]: expected shape \(\*, 6, 10\)"):
        hflip(image, target)
    with pytest.raises(TypeError, match="uint8"):
        resize(image.astype(np.float32), scale=2)


def test_to_tensor_range_dtype_and_layout():
    image = np.array([[[0, 128, 255]]], np.uint8)
    tensor = to_tensor(image)
    assert tensor.shape == (3, 1, 1) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor.ravel(), np.float32([0, 128, 255]) / np.float32(255))
    assert tensor.min() == 0.0 and tensor.max() == 1.0
    with pytest.raises(TypeError, match="uint8"):
        to_tensor(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        to_tensor(np.zeros((3, 4, 4), np.uint8))


def test_compose_and_random_flip():
    image, target = small_target()
    del target["keypoints"]
    always = Compose([RandomHorizontalFlip(p=1.0, rng=0), ToTensor()])
    tensor, out = always(image, target)
    np.testing.assert_array_equal(tensor, to_tensor(image[:, ::-1]))
    np.testing.assert_array_equal(out["boxes"], [[6, 2, 9, 5]])
    same_image, same = RandomHorizontalFlip(p=0.0, rng=0)(image, target)
    assert same_image is image and same is target
    # a seeded generator decides the same way every time; p = 0.5 flips some, not all
    decisions = []
    for _ in range(2):
        flip = RandomHorizontalFlip(rng=np.random.default_rng(3))
        decisions.append([flip(image, target)[1]["boxes"][0, 0] == 6 for _ in range(20)])
    assert decisions[0] == decisions[1] and 0 < sum(decisions[0]) < 20
    with pytest.raises(ValueError, match="p: expected a probability"):
        RandomHorizontalFlip(p=1.5)
    assert "RandomHorizontalFlip(p=1.0)" in repr(always)


def test_transforms_on_a_dataset_keep_boxes_tight():
    transform = Compose([Resize(scale=2), RandomHorizontalFlip(p=1.0, rng=1)])
    dataset = ShapesDataset(5, image_size=(20, 28), seed=9, transforms=transform)
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.shape == (40, 56, 3)
        np.testing.assert_array_equal(masks_to_boxes(target["masks"]), target["boxes"])
