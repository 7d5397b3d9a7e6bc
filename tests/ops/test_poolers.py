"""MultiScaleRoIAlign: FPN level per RoI (Eq. 1 of the FPN paper), parity, backward."""

import numpy as np
import pytest

from mrcnn_np.nn.gradcheck import relative_error, sampled_numerical_gradient
from mrcnn_np.ops.poolers import MultiScaleRoIAlign, assign_levels


def test_level_assignment_by_hand():
    # k = floor(4 + log2(sqrt(w h) / 224) + 1e-6), clamped to [2, 5]
    sides = [10, 56, 111.9, 112, 223, 224, 448, 1000]
    boxes = np.array([[0, 0, s, s] for s in sides], np.float32)
    # 56 -> 4 - 2 = 2; 111.9 -> just below 3 -> 2; 112 -> 3; 223 -> 3; 224 -> 4; 448 -> 5;
    # 10 -> 4 + log2(0.045) = -0.5 -> clamped to 2; 1000 -> 6.2 -> clamped to 5
    np.testing.assert_array_equal(assign_levels(boxes), [2, 2, 2, 3, 3, 4, 5, 5])
    # a 224 x 56 box has the area of a 112 x 112 one
    assert assign_levels(np.array([[0, 0, 224, 56]], np.float32))[0] == 3


def features_and_boxes(rng, dtype=np.float32):
    feats = {str(i): rng.standard_normal((2, 3, 64 // 2**i, 80 // 2**i)).astype(dtype)
             for i in range(4)}
    boxes = []
    for count in (7, 5):
        # sides from 10 to 500 px: every level from P2 to P5 gets some
        b = rng.uniform(0, 150, (count, 4))
        b[:, 2:] = b[:, :2] + rng.choice([10, 60, 150, 300, 500], (count, 1)) * \
            rng.uniform(0.8, 1.2, (count, 2))
        boxes.append(b.astype(dtype))
    return feats, boxes, [(256, 320), (200, 300)]


@pytest.mark.parametrize("pooler", ["align", "pool"])
def test_backward_matches_finite_differences(pooler):
    rng = np.random.default_rng(0)
    feats, boxes, sizes = features_and_boxes(rng, np.float64)
    if pooler == "pool":  # distinct values, so no bin has two maxima
        feats = {k: rng.permutation(v.size).reshape(v.shape) / v.size for k, v in feats.items()}
    pool = MultiScaleRoIAlign(output_size=(2, 3), sampling_ratio=2, pooler=pooler)
    dout = rng.standard_normal((12, 3, 2, 3))
    pool(feats, boxes, sizes)
    grads = pool.backward(dout)
    assert set(grads) == set(feats)
    for name in feats:
        def scalar(value, name=name):
            return float((pool({**feats, name: value}, boxes, sizes) * dout).sum())

        idx, numeric = sampled_numerical_gradient(scalar, feats[name].copy(), count=40)
        assert relative_error(grads[name].reshape(-1)[idx], numeric) < 1e-6 or \
            np.abs(numeric).max() == np.abs(grads[name].reshape(-1)[idx]).max() == 0




def test_empty_boxes_give_empty_output_and_zero_gradients():
    rng = np.random.default_rng(1)
    feats, _, sizes = features_and_boxes(rng)
    pool = MultiScaleRoIAlign(output_size=7)
    out = pool(feats, [np.zeros((0, 4), np.float32)] * 2, sizes)
    assert out.shape == (0, 3, 7, 7)
    grads = pool.backward(out)
    assert all(g.shape == feats[k].shape and not g.any() for k, g in grads.items())
    with pytest.raises(ValueError, match="pooler"):
        MultiScaleRoIAlign(pooler="crop")


@pytest.mark.parity
def test_matches_torchvision_multiscale_roi_align():
    torch = pytest.importorskip("torch")
    from torchvision.ops import MultiScaleRoIAlign as TVPooler

    rng = np.random.default_rng(2)
    feats, boxes, sizes = features_and_boxes(rng)
    levels = assign_levels(np.concatenate(boxes))
    assert len(set(levels.tolist())) >= 3  # the boxes span several levels
    ours = MultiScaleRoIAlign(output_size=7, sampling_ratio=2)(feats, boxes, sizes)
    ref = TVPooler(["0", "1", "2", "3"], 7, 2)(
        {k: torch.from_numpy(v) for k, v in feats.items()},
        [torch.from_numpy(b) for b in boxes], sizes)
    # float64 accumulation here, float32 in torchvision: ~1e-6 on N(0, 1) features
    np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=2e-5)
