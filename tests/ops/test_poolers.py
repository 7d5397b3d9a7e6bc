"""MultiScaleRoIAlign: FPN level per RoI (Eq. 1 of the FPN paper), scales, backward, parity."""

import numpy as np
import pytest

from mrcnn_np.nn.gradcheck import numerical_gradient, relative_error
from mrcnn_np.ops.poolers import MultiScaleRoIAlign, assign_levels, infer_scale
from mrcnn_np.ops.roi_align import roi_align
from mrcnn_np.ops.roi_pool import roi_pool


def test_level_assignment_by_hand():
    # k = floor(4 + log2(sqrt(w h) / 224) + 1e-6), clamped to [2, 5]
    #   112 -> 4 + log2(1/2) = 3 (the 1e-6 keeps an exact 3.0 from rounding down to 2.99..)
    #   111.9 -> 2.9987 -> 2;  223 -> 3.9935 -> 3;  224 -> 4;  448 -> 5;  56 -> 2
    #   10 -> 4 + log2(0.045) = -0.49 -> clamped to 2;  1000 -> 6.16 -> clamped to 5
    sides = [10, 56, 111.9, 112, 223, 224, 448, 1000]
    boxes = np.array([[0, 0, s, s] for s in sides], np.float32)
    np.testing.assert_array_equal(assign_levels(boxes), [2, 2, 2, 3, 3, 4, 5, 5])
    # a 224 x 56 box has the area of a 112 x 112 one; the box's position does not matter
    assert assign_levels(np.array([[30, 40, 254, 96]], np.float32))[0] == 3
    # only two levels (k_min 2, k_max 3): everything from 112 up goes to 3
    np.testing.assert_array_equal(assign_levels(boxes, 2, 3), [2, 2, 2, 3, 3, 3, 3, 3])
    assert assign_levels(np.zeros((0, 4))).shape == (0,)


def test_scales_by_hand():
    # 2 ** round(log2(h_level / h_max)): 200/800 = 1/4 exactly; 13/50 = 0.26 -> log2 -1.94
    # -> 1/4; 7/50 = 0.14 -> -2.84 -> 1/8 (the padded map can be a little larger)
    assert [infer_scale(h, m) for h, m in [(200, 800), (13, 50), (7, 50)]] == [0.25, 0.25, 0.125]


def two_levels(rng, dtype):
    """2 images (32x40 and 24x36, padded to 32x40), levels '0' (stride 4) and '1' (stride 8),
    boxes of 10 to 200 px: both levels get RoIs (112 px and up -> P3)."""
    feats = {"0": rng.standard_normal((2, 2, 8, 10)).astype(dtype),
             "1": rng.standard_normal((2, 2, 4, 5)).astype(dtype)}
    boxes = []
    for count in (4, 3):
        side = rng.choice([10, 30, 150, 200], (count, 1)) * rng.uniform(0.8, 1.2, (count, 2))
        corner = rng.uniform(-5, 30, (count, 2))
        boxes.append(np.concatenate([corner, corner + side], axis=1).astype(dtype))
    return feats, boxes, [(32, 40), (24, 36)]


@pytest.mark.parametrize("pooler", ["align", "pool"])
def test_forward_pools_each_roi_from_its_level(pooler):
    feats, boxes, sizes = two_levels(np.random.default_rng(0), np.float32)
    out = MultiScaleRoIAlign(("0", "1"), 3, 2, pooler=pooler)(feats, boxes, sizes)
    levels = assign_levels(np.concatenate(boxes), 2, 3)
    assert set(levels.tolist()) == {2, 3}
    rois = np.concatenate([np.concatenate([np.full((len(b), 1), i), b], axis=1)
                           for i, b in enumerate(boxes)]).astype(np.float32)
    for k, level in enumerate(levels):
        feature, scale = feats[str(level - 2)], 2.0 ** -level
        expected = roi_align(feature, rois[k:k + 1], 3, scale, 2) if pooler == "align" \
            else roi_pool(feature, rois[k:k + 1], 3, scale)[0]
        np.testing.assert_array_equal(out[k], expected[0])


@pytest.mark.parametrize("pooler", ["align", "pool"])
def test_backward_matches_finite_differences(pooler):
    rng = np.random.default_rng(1)
    feats, boxes, sizes = two_levels(rng, np.float64)
    if pooler == "pool":  # distinct values, so no bin has two maxima
        feats = {k: rng.permutation(v.size).reshape(v.shape) / v.size for k, v in feats.items()}
    pool = MultiScaleRoIAlign(("0", "1"), (2, 3), 2, pooler=pooler)
    dout = rng.standard_normal((7, 2, 2, 3))
    assert pool(feats, boxes, sizes).dtype == np.float64
    grads = pool.backward(dout)
    assert set(grads) == {"0", "1"}
    for name in feats:
        def scalar(value, name=name):
            return float((pool({**feats, name: value}, boxes, sizes) * dout).sum())

        numeric = numerical_gradient(scalar, feats[name].copy())
        assert np.abs(numeric).max() > 0.1  # the level did receive RoIs
        assert relative_error(grads[name], numeric) < 1e-7


def test_empty_boxes_give_empty_output_and_zero_gradients():
    feats, _, sizes = two_levels(np.random.default_rng(2), np.float32)
    pool = MultiScaleRoIAlign(("0", "1"), output_size=7)
    out = pool(feats, [np.zeros((0, 4), np.float32)] * 2, sizes)
    assert out.shape == (0, 2, 7, 7) and out.dtype == np.float32
    grads = pool.backward(out)
    assert all(g.shape == feats[k].shape and not g.any() for k, g in grads.items())
    # one image without boxes, the other with one small box: P3 gets nothing
    out = pool(feats, [np.zeros((0, 4)), np.array([[1, 1, 9, 9]])], sizes)
    grads = pool.backward(np.ones_like(out))
    assert not grads["1"].any() and grads["0"][1].sum() == pytest.approx(2 * 49)
    assert not grads["0"][0].any()


def test_scales_are_found_on_the_first_call_and_kept():
    feats, boxes, sizes = two_levels(np.random.default_rng(3), np.float32)
    pool = MultiScaleRoIAlign(("0", "1"), 2)
    pool(feats, boxes, sizes)
    assert pool.scales == [0.25, 0.125]
    pool(feats, boxes, [(8, 10), (8, 10)])  # torchvision does not look again either
    assert pool.scales == [0.25, 0.125]


def test_bad_inputs():
    feats, boxes, sizes = two_levels(np.random.default_rng(4), np.float32)
    with pytest.raises(ValueError, match="pooler"):
        MultiScaleRoIAlign(pooler="crop")
    with pytest.raises(ValueError, match="features: missing levels \\['2'\\]"):
        MultiScaleRoIAlign(("0", "1", "2"))(feats, boxes, sizes)
    with pytest.raises(ValueError, match="boxes: expected one array per image \\(2\\)"):
        MultiScaleRoIAlign(("0", "1"))(feats, boxes[:1], sizes)
    with pytest.raises(ValueError, match="boxes: expected x1 <= x2"):
        MultiScaleRoIAlign(("0", "1"))(feats, [boxes[0][:, [2, 1, 0, 3]], boxes[1]], sizes)
    pool = MultiScaleRoIAlign(("0", "1"))
    with pytest.raises(RuntimeError, match="run forward first"):
        pool.backward(np.zeros((7, 2, 7, 7)))
    pool(feats, boxes, sizes)
    with pytest.raises(ValueError, match="dout: expected 7 rows"):
        pool.backward(np.zeros((6, 2, 7, 7)))


@pytest.mark.parity
def test_matches_torchvision_multiscale_roi_align():
    torch = pytest.importorskip("torch")
    from torchvision.ops import MultiScaleRoIAlign as TVPooler

    rng = np.random.default_rng(5)
    # an 800x1088 batch (P2..P5 = 200x272 ... 25x34) and boxes of 10 to 700 px
    feats = {str(i): rng.standard_normal((2, 3, 200 // 2**i, 272 // 2**i)).astype(np.float32)
             for i in range(4)}
    sizes = [(800, 1066), (750, 1088)]
    boxes = []
    for count in (30, 20):
        side = rng.uniform(10, 700, (count, 2))
        corner = rng.uniform(-50, 800, (count, 2))
        boxes.append(np.concatenate([corner, corner + side], axis=1).astype(np.float32))
    assert set(assign_levels(np.concatenate(boxes)).tolist()) == {2, 3, 4, 5}
    ours = MultiScaleRoIAlign(("0", "1", "2", "3"), 7, 2)(feats, boxes, sizes)
    ref = TVPooler(["0", "1", "2", "3"], 7, 2)(
        {k: torch.from_numpy(v) for k, v in feats.items()},
        [torch.from_numpy(b) for b in boxes], sizes)
    # same levels, and roi_align is bitwise torchvision's (see test_roi_align)
    np.testing.assert_array_equal(ours, ref.numpy())
