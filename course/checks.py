"""Assertion helpers for the notebooks' test cells.

A failing check should teach: it says what was expected, what came back, and where the
two differ. These helpers accept numpy arrays, PyTorch tensors and TensorFlow tensors
alike, without importing either framework.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np


def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise a clear error unless `value` is an int (numpy's too, never a bool) of at least
    `minimum`. The course's one integer check: configs, batches, sampling arguments."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def to_numpy(x) -> np.ndarray:
    """``x`` as a numpy array (numpy array, torch tensor, tf tensor, list or scalar).

    The result may share memory with ``x``: read it, don't write to it. A bfloat16 torch
    tensor comes back as float32 (numpy has no bfloat16; the conversion is exact).
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # tf.Tensor / Variable
        return np.asarray(x.numpy())
    return np.asarray(x)


def _kind(x) -> str:
    return f"{type(x).__module__}.{type(x).__name__}"


def _dtype_label(dt) -> str:
    """``"float32"`` for numpy's, torch's or TensorFlow's float32 dtype (or ``float``)."""
    name = getattr(dt, "name", None)  # numpy and TensorFlow dtypes carry a name
    if isinstance(name, str):
        return name
    if str(dt).startswith("torch."):  # torch.float32 has no name, only "torch.float32"
        return str(dt).removeprefix("torch.")
    return np.dtype(dt).name  # np.float32, float, "f4", ...


def dtype_name(x) -> str:
    """``"float32"`` for a float32 numpy array, torch tensor or tf tensor alike."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return np.asarray(x).dtype.name
    return _dtype_label(dt)


def assert_shape(x, shape: Sequence[int], name: str = "result") -> None:
    """Check ``x.shape == shape``; ``None`` in ``shape`` matches any size."""
    actual = tuple(int(d) for d in getattr(x, "shape", np.shape(x)))
    want = tuple(shape)
    if len(actual) != len(want):
        raise AssertionError(
            f"{name} has shape {actual} ({len(actual)} dimension(s)), expected {want} "
            f"({len(want)} dimension(s))"
        )
    if not all(w is None or a == w for a, w in zip(actual, want, strict=True)):
        raise AssertionError(f"{name} has shape {actual}, expected {want}")


def assert_dtype(x, dtype, name: str = "result") -> None:
    """Check the dtype by name (``"float32"``), whatever the framework.

    ``dtype`` is a name or any framework's dtype: ``np.float32``, ``torch.float32`` and
    ``tf.float32`` all mean ``"float32"``.
    """
    actual = dtype_name(x)
    if isinstance(dtype, str):
        want = dtype
    else:
        try:
            want = _dtype_label(dtype)
        except TypeError as err:
            raise TypeError(
                f"assert_dtype: dtype should be a name such as 'float32' or a numpy, torch "
                f"or TensorFlow dtype, got {dtype!r}"
            ) from err
    if actual != want:
        raise AssertionError(f"{name} has dtype {actual}, expected {want}")


def assert_finite(x, name: str = "result") -> None:
    """Check there is no NaN or infinity, and say where the first one is."""
    arr = to_numpy(x)
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{name} has {int(bad.sum())} non-finite value(s), first {arr[where]} at index "
            f"{where} (inf: an overflow, e.g. exp of a large number; nan: 0/0, inf - inf, or "
            f"a nan that came in)"
        )


def _two_numbers(got: float, expected: float) -> tuple[str, str]:
    """Format two different numbers with just enough digits to show that they differ."""
    for digits in range(6, 18):
        a, e = f"{got:.{digits}g}", f"{expected:.{digits}g}"
        if a != e:
            break
    return a, e


def assert_close(actual, expected, *, atol: float = 1e-6, rtol: float = 1e-5, name="result"):
    """Check ``actual`` ≈ ``expected`` elementwise: ``|a - e| <= atol + rtol * |e|``.

    An infinity matches the same infinity (a causal mask's ``-inf``); NaN never matches.
    On failure the message gives the shapes, the largest failing difference and where it is.
    """
    if actual is None:
        raise AssertionError(f"{name} is None: did the function forget to `return`?")
    a, e = to_numpy(actual), to_numpy(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{name} has shape {a.shape}, expected {e.shape} ({_kind(actual)})")
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    both_finite = np.isfinite(a64) & np.isfinite(e64)
    same_infinity = np.isinf(e64) & (a64 == e64)
    odd = ~both_finite & ~same_infinity
    if odd.any():
        where = tuple(int(i) for i in np.argwhere(odd)[0])
        got, want = a64[where], e64[where]
        if not np.isfinite(got):
            n_bad = int((~np.isfinite(a64) & ~same_infinity).sum())
            raise AssertionError(
                f"{name} has {n_bad} non-finite value(s), first {got} at index {where} where "
                f"{want} was expected (an overflow? try subtracting the maximum before exp)"
            )
        raise AssertionError(f"{name} is {got:.6g} at index {where}, expected {want}")
    a_fin, e_fin = np.where(both_finite, a64, 0.0), np.where(both_finite, e64, 0.0)
    diff = np.abs(a_fin - e_fin)
    bad = diff > atol + rtol * np.abs(e_fin)
    if bad.any():
        worst = np.where(bad, diff, -1.0)
        where = tuple(int(i) for i in np.unravel_index(np.argmax(worst), diff.shape))
        got, want = _two_numbers(a64[where], e64[where])
        raise AssertionError(
            f"{name} differs from the expected value at {int(bad.sum())} of {a.size} "
            f"position(s); largest failing difference {diff[where]:.3g} at index {where}: "
            f"got {got}, expected {want} (atol={atol}, rtol={rtol})"
        )
