"""The worker threads that run convolutions and products (`kernels.run_in_workers`), the paths
they take (bands of one image, several small images to a band, row blocks of a product), and
the fused per-channel kernel of the frozen batch norm."""

import threading

import numba
import numpy as np
import pytest

from mrcnn_np.nn import functional as F
from mrcnn_np.nn import kernels


@pytest.fixture(params=["workers", "serial"])
def threads(request, monkeypatch):
    """Run a test with the worker threads and with the serial fallback (no OpenBLAS found)."""
    if request.param == "serial":
        monkeypatch.setattr(kernels, "_OPENBLAS_THREADS", None)
    return request.param


def test_run_in_workers_runs_each_item_once_with_one_state_per_thread(threads):
    seen, states, lock = [], [], threading.Lock()

    def make_state():
        with lock:
            states.append(threading.get_ident())
        return len(states)

    def task(state, i):
        with lock:
            seen.append(i)

    kernels.run_in_workers(task, 50, make_state)
    assert sorted(seen) == list(range(50))
    # one state per thread that ran: the caller and at most worker_count() - 1 others
    assert 1 <= len(states) == len(set(states)) <= kernels.worker_count()
    kernels.run_in_workers(task, 0, make_state)  # nothing to do is fine


def test_run_in_workers_propagates_errors_and_restores_blas_threads(threads):
    before = None if kernels._OPENBLAS_THREADS is None else kernels._OPENBLAS_THREADS[0]()

    def task(state, i):
        if i == 7:
            raise ValueError("item 7")

    with pytest.raises(ValueError, match="item 7"):
        kernels.run_in_workers(task, 20)
    if before is not None:
        assert kernels._OPENBLAS_THREADS[0]() == before


def test_worker_count_follows_numba():
    if kernels._OPENBLAS_THREADS is None:
        assert kernels.worker_count() == 1
    else:
        assert kernels.worker_count() == numba.get_num_threads()


def test_im2col_rows_into_places_images_side_by_side():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    taps = (3, 3, 1, 1, 1, 1, 1, 1)  # 3x3, stride 1, padding 1: out 4x5 = 20 columns
    whole = kernels.im2col(x, *taps, 4, 5)  # (2, 27, 20)
    flat = np.full(27 * 40, np.nan, np.float32)
    for n in range(2):  # image n fills columns 20n .. 20n + 19 of a (27, 40) matrix
        kernels.im2col_rows_into(x[n], flat, 40, 20 * n, 0, 4, 5, *taps)
    np.testing.assert_array_equal(flat.reshape(27, 40), np.concatenate(whole, axis=1))


# (x shape, w shape, padding): many small images, as the mask head's RoIs, which go several
# to a band; 3x3 and 1x1 kernels
SMALL_IMAGES = [((12, 4, 3, 5), (6, 4, 3, 3), 1), ((13, 4, 3, 5), (6, 4, 1, 1), 0),
                ((9, 2, 1, 1), (3, 2, 1, 1), 0)]


@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize(("x_shape", "w_shape", "padding"), SMALL_IMAGES)
def test_conv2d_of_many_small_images_matches_the_loop_reference(threads, has_bias, x_shape,
                                                                w_shape, padding):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if has_bias else None
    out, _ = F.conv2d(x, w, b, 1, padding)
    np.testing.assert_allclose(out, F.conv2d_reference(x, w, b, 1, padding), rtol=1e-12,
                               atol=1e-12)


def test_conv_transpose2d_of_many_images_matches_the_loop_reference(threads):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 3, 4, 4))
    w = rng.standard_normal((3, 2, 2, 2))
    out, _ = F.conv_transpose2d(x, w, np.ones(2), stride=2)
    np.testing.assert_allclose(out, F.conv_transpose2d_reference(x, w, np.ones(2), stride=2),
                               rtol=1e-12, atol=1e-12)


def test_linear_in_row_blocks_is_the_product(threads):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 17))  # blocks of max(ceil(300 / 2 workers), 64) rows
    w = rng.standard_normal((5, 17))
    out, _ = F.linear(x, w, np.arange(5.0))
    np.testing.assert_allclose(out, x @ w.T + np.arange(5.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_shift_channels_is_bitwise_numpy(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
    scale, shift = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    out = np.empty_like(x)
    kernels.scale_shift_channels(x, scale, shift, out)
    # the product rounded to the dtype, then the sum: no fused multiply-add
    np.testing.assert_array_equal(out, x * scale[:, None, None] + shift[:, None, None])



@pytest.mark.parametrize("kernel", [1, 3])
def test_no_images_give_empty_outputs_and_zero_weight_gradients(threads, kernel):
    # e.g. the mask head when no RoI is positive: 0 images through a 1x1 or 3x3 conv
    w = np.ones((4, 3, kernel, kernel), np.float32)
    out, cache = F.conv2d(np.zeros((0, 3, 5, 5), np.float32), w, np.zeros(4), 1, kernel // 2)
    dx, dw, db = F.conv2d_backward(out, cache)
    assert out.shape == (0, 4, 5, 5) and dx.shape == (0, 3, 5, 5)
    assert dw.shape == w.shape and not dw.any() and not db.any()


def test_convolution_gradients_are_the_same_on_every_run(threads):
    # the workers pick bands in whatever order they come free; the sums must not depend on it
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 8, 40, 30)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    out, cache = F.conv2d(x, w, np.zeros(6, np.float32), 1, 1)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    first = F.conv2d_backward(dout, cache)
    for _ in range(5):
        for a, b in zip(F.conv2d_backward(dout, cache), first):
            np.testing.assert_array_equal(a, b)
