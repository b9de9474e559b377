"""What sampling from a GPT accepts, the same in both frameworks.

`course.torch.sampling.generate` and `course.tf.sampling.generate` check their arguments
with `check_sampling_args`, so a bad temperature or top-k gets the same clear error in
PyTorch and in Keras. Framework-neutral: imports neither torch nor tensorflow.
"""

from __future__ import annotations

from typing import Any

from course.checks import check_int

__all__ = ["check_sampling_args"]


def check_sampling_args(max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any) -> None:
    """Clear errors for `generate`'s arguments, the same in both frameworks."""
    check_int("max_new_tokens", max_new_tokens, 0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None:
        check_int("top_k", top_k, 1)
    if top_p is not None and not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
