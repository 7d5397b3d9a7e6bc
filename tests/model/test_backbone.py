"""ResNet + FPN: names, shapes, freezing, gradients, and parity with torchvision."""

import numpy as np
import pytest

import mrcnn_np as mn
from mrcnn_np.model.backbone import resnet_fpn_backbone
from mrcnn_np.nn.gradcheck import relative_error, sampled_numerical_gradient


def test_state_dict_names_match_torchvision():
    keys = list(resnet_fpn_backbone(50).state_dict())
    assert len(keys) == 265 + 16  # body (FrozenBN: 4 buffers each) + FPN (4 x 2 convs x 2)
    assert keys[:5] == ["body.conv1.weight", "body.bn1.weight", "body.bn1.bias",
                        "body.bn1.running_mean", "body.bn1.running_var"]
    assert "body.layer1.0.downsample.0.weight" in keys
    assert "body.layer3.5.conv3.weight" in keys and "body.layer3.6.conv3.weight" not in keys
    assert keys[-1] == "fpn.layer_blocks.3.0.bias"


def test_feature_shapes_for_a_padded_image():
    backbone = resnet_fpn_backbone(18, width=8, out_channels=16)
    with mn.nn.no_grad():
        feats = backbone(np.zeros((1, 3, 256, 320), np.float32))
    # REFERENCE.md: 256x320 -> 64x80, 32x40, 16x20, 8x10, 4x5
    assert {k: v.shape[-2:] for k, v in feats.items()} == {
        "0": (64, 80), "1": (32, 40), "2": (16, 20), "3": (8, 10), "pool": (4, 5)}
    assert all(v.shape[1] == 16 for v in feats.values())


def test_trainable_layers_follow_torchvision():
    body = resnet_fpn_backbone(18, width=4, trainable_layers=3).body
    frozen = {name.split(".")[0] for name, p in body.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "layer1"}  # bn1 is a FrozenBatchNorm2d: it has no parameters
    body5 = resnet_fpn_backbone(18, width=4, norm_layer=mn.nn.BatchNorm2d,
                                trainable_layers=5).body
    assert all(p.requires_grad for p in body5.parameters())
    body4 = resnet_fpn_backbone(18, width=4, norm_layer=mn.nn.BatchNorm2d,
                                trainable_layers=4).body
    assert not body4.bn1.weight.requires_grad  # bn1 trains only with all 5 layers


@pytest.mark.parametrize("trainable_layers", [5, 2])
def test_backbone_gradients_match_finite_differences(trainable_layers):
    mn.nn.init.manual_seed(0)
    backbone = resnet_fpn_backbone(18, width=4, out_channels=6, norm_layer=mn.nn.BatchNorm2d,
                                   trainable_layers=trainable_layers).eval().astype(np.float64)
    rng = np.random.default_rng(0)
    for name, buf in backbone.named_buffers():
        if name.endswith("running_var"):
            buf[:] = rng.uniform(0.5, 1.5, buf.shape)
    x = rng.standard_normal((1, 3, 64, 64))  # C5 is 2x2
    with mn.nn.no_grad():
        shapes = {k: v.shape for k, v in backbone(x).items()}
    douts = {k: rng.standard_normal(s) for k, s in shapes.items()}

    def scalar():
        with mn.nn.no_grad():
            return sum(float((f * douts[k]).sum()) for k, f in backbone(x).items())

    backbone.zero_grad()
    backbone(x)
    dx = backbone.backward(douts)
    params = dict((n, p) for n, p in backbone.named_parameters() if p.requires_grad)
    # one entry per kind of tensor: the stem, a BasicBlock conv, a downsample, a BN, the FPN;
    # a few random entries of each (a full central-difference sweep would take minutes)
    picks = [n for n in ("body.conv1.weight", "body.layer2.0.conv1.weight",
                         "body.layer3.0.downsample.0.weight", "body.layer4.1.bn2.weight",
                         "fpn.inner_blocks.0.0.weight", "fpn.layer_blocks.3.0.bias")
             if n in params]
    assert len(picks) == (6 if trainable_layers == 5 else 4)
    for name in picks:
        param = params[name]
        idx, numeric = sampled_numerical_gradient(
            lambda p, param=param: _set_and_eval(param, p, scalar), param.data.copy(), count=6)
        assert relative_error(param.grad.reshape(-1)[idx], numeric) < 1e-6, name
    frozen = [p for _, p in backbone.named_parameters() if not p.requires_grad]
    assert all(p.grad is None for p in frozen)
    if trainable_layers == 5:
        idx, numeric_dx = sampled_numerical_gradient(
            lambda x_: _eval_at(backbone, x_, douts), x.copy(), count=12)
        assert relative_error(dx.reshape(-1)[idx], numeric_dx) < 1e-6
    else:
        assert dx is None


def _set_and_eval(param, value, scalar):
    saved, param.data = param.data, value
    try:
        return scalar()
    finally:
        param.data = saved


def _eval_at(backbone, x, douts):
    with mn.nn.no_grad():
        return sum(float((f * douts[k]).sum()) for k, f in backbone(x).items())


@pytest.mark.parity
def test_resnet50_fpn_features_match_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone as tv_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    theirs = tv_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d,
                         trainable_layers=3).eval()
    # random but sane BN statistics, so every block does something
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.0)
                module.bias.uniform_(-0.1, 0.1)
    ours = resnet_fpn_backbone(50)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 96, 128)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x))
    with mn.nn.no_grad():
        got = ours(x)
    assert list(got) == list(expected)
    for name in got:
        ref = expected[name].numpy()
        # float32 through ~50 layers: differences of a few 1e-6 of the features' scale
        np.testing.assert_allclose(got[name], ref, rtol=0, atol=1e-4 * np.abs(ref).max(),
                                   err_msg=name)
