"""Max pooling, batch normalisation, nearest resizing and the activations: hand-computed
cases, the loop reference, gradients, torch parity, empty and bad inputs."""

import numpy as np
import pytest

from mrcnn_np.nn import functional as F
from mrcnn_np.nn.gradcheck import gradcheck

# (kernel_size, stride, padding): the ResNet stem's pool, the FPN's LastLevelMaxPool
# (kernel 1, stride 2), non-overlapping, overlapping stride 1, and per-axis pairs
POOLS = [(3, 2, 1), (1, 2, 0), (2, None, 0), (3, 1, 1), ((3, 2), (2, 1), (1, 1))]


# -- max pooling --------------------------------------------------------------------------------

def test_max_pool_output_size_and_kernel_one_by_hand():
    x = np.arange(30, dtype=np.float32).reshape(1, 1, 5, 6)
    # floor((5 + 2 - 3) / 2) + 1 = 3 rows, floor((6 + 2 - 3) / 2) + 1 = 3 columns
    out, _ = F.max_pool2d(x, 3, 2, 1)
    # on a ramp each window's maximum is its bottom-right pixel inside the map:
    # rows 1, 3, 4 and columns 1, 3, 5 -> 6r + c
    np.testing.assert_array_equal(out[0, 0], [[7, 9, 11], [19, 21, 23], [25, 27, 29]])
    # kernel 1, stride 2 (FPN's extra level): every other pixel, ceil(5/2) x ceil(6/2)
    out, cache = F.max_pool2d(x, 1, 2)
    np.testing.assert_array_equal(out, x[:, :, ::2, ::2])
    dx = F.max_pool2d_backward(np.ones_like(out), cache)
    expected = np.zeros((1, 1, 5, 6), np.float32)
    expected[:, :, ::2, ::2] = 1  # the gradient goes back to the pixels that were kept
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize(("kernel", "stride", "padding"), POOLS)
def test_max_pool_matches_the_loop_reference_with_ties(kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, (2, 3, 7, 8)).astype(np.float32)  # five values: many ties
    out, cache = F.max_pool2d(x, kernel, stride, padding)
    ref_out, ref_argmax = F.max_pool2d_reference(x, kernel, stride, padding)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(cache[0], ref_argmax)


def test_max_pool_propagates_nan():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    out, _ = F.max_pool2d(x, 2)
    assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 1]).any()


@pytest.mark.parametrize(("kernel", "stride", "padding"), POOLS)
def test_max_pool_gradient_matches_finite_differences(kernel, stride, padding):
    # distinct values at least 1/168 apart: a 1e-6 step never changes which one is largest
    x = np.random.default_rng(1).permutation(168).reshape(2, 3, 4, 7) / 168.0
    errors = gradcheck(lambda x: F.max_pool2d(x, kernel, stride, padding),
                       F.max_pool2d_backward, {"x": x})
    assert errors["x"] < 1e-7


# -- batch norm ---------------------------------------------------------------------------------

def test_frozen_batch_norm_by_hand():
    x = np.array([1.0, 5.0], np.float32).reshape(1, 1, 1, 2)
    # scale = 2 / sqrt(3 + 1) = 1, shift = 1 - 3 * 1 = -2 -> y = x - 2
    out, cache = F.frozen_batch_norm2d(x, np.array([2.0]), np.array([1.0]), np.array([3.0]),
                                       np.array([3.0]), eps=1.0)
    np.testing.assert_array_equal(out.ravel(), [-1.0, 3.0])
    assert out.dtype == np.float32
    # the backward only scales: dx = scale * dout
    np.testing.assert_array_equal(F.frozen_batch_norm2d_backward(np.ones_like(x), cache),
                                  np.ones_like(x))


def test_batch_norm_running_statistics_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 1, 2, 2)
    rm, rv = np.zeros(1, np.float32), np.ones(1, np.float32)
    out, _ = F.batch_norm2d(x, np.ones(1), np.zeros(1), rm, rv, training=True, eps=0.0)
    # mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25 normalises;
    # the unbiased 5/4 * ... = 5/3 feeds running_var:
    # running_mean = 0.9 * 0 + 0.1 * 2.5 = 0.25, running_var = 0.9 * 1 + 0.1 * 5/3
    np.testing.assert_allclose(out.ravel(), (x.ravel() - 2.5) / np.sqrt(1.25), rtol=1e-6)
    np.testing.assert_allclose(rm, [0.25], rtol=1e-6)
    np.testing.assert_allclose(rv, [0.9 + 0.1 * 5 / 3], rtol=1e-6)
    assert rm.dtype == rv.dtype == np.float32  # updated in place, dtype kept


def test_batch_norm_in_eval_is_the_frozen_formula():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    weight, bias, rm = (rng.standard_normal(3).astype(np.float32) for _ in range(3))
    rv = rng.uniform(0.5, 2, 3).astype(np.float32)
    before = (rm.copy(), rv.copy())
    out, _ = F.batch_norm2d(x, weight, bias, rm, rv, training=False)
    frozen, _ = F.frozen_batch_norm2d(x, weight, bias, rm, rv)
    # (x - m) * s * w + b versus x * (w s) + (b - m w s): the same up to float32 rounding
    np.testing.assert_allclose(out, frozen, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rm, before[0])  # eval leaves the statistics alone
    np.testing.assert_array_equal(rv, before[1])


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_match_finite_differences(training):
    rng = np.random.default_rng(3)
    inputs = {"x": rng.standard_normal((2, 5, 3, 4)) * 2 + 1, "weight": rng.standard_normal(5),
              "bias": rng.standard_normal(5)}
    stats = rng.standard_normal(5), rng.uniform(0.5, 2, 5)

    def forward(x, weight, bias):
        # fresh copies: the training forward updates the running statistics in place
        return F.batch_norm2d(x, weight, bias, stats[0].copy(), stats[1].copy(), training)

    errors = gradcheck(forward, F.batch_norm2d_backward, inputs)
    assert max(errors.values()) < 1e-7, errors


# -- nearest resizing ---------------------------------------------------------------------------

@pytest.mark.parametrize(("n_in", "n_out", "expected"), [
    (3, 3, [0, 1, 2]),  # identity
    (2, 4, [0, 0, 1, 1]),  # exactly 2x: d >> 1
    (3, 5, [0, 0, 1, 1, 2]),  # d * 0.6 floored: 0, 0.6, 1.2, 1.8, 2.4
    (5, 3, [0, 1, 3]),  # d * 5/3 floored: 0, 1.67, 3.33
    (3, 7, [0, 0, 0, 1, 1, 2, 2]),  # d * 3/7: 0, .43, .86, 1.29, 1.71, 2.14, 2.57
])
def test_nearest_index_rule_by_hand(n_in, n_out, expected):
    np.testing.assert_array_equal(F.nearest_source_indices(n_in, n_out), expected)


def test_nearest_backward_sums_the_copies():
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    out, cache = F.interpolate_nearest(x, (3, 5))
    # rows 2 -> 3: [0, 0, 1]; columns 3 -> 5: [0, 0, 1, 1, 2]
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]])
    dx = F.interpolate_nearest_backward(np.ones_like(out), cache)
    # input (0, 0) was copied 2 rows x 2 columns = 4 times, (1, 2) 1 x 1 time
    np.testing.assert_array_equal(dx[0, 0], [[4, 4, 2], [2, 2, 1]])


@pytest.mark.parametrize("size", [(8, 10), (7, 3), (2, 9), 5])
def test_nearest_gradient_matches_finite_differences(size):
    x = np.random.default_rng(4).standard_normal((2, 3, 4, 5))
    errors = gradcheck(lambda x: F.interpolate_nearest(x, size),
                       F.interpolate_nearest_backward, {"x": x})
    assert errors["x"] < 1e-7


# -- activations --------------------------------------------------------------------------------

def test_relu_and_sigmoid_by_hand_and_gradients():
    out, cache = F.relu(np.array([-1.0, 0.0, 2.0], np.float32))
    np.testing.assert_array_equal(out, [0, 0, 2])
    # the gradient at 0 is 0 (torch's convention)
    np.testing.assert_array_equal(F.relu_backward(np.ones(3, np.float32), cache), [0, 0, 1])
    with np.errstate(over="raise", invalid="raise"):  # exp never overflows, even at -1000
        out, cache = F.sigmoid(np.array([0.0, 100.0, -100.0, -1000.0], np.float32))
    assert out.dtype == np.float32 and out[0] == 0.5 and out[1] == 1.0 and out[3] == 0.0
    # sigmoid'(0) = 0.5 * (1 - 0.5) = 0.25
    assert F.sigmoid_backward(np.ones(4, np.float32), cache)[0] == 0.25
    x = np.random.default_rng(5).standard_normal((2, 3, 4)) * 3
    assert gradcheck(F.sigmoid, F.sigmoid_backward, {"x": x})["x"] < 1e-7
    assert gradcheck(F.relu, F.relu_backward, {"x": x})["x"] < 1e-7


# -- empty and bad inputs -----------------------------------------------------------------------

def test_empty_inputs_give_empty_outputs():
    x = np.zeros((0, 3, 4, 5), np.float32)
    out, cache = F.max_pool2d(x, 3, 2, 1)
    assert out.shape == (0, 3, 2, 3) and F.max_pool2d_backward(out, cache).shape == x.shape
    out, cache = F.interpolate_nearest(x, (8, 10))
    assert out.shape == (0, 3, 8, 10)
    assert F.interpolate_nearest_backward(out, cache).shape == x.shape
    out, _ = F.frozen_batch_norm2d(x, *np.ones((4, 3), np.float32))
    assert out.shape == x.shape and out.dtype == np.float32
    assert F.relu(x)[0].shape == F.sigmoid(x)[0].shape == x.shape


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: F.max_pool2d(np.zeros((1, 4, 4)), 2), ValueError, "x: expected 4 dims"),
        (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4), np.int32), 2), TypeError, "x"),
        (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), 0), ValueError, "kernel_size"),
        (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), 2, stride=0), ValueError, "stride"),
        (lambda: F.max_pool2d(np.zeros((1, 1, 2, 2)), 3), ValueError, "smaller than the kernel"),
        (lambda: F.max_pool2d_backward(np.zeros((1, 1, 3, 3)),
                                       F.max_pool2d(np.zeros((1, 1, 4, 4)), 2)[1]),
         ValueError, "dout"),
        (lambda: F.frozen_batch_norm2d(np.zeros((1, 2, 1, 1)), np.ones(2), np.zeros(2),
                                       np.zeros(2), np.ones(3)), ValueError, "running_var"),
        (lambda: F.batch_norm2d(np.zeros((1, 2, 2, 2)), np.ones(3), np.zeros(2), np.zeros(2),
                                np.ones(2), True), ValueError, "weight"),
        (lambda: F.interpolate_nearest(np.zeros((1, 1, 2, 2)), (0, 3)), ValueError, "size"),
        (lambda: F.interpolate_nearest(np.zeros((2, 2)), (4, 4)), ValueError, "x"),
        (lambda: F.relu(np.arange(3)), TypeError, "x: expected a floating"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- parity with torch --------------------------------------------------------------------------

@pytest.mark.parity
@pytest.mark.parametrize(("kernel", "stride", "padding"), POOLS)
def test_max_pool_matches_torch_on_ties(kernel, stride, padding):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = rng.integers(-2, 3, (2, 3, 9, 8)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    ref = torch.nn.functional.max_pool2d(xt, kernel, stride, padding)
    dout = rng.standard_normal(ref.shape).astype(np.float32)
    ref.backward(torch.from_numpy(dout))
    out, cache = F.max_pool2d(x, kernel, stride, padding)
    np.testing.assert_array_equal(out, ref.detach().numpy())
    # exact: the same element of each window receives the gradient, summed in the same order
    np.testing.assert_array_equal(F.max_pool2d_backward(dout, cache), xt.grad.numpy())


@pytest.mark.parity
def test_nearest_matches_torch_for_every_small_size_pair():
    torch = pytest.importorskip("torch")
    # every (n_in, n_out) up to 40 x 40, which includes pairs where float32 rounding of
    # n_in / n_out moves floor(d * scale) below the exact value
    ramp = torch.arange(40, dtype=torch.float32)
    for n_in in range(1, 41):
        row = ramp[:n_in].reshape(1, 1, 1, n_in)
        for n_out in range(1, 41):
            ref = torch.nn.functional.interpolate(row, size=(1, n_out), mode="nearest")
            np.testing.assert_array_equal(F.nearest_source_indices(n_in, n_out),
                                          ref.numpy().ravel().astype(np.int64),
                                          err_msg=f"{n_in} -> {n_out}")


@pytest.mark.parity
def test_nearest_resize_and_backward_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    for size in ((10, 14), (8, 3), (5, 7)):
        xt = torch.from_numpy(x).requires_grad_(True)
        ref = torch.nn.functional.interpolate(xt, size=size, mode="nearest")
        dout = rng.standard_normal(ref.shape).astype(np.float32)
        ref.backward(torch.from_numpy(dout))
        out, cache = F.interpolate_nearest(x, size)
        np.testing.assert_array_equal(out, ref.detach().numpy())
        dx = F.interpolate_nearest_backward(dout, cache)
        if size == (10, 14):
            # the FPN's 2x case adds each 2x2 block in torch's order: bit-identical
            np.testing.assert_array_equal(dx, xt.grad.numpy())
        # elsewhere sums of at most 4 gradients, possibly in another order
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parity
def test_batch_norm_running_statistics_match_torch_over_several_steps():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    bn = torch.nn.BatchNorm2d(3, momentum=0.3).train()
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    for _ in range(3):
        x = (rng.standard_normal((2, 3, 5, 4)) * 3 + 2).astype(np.float32)
        with torch.no_grad():
            ref = bn(torch.from_numpy(x))
        out, _ = F.batch_norm2d(x, np.ones(3, np.float32), np.zeros(3, np.float32), rm, rv,
                                True, momentum=0.3)
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-5)
    # three float32 updates of statistics accumulated in float64 here, float32 there
    np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parity
def test_relu_and_sigmoid_match_torch():
    torch = pytest.importorskip("torch")
    x = np.array([-100.0, -3.0, -0.0, 0.0, 0.5, 3.0, 100.0], np.float32)
    dout = np.linspace(-1, 1, 7).astype(np.float32)
    for ours, ours_backward, theirs in ((F.relu, F.relu_backward, torch.relu),
                                        (F.sigmoid, F.sigmoid_backward, torch.sigmoid)):
        xt = torch.from_numpy(x).requires_grad_(True)
        ref = theirs(xt)
        ref.backward(torch.from_numpy(dout))
        out, cache = ours(x)
        # exp in float32 by two libraries: a few ulp. At -100 torch's 1 / (1 + exp(100))
        # gives 0 where ours gives exp(-100) / (1 + exp(-100)) = 3.8e-44, a subnormal float32:
        # atol is the smallest normal float32
        np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-6, atol=1.2e-38)
        np.testing.assert_allclose(ours_backward(dout, cache), xt.grad.numpy(), rtol=1e-6,
                                   atol=1e-12)
