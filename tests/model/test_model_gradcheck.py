"""The whole detector's backward against central finite differences, in float64.

`model.train(); losses = model(images, targets); model.backward()` must give, in every
parameter's `.grad`, the gradient of `sum(losses.values())`. This checks it on a micro model
(ResNet-18 of width 4, 8 FPN channels, tiny heads) on two small images of different sizes, for
sampled entries of every parameter tensor of every stage: ResNet stem and layer1..4 (their
BatchNorm affine parameters included), FPN lateral and output convs, the RPN head, fc6/fc7, the
box predictor, the mask head, its deconv and predictor, and the keypoint branch.

What the analytic gradient is the gradient *of*. torchvision detaches the proposals (the
paper's "approximate joint training"): the RoI heads' losses depend on the RPN's outputs only
through which boxes are proposed, and that dependence is not differentiated. Perturbing a
backbone or RPN weight would move the proposal boxes, which (a) changes the RoI heads' loss
continuously through RoIAlign's sampling positions and the box targets, a term `backward`
deliberately leaves out, and (b) can reorder the top-k / NMS or flip a proposal's match,
a jump in the loss that no step size resolves. So the finite differences are taken of the
function `backward` differentiates: the same `model(images, targets)` with the proposals held
at the values the unperturbed forward produced (`rpn.filter_proposals` is replaced by a
function returning them). Everything else that is a decision (anchor matching, RoI matching,
FPN level assignment, mask and keypoint targets) depends only on anchors, proposals and gts,
so it is constant as well. What is left is piecewise smooth: ReLUs switch at 0 and a max-pool
window's (or, with RoIPool, a bin's) argmax can change. A step of 1e-6 mostly stays inside one
smooth piece, but among the ~4e4 ReLU units of this model one may lie within a step of its
kink (it happens), and a central difference across a kink measures neither side's slope.
`derivative` therefore records the on/off pattern of every ReLU and every max-pool and RoIPool
argmax at each point, and uses a central difference only when both points lie in the base
point's piece, else a second-order one-sided difference on the side that does. (This, and
always including each tensor's largest entry, is why the steps are taken here rather than by
nn.gradcheck.sampled_numerical_gradient; its relative_error is the measure.)

Determinism: the samplers take every candidate (batch sizes 10**6), so their random draws do
not matter, and batch norm runs in eval mode (BatchNorm2d with random running statistics, so
that its weight and bias are trainable parameters whose gradients are checked too).

Tolerance: each tensor's checked entries include its largest-gradient entry, and the error is
max |analytic - numeric| / max |gradient| over them (`relative_error`). In float64 with a step
of 1e-6 the rounding error of a difference quotient of a loss ~5 is ~5e-16 / 1e-6 ~ 1e-9
absolute and the truncation error ~1e-12; with gradients of >= 1e-4 per tensor (asserted), that
is < 1e-5, and a right backward measures ~1e-8. A wrong one (a missing term, a transposed
kernel, a wrong normaliser) is off by O(1).
"""

import numba
import numpy as np
import pytest

import mrcnn_np as mn
from mrcnn_np.model.presets import Config, build_model
from mrcnn_np.nn import functional as F
from mrcnn_np.nn.gradcheck import relative_error
from mrcnn_np.ops import poolers

TOLERANCE = 1e-5
EPS = 1e-6

MICRO = Config(
    num_classes=3, depth=18, width=4, fpn_channels=8, norm="batch", trainable_backbone_layers=5,
    min_size=32, max_size=32, anchor_sizes=((4,), (8,), (16,), (32,), (64,)),
    rpn_pre_nms_top_n_train=40, rpn_post_nms_top_n_train=16,
    rpn_batch_size_per_image=10**6, box_batch_size_per_image=10**6,
    box_representation_size=16, mask_layers=(8,), keypoint_layers=(8, 8), seed=0,
)


@pytest.fixture(autouse=True)
def one_numba_thread():
    # on these tiny arrays a parallel kernel's thread launch costs more than its work; the
    # finite differences run hundreds of forwards
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)


def micro_model(**overrides):
    """The micro model in float64, train mode with batch norm in eval mode."""
    model = build_model(MICRO.replace(**overrides))
    rng = np.random.default_rng(1)
    for module in model.modules():
        if isinstance(module, mn.nn.BatchNorm2d):
            module.running_mean = rng.uniform(-0.1, 0.1, module.num_features)
            module.running_var = rng.uniform(0.5, 1.5, module.num_features)
            module.weight.data = rng.uniform(0.5, 1.5, module.num_features)
            module.bias.data = rng.uniform(-0.1, 0.1, module.num_features)
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            # torchvision zero-initialises the head convs' biases, and RoIAlign returns exact
            # zeros in bins whose samples all fall off the map (a big RoI on the 1x1 P5): the
            # mask head's pre-activation there is exactly 0 + 0, on ReLU's kink, where the loss
            # has no derivative, only torch's convention relu'(0) = 0 (which backward follows);
            # biases off 0 keep this a check of derivatives
            param.data = param.data + rng.uniform(-0.1, 0.1, param.shape)
    head = model.rpn.head
    for conv in (head.conv[0][0], head.cls_logits, head.bbox_pred):
        # the N(0, 0.01) init leaves the RPN's share of the backbone gradient ~1e-6 of the
        # heads' share, below what finite differences resolve; give it weight
        conv.weight.data = conv.weight.data * 20
    for pooler in (model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool,
                   model.roi_heads.keypoint_roi_pool):
        if pooler is not None:
            # FPN's level rule k = floor(4 + log2(sqrt(area) / 224)) puts every RoI of a 32 px
            # image on P2; a canonical size of 12 spreads them over P2..P5 (< 6, < 12, < 24,
            # >= 24 px), so RoIAlign's backward into every level is exercised
            pooler.canonical_scale = 12
    model.astype(np.float64).train()
    for module in model.modules():
        if isinstance(module, mn.nn.BatchNorm2d):
            module.eval()
    return model


def images_and_targets(num_keypoints=0):
    """A 32x32 image with two objects and a 24x32 one (padded to 32x32) with one."""
    rng = np.random.default_rng(0)
    images = [rng.random((3, 32, 32)), rng.random((3, 24, 32))]
    boxes = [np.array([[3.0, 2.0, 15.5, 18.0], [5.0, 4.0, 31.0, 30.0]]),
             np.array([[10.0, 6.0, 22.0, 14.5]])]
    labels = [np.array([1, 2]), np.array([2])]
    targets = []
    for image, b, lab in zip(images, boxes, labels):
        h, w = image.shape[1:]
        masks = np.zeros((len(b), h, w), np.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, b):
            # an ellipse inside the box: soft mask targets after RoIAlign
            yy, xx = np.mgrid[:h, :w] + 0.5
            cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
            m[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1] = 1
        target = {"boxes": b, "labels": lab, "masks": masks}
        if num_keypoints:
            kx = rng.uniform(b[:, :1], b[:, 2:3], (len(b), num_keypoints))
            ky = rng.uniform(b[:, 1:2], b[:, 3:4], (len(b), num_keypoints))
            visible = np.ones((len(b), num_keypoints))
            visible[0, -1] = 0  # an invisible keypoint takes no part in the loss
            target["keypoints"] = np.stack([kx, ky, visible], axis=-1)
        targets.append(target)
    return images, targets


@pytest.fixture
def kinks(monkeypatch):
    """Records, in call order, the on/off mask of every ReLU and the argmax of every max-pool
    and RoIPool bin that a forward passes through: together they name the smooth piece the
    weights are in."""
    log = []
    relu, max_pool2d, roi_pool = F.relu, F.max_pool2d, poolers.roi_pool

    def recording_relu(x):
        out, mask = relu(x)
        log.append(mask)
        return out, mask

    def recording_max_pool2d(*args, **kwargs):
        out, cache = max_pool2d(*args, **kwargs)
        log.append(cache[0])
        return out, cache

    def recording_roi_pool(*args, **kwargs):
        out, argmax = roi_pool(*args, **kwargs)
        log.append(argmax)
        return out, argmax

    monkeypatch.setattr(F, "relu", recording_relu)
    monkeypatch.setattr(F, "max_pool2d", recording_max_pool2d)
    monkeypatch.setattr(poolers, "roi_pool", recording_roi_pool)
    return log


def train_step_with_frozen_proposals(model, images, targets, kinks):
    """Run `losses = model(images, targets); model.backward()` and return (losses, loss_fn,
    proposals), where loss_fn() -> (summed loss, kink pattern) recomputes the loss with the
    proposals held at this step's."""
    recorded = []
    original = model.rpn.filter_proposals

    def record(*args):
        recorded.append(original(*args))
        return recorded[-1]

    model.rpn.filter_proposals = record
    model.zero_grad()
    losses = model(images, targets)
    model.backward()
    (proposals,) = recorded
    model.rpn.filter_proposals = lambda *args: [p.copy() for p in proposals]

    def loss_fn():
        kinks.clear()
        with mn.nn.no_grad():
            loss = sum(model(images, targets).values())
        return loss, list(kinks)

    return losses, loss_fn, proposals


def same_piece(pattern, other):
    return len(pattern) == len(other) and all(np.array_equal(a, b)
                                              for a, b in zip(pattern, other))


def derivative(loss_fn, flat, index, base):
    """d loss / d flat[index] by finite differences inside the smooth piece of the base point
    (`base` = loss_fn() there): the central difference (f(x+h) - f(x-h)) / 2h when both points
    are in it; else, on the side s = +-1 that is, the one-sided
        (4 f(x + s h) - 3 f(x) - f(x + 2 s h)) / (2 s h),
    whose error is O(h^2) as well (h^2 f'''/3 by Taylor); if neither is, a 10x smaller step."""
    base_value, base_pattern = base
    saved = flat[index]

    def at(offset):
        flat[index] = saved + offset
        value, pattern = loss_fn()
        flat[index] = saved
        return value, same_piece(pattern, base_pattern)

    h = EPS
    for _ in range(3):
        (plus, plus_ok), (minus, minus_ok) = at(h), at(-h)
        if plus_ok and minus_ok:
            return (plus - minus) / (2 * h)
        for side, near, ok in ((1, plus, plus_ok), (-1, minus, minus_ok)):
            if ok:
                far, far_ok = at(2 * side * h)
                if far_ok:
                    return (4 * near - 3 * base_value - far) / (2 * side * h)
        h /= 10
    raise AssertionError(f"entry {index}: a kink within {h * 10:g} on both sides")


def central_differences(loss_fn, param, picks):
    """d loss / d param at the flat indices `picks` (see `derivative`)."""
    flat = param.data.reshape(-1)  # a view: perturbing it perturbs the parameter
    base = loss_fn()
    return np.array([derivative(loss_fn, flat, index, base) for index in picks])


def check_parameters(model, loss_fn, names, per_tensor=2, seed=0):
    """{name: relative error} over each tensor's largest-gradient entry and `per_tensor - 1`
    random ones."""
    params = dict(model.named_parameters())
    rng = np.random.default_rng(seed)
    errors = {}
    for name in names:
        grad = params[name].grad.reshape(-1)
        assert np.abs(grad).max() >= 1e-4, f"{name}: gradient too small to check"
        others = rng.choice(grad.size, size=min(per_tensor - 1, grad.size - 1), replace=False)
        picks = np.unique(np.concatenate([[np.abs(grad).argmax()], others]))
        errors[name] = relative_error(grad[picks], central_differences(loss_fn, params[name],
                                                                        picks))
    return errors


def assert_small(errors):
    bad = {name: f"{err:.2e}" for name, err in errors.items() if not err < TOLERANCE}
    assert not bad, f"analytic vs numeric gradient differ (relative error > {TOLERANCE}): {bad}"


def test_every_parameter_of_mask_rcnn_matches_finite_differences(kinks):
    model = micro_model()
    images, targets = images_and_targets()
    losses, loss_fn, proposals = train_step_with_frozen_proposals(model, images, targets, kinks)
    assert list(losses) == ["loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                            "loss_rpn_box_reg"]
    assert all(v > 0 for v in losses.values())
    # the held proposals reproduce the step's losses exactly
    assert loss_fn()[0] == sum(losses.values())
    # the images' RoIs reach every FPN level (see micro_model), so every level's output conv
    # receives gradient from the box head as well as from the RPN
    rois = np.concatenate(proposals + [t["boxes"] for t in targets])  # all are sampled
    levels = mn.ops.poolers.assign_levels(rois, 2, 5, canonical_scale=12)
    assert set(levels.tolist()) == {2, 3, 4, 5}
    names = [n for n, p in model.named_parameters()]
    assert all(p.requires_grad and p.grad is not None for p in model.parameters())
    groups = ("backbone.body.conv1", "backbone.body.bn1", "backbone.body.layer1",
              "backbone.body.layer2", "backbone.body.layer3", "backbone.body.layer4",
              "backbone.fpn.inner_blocks", "backbone.fpn.layer_blocks", "rpn.head.conv",
              "rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_head.fc6",
              "roi_heads.box_head.fc7", "roi_heads.box_predictor.cls_score",
              "roi_heads.box_predictor.bbox_pred", "roi_heads.mask_head",
              "roi_heads.mask_predictor.conv5_mask", "roi_heads.mask_predictor.mask_fcn_logits")
    assert all(any(n.startswith(g) for g in groups) for n in names)  # nothing left out
    assert_small(check_parameters(model, loss_fn, names))


def test_keypoint_branch_matches_finite_differences(kinks):
    model = micro_model(mask=False, num_keypoints=3)
    images, targets = images_and_targets(num_keypoints=3)
    losses, loss_fn, _ = train_step_with_frozen_proposals(model, images, targets, kinks)
    assert list(losses) == ["loss_classifier", "loss_box_reg", "loss_keypoint",
                            "loss_objectness", "loss_rpn_box_reg"]
    assert losses["loss_keypoint"] > 0
    # the keypoint head (two convs), its deconv, and the features it sends gradient into
    names = [n for n, _ in model.named_parameters()
             if n.startswith(("roi_heads.keypoint", "backbone.fpn.layer_blocks"))]
    assert len(names) == 2 * 2 + 2 + 8
    # the deconv's bias adds a constant to a keypoint's whole 56x56 map (the bilinear 2x
    # upsampling keeps constants), and a softmax over the map does not see constants: its
    # gradient is exactly 0, up to the rounding of the sum of (p - onehot) = 1 - 1
    bias = dict(model.named_parameters())["roi_heads.keypoint_predictor.kps_score_lowres.bias"]
    assert np.abs(bias.grad).max() < 1e-12
    assert np.abs(central_differences(loss_fn, bias, [0, 1, 2])).max() < 1e-8
    names.remove("roi_heads.keypoint_predictor.kps_score_lowres.bias")
    assert_small(check_parameters(model, loss_fn, names, per_tensor=3))


def test_frozen_backbone_layers_get_no_gradient(kinks):
    # trainable_backbone_layers=2: layer3 and layer4 train; conv1, bn1, layer1, layer2 do not
    model = micro_model(trainable_backbone_layers=2)
    images, targets = images_and_targets()
    _, loss_fn, _ = train_step_with_frozen_proposals(model, images, targets, kinks)
    body = dict(model.backbone.body.named_parameters(prefix="backbone.body"))
    frozen = [n for n in body if not n.startswith(("backbone.body.layer3",
                                                   "backbone.body.layer4"))]
    assert len(frozen) == 3 + 12 + 15  # stem conv + bn; layer1; layer2 (with its downsample)
    for name, param in body.items():
        assert param.requires_grad == (name not in frozen), name
        assert (param.grad is None) == (name in frozen), name
    # the loss does depend on a frozen weight: it is left out by choice, not by accident
    conv1 = body["backbone.body.conv1.weight"]
    assert abs(central_differences(loss_fn, conv1, [0])[0]) > 1e-6
    # and stopping the backward at layer3 leaves the trainable layers' gradients right
    trainable = [n for n in body if n not in frozen]
    assert_small(check_parameters(model, loss_fn, trainable[::3]))


def test_backbone_with_batch_statistics_matches_finite_differences(kinks):
    # maskrcnn_small trains its BatchNorm2d layers in train mode (batch statistics), where each
    # normalised value depends on the whole batch; the loss is still a smooth function of the
    # weights (the running statistics are updated but not used), so the same check applies
    model = micro_model()
    for module in model.modules():
        if isinstance(module, mn.nn.BatchNorm2d):
            module.train()
    images, targets = images_and_targets()
    _, loss_fn, _ = train_step_with_frozen_proposals(model, images, targets, kinks)
    names = [n for n, _ in model.backbone.body.named_parameters(prefix="backbone.body")]
    assert_small(check_parameters(model, loss_fn, names[::2] + names[1::4]))


def test_roi_pool_variant_matches_finite_differences(kinks):
    # pooler="pool" (the paper's RoIPool ablation): each bin's gradient goes to its argmax pixel
    # of the level the RoI was assigned to; checked where it lands (the FPN output convs and
    # the top-down path) and in the heads that read the pooled features
    model = micro_model(pooler="pool")
    images, targets = images_and_targets()
    _, loss_fn, _ = train_step_with_frozen_proposals(model, images, targets, kinks)
    names = [n for n, _ in model.named_parameters()
             if n.startswith(("backbone.fpn", "roi_heads.box_head.fc6", "roi_heads.mask_head"))]
    assert_small(check_parameters(model, loss_fn, names))
