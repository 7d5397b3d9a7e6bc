"""Losses returning (loss, dinput): hand-computed values, gradients, edge cases, torch parity."""

import numpy as np
import pytest

from mrcnn_np.nn import functional as F
from mrcnn_np.nn.gradcheck import loss_gradcheck


def test_cross_entropy_by_hand():
    # two equal logits: softmax (1/2, 1/2), loss -ln(1/2) = ln 2,
    # gradient softmax - one_hot = (1/2 - 1, 1/2)
    loss, grad = F.cross_entropy(np.zeros((1, 2), np.float32), np.array([0]))
    assert isinstance(loss, float) and loss == pytest.approx(np.log(2))
    np.testing.assert_allclose(grad, [[-0.5, 0.5]])
    assert grad.dtype == np.float32
    # the mean over rows divides each row's gradient by the row count (2 here)
    loss, grad = F.cross_entropy(np.zeros((2, 2)), np.array([0, 1]))
    assert loss == pytest.approx(np.log(2))
    np.testing.assert_allclose(grad, [[-0.25, 0.25], [0.25, -0.25]])


def test_cross_entropy_is_stable_for_large_logits():
    # exp(1000) overflows, but softmax only needs differences: loss = ln(1 + e^-1000) = 0
    with np.errstate(over="raise", invalid="raise"):
        loss, grad = F.cross_entropy(np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([0, 0]))
    assert loss == pytest.approx(1000.0 / 2)  # row 2 costs 1000, row 1 costs 0
    np.testing.assert_allclose(grad, [[0, 0], [-0.5, 0.5]], atol=1e-12)


def test_cross_entropy_ignored_and_empty_rows():
    # ignored rows are neither range-checked nor counted in the mean
    logits = np.array([[0.0, np.log(3.0)], [5.0, -5.0]])
    loss, grad = F.cross_entropy(logits, np.array([1, -1]), ignore_index=-1)
    assert loss == pytest.approx(-np.log(0.75))  # softmax (1/4, 3/4), label 1
    assert not grad[1].any()
    loss, grad = F.cross_entropy(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    assert loss == 0.0 and grad.shape == (0, 3) and grad.dtype == np.float32


def test_smooth_l1_by_hand():
    pred, target = np.array([0.5, 2.0, -3.0]), np.zeros(3)
    # beta 1: 0.5 * 0.25 / 1 = 0.125 (quadratic), 2 - 0.5 = 1.5 and 3 - 0.5 = 2.5 (linear)
    loss, grad = F.smooth_l1(pred, target, beta=1.0)
    assert loss == pytest.approx(4.125)
    np.testing.assert_allclose(grad, [0.5, 1.0, -1.0])  # x / beta, sign(x), sign(x)
    loss, grad = F.smooth_l1(pred, target, beta=1.0, reduction="mean")
    assert loss == pytest.approx(4.125 / 3)
    np.testing.assert_allclose(grad, [0.5 / 3, 1 / 3, -1 / 3])
    # beta 0 is the L1 loss: 0.5 + 2 + 3, gradient sign(x) (0 at x = 0, as torch)
    loss, grad = F.smooth_l1(np.array([0.5, 2.0, -3.0, 0.0]), np.zeros(4), beta=0.0)
    assert loss == pytest.approx(5.5)
    np.testing.assert_array_equal(grad, [1, 1, -1, 0])
    # the default beta is 1/9: |x| = 0.05 < 1/9 gives 0.5 * 0.0025 * 9 = 0.01125
    assert F.smooth_l1(np.array([0.05]), np.zeros(1))[0] == pytest.approx(0.01125)
    assert F.smooth_l1(np.zeros(0), np.zeros(0), reduction="mean")[0] == 0.0


def test_bce_by_hand_and_at_plus_minus_100():
    # logit 0: sigmoid 1/2, loss ln 2 for any target; gradient (1/2 - t) / count
    loss, grad = F.binary_cross_entropy_with_logits(np.zeros(2), np.array([1.0, 0.25]))
    assert loss == pytest.approx(np.log(2))
    np.testing.assert_allclose(grad, [(0.5 - 1) / 2, (0.5 - 0.25) / 2])
    # +-100 in float32: right answers cost e^-100 ~ 4e-44 (0 in float32), wrong ones 100
    logits = np.array([100.0, -100.0, 100.0, -100.0], np.float32)
    loss, grad = F.binary_cross_entropy_with_logits(logits, np.array([1.0, 0.0, 0.0, 1.0]))
    assert np.isfinite(loss) and loss == pytest.approx((0 + 0 + 100 + 100) / 4)
    np.testing.assert_allclose(grad, [0, 0, 0.25, -0.25], atol=1e-12)
    assert grad.dtype == np.float32


@pytest.mark.parametrize("case", ["cross_entropy", "smooth_l1 sum", "smooth_l1 mean",
                                  "smooth_l1 beta 0", "bce"])
def test_loss_gradients_match_finite_differences(case):
    rng = np.random.default_rng(0)
    # differences kept away from the kinks (|x| = beta, and 0 for L1), where
    # central differences are not the derivative
    magnitude = rng.uniform(0.2, 2.0, (5, 4)) * rng.choice([-1, 1], (5, 4))
    magnitude[0, :2] = [0.05, -0.08]  # quadratic zone of beta 1/9
    target = rng.standard_normal((5, 4))
    if case == "cross_entropy":
        labels = np.array([0, 3, -100, 1, 3])
        errors = loss_gradcheck(lambda x: F.cross_entropy(x, labels, ignore_index=-100),
                                {"x": rng.standard_normal((5, 4)) * 2}, "x")
    elif case.startswith("smooth_l1"):
        beta, reduction = (0.0, "sum") if case.endswith("beta 0") else (1 / 9, case.split()[1])
        errors = loss_gradcheck(lambda x: F.smooth_l1(x, target, beta, reduction),
                                {"x": target + magnitude}, "x")
    else:
        soft_targets = rng.random((5, 4))
        errors = loss_gradcheck(lambda x: F.binary_cross_entropy_with_logits(x, soft_targets),
                                {"x": rng.standard_normal((5, 4)) * 4}, "x")
    assert errors["x"] < 1e-7


def test_nan_input_gives_a_nan_loss():
    # a diverging run must show up in the loss, not crash
    assert np.isnan(F.smooth_l1(np.array([np.nan, 1.0]), np.zeros(2))[0])
    assert np.isnan(F.binary_cross_entropy_with_logits(np.zeros(1), np.array([np.nan]))[0])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError,
         "labels: expected an integer"),
        (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2])), ValueError,
         "labels: expected shape \\(2,\\)"),
        (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([-1, 0])), ValueError,
         "labels: expected values in \\[0, 3\\)"),
        (lambda: F.cross_entropy(np.zeros(3), np.array([0])), ValueError, "logits: expected 2"),
        (lambda: F.cross_entropy(np.zeros((1, 3), np.int64), np.array([0])), TypeError,
         "logits"),
        (lambda: F.smooth_l1(np.zeros(2), np.zeros(2), beta=-1.0), ValueError, "beta"),
        (lambda: F.smooth_l1(np.zeros(2), np.zeros((2, 1))), ValueError, "target"),
        (lambda: F.smooth_l1(np.zeros(2, np.int32), np.zeros(2)), TypeError, "pred"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parity
def test_losses_match_torch_without_ignore_and_with_l1():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((9, 6)) * 4).astype(np.float32)
    labels = rng.integers(0, 6, 9)
    lt = torch.from_numpy(logits).requires_grad_(True)
    ref = tf.cross_entropy(lt, torch.from_numpy(labels))
    ref.backward()
    loss, grad = F.cross_entropy(logits, labels)
    # float32 log-sum-exp of 6 terms in two libraries: ~1e-7 relative
    assert loss == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=1e-5, atol=1e-7)

    pred = rng.standard_normal((7, 4)).astype(np.float32)
    target = rng.standard_normal((7, 4)).astype(np.float32)
    for beta, reduction in ((0.0, "sum"), (0.0, "mean"), (1.0, "mean")):
        pt = torch.from_numpy(pred).requires_grad_(True)
        ref = tf.smooth_l1_loss(pt, torch.from_numpy(target), beta=beta, reduction=reduction)
        ref.backward()
        loss, grad = F.smooth_l1(pred, target, beta, reduction)
        assert loss == pytest.approx(ref.item(), rel=1e-6)
        np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-6, atol=1e-8)

    # saturated logits with soft and hard targets
    logits = np.array([100, -100, 100, -100, 30, -30, 0.5], np.float32)
    targets = np.array([1, 0, 0, 1, 0.3, 0.7, 0.2], np.float32)
    lt = torch.from_numpy(logits).requires_grad_(True)
    ref = tf.binary_cross_entropy_with_logits(lt, torch.from_numpy(targets))
    ref.backward()
    loss, grad = F.binary_cross_entropy_with_logits(logits, targets)
    assert loss == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=1e-6, atol=1e-9)
