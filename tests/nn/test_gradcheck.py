"""The gradient-check helpers themselves: they must pass right gradients and catch wrong ones."""

import numpy as np
import pytest

from mrcnn_np.nn import functional as F
from mrcnn_np.nn.gradcheck import (
    format_gradcheck_table,
    gradcheck,
    loss_gradcheck,
    numerical_gradient,
    relative_error,
    sampled_numerical_gradient,
)


def test_relative_error_by_hand():
    assert relative_error(np.ones(3), np.ones(3)) == 0.0
    # |1 - 1.1| / max(1, 1.1) = 0.1 / 1.1
    assert relative_error(np.array([1.0, 0.0]), np.array([1.1, 0.0])) == pytest.approx(1 / 11)
    assert relative_error(np.zeros(2), np.zeros(2)) == 0.0  # no division by zero
    with pytest.raises(ValueError, match="shapes differ"):
        relative_error(np.ones(2), np.ones(3))


def test_numerical_gradient_of_a_cubic():
    x = np.array([[-1.0, 0.5], [2.0, 3.0]])
    saved = x.copy()
    grad = numerical_gradient(lambda v: float((v**3).sum()), x)
    # d/dx sum(x^3) = 3 x^2; the central-difference error is eps^2 * f''' / 6 = 1e-12
    np.testing.assert_allclose(grad, 3 * saved**2, rtol=1e-8)
    np.testing.assert_array_equal(x, saved)  # perturbations are undone
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda v: 0.0, np.zeros(2, np.float32))


def test_sampled_numerical_gradient_picks_entries():
    x = np.arange(10.0)
    picks, values = sampled_numerical_gradient(lambda v: float((v**2).sum()), x, count=4)
    assert len(set(picks)) == 4
    np.testing.assert_allclose(values, 2 * x[picks], rtol=1e-8)


def test_gradcheck_checks_every_float_input_by_default_and_skips_none():
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((3, 4)), "w": rng.standard_normal((2, 4)), "b": None}
    errors = gradcheck(F.linear, F.linear_backward, inputs)
    assert set(errors) == {"x", "w"} and max(errors.values()) < 1e-8


def test_gradcheck_runs_in_float64_and_catches_a_wrong_backward():
    x32 = np.linspace(-2, 2, 9, dtype=np.float32)
    assert gradcheck(F.sigmoid, F.sigmoid_backward, {"x": x32})["x"] < 1e-8

    def transposed_weight_gradient(dout, cache):
        dx, dw, db = F.linear_backward(dout, cache)
        return dx, dw[::-1], db  # a typical bug: rows of dW swapped

    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((3, 4)), "w": rng.standard_normal((2, 4)),
              "b": rng.standard_normal(2)}
    errors = gradcheck(F.linear, transposed_weight_gradient, inputs)
    assert errors["x"] < 1e-8 and errors["b"] < 1e-8 and errors["w"] > 0.1


def test_loss_gradcheck_catches_a_missing_mean():
    def loss_without_mean_in_gradient(x):
        loss, grad = F.binary_cross_entropy_with_logits(x, np.ones_like(x))
        return loss, grad * x.size  # forgot to divide by the count

    x = np.linspace(-1, 1, 6)
    assert loss_gradcheck(lambda x: F.binary_cross_entropy_with_logits(x, np.ones_like(x)),
                          {"x": x}, "x")["x"] < 1e-8
    assert loss_gradcheck(loss_without_mean_in_gradient, {"x": x}, "x")["x"] > 0.5


def test_table_marks_failures():
    rows = [("good layer", {"x": (2, 3)}, {"x": 1e-10}),
            ("bad layer", {"x": (4,), "w": (4, 4)}, {"x": 1e-9, "w": 0.3})]
    table = format_gradcheck_table(rows)
    lines = table.splitlines()
    assert "good layer" in lines[2] and lines[2].endswith("yes")
    assert "bad layer" in lines[3] and lines[4].endswith("NO") and "(4, 4)" in lines[4]
    assert "1 FAILED" in lines[-1]
    assert "all gradients agree" in format_gradcheck_table(rows[:1]).splitlines()[-1]
