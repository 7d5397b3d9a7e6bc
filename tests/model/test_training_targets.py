"""Training targets at the edges: images without objects, boxes on the border, and targets a
user can get wrong, which must be refused with a message naming the field (the cases
test_presets.py already covers, x2 < x1, a box past the right edge, a label = num_classes, a
mask of the wrong size and NaN, are not repeated here)."""

import numpy as np
import pytest

import mrcnn_np as mn

MICRO = dict(width=4, fpn_channels=8, min_size=64, max_size=96, box_representation_size=16,
             mask_layers=(8, 8), keypoint_layers=(8, 8))


def keypoint_model():
    return mn.models.keypointrcnn_resnet50_fpn(num_keypoints=5, depth=18, norm="batch",
                                               trainable_backbone_layers=5, **MICRO).train()


def image(h=60, w=70, seed=0):
    return np.random.default_rng(seed).random((3, h, w), dtype=np.float32)


def empty_target(h=60, w=70, num_keypoints=None):
    target = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int64),
              "masks": np.zeros((0, h, w), np.uint8)}
    if num_keypoints:
        target["keypoints"] = np.zeros((0, num_keypoints, 3), np.float32)
    return target


def one_object(h=60, w=70, box=(5, 10, 30, 40), label=1):
    x1, y1, x2, y2 = box
    masks = np.zeros((1, h, w), np.uint8)
    masks[0, int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = 1
    return {"boxes": np.array([box], np.float32), "labels": np.array([label]), "masks": masks}


# parameters that only the box regression and mask losses reach: with no object anywhere in the
# batch there is no positive anchor or RoI, so their gradient is exactly 0
REGRESSION_AND_MASK = ("rpn.head.bbox_pred.", "roi_heads.box_predictor.bbox_pred.",
                       "roi_heads.mask_", "roi_heads.keypoint_")


@pytest.mark.parametrize("kind", ["mask", "keypoint"])
def test_images_without_objects_train(kind):
    # torchvision's rule: every anchor and every proposal of such an image is a negative, the
    # classification losses are the usual means, and the regression, mask and keypoint losses,
    # which only positives enter, are 0 (torchvision returns mask_logits.sum() * 0)
    if kind == "mask":
        model = mn.models.maskrcnn_small(num_classes=3, **MICRO).train()
        targets = [empty_target(), empty_target(50, 80)]
    else:
        model = keypoint_model()
        targets = [empty_target(num_keypoints=5), empty_target(50, 80, num_keypoints=5)]
    losses = model([image(), image(50, 80, seed=1)], targets)
    positives_only = ["loss_box_reg", "loss_rpn_box_reg",
                      "loss_mask" if kind == "mask" else "loss_keypoint"]
    for name, value in losses.items():
        assert np.isfinite(value), name
        if name in positives_only:
            assert value == 0, name
        else:
            assert value > 0, name
    model.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and np.isfinite(param.grad).all(), name
        if name.startswith(REGRESSION_AND_MASK):
            assert not param.grad.any(), name  # zeros, as torchvision's autograd gives
        else:
            assert np.abs(param.grad).max() > 0, name


def test_a_box_on_the_image_border_is_valid():
    # boxes are continuous coordinates: x2 == W and y2 == H touch the right and bottom edges
    model = mn.models.maskrcnn_small(num_classes=3, **MICRO).train()
    losses = model([image()], [one_object(box=(0.0, 0.0, 70.0, 60.0))])
    assert all(np.isfinite(v) for v in losses.values())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"labels": np.array([0])}, r"targets\[0\]\['labels'\]: expected values in 1\.\.2 "
                                    r"\(0 is background\), got 0\.\.0"),
        ({"labels": np.array([-1])}, r"targets\[0\]\['labels'\].*got -1"),
        ({"labels": np.array([1.0])}, r"targets\[0\]\['labels'\]: expected integer"),
        ({"labels": np.array([1, 2])}, r"targets\[0\]\['labels'\]: expected integer \(1,\)"),
        ({"boxes": np.array([[5, 10, 5, 40]], np.float32)}, r"targets\[0\]\['boxes'\]: box 0 "
                                                            r".*x2 <= x1 or y2 <= y1"),
        ({"boxes": np.array([[5, 40, 30, 10]], np.float32)}, r"targets\[0\]\['boxes'\].*y2 <= y1"),
        ({"boxes": np.array([[-1, 10, 30, 40]], np.float32)}, r"targets\[0\]\['boxes'\].*outside "
                                                              r"the 60x70 image"),
        ({"boxes": np.array([[5, 10, 30, 61]], np.float32)}, r"targets\[0\]\['boxes'\].*outside"),
        ({"boxes": np.array([[5, 10, np.inf, 40]], np.float32)}, r"targets\[0\]\['boxes'\]: "
                                                                 r"contains NaN or infinite"),
        ({"boxes": np.array([[5, 10, 30, 40, 1]], np.float32)}, r"targets\[0\]\['boxes'\]: "
                                                                r"expected float \(N, 4\)"),
        ({"boxes": np.array([[5, 10, 30, 40]])}, r"targets\[0\]\['boxes'\]: expected float"),
        ({"masks": np.zeros((2, 60, 70), np.uint8)}, r"targets\[0\]\['masks'\]: expected "
                                                     r"\(1, 60, 70\), got \(2, 60, 70\)"),
    ],
)
def test_bad_targets_raise_naming_the_field(change, match):
    model = mn.models.maskrcnn_small(num_classes=3, **MICRO).train()
    with pytest.raises(ValueError, match=match):
        model([image()], [{**one_object(), **change}])


def test_missing_or_misplaced_targets_are_named():
    model = mn.models.maskrcnn_small(num_classes=3, **MICRO).train()
    target = one_object()
    without_masks = {k: v for k, v in target.items() if k != "masks"}
    with pytest.raises(ValueError, match=r"targets\[0\]\['masks'\]: expected \(1, 60, 70\)"):
        model([image()], [without_masks])
    with pytest.raises(ValueError, match=r"targets\[1\]: expected a dict with 'boxes' and "
                                         r"'labels'"):
        model([image(), image()], [target, {"boxes": target["boxes"]}])
    with pytest.raises(ValueError, match=r"targets: expected a list with one dict per image"):
        model([image(), image()], [target])
    # the second image's target is checked against the second image's size
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\].*outside the 20x20 image"):
        model([image(), image(20, 20)], [target, one_object(20, 20, box=(5, 10, 30, 40))])


def test_keypoints_of_the_wrong_shape_are_named():
    model = keypoint_model()
    target = {"boxes": np.array([[5, 10, 30, 40]], np.float32), "labels": np.array([1]),
              "keypoints": np.ones((1, 4, 3), np.float32)}
    with pytest.raises(ValueError, match=r"targets\[0\]\['keypoints'\]: expected \(1, 5, 3\), "
                                         r"got \(1, 4, 3\)"):
        model([image()], [target])
    del target["keypoints"]
    with pytest.raises(ValueError, match=r"targets\[0\]\['keypoints'\]"):
        model([image()], [target])
