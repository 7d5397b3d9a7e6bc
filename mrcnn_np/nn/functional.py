"""Forward/backward pairs for every layer and loss (the CS231n convention).

`out, cache = f(x, ...)` and `grads = f_backward(dout, cache)`; losses return
`(loss, dinput)`, the gradient of the loss value with respect to the input. Arguments and
weight layouts are PyTorch's (conv weight (Cout, Cin, kh, kw), transposed-conv weight
(Cin, Cout, kh, kw), linear weight (out, in)), so torchvision weights load as they are.
Arrays are float32; float64 works too (gradient checks) and keeps its dtype.
"""

import numpy as np

from . import kernels


def _pair(value, name):
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 0 for v in pair):
        raise ValueError(f"{name}: expected a non-negative int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_float(x, name, ndim=None):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating dtype (float32), got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dims, got shape {x.shape}")
    return x


def _check_bias(b, channels):
    if b is None:
        return None
    _check_float(b, "b")
    if b.shape != (channels,):
        raise ValueError(f"b: expected shape ({channels},), got {b.shape}")
    return b


def conv_output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# -- convolution ------------------------------------------------------------------------------

def conv2d_reference(x, w, b=None, stride=1, padding=0, dilation=1):
    """The definition, as loops: out[n, co, i, j] = b[co] +
    sum_{ci, ky, kx} w[co, ci, ky, kx] * x_padded[n, ci, i*s + ky*d, j*s + kx*d]."""
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    n_img, _, height, width = x.shape
    c_out, c_in, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out_h = conv_output_size(height, kh, sh, ph, dh)
    out_w = conv_output_size(width, kw, sw, pw, dw)
    out = np.zeros((n_img, c_out, out_h, out_w), dtype=x.dtype)
    for n in range(n_img):
        for co in range(c_out):
            for i in range(out_h):
                for j in range(out_w):
                    total = 0.0 if b is None else float(b[co])
                    for ci in range(c_in):
                        for ky in range(kh):
                            for kx in range(kw):
                                total += w[co, ci, ky, kx] * xp[n, ci, i * sh + ky * dh,
                                                                 j * sw + kx * dw]
                    out[n, co, i, j] = total
    return out


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation as one matrix product per image: W (Cout, Cin*kh*kw) times the
    im2col matrix (Cin*kh*kw, out_h*out_w). A 1x1 convolution needs no im2col at all."""
    _check_float(x, "x", 4)
    _check_float(w, "w", 4)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x: has {x.shape[1]} channels but w expects {w.shape[1]} "
                         f"(w shape {w.shape})")
    b = _check_bias(b, w.shape[0])
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if sh == 0 or sw == 0 or dh == 0 or dw == 0:
        raise ValueError("stride and dilation must be positive")
    n_img, c_in, height, width = x.shape
    c_out, _, kh, kw = w.shape
    out_h = conv_output_size(height, kh, sh, ph, dh)
    out_w = conv_output_size(width, kw, sw, pw, dw)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"x: spatial size {(height, width)} is too small for a {kh}x{kw} "
                         f"kernel with padding {(ph, pw)} and dilation {(dh, dw)}")
    dtype = np.result_type(x.dtype, w.dtype)
    x = x.astype(dtype, copy=False)
    w2d = w.reshape(c_out, -1).astype(dtype, copy=False)
    pointwise = kh == 1 and kw == 1 and ph == 0 and pw == 0
    if pointwise:
        cols = np.ascontiguousarray(x[:, :, ::sh, ::sw]).reshape(n_img, c_in, out_h * out_w)
    else:
        cols = kernels.im2col(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, dh, dw,
                              out_h, out_w)
    out = np.matmul(w2d, cols).reshape(n_img, c_out, out_h, out_w)
    if b is not None:
        out += b.astype(dtype, copy=False)[:, None, None]
    cache = (x.shape, w, cols, (kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w), b is not None,
             pointwise)
    return out, cache


def conv2d_backward(dout, cache):
    """dx = col2im(W^T dout), dW = sum over images of dout times the im2col matrix^T."""
    x_shape, w, cols, geometry, has_bias, pointwise = cache
    kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w = geometry
    n_img, c_in, height, width = x_shape
    c_out = w.shape[0]
    dout2 = np.ascontiguousarray(dout).reshape(n_img, c_out, out_h * out_w)
    w2d = w.reshape(c_out, -1).astype(dout.dtype, copy=False)
    dw2d = sum(dout2[n] @ cols[n].T for n in range(n_img))
    dcols = np.matmul(w2d.T, dout2)
    if pointwise:
        if sh == 1 and sw == 1:
            dx = dcols.reshape(x_shape)
        else:
            dx = np.zeros(x_shape, dout.dtype)
            dx[:, :, ::sh, ::sw] = dcols.reshape(n_img, c_in, out_h, out_w)
    else:
        dx = kernels.col2im(dcols, c_in, height, width, kh, kw, sh, sw, ph, pw, dh, dw,
                            out_h, out_w)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, np.asarray(dw2d).reshape(w.shape), db


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1):
    """The adjoint of conv2d (a "deconvolution"): every input pixel scatters w[ci] scaled by
    its value. Weight (Cin, Cout, kh, kw); out size (H-1)*s - 2p + d*(k-1) + output_padding + 1."""
    _check_float(x, "x", 4)
    _check_float(w, "w", 4)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x: has {x.shape[1]} channels but w expects {w.shape[0]} "
                         f"(w shape {w.shape}, layout (Cin, Cout, kh, kw))")
    b = _check_bias(b, w.shape[1])
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    oph, opw = _pair(output_padding, "output_padding")
    dh, dw = _pair(dilation, "dilation")
    n_img, c_in, height, width = x.shape
    _, c_out, kh, kw = w.shape
    out_h = (height - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (width - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"x: spatial size {(height, width)} gives an empty output")
    dtype = np.result_type(x.dtype, w.dtype)
    w2d = w.reshape(c_in, -1).astype(dtype, copy=False)
    x2d = np.ascontiguousarray(x, dtype=dtype).reshape(n_img, c_in, height * width)
    cols = np.matmul(w2d.T, x2d)
    # the input grid is the output grid of a conv2d run on our output
    out = kernels.col2im(cols, c_out, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw,
                         height, width)
    if b is not None:
        out += b.astype(dtype, copy=False)[:, None, None]
    cache = (x2d, w, (kh, kw, sh, sw, ph, pw, dh, dw, height, width), b is not None)
    return out, cache


def conv_transpose2d_backward(dout, cache):
    x2d, w, geometry, has_bias = cache
    kh, kw, sh, sw, ph, pw, dh, dw, height, width = geometry
    n_img, c_in, _ = x2d.shape
    dcols = kernels.im2col(np.ascontiguousarray(dout), kh, kw, sh, sw, ph, pw, dh, dw,
                           height, width)
    w2d = w.reshape(c_in, -1).astype(dout.dtype, copy=False)
    dx = np.matmul(w2d, dcols).reshape(n_img, c_in, height, width)
    dw2d = sum(x2d[n] @ dcols[n].T for n in range(n_img))
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, np.asarray(dw2d).reshape(w.shape), db


# -- dense layers and activations -------------------------------------------------------------

def linear(x, w, b=None):
    """y = x W^T + b, W of shape (out_features, in_features)."""
    _check_float(x, "x", 2)
    _check_float(w, "w", 2)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x: has {x.shape[1]} features but w expects {w.shape[1]} "
                         f"(w shape {w.shape})")
    b = _check_bias(b, w.shape[0])
    out = x @ w.T
    if b is not None:
        out += b
    return out, (x, w, b is not None)


def linear_backward(dout, cache):
    x, w, has_bias = cache
    return dout @ w, dout.T @ x, (dout.sum(axis=0) if has_bias else None)


def relu(x):
    _check_float(x, "x")
    positive = x > 0
    return np.where(positive, x, x.dtype.type(0)), positive


def relu_backward(dout, cache):
    return dout * cache


def sigmoid(x):
    """1 / (1 + exp(-x)), computed from exp(-|x|) so it never overflows."""
    _check_float(x, "x")
    e = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    return out, out


def sigmoid_backward(dout, cache):
    return dout * cache * (1 - cache)


# -- pooling and normalisation ----------------------------------------------------------------

def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling with torch's semantics: -inf padding, floor output size, and the first
    maximum of a window (row-major) receives the gradient."""
    _check_float(x, "x", 4)
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(kernel_size if stride is None else stride, "stride")
    ph, pw = _pair(padding, "padding")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"padding: expected at most half the kernel size, got {padding}")
    out_h = conv_output_size(x.shape[2], kh, sh, ph, 1)
    out_w = conv_output_size(x.shape[3], kw, sw, pw, 1)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"x: spatial size {x.shape[2:]} is smaller than the kernel")
    out, argmax = kernels.max_pool_forward(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw,
                                           out_h, out_w)
    return out, (argmax, x.shape)


def max_pool2d_backward(dout, cache):
    argmax, x_shape = cache
    return kernels.max_pool_backward(np.ascontiguousarray(dout), argmax, x_shape[2], x_shape[3])


def _per_channel(v, channels, name):
    v = np.asarray(v)
    if v.shape != (channels,):
        raise ValueError(f"{name}: expected shape ({channels},), got {v.shape}")
    return v


def frozen_batch_norm2d(x, weight, bias, running_mean, running_var, eps=1e-5):
    """torchvision's FrozenBatchNorm2d: scale = weight / sqrt(running_var + eps),
    shift = bias - running_mean * scale, y = x * scale + shift."""
    _check_float(x, "x", 4)
    c = x.shape[1]
    weight, bias = _per_channel(weight, c, "weight"), _per_channel(bias, c, "bias")
    running_mean = _per_channel(running_mean, c, "running_mean")
    running_var = _per_channel(running_var, c, "running_var")
    dtype = x.dtype
    scale = (weight.astype(dtype) * (1 / np.sqrt(running_var.astype(dtype) + dtype.type(eps))))
    shift = bias.astype(dtype) - running_mean.astype(dtype) * scale
    return x * scale[:, None, None] + shift[:, None, None], scale


def frozen_batch_norm2d_backward(dout, cache):
    return dout * cache[:, None, None]


def batch_norm2d(x, weight, bias, running_mean, running_var, training, momentum=0.1,
                 eps=1e-5):
    """Batch norm (Ioffe & Szegedy, 2015). Training: normalise with the batch's mean and
    biased variance and update the running statistics in place (running_var with the unbiased
    variance, as torch). Eval: normalise with the running statistics."""
    _check_float(x, "x", 4)
    c = x.shape[1]
    weight, bias = _per_channel(weight, c, "weight"), _per_channel(bias, c, "bias")
    _per_channel(running_mean, c, "running_mean")
    _per_channel(running_var, c, "running_var")
    dtype = x.dtype
    if training:
        count = x.shape[0] * x.shape[2] * x.shape[3]
        if count < 2:
            raise ValueError(f"x: batch norm in training needs more than one value per "
                             f"channel, got shape {x.shape}")
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (count / (count - 1))
    else:
        mean, var = running_mean.astype(dtype), running_var.astype(dtype)
    inv_std = (1 / np.sqrt(var + dtype.type(eps))).astype(dtype)
    x_hat = (x - mean[:, None, None].astype(dtype)) * inv_std[:, None, None]
    out = x_hat * weight.astype(dtype)[:, None, None] + bias.astype(dtype)[:, None, None]
    return out, (x_hat, inv_std, weight, training)


def batch_norm2d_backward(dout, cache):
    x_hat, inv_std, weight, training = cache
    dweight = (dout * x_hat).sum(axis=(0, 2, 3))
    dbias = dout.sum(axis=(0, 2, 3))
    dx_hat = dout * weight.astype(dout.dtype)[:, None, None]
    if not training:
        return dx_hat * inv_std[:, None, None], dweight, dbias
    count = x_hat.shape[0] * x_hat.shape[2] * x_hat.shape[3]
    # the batch mean and variance depend on every x of the channel
    dx = (dx_hat - dx_hat.mean(axis=(0, 2, 3))[:, None, None]
          - x_hat * (dx_hat * x_hat).sum(axis=(0, 2, 3))[:, None, None] / count)
    return dx * inv_std[:, None, None], dweight, dbias


def interpolate_nearest(x, size):
    """Nearest-neighbour resize of (N, C, H, W) to `size` with torch's index rule
    (the FPN's top-down 2x upsampling)."""
    from ..ops.interpolate import nearest_indices

    _check_float(x, "x", 4)
    out_h, out_w = _pair(size, "size")
    rows = nearest_indices(x.shape[2], out_h)
    cols = nearest_indices(x.shape[3], out_w)
    return x[:, :, rows[:, None], cols[None, :]], (x.shape, rows, cols)


def interpolate_nearest_backward(dout, cache):
    x_shape, rows, cols = cache
    n, c, height, width = x_shape
    if len(rows) == 2 * height and len(cols) == 2 * width:
        # the exact 2x case: each input pixel feeds a 2x2 block
        return dout.reshape(n, c, height, 2, width, 2).sum(axis=(3, 5))
    row_hot = (rows[None, :] == np.arange(height)[:, None]).astype(dout.dtype)
    col_hot = (cols[None, :] == np.arange(width)[:, None]).astype(dout.dtype)
    return row_hot @ dout @ col_hot.T


# -- losses: (loss, gradient of the loss with respect to the input) -----------------------------

def cross_entropy(logits, labels, ignore_index=None):
    """Mean over rows of -log softmax(logits)[label]. Rows whose label is `ignore_index` are
    left out of the mean (and get zero gradient); with no row left the loss is 0."""
    _check_float(logits, "logits", 2)
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer shape ({logits.shape[0]},), got "
                         f"{labels.dtype} {labels.shape}")
    if np.isnan(logits).any():
        raise ValueError("logits: contains NaN")
    valid = np.ones(len(labels), bool) if ignore_index is None else labels != ignore_index
    used = labels[valid]
    if len(used) and (used.min() < 0 or used.max() >= logits.shape[1]):
        raise ValueError(f"labels: expected values in [0, {logits.shape[1]}), got "
                         f"{used.min()}..{used.max()}")
    grad = np.zeros_like(logits)
    count = int(valid.sum())
    if count == 0:
        return 0.0, grad
    z = logits[valid]
    shifted = z - z.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(count)
    loss = float((log_sum - shifted[rows, used]).sum() / count)
    prob = np.exp(shifted - log_sum[:, None])
    prob[rows, used] -= 1
    grad[valid] = prob / count
    return loss, grad


def smooth_l1(pred, target, beta=1.0 / 9, reduction="sum"):
    """0.5 x^2 / beta where |x| < beta, else |x| - 0.5 beta (x = pred - target); beta = 0 is
    the L1 loss. reduction "sum" or "mean"."""
    _check_float(pred, "pred")
    target = np.asarray(target)
    if target.shape != pred.shape:
        raise ValueError(f"target: expected shape {pred.shape}, got {target.shape}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    if np.isnan(pred).any() or np.isnan(target).any():
        raise ValueError("pred/target: contain NaN")
    diff = pred - target.astype(pred.dtype)
    abs_diff = np.abs(diff)
    if beta == 0:
        loss, grad = abs_diff, np.sign(diff)
    else:
        quadratic = abs_diff < beta
        loss = np.where(quadratic, 0.5 * diff * diff / beta, abs_diff - 0.5 * beta)
        grad = np.where(quadratic, diff / beta, np.sign(diff))
    scale = 1.0 if reduction == "sum" or diff.size == 0 else 1.0 / diff.size
    return float(loss.sum() * scale), (grad * scale).astype(pred.dtype, copy=False)


def binary_cross_entropy_with_logits(logits, targets):
    """Mean of max(x, 0) - x t + log(1 + exp(-|x|)): exact and finite even at |x| = 100."""
    _check_float(logits, "logits")
    targets = np.asarray(targets)
    if targets.shape != logits.shape:
        raise ValueError(f"targets: expected shape {logits.shape}, got {targets.shape}")
    if np.isnan(logits).any() or np.isnan(targets).any():
        raise ValueError("logits/targets: contain NaN")
    if logits.size == 0:
        return 0.0, np.zeros_like(logits)
    t = targets.astype(logits.dtype)
    loss = np.maximum(logits, 0) - logits * t + np.log1p(np.exp(-np.abs(logits)))
    prob, _ = sigmoid(logits)
    return float(loss.mean()), ((prob - t) / logits.size).astype(logits.dtype, copy=False)
