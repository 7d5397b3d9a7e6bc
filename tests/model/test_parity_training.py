"""One training step against torchvision, both in float64: the same weights, images and targets
in, the same losses and the same gradient of their sum in every parameter out.

Why float64. A training step has millions of ReLU units (Keypoint R-CNN's head alone ~1e6 per
positive RoI: 8 convs of 512 channels on 14x14). In float32, summing in a different order (our
conv kernels vs torch's) moves a pre-activation by ~1e-7 of its scale, so now and then one that
lies that close to 0 switches side, and the gradients upstream of it differ by ~1e-3: a float32
comparison must either tolerate that or depend on rounding luck. In float64 the same reordering
moves a pre-activation by ~1e-16; the chance that one of ~1e7 units lies that close to its kink
is ~1e-8, so both models take the same branch everywhere and their results agree to rounding.
Both run in float64 end to end: torch via `model.double()` with float64 images and boxes, ours
via `model.astype(np.float64)` with the same arrays.

What torchvision computes in float32 even then, and how this test treats it:
* RPN labels (rpn.py, `assign_targets_to_anchors`: `labels.to(torch.float32)`). Its
  `binary_cross_entropy_with_logits(objectness, labels)` then computes `(1 - labels) * logits`
  in place in the labels' dtype, so loss_objectness and its gradient come out in float32
  (~1e-7 relative in the loss, and its gradient reaches every backbone parameter). The
  labels are 0.0 / 1.0 / -1.0, exact in both dtypes, so `_float64_rpn_labels` casts them to
  float64: no value changes, only the dtype the loss is computed in.
* Keypoints: its RoI heads raise TypeError unless they are float32, and they are only ever
  floored to heatmap cells; ours keeps them float32 as well.
* Anchors (generated in float32 and rounded to integers), the resize ratios of boxes and
  keypoints (float32 `new / old`, then multiplied in the boxes' dtype) and the pooler scales
  (float32 log2 of a power of two) are float32 constants in both implementations with exact
  or identical values, so they cost nothing.
Everything else (normalisation, bilinear resizing of the images, box coding, RoIAlign of the
features and of the gt masks, the losses) is float64 on both sides.

Determinism (REFERENCE.md Sec. 8): batch sizes of 10**6 make both samplers take every positive
and every negative (in ascending order), so torch's `randperm` does not matter; `min_size` is
one int; batch norm is either nn.BatchNorm2d in eval mode or FrozenBatchNorm2d, both fixed
affine maps. Two configurations, one per detector:

* "mask": `maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`, torchvision's recipe
  for an untrained backbone: BatchNorm2d (here in eval mode, with random statistics) and all
  five backbone stages trainable, so the gradients of every BatchNorm weight and bias are
  compared too.
* "keypoint": `keypointrcnn_resnet50_fpn` as torchvision builds it around an ImageNet backbone
  (FrozenBatchNorm2d, trainable_backbone_layers=3: conv1 and layer1 frozen), assembled from
  the same public parts the builder uses (`resnet_fpn_backbone` + `KeypointRCNN`), since the
  builder would download the ImageNet weights; random FrozenBatchNorm2d statistics replace them.
  Its second image has no person, so the rules for an image without objects are compared too.

The images are small (about 100 px, resized to min_size 96 by non-integer factors) and the RPN
keeps 200 proposals per level and 30 per image, so that a step of each model takes seconds.

Tolerances (float64). Measured: losses agree to <= 2.2e-16 relative, and every gradient tensor
to max |ours - torch| <= 5.4e-15 * max |torch| (mask: 3.6e-15, keypoint: 5.4e-15), i.e. a few
dozen float64 ulps after ~100 layers summed in different orders. The bound, TOLERANCE = 1e-12
for both, leaves a margin of ~200x for other summation orders (threads, kernels), and stays far
below what any float32 arithmetic left on the way costs: each one found while writing this test
(torch's RPN labels above; in ours, float32 bilinear weights in the image resize, float32
RoIAlign of the gt masks, float32 gt boxes and proposals) moved some loss by >= 3e-9 relative
and some gradient tensor by ~1e-6 of its max. A wrong backward (a missing term, a wrong
normaliser, a RoI pooled from the wrong level) is off by >= 1e-3.

Float32 is checked on the losses only (`test_float32_losses_match`): it is the dtype the model
trains in, and some of our float32 arithmetic copies torchvision's float32 arithmetic (resize
weights and ratios, anchors, box coding) rather than being float64-exact, which the float64 step
does not exercise. Losses are means or sums of at most a few thousand float32 terms (a ReLU
that switches side changes one term by a rounding error, which the loss cannot amplify):
rtol 1e-6 (observed <= 1.7e-7).
"""

import numpy as np
import pytest

import mrcnn_np as mn

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.parity

TOLERANCE = 1e-12
FLOAT32_LOSS_RTOL = 1e-6

SHARED = dict(min_size=96, max_size=128, rpn_pre_nms_top_n_train=200,
              rpn_post_nms_top_n_train=30, rpn_batch_size_per_image=10**6,
              box_batch_size_per_image=10**6)


def _randomise_norms(model, seed):
    """Non-trivial statistics for every BatchNorm2d / FrozenBatchNorm2d (eval-mode maps)."""
    frozen = torchvision.ops.misc.FrozenBatchNorm2d
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | frozen):
                m.running_mean.uniform_(-0.1, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.2, 0.6, generator=g)
                m.bias.uniform_(-0.1, 0.1, generator=g)


def _float64_rpn_labels(rpn):
    """Make torchvision's RPN hand its objectness loss labels in float64 (see the docstring)."""
    assign = rpn.assign_targets_to_anchors

    def assign_float64(anchors, targets):
        labels, matched_gt_boxes = assign(anchors, targets)
        return [lab.double() for lab in labels], matched_gt_boxes

    rpn.assign_targets_to_anchors = assign_float64


def _build(kind):
    """(torchvision's model, ours) with the same weights, in float32, train mode, BN in eval."""
    detection = torchvision.models.detection
    torch.manual_seed(0)
    if kind == "mask":
        theirs = detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **SHARED)
        ours = mn.models.maskrcnn_resnet50_fpn(norm="batch", trainable_backbone_layers=5,
                                               **SHARED)
    else:
        backbone = detection.backbone_utils.resnet_fpn_backbone(
            backbone_name="resnet50", weights=None,
            norm_layer=torchvision.ops.misc.FrozenBatchNorm2d, trainable_layers=3)
        theirs = detection.KeypointRCNN(backbone, num_classes=2, num_keypoints=17, **SHARED)
        ours = mn.models.keypointrcnn_resnet50_fpn(norm="frozen", trainable_backbone_layers=3,
                                                   **SHARED)
    _randomise_norms(theirs, 1)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for model, bn in ((theirs, torch.nn.BatchNorm2d), (ours, mn.nn.BatchNorm2d)):
        model.train()
        for m in model.modules():
            if isinstance(m, bn):
                m.eval()
    return theirs, ours


def _inputs(kind, dtype):
    """Two images of different sizes (padded together) with 3 and 2 objects; for Keypoint R-CNN,
    whose eight 512-channel convs per positive RoI dominate its step, 2 people and an image
    without any (all its anchors and proposals are negatives; torchvision's own rule).
    Images and boxes in `dtype` (the values are float32 numbers in both dtypes); keypoints
    float32, as torchvision requires."""
    rng = np.random.default_rng(0)
    sizes = [(90, 112), (104, 84)]
    all_boxes = [[[8, 15, 68, 82], [45, 30, 105, 86], [4, 60, 30, 88]],
                 [[15, 8, 75, 68], [22, 52, 79, 101]]]
    all_labels = [[1, 5, 17], [3, 1]]
    if kind == "keypoint":
        all_boxes = [[[10, 10, 40, 52], [62, 30, 94, 80]], []]
        all_labels = [[1, 1], []]
    images, targets = [], []
    for (h, w), boxes, labels in zip(sizes, all_boxes, all_labels):
        images.append(rng.random((3, h, w), dtype=np.float32).astype(dtype))
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        target = {"boxes": boxes.astype(dtype), "labels": np.array(labels, np.int64)}
        if kind == "mask":
            masks = np.zeros((len(boxes), h, w), np.uint8)
            for m, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
                m[y1 + 2:y2 - 3, x1 + 3:x2 - 1] = 1
                m[y1 + 2:(y1 + y2) // 2, x1 + 3:(x1 + x2) // 2] = 0  # not a rectangle
            target["masks"] = masks
        else:
            x = rng.uniform(boxes[:, :1], boxes[:, 2:3], (len(boxes), 17))
            y = rng.uniform(boxes[:, 1:2], boxes[:, 3:4], (len(boxes), 17))
            visible = (rng.random((len(boxes), 17)) < 0.8).astype(np.float32) * 2
            target["keypoints"] = np.stack([x, y, visible], axis=-1).astype(np.float32)
        targets.append(target)
    return images, targets


def _torch_losses(model, images, targets):
    return model([torch.from_numpy(i) for i in images],
                 [{k: torch.from_numpy(v) for k, v in t.items()} for t in targets])


@pytest.fixture(scope="module", params=["mask", "keypoint"])
def step(request):
    """The losses of a float32 forward of both models; then both models in float64 after
    `losses = model(images, targets)` and a backward of their sum."""
    kind = request.param
    theirs, ours = _build(kind)
    images, targets = _inputs(kind, np.float32)
    with torch.no_grad():
        ref32 = {k: v.item() for k, v in _torch_losses(theirs, images, targets).items()}
    losses32 = ours(images, targets)

    theirs.double()
    _float64_rpn_labels(theirs.rpn)
    ours.astype(np.float64)
    images, targets = _inputs(kind, np.float64)
    ref_losses = _torch_losses(theirs, images, targets)
    sum(ref_losses.values()).backward()
    losses = ours(images, targets)
    ours.backward()
    return dict(kind=kind, theirs=theirs, ours=ours, losses=losses,
                ref_losses={k: v.item() for k, v in ref_losses.items()},
                ref_dtypes={v.dtype for v in ref_losses.values()},
                losses32=losses32, ref_losses32=ref32)


def test_float32_losses_match(step):
    assert set(step["losses32"]) == set(step["ref_losses32"])
    for name, ref in step["ref_losses32"].items():
        assert step["losses32"][name] == pytest.approx(ref, rel=FLOAT32_LOSS_RTOL), name


def test_losses_match(step):
    assert step["ref_dtypes"] == {torch.float64}
    assert set(step["losses"]) == set(step["ref_losses"])
    for name, ref in step["ref_losses"].items():
        assert step["losses"][name] == pytest.approx(ref, rel=TOLERANCE, abs=0), name


def test_every_parameter_gradient_matches(step):
    ours = dict(step["ours"].named_parameters())
    theirs = dict(step["theirs"].named_parameters())
    assert set(ours) == set(theirs)
    trainable = [n for n, p in theirs.items() if p.requires_grad]
    assert len(trainable) == (201 if step["kind"] == "mask" else 90)
    if step["kind"] == "keypoint":
        # the deconv's bias shifts a keypoint's whole heatmap, which its softmax ignores: the
        # exact gradient is 0, and both sides hold float64 rounding of a zero sum (observed
        # <= 3.6e-17, i.e. 1.4e-15 of the weight's gradient)
        bias = "roi_heads.keypoint_predictor.kps_score_lowres.bias"
        scale = np.abs(ours[bias.replace("bias", "weight")].grad).max()
        assert np.abs(ours[bias].grad).max() < TOLERANCE * scale
        assert np.abs(theirs[bias].grad.numpy()).max() < TOLERANCE * scale
        trainable.remove(bias)
    bad = {}
    for name in trainable:
        ref, got = theirs[name].grad.numpy(), ours[name].grad
        assert got is not None, f"{name}: no gradient"
        assert got.dtype == np.float64, f"{name}: gradient in {got.dtype}"
        assert np.abs(ref).max() > 0, name
        error = np.abs(got - ref).max() / np.abs(ref).max()
        if not error <= TOLERANCE:
            bad[name] = f"{error:.1e}"
    assert not bad, f"gradients differ from torchvision's (max error / max |grad|): {bad}"


def test_frozen_parameters_get_no_gradient(step):
    ours = dict(step["ours"].named_parameters())
    for name, param in step["theirs"].named_parameters():
        assert ours[name].requires_grad == param.requires_grad, name
        if not param.requires_grad:
            assert ours[name].grad is None, name
    frozen = [n for n, p in ours.items() if not p.requires_grad]
    if step["kind"] == "mask":
        assert frozen == []  # an untrained backbone trains all five stages
    else:
        # conv1 (bn1 is a FrozenBatchNorm2d: buffers only) and layer1's 3 blocks of 3 convs
        # plus its downsample conv
        assert sorted(frozen) == sorted(
            ["backbone.body.conv1.weight", "backbone.body.layer1.0.downsample.0.weight"]
            + [f"backbone.body.layer1.{b}.conv{c}.weight" for b in range(3) for c in (1, 2, 3)])
