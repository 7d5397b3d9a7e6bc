"""The assembled detector on the small preset: output contract, invariants, clear errors."""

import numpy as np
import pytest

import mrcnn_np as mn
from mrcnn_np.model import Config

MICRO = dict(width=4, fpn_channels=8, min_size=64, max_size=96, box_representation_size=16,
             mask_layers=(8, 8), rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=30)


@pytest.fixture(scope="module")
def model():
    m = mn.models.maskrcnn_small(num_classes=3, **MICRO).eval()
    m.roi_heads.score_thresh = 0.0  # keep detections from a random model
    return m


def image(h, w, seed=0):
    return np.random.default_rng(seed).random((3, h, w), dtype=np.float32)


def test_eval_outputs_follow_the_contract(model):
    outputs = model([image(50, 70), image(90, 40, 1)])
    assert len(outputs) == 2
    for out, (h, w) in zip(outputs, [(50, 70), (90, 40)]):
        n = len(out["boxes"])
        assert 0 < n <= 100
        assert out["boxes"].dtype == np.float32 and out["boxes"].shape == (n, 4)
        assert out["labels"].dtype == np.int64 and set(out["labels"]) <= {1, 2}
        assert out["scores"].dtype == np.float32
        assert (np.diff(out["scores"]) <= 0).all()  # best first
        assert out["masks"].shape == (n, 1, h, w) and out["masks"].dtype == np.float32
        assert out["masks"].min() >= 0 and out["masks"].max() <= 1
        boxes = out["boxes"]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w + 1e-3).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h + 1e-3).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all()


def test_training_returns_torchvision_loss_names_in_order():
    m = mn.models.maskrcnn_small(num_classes=3, **MICRO).train()
    masks = np.zeros((1, 60, 60), np.uint8)
    masks[0, 10:40, 5:30] = 1
    targets = [{"boxes": np.array([[5, 10, 30, 40]], np.float32), "labels": np.array([2]),
                "masks": masks}]
    losses = m([image(60, 60)], targets)
    assert list(losses) == ["loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                            "loss_rpn_box_reg"]
    assert all(np.isfinite(v) and v >= 0 for v in losses.values())
    m.backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ({"boxes": np.array([[30, 10, 5, 40]], np.float32)}, "x2 <= x1"),
        ({"boxes": np.array([[5, 10, 90, 40]], np.float32)}, "outside"),
        ({"labels": np.array([3])}, "labels"),
        ({"masks": np.zeros((1, 30, 30), np.uint8)}, "masks"),
        ({"boxes": np.array([[5, np.nan, 30, 40]], np.float32)}, "NaN"),
    ],
)
def test_bad_targets_raise_naming_the_field(target, match):
    m = mn.models.maskrcnn_small(num_classes=3, **MICRO).train()
    good = {"boxes": np.array([[5, 10, 30, 40]], np.float32), "labels": np.array([1]),
            "masks": np.zeros((1, 60, 60), np.uint8)}
    with pytest.raises(ValueError, match=match):
        m([image(60, 60)], [{**good, **target}])


def test_wrong_checkpoint_and_unknown_settings_are_named(model):
    state = model.state_dict()
    state["roi_heads.box_predictor.cls_score.weight"] = np.zeros((5, 16), np.float32)
    del state["rpn.head.cls_logits.bias"]
    with pytest.raises(ValueError) as error:
        mn.models.maskrcnn_small(num_classes=3, **MICRO).load_state_dict(state)
    assert "rpn.head.cls_logits.bias" in str(error.value)
    assert "cls_score.weight: expected (3, 16), got (5, 16)" in str(error.value)
    with pytest.raises(TypeError, match="unknown setting"):
        mn.models.maskrcnn_small(num_clases=3)
    with pytest.raises(ValueError, match="targets"):
        mn.models.maskrcnn_small(num_classes=3, **MICRO).train()([image(60, 60)])


def test_config_lists_every_setting(capsys):
    Config().display()
    printed = capsys.readouterr().out
    assert "rpn_nms_thresh" in printed and "bbox_reg_weights" in printed
