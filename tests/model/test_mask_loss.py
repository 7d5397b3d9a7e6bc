"""The mask loss and its ablation options (paper Table 2b): per-class sigmoid (the default),
softmax over classes, and a class-agnostic head."""

import numpy as np
import pytest

from mrcnn_np.model.presets import maskrcnn_small
from mrcnn_np.model.roi_heads import mask_probabilities, maskrcnn_loss
from mrcnn_np.nn.gradcheck import numerical_gradient, relative_error


def test_sigmoid_loss_reads_only_the_gt_class_channel():
    # 2 RoIs, 3 classes, 2x2 maps. The gt-class channels (1 for RoI 0, 2 for RoI 1) are 0, so
    # every one of the 8 selected pixels costs BCE(0, t) = log 2 whatever t is; the other
    # channels hold large values that must not matter.
    logits = np.full((2, 3, 2, 2), 7.0)
    logits[0, 1] = 0.0
    logits[1, 2] = 0.0
    targets = np.array([[[1, 0], [0, 1]], [[1, 1], [0, 0]]], np.uint8)
    loss, grad = maskrcnn_loss(logits, np.array([1, 2]), targets)
    assert loss == pytest.approx(np.log(2.0), rel=1e-12)
    # d/dx BCE = (sigmoid(x) - t) / count = (0.5 - t) / 8 on the read channel, 0 elsewhere
    expected = np.zeros_like(logits)
    expected[0, 1] = (0.5 - targets[0]) / 8
    expected[1, 2] = (0.5 - targets[1]) / 8
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-15)


def test_class_agnostic_loss_reads_channel_zero_for_every_label():
    logits = np.zeros((2, 1, 2, 2))
    targets = np.ones((2, 2, 2), np.uint8)
    loss, grad = maskrcnn_loss(logits, np.array([3, 5]), targets)
    assert loss == pytest.approx(np.log(2.0), rel=1e-12)
    np.testing.assert_allclose(grad, np.full_like(logits, -0.5 / 8), atol=1e-15)


def test_softmax_loss_is_per_pixel_cross_entropy_with_background_outside_the_mask():
    # 1 RoI of class 2, 3 classes, 2 pixels: inside the mask the target class is 2, outside
    # it is 0 (background). All logits 0: each pixel costs log 3, and the gradient is
    # (softmax - one_hot) / 2 = (1/3 - one_hot) / 2.
    logits = np.zeros((1, 3, 1, 2))
    targets = np.array([[[1, 0]]], np.uint8)
    loss, grad = maskrcnn_loss(logits, np.array([2]), targets, loss="softmax")
    assert loss == pytest.approx(np.log(3.0), rel=1e-12)
    expected = np.full((1, 3, 1, 2), 1 / 6)
    expected[0, 2, 0, 0] -= 0.5
    expected[0, 0, 0, 1] -= 0.5
    np.testing.assert_allclose(grad, expected, atol=1e-15)


@pytest.mark.parametrize("loss_kind, channels", [("sigmoid", 4), ("softmax", 4),
                                                 ("sigmoid", 1)])
def test_mask_loss_gradient_matches_finite_differences(loss_kind, channels):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, channels, 5, 5))
    labels = np.array([1, 3, 2])
    targets = (rng.random((3, 5, 5)) > 0.5).astype(np.uint8)
    _, grad = maskrcnn_loss(logits, labels, targets, loss=loss_kind)
    numeric = numerical_gradient(lambda x: maskrcnn_loss(x, labels, targets,
                                                         loss=loss_kind)[0], logits)
    assert relative_error(grad, numeric) < 1e-7


def test_no_positive_rois_give_zero_loss_and_gradient():
    for kind in ("sigmoid", "softmax"):
        loss, grad = maskrcnn_loss(np.zeros((0, 3, 4, 4), np.float32), np.zeros(0, np.int64),
                                   np.zeros((0, 4, 4), np.uint8), loss=kind)
        assert loss == 0.0 and grad.shape == (0, 3, 4, 4)


def test_bad_mask_loss_arguments_raise():
    logits = np.zeros((1, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="loss"):
        maskrcnn_loss(logits, np.array([1]), np.zeros((1, 2, 2), np.uint8), loss="hinge")
    with pytest.raises(ValueError, match="mask_targets"):
        maskrcnn_loss(logits, np.array([1]), np.zeros((1, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="softmax"):
        maskrcnn_loss(np.zeros((1, 1, 2, 2)), np.array([1]), np.zeros((1, 2, 2), np.uint8),
                      loss="softmax")


def test_mask_probabilities_follow_the_loss():
    logits = np.zeros((1, 3, 1, 1))
    logits[0, :, 0, 0] = [0.0, 1.0, 2.0]
    sig = mask_probabilities(logits, np.array([2]), "sigmoid")
    assert sig[0, 0, 0, 0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    soft = mask_probabilities(logits, np.array([2]), "softmax")
    assert soft[0, 0, 0, 0] == pytest.approx(np.exp(2) / (1 + np.e + np.exp(2)))
    agnostic = mask_probabilities(logits[:, :1] + 3.0, np.array([2]), "sigmoid")
    assert agnostic[0, 0, 0, 0] == pytest.approx(1 / (1 + np.exp(-3.0)))


@pytest.mark.parity
def test_softmax_mask_loss_matches_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 5, 7, 7)).astype(np.float32)
    labels = np.array([1, 4, 2, 2])
    targets = (rng.random((4, 7, 7)) > 0.4).astype(np.uint8)
    loss, grad = maskrcnn_loss(logits, labels, targets, loss="softmax")
    t_logits = torch.tensor(logits, requires_grad=True)
    pixel_classes = torch.tensor(targets.astype(np.int64) * labels[:, None, None])
    t_loss = torch.nn.functional.cross_entropy(t_logits, pixel_classes)
    t_loss.backward()
    # float32 mean over 196 pixels: agreement to a few float32 ulps of the values
    assert loss == pytest.approx(t_loss.item(), rel=1e-6)
    np.testing.assert_allclose(grad, t_logits.grad.numpy(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("options", [{"mask_class_agnostic": True}, {"mask_loss": "softmax"}])
def test_small_model_trains_and_infers_with_each_mask_option(options):
    model = maskrcnn_small(num_classes=3, min_size=64, max_size=64, **options)
    channels = model.roi_heads.mask_predictor.mask_fcn_logits.weight.shape[0]
    assert channels == (1 if options.get("mask_class_agnostic") else 3)
    image = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    masks = np.zeros((1, 64, 64), np.uint8)
    masks[0, 10:40, 12:50] = 1
    target = {"boxes": np.array([[12, 10, 50, 40]], np.float32), "labels": np.array([2]),
              "masks": masks}
    model.train()
    losses = model([image], [target])
    assert np.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0
    model.zero_grad()
    model.backward()
    assert np.abs(model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad).sum() > 0
    model.eval()
    (det,) = model([image])
    assert det["masks"].shape == (len(det["boxes"]), 1, 64, 64)
    assert ((det["masks"] >= 0) & (det["masks"] <= 1)).all()


def test_softmax_loss_with_a_class_agnostic_head_is_refused():
    with pytest.raises(ValueError, match="mask_loss"):
        maskrcnn_small(mask_class_agnostic=True, mask_loss="softmax")
