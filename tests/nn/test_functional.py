"""Every forward/backward pair: a hand-computed case, torch parity, and bad input."""

import numpy as np
import pytest

from mrcnn_np.nn import functional as F
from mrcnn_np.nn.gradcheck import gradcheck, layer_gradchecks, loss_gradcheck


def test_conv2d_by_hand_with_stride_padding_dilation():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2), np.float32)
    # 2x2 sums of the 4x4 ramp, stride 2: (0+1+4+5), (2+3+6+7), (8+9+12+13), (10+11+14+15)
    out, _ = F.conv2d(x, w, np.array([1.0], np.float32), stride=2)
    np.testing.assert_array_equal(out[0, 0], [[11, 19], [43, 51]])
    # dilation 2 picks x[i, j], x[i, j+2], x[i+2, j], x[i+2, j+2]: (0+2+8+10) at (0, 0)
    out, _ = F.conv2d(x, w, None, dilation=2)
    assert out.shape == (1, 1, 2, 2) and out[0, 0, 0, 0] == 20
    # padding 1 with a 1x1 kernel: a border of zeros around x
    out, _ = F.conv2d(x, np.full((1, 1, 1, 1), 2, np.float32), None, padding=1)
    assert out.shape == (1, 1, 6, 6) and out[0, 0, 0].max() == 0 and out[0, 0, 1, 1] == 0
    assert out[0, 0, 4, 4] == 30


def test_conv_transpose2d_by_hand():
    # k = 2, stride 2 (the mask head's deconvolution): each input pixel writes its own 2x2 block
    x = np.array([[[[1.0, 2.0]]]], np.float32)  # (1, 1, 1, 2)
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)  # (Cin 1, Cout 1, 2, 2)
    out, _ = F.conv_transpose2d(x, w, np.array([0.5], np.float32), stride=2)
    np.testing.assert_array_equal(out[0, 0], [[1.5, 2.5, 2.5, 4.5], [3.5, 4.5, 6.5, 8.5]])


def test_linear_relu_sigmoid_by_hand():
    out, _ = F.linear(np.array([[1.0, 2.0]], np.float32), np.array([[3.0, 4.0], [-1, 0]],
                                                                   np.float32),
                      np.array([0.5, 1.0], np.float32))
    np.testing.assert_array_equal(out, [[11.5, 0.0]])  # 3+8+0.5, -1+0+1
    out, _ = F.relu(np.array([-1.0, 0.0, 2.0], np.float32))
    np.testing.assert_array_equal(out, [0, 0, 2])
    out, _ = F.sigmoid(np.array([0.0, -1000.0, 1000.0], np.float32))
    np.testing.assert_array_equal(out, [0.5, 0.0, 1.0])  # no overflow warning at +-1000


def test_max_pool_ties_and_padding_by_hand():
    x = np.array([[[[1.0, 3.0, 3.0], [0.0, 3.0, -1.0], [2.0, 2.0, 5.0]]]], np.float32)
    out, cache = F.max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(out[0, 0], [[3, 3], [3, 5]])
    dx = F.max_pool2d_backward(np.ones_like(out), cache)
    # window (0,0) has 3 at (0,1) and (1,1): the first in row-major order, (0,1), gets it;
    # window (0,1): 3 at (0,1), (0,2), (1,1) -> (0,1); window (1,0): 3 at (1,1) -> (1,1)
    np.testing.assert_array_equal(dx[0, 0], [[0, 2, 0], [0, 1, 0], [0, 0, 1]])
    # -inf padding: a negative map is never beaten by the padding
    out, _ = F.max_pool2d(-np.ones((1, 1, 2, 2), np.float32), 3, stride=2, padding=1)
    assert out[0, 0, 0, 0] == -1


def test_frozen_and_batch_norm_by_hand():
    x = np.array([1.0, 3.0], np.float32).reshape(1, 1, 2, 1)
    out, _ = F.frozen_batch_norm2d(x, np.array([2.0]), np.array([1.0]), np.array([1.0]),
                                   np.array([4.0]), eps=0.0)
    # scale = 2 / sqrt(4) = 1, shift = 1 - 1 * 1 = 0 -> y = x
    np.testing.assert_array_equal(out.ravel(), [1.0, 3.0])
    rm, rv = np.zeros(1, np.float32), np.ones(1, np.float32)
    out, _ = F.batch_norm2d(x, np.ones(1), np.zeros(1), rm, rv, training=True, momentum=0.5,
                            eps=0.0)
    # batch mean 2, biased var 1 -> y = -1, 1; running: mean 0.5*0 + 0.5*2 = 1,
    # var 0.5*1 + 0.5 * (unbiased var 2) = 1.5
    np.testing.assert_allclose(out.ravel(), [-1.0, 1.0])
    np.testing.assert_allclose([rm[0], rv[0]], [1.0, 1.5])


def test_nearest_interpolation_by_hand():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)
    out, cache = F.interpolate_nearest(x, (4, 4))
    np.testing.assert_array_equal(out[0, 0, :, 0], [1, 1, 3, 3])
    dx = F.interpolate_nearest_backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx, np.full_like(x, 4.0))  # each pixel fed a 2x2 block


def test_losses_by_hand():
    # cross-entropy of logits (0, ln 3) with label 1: softmax = (1/4, 3/4) -> -ln(3/4)
    loss, grad = F.cross_entropy(np.array([[0.0, np.log(3.0)]]), np.array([1]))
    assert loss == pytest.approx(-np.log(0.75))
    np.testing.assert_allclose(grad, [[0.25, -0.25]])
    # smooth-L1 with beta 1: |d| = 0.5 -> 0.5 * 0.25 = 0.125; |d| = 3 -> 3 - 0.5 = 2.5
    loss, grad = F.smooth_l1(np.array([0.5, 3.0]), np.zeros(2), beta=1.0)
    assert loss == pytest.approx(2.625)
    np.testing.assert_allclose(grad, [0.5, 1.0])
    loss, _ = F.smooth_l1(np.array([0.5, 3.0]), np.zeros(2), beta=1.0, reduction="mean")
    assert loss == pytest.approx(1.3125)
    # BCE at logit 0 is ln 2 whatever the target; at +-100 it stays finite and exact
    loss, grad = F.binary_cross_entropy_with_logits(np.array([0.0, 100.0, -100.0]),
                                                    np.array([1.0, 0.0, 0.0]))
    assert loss == pytest.approx((np.log(2) + 100 + 0) / 3)
    np.testing.assert_allclose(grad, [-0.5 / 3, 1 / 3, 0.0], atol=1e-12)


def test_nan_propagates_into_the_loss():
    assert np.isnan(F.cross_entropy(np.full((1, 2), np.nan), np.array([0]))[0])
    assert np.isnan(F.binary_cross_entropy_with_logits(np.array([np.nan]), np.ones(1))[0])


def test_cross_entropy_ignore_index_and_empty():
    logits = np.zeros((3, 4))
    loss, grad = F.cross_entropy(logits, np.array([1, -100, 2]), ignore_index=-100)
    assert loss == pytest.approx(np.log(4)) and not grad[1].any()
    loss, grad = F.cross_entropy(logits, np.array([-100] * 3), ignore_index=-100)
    assert loss == 0.0 and not grad.any()


def test_every_backward_matches_finite_differences():
    failures = [(name, arg, err) for name, _, errors in layer_gradchecks()
                for arg, err in errors.items() if not err < 1e-6]
    assert not failures


def test_gradcheck_catches_a_wrong_backward():
    def wrong_backward(dout, cache):
        return F.relu_backward(dout, cache) * 1.01

    assert gradcheck(F.relu, wrong_backward, {"x": np.linspace(-1, 1, 7)}, ("x",))["x"] > 1e-3
    assert loss_gradcheck(lambda x: (float((x**2).sum()), 2 * x), {"x": np.ones(3)}, "x")["x"] \
        < 1e-8


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: F.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((2, 4, 3, 3))), ValueError,
         "x: has 3 channels"),
        (lambda: F.conv2d(np.zeros((3, 5, 5)), np.zeros((2, 3, 3, 3))), ValueError,
         "x: expected 4"),
        (lambda: F.conv2d(np.zeros((1, 3, 5, 5), np.int32), np.zeros((2, 3, 3, 3))), TypeError,
         "x: expected a floating"),
        (lambda: F.conv2d(np.zeros((1, 3, 2, 2)), np.zeros((2, 3, 3, 3))), ValueError,
         "too small"),
        (lambda: F.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((2, 3, 3, 3)), np.zeros(3)),
         ValueError, "b: expected shape"),
        (lambda: F.linear(np.zeros((2, 3)), np.zeros((4, 5))), ValueError, "x: has 3 features"),
        (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 3])), ValueError, "labels"),
        (lambda: F.binary_cross_entropy_with_logits(np.zeros(2), np.zeros(3)), ValueError,
         "targets"),
        (lambda: F.smooth_l1(np.zeros(2), np.zeros(2), reduction="max"), ValueError, "reduction"),
        (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), 2, padding=2), ValueError, "padding"),
        (lambda: F.batch_norm2d(np.zeros((1, 2, 1, 1)), np.ones(2), np.zeros(2), np.zeros(2),
                                np.ones(2), training=True), ValueError, "more than one value"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- parity with torch.nn.functional (forward and autograd backward) -----------------------

def _torch_grads(torch, fn, *arrays):
    tensors = [torch.from_numpy(a).requires_grad_(True) for a in arrays]
    out = fn(*tensors)
    dout = torch.from_numpy(np.random.default_rng(5).standard_normal(tuple(out.shape))
                            .astype(np.float32))
    out.backward(dout)
    return out.detach().numpy(), dout.numpy(), [t.grad.numpy() for t in tensors]


@pytest.mark.parity
@pytest.mark.parametrize(("stride", "padding", "dilation", "kernel"),
                         [(1, 1, 1, (3, 3)), (2, 3, 2, (3, 2)), (2, 0, 1, (1, 1)),
                          (1, 0, 1, (1, 1))])
def test_conv2d_matches_torch(stride, padding, dilation, kernel):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 11, 9)).astype(np.float32)
    w = rng.standard_normal((7, 5, *kernel)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    ref, dout, grads = _torch_grads(
        torch, lambda x, w, b: torch.nn.functional.conv2d(x, w, b, stride, padding, dilation),
        x, w, b)
    out, cache = F.conv2d(x, w, b, stride, padding, dilation)
    # float32 sums of up to 45 products in another order: ~1e-6 relative
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(F.conv2d_backward(dout, cache), grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parity
def test_conv_transpose2d_linear_and_pools_match_torch():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((3, 4, 4, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    ref, dout, grads = _torch_grads(
        torch, lambda x, w, b: tf.conv_transpose2d(x, w, b, stride=2, padding=1), x, w, b)
    out, cache = F.conv_transpose2d(x, w, b, stride=2, padding=1)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(F.conv_transpose2d_backward(dout, cache), grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)

    xl, wl, bl = (rng.standard_normal(s).astype(np.float32) for s in ((6, 9), (4, 9), (4,)))
    ref, dout, grads = _torch_grads(torch, tf.linear, xl, wl, bl)
    out, cache = F.linear(xl, wl, bl)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(F.linear_backward(dout, cache), grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    # rounded values make ties: torch and we must give the gradient to the same element
    xp = np.round(rng.standard_normal((2, 3, 9, 8)), 0).astype(np.float32)
    for args in ((3, 2, 1), (2, 2, 0), (1, 2, 0)):
        ref, dout, (dx_ref,) = _torch_grads(torch, lambda t, a=args: tf.max_pool2d(t, *a), xp)
        out, cache = F.max_pool2d(xp, *args)
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(F.max_pool2d_backward(dout, cache), dx_ref)

    xn = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    ref, dout, (dx_ref,) = _torch_grads(torch, lambda t: tf.interpolate(t, size=(8, 10)), xn)
    out, cache = F.interpolate_nearest(xn, (8, 10))
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_allclose(F.interpolate_nearest_backward(dout, cache), dx_ref, rtol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch_including_running_stats(training):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32) * 2 + 1
    weight, bias = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(
        np.float32)
    rm, rv = rng.standard_normal(3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)
    bn = torch.nn.BatchNorm2d(3, momentum=0.1).train(training)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(weight))
        bn.bias.copy_(torch.from_numpy(bias))
        bn.running_mean.copy_(torch.from_numpy(rm))
        bn.running_var.copy_(torch.from_numpy(rv))
    ref, dout, (dx_ref,) = _torch_grads(torch, bn, x)
    ours_rm, ours_rv = rm.copy(), rv.copy()
    out, cache = F.batch_norm2d(x, weight, bias, ours_rm, ours_rv, training)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    dx, dweight, dbias = F.batch_norm2d_backward(dout, cache)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dweight, bn.weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dbias, bn.bias.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours_rm, bn.running_mean.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours_rv, bn.running_var.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parity
def test_frozen_batch_norm_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.ops.misc import FrozenBatchNorm2d

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    stats = [rng.standard_normal(3).astype(np.float32) for _ in range(3)]
    stats.append(rng.uniform(0.5, 2, 3).astype(np.float32))
    for eps in (1e-5, 0.0):
        frozen = FrozenBatchNorm2d(3, eps=eps)
        for name, value in zip(("weight", "bias", "running_mean", "running_var"), stats):
            getattr(frozen, name).copy_(torch.from_numpy(value))
        out, _ = F.frozen_batch_norm2d(x, *stats, eps=eps)
        np.testing.assert_allclose(out, frozen(torch.from_numpy(x)).numpy(), rtol=1e-6,
                                   atol=1e-6)


@pytest.mark.parity
def test_losses_match_torch():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((7, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, 7)
    labels[3] = -100
    t_logits = torch.from_numpy(logits).requires_grad_(True)
    ref = tf.cross_entropy(t_logits, torch.from_numpy(labels), ignore_index=-100)
    ref.backward()
    loss, grad = F.cross_entropy(logits, labels, ignore_index=-100)
    assert loss == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(grad, t_logits.grad.numpy(), rtol=1e-5, atol=1e-7)

    pred, target = (rng.standard_normal((6, 4)).astype(np.float32) * 0.2 for _ in range(2))
    for reduction in ("sum", "mean"):
        t_pred = torch.from_numpy(pred).requires_grad_(True)
        ref = tf.smooth_l1_loss(t_pred, torch.from_numpy(target), beta=1 / 9,
                                reduction=reduction)
        ref.backward()
        loss, grad = F.smooth_l1(pred, target, 1 / 9, reduction)
        assert loss == pytest.approx(ref.item(), rel=1e-5)
        np.testing.assert_allclose(grad, t_pred.grad.numpy(), rtol=1e-5, atol=1e-7)

    logits = np.concatenate([rng.standard_normal(20) * 4, [100.0, -100.0, 100.0, -100.0]])
    logits = logits.astype(np.float32)
    targets = np.concatenate([rng.random(20), [0, 1, 1, 0]]).astype(np.float32)
    t_logits = torch.from_numpy(logits).requires_grad_(True)
    ref = tf.binary_cross_entropy_with_logits(t_logits, torch.from_numpy(targets))
    ref.backward()
    loss, grad = F.binary_cross_entropy_with_logits(logits, targets)
    assert np.isfinite(loss) and loss == pytest.approx(ref.item(), rel=1e-5)
    np.testing.assert_allclose(grad, t_logits.grad.numpy(), rtol=1e-5, atol=1e-8)
