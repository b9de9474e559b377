"""Assertion helpers for the notebooks' test cells.

A failing check should teach: it says what was expected, what came back, and where the
two differ. These helpers accept numpy arrays, PyTorch tensors and TensorFlow tensors
alike, without importing either framework.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_numpy(x) -> np.ndarray:
    """A numpy copy of ``x`` (numpy array, torch tensor, tf tensor, list or scalar)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        return x.detach().cpu().numpy()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # tf.Tensor / Variable
        return np.asarray(x.numpy())
    return np.asarray(x)


def _kind(x) -> str:
    return f"{type(x).__module__}.{type(x).__name__}"


def dtype_name(x) -> str:
    """``"float32"`` for a float32 numpy array, torch tensor or tf tensor alike."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return np.asarray(x).dtype.name
    name = getattr(dt, "name", None)  # numpy and TensorFlow dtypes carry a name
    return name if isinstance(name, str) else str(dt).removeprefix("torch.")


def assert_shape(x, shape: Sequence[int], name: str = "result") -> None:
    """Check ``x.shape == shape``; ``None`` in ``shape`` matches any size."""
    actual = tuple(int(d) for d in getattr(x, "shape", np.shape(x)))
    want = tuple(shape)
    ok = len(actual) == len(want) and all(w is None or a == w for a, w in zip(actual, want))
    if not ok:
        raise AssertionError(f"{name} has shape {actual}, expected {want}")


def assert_dtype(x, dtype, name: str = "result") -> None:
    """Check the dtype by name (``"float32"``), whatever the framework."""
    actual = dtype_name(x)
    want = dtype if isinstance(dtype, str) else np.dtype(dtype).name
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
            f"{where} (an overflow? try subtracting the maximum before exp)"
        )


def assert_close(actual, expected, *, atol: float = 1e-6, rtol: float = 1e-5, name="result"):
    """Check ``actual`` ≈ ``expected`` elementwise: ``|a - e| <= atol + rtol * |e|``.

    On failure the message gives the shapes, the largest difference and where it is.
    """
    if actual is None:
        raise AssertionError(f"{name} is None: did the function forget to `return`?")
    a, e = to_numpy(actual), to_numpy(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{name} has shape {a.shape}, expected {e.shape} ({_kind(actual)})")
    assert_finite(a, name)
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    diff = np.abs(a64 - e64)
    bad = diff > atol + rtol * np.abs(e64)
    if bad.any():
        where = tuple(int(i) for i in np.unravel_index(np.argmax(diff), diff.shape))
        raise AssertionError(
            f"{name} differs from the expected value at {int(bad.sum())} of {a.size} "
            f"position(s); largest difference {diff.max():.3g} at index {where}: "
            f"got {a64[where]:.6g}, expected {e64[where]:.6g} (atol={atol}, rtol={rtol})"
        )
