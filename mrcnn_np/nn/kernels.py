"""Numba hot loops of the layer library: im2col / col2im and max pooling, and the worker
threads that run a convolution's matrix products.

im2col turns a convolution into one matrix product (Chellapilla et al., 2006, "High
performance convolutional neural networks for document processing"): row (c, ky, kx) and
column (i, j) of the im2col matrix hold the input pixel that kernel tap (ky, kx) of channel c
sees when the kernel sits at output pixel (i, j). col2im is its adjoint (a scatter-add), which
is both the input gradient of a convolution and the forward pass of a transposed convolution.

The kernels work on a band of output rows `i0 <= i < i1` of one image, so `functional` can
stream a large feature map through a cache-sized buffer instead of materialising the whole
im2col matrix (9x the input for a 3x3 kernel). `im2col` and `col2im` are the whole-image
versions that notebooks and tests look at. `functional.conv2d_reference` is the readable loop
these are tested against. With the valid column range of every row computed up front, the
inner loops are contiguous copies that LLVM vectorises, so one core streams a band at memory
speed. The pooling kernels are parallel over (image, channel) planes, which they write
race-free.

Threads. A multi-threaded OpenBLAS product makes its threads wait for each other, spinning,
many times inside every call; when the machine has more runnable threads than cores, one
descheduled thread stalls the others, and the whole model ran 2.7x slower on two threads than
on one (benchmarks/bench_model.py on a shared 2-core machine). So `run_in_workers` hands
independent pieces of work (bands of a convolution, row blocks of a product) to
`numba.get_num_threads()` Python threads, each calling single-threaded BLAS and a `nogil`
band kernel: a worker that falls behind only delays the end of the call, and a free worker
takes the next piece. Where NumPy's OpenBLAS cannot be found (another BLAS), the pieces run
one after another with the BLAS's own threads.
"""

import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy as np


@numba.njit(cache=True)
def _valid_columns(offset, stride, width, out_w):
    """The output columns j whose input column j*stride + offset lies inside [0, width)."""
    j_lo = min(out_w, max(0, -(offset // stride)))
    j_hi = max(j_lo, min(out_w, (width - 1 - offset) // stride + 1))
    return j_lo, j_hi


# The kernels index flat views with unsigned integers: Numba then skips its negative-index
# wraparound check, and LLVM vectorises the contiguous inner loops (2-3x faster than slices).
@numba.njit(cache=True, nogil=True)
def im2col_rows(x, cols, i0, i1, kh, kw, sh, sw, ph, pw, dh, dw):
    """Fill `cols` (C*kh*kw, (i1-i0)*out_w) with the receptive fields of output rows
    [i0, i1) of the image `x` (C, H, W), both C-contiguous. Taps in the zero padding read 0."""
    im2col_rows_into(x, cols.ravel(), cols.shape[1], 0, i0, i1, cols.shape[1] // (i1 - i0),
                     kh, kw, sh, sw, ph, pw, dh, dw)


@numba.njit(cache=True, nogil=True)
def im2col_rows_into(x, flat_cols, row_stride, offset, i0, i1, out_w, kh, kw, sh, sw, ph, pw,
                     dh, dw):
    """`im2col_rows` into the columns offset .. offset + (i1-i0)*out_w of a matrix whose rows
    are `row_stride` apart in the flat buffer `flat_cols` (several images side by side)."""
    channels, height, width = x.shape
    flat_x = x.ravel()
    for row in range(channels * kh * kw):
        c = row // (kh * kw)
        ky = (row // kw) % kh
        shift = (row % kw) * dw - pw
        j_lo, j_hi = _valid_columns(shift, sw, width, out_w)
        for i in range(i0, i1):
            y = i * sh - ph + ky * dh
            base = row * row_stride + offset + (i - i0) * out_w  # where pixel (i, 0) goes
            if y < 0 or y >= height:
                j_lo_row, j_hi_row = 0, 0  # the whole row of taps is in the padding
            else:
                j_lo_row, j_hi_row = j_lo, j_hi
            for j in range(j_lo_row):
                flat_cols[np.uintp(base + j)] = 0
            start = (c * height + y) * width + shift  # where input column j*sw + shift is
            if sw == 2:  # a constant stride vectorises (LLVM handles stride 1 by itself)
                for j in range(j_lo_row, j_hi_row):
                    flat_cols[np.uintp(base + j)] = flat_x[np.uintp(start + j * 2)]
            else:
                for j in range(j_lo_row, j_hi_row):
                    flat_cols[np.uintp(base + j)] = flat_x[np.uintp(start + j * sw)]
            for j in range(j_hi_row, out_w):
                flat_cols[np.uintp(base + j)] = 0


@numba.njit(cache=True, nogil=True)
def col2im_rows(cols, x, i0, i1, kh, kw, sh, sw, ph, pw, dh, dw):
    """The adjoint of `im2col_rows`: add every entry of `cols` into the pixel of `x`
    (C, H, W) it was read from (entries in the padding are dropped)."""
    channels, height, width = x.shape
    out_w = cols.shape[1] // (i1 - i0)
    flat_x, flat_cols = x.ravel(), cols.ravel()
    for row in range(channels * kh * kw):
        c = row // (kh * kw)
        ky = (row // kw) % kh
        offset = (row % kw) * dw - pw
        j_lo, j_hi = _valid_columns(offset, sw, width, out_w)
        for i in range(i0, i1):
            y = i * sh - ph + ky * dh
            if y < 0 or y >= height:
                continue
            base = row * cols.shape[1] + (i - i0) * out_w
            start = (c * height + y) * width + offset
            if sw == 2:
                for j in range(j_lo, j_hi):
                    flat_x[np.uintp(start + j * 2)] += flat_cols[np.uintp(base + j)]
            else:
                for j in range(j_lo, j_hi):
                    flat_x[np.uintp(start + j * sw)] += flat_cols[np.uintp(base + j)]


def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):
    """Whole-image im2col: (N, C, H, W) -> (N, C*kh*kw, out_h*out_w), rows ordered
    (c, ky, kx) like a flattened weight (Cout, C, kh, kw)."""
    x = np.ascontiguousarray(x)
    n_img, channels = x.shape[:2]
    cols = np.empty((n_img, channels * kh * kw, out_h * out_w), dtype=x.dtype)
    for n in range(n_img):
        im2col_rows(x[n], cols[n], 0, out_h, kh, kw, sh, sw, ph, pw, dh, dw)
    return cols


def col2im(cols, channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):
    """Whole-image col2im: (N, C*kh*kw, out_h*out_w) -> (N, C, H, W), summing overlaps."""
    cols = np.ascontiguousarray(cols)
    x = np.zeros((cols.shape[0], channels, height, width), dtype=cols.dtype)
    for n in range(cols.shape[0]):
        col2im_rows(cols[n], x[n], 0, out_h, kh, kw, sh, sw, ph, pw, dh, dw)
    return x


@numba.njit(cache=True, parallel=True)
def max_pool_forward(x, kh, kw, sh, sw, ph, pw, out_h, out_w):
    """Max over each window, the padding counting as -inf. `argmax` is the flat index
    y*W + x of the first maximum in row-major scan order (torch's tie rule); a NaN wins and
    stays, so NaN propagates as in torch."""
    n_img, channels, height, width = x.shape
    planes = x.reshape(n_img * channels, height * width)
    out = np.empty((n_img * channels, out_h * out_w), dtype=x.dtype)
    argmax = np.empty((n_img * channels, out_h * out_w), dtype=np.int64)
    for plane in numba.prange(n_img * channels):
        src = planes[plane]
        for i in range(out_h):
            y_lo, y_hi = max(i * sh - ph, 0), min(i * sh - ph + kh, height)
            for j in range(out_w):
                x_lo, x_hi = max(j * sw - pw, 0), min(j * sw - pw + kw, width)
                best, best_index = -np.inf, y_lo * width + x_lo
                for y in range(y_lo, y_hi):
                    for index in range(y * width + x_lo, y * width + x_hi):
                        v = src[np.uintp(index)]
                        if v > best or np.isnan(v):
                            best, best_index = v, index
                out[plane, i * out_w + j] = best
                argmax[plane, i * out_w + j] = best_index
    return (out.reshape(n_img, channels, out_h, out_w),
            argmax.reshape(n_img, channels, out_h, out_w))


@numba.njit(cache=True, parallel=True)
def max_pool_backward(dout, argmax, height, width):
    """Route each output gradient to the input pixel its maximum came from."""
    n_img, channels, out_h, out_w = dout.shape
    grads = dout.reshape(n_img * channels, out_h * out_w)
    sources = argmax.reshape(n_img * channels, out_h * out_w)
    dx = np.zeros((n_img * channels, height * width), dtype=dout.dtype)
    for plane in numba.prange(n_img * channels):
        for k in range(out_h * out_w):
            dx[plane, np.uintp(sources[plane, k])] += grads[plane, k]
    return dx.reshape(n_img, channels, height, width)


@numba.njit(cache=True, parallel=True)
def scale_shift_channels(x, scale, shift, out):
    """out[n, c] = x[n, c] * scale[c] + shift[c] for x and out (N, C, H, W) C-contiguous, the
    (image, channel) planes in parallel; the product is rounded before the sum, as NumPy's
    two operations. (`out` comes from NumPy: a large array allocated inside Numba was 4x
    slower to fill.)"""
    n_img, channels, height, width = x.shape
    planes = x.reshape(n_img * channels, height * width)
    out_planes = out.reshape(n_img * channels, height * width)
    for plane in numba.prange(n_img * channels):
        s, t = scale[plane % channels], shift[plane % channels]
        src, dst = planes[plane], out_planes[plane]
        for k in range(height * width):
            dst[k] = src[k] * s + t


@numba.njit(cache=True, parallel=True)
def _parallel_probe(n):
    total = 0
    for i in numba.prange(n):
        total += i
    return total


def warm_up_parallel():
    """Run a tiny parallel kernel so Numba picks (and reports) its threading layer."""
    return _parallel_probe(8)


# -- worker threads -----------------------------------------------------------------------------

def _find_openblas_threads():
    """(get, set) of the thread count of the OpenBLAS in NumPy's wheels, or None."""
    folder = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(folder, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""),
                               ("openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                put.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
                return get, put
    return None


_OPENBLAS_THREADS = _find_openblas_threads()
_REGION = threading.Lock()  # one worker region at a time: it changes BLAS's thread count
_pool = None  # (ThreadPoolExecutor, its number of threads), made on first use


def _forget_pool():
    """In a forked child the pool's threads do not exist: make a new pool when needed."""
    global _pool, _REGION
    _pool, _REGION = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


@contextmanager
def _single_threaded_blas():
    get, put = _OPENBLAS_THREADS
    previous = get()
    put(1)
    try:
        yield
    finally:
        put(previous)


def _executor(workers):
    global _pool
    if _pool is None or _pool[1] < workers:
        if _pool is not None:
            _pool[0].shutdown(wait=False)
        _pool = (ThreadPoolExecutor(workers, thread_name_prefix="mrcnn_np"), workers)
    return _pool[0]


def worker_count():
    """How many threads `run_in_workers` uses: Numba's thread count, if BLAS can be made
    single-threaded (else 1)."""
    return numba.get_num_threads() if _OPENBLAS_THREADS is not None else 1


def run_in_workers(task, count, make_state=lambda: None):
    """Call task(state, i) for i = 0 .. count-1, each i once, on `worker_count()` threads
    (the caller's among them), each with its own state = make_state() (a scratch buffer).
    Tasks must write disjoint outputs and release the GIL in their heavy parts (NumPy's
    matmul, `nogil` kernels); BLAS runs single-threaded meanwhile. Exceptions propagate."""
    workers = min(worker_count(), count)
    if workers <= 1 or _REGION.locked():
        state = make_state()
        for i in range(count):
            task(state, i)
        return
    items = iter(range(count))  # shared: each next() hands out one item (under the GIL)

    def work():
        state = make_state()
        for i in items:
            task(state, i)

    with _REGION, _single_threaded_blas():
        futures = [_executor(workers - 1).submit(work) for _ in range(workers - 1)]
        try:
            work()
        finally:
            for future in futures:
                future.result()
