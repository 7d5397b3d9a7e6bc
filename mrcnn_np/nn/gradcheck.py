"""Finite-difference gradient checks in float64 (central differences), as in CS231n.

The protocol follows the forward/backward pairs of `functional`:

    errors = gradcheck(forward, backward, {"x": x, "w": w, "b": b}, wrt=("x", "w", "b"))

runs `out, cache = forward(**inputs)` (inputs cast to float64), draws a random `dout`, takes
the analytic gradients from `backward(dout, cache)` (a tuple in the order of `wrt`, or one
array), and compares each with the central-difference gradient of the scalar
`sum(forward(**inputs)[0] * dout)`. Losses, which return `(loss, dinput)`, are checked with
`loss_gradcheck`. Both return {name: relative error}; below ~1e-7 is right, and
`format_gradcheck_table` prints a list of such results for a notebook.
"""

import numpy as np

from . import functional as F


def relative_error(analytic, numeric):
    """max |a - n| / max(max |a|, max |n|): scale-free, 0 for identical arrays."""
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    if analytic.shape != numeric.shape:
        raise ValueError(f"shapes differ: {analytic.shape} vs {numeric.shape}")
    scale = max(np.abs(analytic).max(initial=0), np.abs(numeric).max(initial=0), 1e-30)
    return float(np.abs(analytic - numeric).max(initial=0) / scale)


def numerical_gradient(fun, x, eps=1e-6):
    """d fun / d x by central differences; `fun` maps an array like `x` to a float.
    `x` is perturbed in place, one element at a time, and restored."""
    x = np.asarray(x)
    if x.dtype != np.float64:
        raise TypeError(f"x: gradient checks run in float64, got {x.dtype}")
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + eps
        plus = fun(x)
        x[index] = saved - eps
        minus = fun(x)
        x[index] = saved
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def sampled_numerical_gradient(fun, x, count=8, seed=0, eps=1e-6):
    """Central differences at `count` random entries of `x` (for large models, where every
    entry would take too long). Returns (flat indices, gradients at them)."""
    x = np.asarray(x)
    if x.dtype != np.float64:
        raise TypeError(f"x: gradient checks run in float64, got {x.dtype}")
    rng = np.random.default_rng(seed)
    picks = rng.choice(x.size, size=min(count, x.size), replace=False)
    flat = x.reshape(-1)  # a view: perturbing it perturbs x
    values = np.empty(len(picks))
    for k, index in enumerate(picks):
        saved = flat[index]
        flat[index] = saved + eps
        plus = fun(x)
        flat[index] = saved - eps
        minus = fun(x)
        flat[index] = saved
        values[k] = (plus - minus) / (2 * eps)
    return picks, values


def _as_float64(inputs):
    return {k: v.astype(np.float64) if isinstance(v, np.ndarray) and
            np.issubdtype(v.dtype, np.floating) else v for k, v in inputs.items()}


def gradcheck(forward, backward, inputs, wrt=None, eps=1e-6, seed=0):
    """Compare `backward`'s gradients with central differences, for each input in `wrt`
    (default: every floating-point array in `inputs`, in order). A gradient that `backward`
    returns as None (e.g. the bias gradient of a layer without bias) is skipped."""
    inputs = _as_float64(inputs)
    if wrt is None:
        wrt = [k for k, v in inputs.items() if isinstance(v, np.ndarray) and v.dtype == np.float64]
    out, cache = forward(**inputs)
    dout = np.random.default_rng(seed).standard_normal(np.shape(out))
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    errors = {}
    for name, grad in zip(wrt, grads):
        if grad is None:
            continue

        def scalar(value, name=name):
            return float((forward(**{**inputs, name: value})[0] * dout).sum())

        errors[name] = relative_error(grad, numerical_gradient(scalar, inputs[name].copy(), eps))
    return errors


def loss_gradcheck(loss_fn, inputs, wrt, eps=1e-6):
    """The same for a loss returning (loss, gradient of the loss w.r.t. `wrt`)."""
    inputs = _as_float64(inputs)
    _, grad = loss_fn(**inputs)

    def scalar(value):
        return loss_fn(**{**inputs, wrt: value})[0]

    return {wrt: relative_error(grad, numerical_gradient(scalar, inputs[wrt].copy(), eps))}


def layer_gradchecks(seed=0):
    """Every layer's backward on awkward shapes (batch 2, non-square maps and kernels,
    stride 2, padding 3, dilation 2, odd channel counts): rows (name, input shapes, errors)."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape)

    rows = []

    def add(name, errors, shapes):
        rows.append((name, shapes, errors))

    conv_cases = [
        ("conv2d 3x2 s2 p3 d2", dict(x=r(2, 3, 9, 7), w=r(5, 3, 3, 2), b=r(5)),
         dict(stride=2, padding=3, dilation=2)),
        ("conv2d 1x1 s2", dict(x=r(2, 3, 6, 5), w=r(4, 3, 1, 1), b=r(4)), dict(stride=2)),
        ("conv2d 7x7 s2 p3 (stem)", dict(x=r(1, 3, 11, 10), w=r(2, 3, 7, 7), b=None),
         dict(stride=2, padding=3)),
    ]
    for name, tensors, kwargs in conv_cases:
        wrt = tuple(k for k in ("x", "w", "b") if tensors[k] is not None)
        add(name, gradcheck(lambda kwargs=kwargs, **t: F.conv2d(**t, **kwargs),
                            F.conv2d_backward, tensors, ("x", "w", "b")),
            {k: tensors[k].shape for k in wrt})
    tensors = dict(x=r(2, 3, 4, 5), w=r(3, 5, 3, 2), b=r(5))
    add("conv_transpose2d 3x2 s2 p1", gradcheck(
        lambda **t: F.conv_transpose2d(**t, stride=2, padding=1, output_padding=1),
        F.conv_transpose2d_backward, tensors, ("x", "w", "b")),
        {k: v.shape for k, v in tensors.items()})
    tensors = dict(x=r(4, 7), w=r(3, 7), b=r(3))
    add("linear", gradcheck(F.linear, F.linear_backward, tensors, ("x", "w", "b")),
        {k: v.shape for k, v in tensors.items()})
    for name, fwd, bwd in (("relu", F.relu, F.relu_backward),
                           ("sigmoid", F.sigmoid, F.sigmoid_backward)):
        x = r(2, 3, 4, 5)
        add(name, gradcheck(fwd, bwd, {"x": x}, ("x",)), {"x": x.shape})
    x = rng.permutation(252).reshape(2, 3, 7, 6) / 252.0  # distinct values: no ties
    add("max_pool2d 3x3 s2 p1", gradcheck(lambda x: F.max_pool2d(x, 3, 2, 1),
                                          F.max_pool2d_backward, {"x": x}, ("x",)),
        {"x": x.shape})
    stats = dict(weight=r(3), bias=r(3), running_mean=r(3), running_var=rng.uniform(.5, 2, 3))
    x = r(2, 3, 4, 5)
    add("frozen_batch_norm2d", gradcheck(
        lambda x: F.frozen_batch_norm2d(x, **stats), F.frozen_batch_norm2d_backward,
        {"x": x}, ("x",)), {"x": x.shape})
    for training in (True, False):
        tensors = dict(x=r(2, 3, 4, 5), weight=r(3), bias=r(3))

        def bn(x, weight, bias, training=training):
            return F.batch_norm2d(x, weight, bias, np.zeros(3), np.ones(3), training)

        add(f"batch_norm2d ({'train' if training else 'eval'})",
            gradcheck(bn, F.batch_norm2d_backward, tensors, ("x", "weight", "bias")),
            {k: v.shape for k, v in tensors.items()})
    x = r(2, 3, 4, 5)
    add("interpolate_nearest 4x5->8x10", gradcheck(
        lambda x: F.interpolate_nearest(x, (8, 10)), F.interpolate_nearest_backward,
        {"x": x}, ("x",)), {"x": x.shape})
    add("interpolate_nearest 4x5->7x3", gradcheck(
        lambda x: F.interpolate_nearest(x, (7, 3)), F.interpolate_nearest_backward,
        {"x": x}, ("x",)), {"x": x.shape})
    logits, labels = r(6, 5), rng.integers(0, 5, 6)
    labels[2] = -100
    add("cross_entropy (ignore_index)", loss_gradcheck(
        lambda logits: F.cross_entropy(logits, labels, ignore_index=-100),
        {"logits": logits}, "logits"), {"logits": logits.shape})
    pred, target = r(5, 4), r(5, 4)
    add("smooth_l1 (beta 1/9, sum)", loss_gradcheck(
        lambda pred: F.smooth_l1(pred, target, 1 / 9), {"pred": pred}, "pred"),
        {"pred": pred.shape})
    logits, targets = r(3, 7) * 3, rng.random((3, 7))
    add("binary_cross_entropy_with_logits", loss_gradcheck(
        lambda logits: F.binary_cross_entropy_with_logits(logits, targets),
        {"logits": logits}, "logits"), {"logits": logits.shape})
    return rows


def format_gradcheck_table(rows, tolerance=1e-6):
    """Rows (name, {argument: shape}, {argument: relative error}) as a printable table."""
    lines = [f"{'layer':<34}{'input':<18}{'shape':<18}{'rel. error':>12}  ok",
             "-" * 88]
    failures = 0
    for name, shapes, errors in rows:
        for arg, err in errors.items():
            ok = err < tolerance
            failures += not ok
            lines.append(f"{name:<34}{arg:<18}{str(tuple(shapes[arg])):<18}{err:>12.2e}  "
                         f"{'yes' if ok else 'NO'}")
            name = ""
    lines.append("-" * 88)
    verdict = f"{failures} FAILED" if failures else "all gradients agree with finite differences"
    lines.append(f"{verdict} (float64 central differences, tolerance {tolerance:g})")
    return "\n".join(lines)


def layer_gradcheck_table(seed=0, tolerance=1e-6):
    """`layer_gradchecks` as a printable table (`mrcnn-np gradcheck` and notebook 01 print it)."""
    return format_gradcheck_table(layer_gradchecks(seed), tolerance)
