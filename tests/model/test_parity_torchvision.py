"""The whole detector against torchvision: same weights in, same numbers out, stage by stage.

torchvision's models are built with `weights=None, weights_backbone=None` (plain BatchNorm2d,
here in eval mode: the same function as our FrozenBatchNorm2d with eps 1e-5), given random
but non-trivial batch-norm statistics, and copied into ours through `load_state_dict`. Each
stage gets the *same inputs* on both sides (torchvision's outputs of the stage before), so a
difference points at one stage; the end-to-end test then runs both models from the images.

Tolerances: float32 through ~60 layers differs by a few 1e-6 relative (BLAS summation order),
and boxes by ~3e-5 px; the bounds below are 10-30x that, while a half-pixel shift anywhere
(RoIAlign's `aligned`, anchor centres, paste offsets) changes boxes by ~0.5 px, features and
logits by ~1e-2 relative.
"""

import numpy as np
import pytest

import mrcnn_np as mn

pytestmark = pytest.mark.parity


def _randomise_batch_norms(torch, model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.2, 0.6, generator=g)
                m.bias.uniform_(-0.1, 0.1, generator=g)


@pytest.fixture(scope="module", params=["mask", "keypoint"])
def pair(request):
    torch = pytest.importorskip("torch")
    detection = pytest.importorskip("torchvision.models.detection")
    torch.manual_seed(0)
    kwargs = dict(weights=None, weights_backbone=None, min_size=256, max_size=320)
    if request.param == "mask":
        theirs = detection.maskrcnn_resnet50_fpn(**kwargs)
        ours = mn.models.maskrcnn_resnet50_fpn(min_size=256, max_size=320)
    else:
        theirs = detection.keypointrcnn_resnet50_fpn(**kwargs)
        ours = mn.models.keypointrcnn_resnet50_fpn(min_size=256, max_size=320)
    _randomise_batch_norms(torch, theirs, 1)
    if request.param == "mask":
        # 91 classes at random init all score ~1/91 < 0.05: sharpen the classifier so that
        # detections survive the score threshold and their scores spread out
        with torch.no_grad():
            theirs.roi_heads.box_predictor.cls_score.weight.mul_(40)
    theirs.eval()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.eval()
    rng = np.random.default_rng(0)
    images = [rng.random((3, 240, 300), dtype=np.float32),
              rng.random((3, 200, 330), dtype=np.float32)]
    with torch.no_grad():
        image_list, _ = theirs.transform([torch.from_numpy(i) for i in images])
        features = theirs.backbone(image_list.tensors)
        proposals, _ = theirs.rpn(image_list, features)
    return dict(torch=torch, theirs=theirs, ours=ours, images=images, image_list=image_list,
                features=features, proposals=proposals, kind=request.param)


def _numpy(tensors):
    return {k: v.numpy() for k, v in tensors.items()}


def test_backbone_features(pair):
    image_list, _ = pair["ours"].transform(pair["images"])
    assert image_list.image_sizes == [tuple(s) for s in pair["image_list"].image_sizes]
    with mn.nn.no_grad():
        features = pair["ours"].backbone(image_list.tensors)
    assert list(features) == list(pair["features"]) == ["0", "1", "2", "3", "pool"]
    for name, ref in _numpy(pair["features"]).items():
        np.testing.assert_allclose(features[name], ref, rtol=0, atol=3e-5 * np.abs(ref).max(),
                                   err_msg=name)


def test_rpn_proposals(pair):
    with mn.nn.no_grad():
        proposals, _ = pair["ours"].rpn(pair["image_list"], _numpy(pair["features"]))
    for ours, ref in zip(proposals, pair["proposals"]):
        ref = ref.numpy()
        assert ours.shape == ref.shape
        # the same set of boxes; near-equal objectness scores of a random head may come out of
        # torchvision's unstable sort in another order, so compare in a canonical order
        ours, ref = (b[np.lexsort(b.T[::-1])] for b in (ours, ref))
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)


def test_box_head_logits_and_detections(pair):
    torch, theirs, ours = pair["torch"], pair["theirs"], pair["ours"]
    sizes = pair["image_list"].image_sizes
    features, proposals = _numpy(pair["features"]), [p.numpy() for p in pair["proposals"]]
    with torch.no_grad():
        pooled = theirs.roi_heads.box_roi_pool(pair["features"], pair["proposals"], sizes)
        ref_logits, ref_deltas = theirs.roi_heads.box_predictor(theirs.roi_heads.box_head(pooled))
        ref_detections, _ = theirs.roi_heads(pair["features"], pair["proposals"], sizes)
    with mn.nn.no_grad():
        pooled = ours.roi_heads.box_roi_pool(features, proposals, sizes)
        logits, deltas = ours.roi_heads.box_predictor(ours.roi_heads.box_head(pooled))
        detections, _ = ours.roi_heads(features, proposals, sizes)
    for got, ref in ((logits, ref_logits.numpy()), (deltas, ref_deltas.numpy())):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert sum(len(d["boxes"]) for d in detections) > 20  # enough to compare
    for got, ref in zip(detections, ref_detections):
        _assert_same_detections(got, {k: v.numpy() for k, v in ref.items()}, pair["kind"])


def _assert_same_detections(got, ref, kind):
    assert len(got["boxes"]) == len(ref["boxes"])
    np.testing.assert_array_equal(got["labels"], ref["labels"])
    np.testing.assert_allclose(got["scores"], ref["scores"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["boxes"], ref["boxes"], rtol=0, atol=1e-3)
    if kind == "mask":
        np.testing.assert_allclose(got["masks"], ref["masks"], rtol=0, atol=1e-5)
    else:
        np.testing.assert_allclose(got["keypoints"], ref["keypoints"], rtol=0, atol=1e-3)
        np.testing.assert_allclose(got["keypoints_scores"], ref["keypoints_scores"], rtol=0,
                                   atol=1e-4 * np.abs(ref["keypoints_scores"]).max())


def test_end_to_end_from_images(pair):
    torch = pair["torch"]
    with torch.no_grad():
        refs = pair["theirs"]([torch.from_numpy(i) for i in pair["images"]])
    outputs = pair["ours"](pair["images"])
    for got, ref, image in zip(outputs, refs, pair["images"]):
        ref = {k: v.numpy() for k, v in ref.items()}
        if pair["kind"] == "mask":
            assert got["masks"].shape[-2:] == image.shape[-2:]  # pasted at the original size
        _assert_same_detections(_paired_with(got, ref), ref, pair["kind"])


def _paired_with(got, ref):
    """Reorder `got` to follow `ref`: from the images on, two scores one ulp apart may come
    out of the final sort in either order, so each reference detection takes the unused one
    of ours with the same score (to 1e-6) and the closest box."""
    assert len(got["scores"]) == len(ref["scores"])
    order, used = [], np.zeros(len(got["scores"]), bool)
    for score, box in zip(ref["scores"], ref["boxes"]):
        candidates = np.flatnonzero(~used & (np.abs(got["scores"] - score) <= 1e-6))
        assert len(candidates), f"no detection of ours scores {score}"
        best = candidates[np.abs(got["boxes"][candidates] - box).max(axis=1).argmin()]
        used[best] = True
        order.append(best)
    return {k: v[np.array(order, np.int64)] for k, v in got.items()}
