"""The input transform: sizes, normalisation, padding, target resizing, postprocessing."""

import numpy as np
import pytest

from mrcnn_np.model.transform import GeneralizedRCNNTransform, resized_size


@pytest.mark.parametrize(
    ("hw", "expected"),
    # REFERENCE.md's examples: scale = min(800/short, 1333/long), floor(side*scale)
    [((480, 640), (800, 1066)), ((427, 640), (800, 1199)), ((333, 500), (800, 1201)),
     ((1000, 100), (1333, 133))],
)
def test_resized_sizes(hw, expected):
    assert resized_size(*hw, 800, 1333)[:2] == expected


def test_batch_is_padded_to_32_with_zeros_after_normalising():
    t = GeneralizedRCNNTransform(min_size=64, max_size=100)
    images = [np.full((3, 40, 50), 0.5, np.float32), np.full((3, 30, 20), 0.485, np.float32)]
    batch, _ = t(images)
    # 40x50 -> scale min(64/40, 100/50) = 1.6 -> 64x80; 30x20 -> min(64/20, 100/30) = 3.2 -> 96x64
    assert batch.image_sizes == [(64, 80), (96, 64)]
    assert batch.tensors.shape == (2, 3, 96, 96)  # ceil(96/32)*32, ceil(80/32)*32
    np.testing.assert_allclose(batch.tensors[0, 0, 0, 0], (0.5 - 0.485) / 0.229, rtol=1e-6)
    assert batch.tensors[0, :, 64:, :].max() == 0 and batch.tensors[0, :, :, 80:].max() == 0
    # image 2, channel 0 equals the mean: normalised to 0 exactly
    assert np.abs(batch.tensors[1, 0, :96, :64]).max() < 1e-6


def test_targets_are_scaled_and_not_modified_in_place():
    t = GeneralizedRCNNTransform(min_size=20, max_size=100)
    boxes = np.array([[1.0, 2.0, 5.0, 8.0]], np.float32)
    masks = np.zeros((1, 10, 10), np.uint8)
    masks[0, 2:8, 1:5] = 1
    target = {"boxes": boxes, "masks": masks, "labels": np.array([1])}
    _, (out,) = t([np.zeros((3, 10, 10), np.float32)], [target])
    np.testing.assert_array_equal(out["boxes"], [[2.0, 4.0, 10.0, 16.0]])  # x2 exactly
    assert out["masks"].shape == (1, 20, 20) and out["masks"].sum() == 4 * masks.sum()
    assert target["boxes"] is boxes and boxes[0, 2] == 5.0


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 3, 4), np.float32), np.zeros((3, 4, 4), np.uint8), [], "img"],
    ids=["channels", "uint8", "empty", "type"])
def test_bad_images_are_rejected(bad):
    images = bad if isinstance(bad, list | str) else [bad]
    with pytest.raises((ValueError, TypeError), match="images"):
        GeneralizedRCNNTransform()(images)


def test_nan_image_is_rejected():
    image = np.zeros((3, 4, 4), np.float32)
    image[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"images\[0\]: contains NaN"):
        GeneralizedRCNNTransform()([image])


def test_postprocess_scales_boxes_and_keypoints_back():
    t = GeneralizedRCNNTransform()
    result = [{"boxes": np.array([[10.0, 20.0, 30.0, 40.0]], np.float32),
               "keypoints": np.array([[[10.0, 20.0, 1.0]]], np.float32)}]
    out = t.postprocess(result, [(100, 200)], [(50, 400)])
    np.testing.assert_allclose(out[0]["boxes"], [[20.0, 10.0, 60.0, 20.0]])
    np.testing.assert_allclose(out[0]["keypoints"], [[[20.0, 10.0, 1.0]]])


@pytest.mark.parity
def test_matches_torchvision_transform():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.transform import GeneralizedRCNNTransform as TVTransform

    rng = np.random.default_rng(0)
    images = [rng.random((3, 240, 300), dtype=np.float32),
              rng.random((3, 200, 330), dtype=np.float32)]
    masks = [(rng.random((2, 240, 300)) > 0.5).astype(np.uint8),
             (rng.random((1, 200, 330)) > 0.5).astype(np.uint8)]
    boxes = [np.array([[10.5, 20.25, 100.0, 200.0], [0, 0, 300, 240]], np.float32),
             np.array([[3.0, 4.0, 50.5, 60.5]], np.float32)]
    keypoints = [rng.random((2, 17, 3)).astype(np.float32) * 200,
                 rng.random((1, 17, 3)).astype(np.float32) * 200]
    targets = [{"boxes": b, "masks": m, "keypoints": k}
               for b, m, k in zip(boxes, masks, keypoints)]
    ours, our_targets = GeneralizedRCNNTransform(256, 320)(images, targets)
    theirs = TVTransform(256, 320, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    t_targets = [{k: torch.from_numpy(v) for k, v in t.items()} for t in targets]
    t_list, t_targets = theirs([torch.from_numpy(i) for i in images], t_targets)

    assert ours.image_sizes == [tuple(s) for s in t_list.image_sizes] == [(256, 320), (193, 320)]
    # bilinear in float32, separable vs torch's 2-D loop: a few ulps of the normalised values
    np.testing.assert_allclose(ours.tensors, t_list.tensors.numpy(), rtol=0, atol=2e-5)
    for mine, tv in zip(our_targets, t_targets):
        np.testing.assert_array_equal(mine["boxes"], tv["boxes"].numpy())
        np.testing.assert_array_equal(mine["masks"], tv["masks"].numpy())
        np.testing.assert_array_equal(mine["keypoints"], tv["keypoints"].numpy())
