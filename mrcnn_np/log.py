"""`log(name, array)`: one line with shape, dtype, min and max; notebooks call it everywhere."""

import numpy as np


def describe(name, array):
    """Return the one-line description that `log` prints."""
    if array is None:
        return f"{name:<28} None"
    a = np.asarray(array)
    head = f"{name:<28} shape: {str(tuple(a.shape)):<20} dtype: {str(a.dtype):<8}"
    if a.size == 0:
        return head + " (empty)"
    if a.dtype == np.bool_:
        return head + f" true: {int(a.sum())} of {a.size}"
    if np.issubdtype(a.dtype, np.number):
        finite = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a
        if finite.size == 0:
            return head + " (no finite values)"
        text = head + f" min: {finite.min():10.5f}  max: {finite.max():10.5f}"
        n_bad = a.size - finite.size
        return text + (f"  non-finite: {n_bad}" if n_bad else "")
    return head


def log(name, array):
    """Print the shape, dtype, min and max of `array` under `name`."""
    print(describe(name, array))
