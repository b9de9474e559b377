"""course.sampling: the argument checks `generate` makes in both frameworks."""

from __future__ import annotations

import math

import pytest

from course.sampling import check_sampling_args


@pytest.mark.parametrize(
    ("args", "error", "words"),
    [
        ((-1, 1.0, None, None), ValueError, "max_new_tokens must be >= 0"),
        ((2.0, 1.0, None, None), TypeError, "max_new_tokens must be an int"),
        ((True, 1.0, None, None), TypeError, "max_new_tokens must be an int"),
        ((5, "hot", None, None), TypeError, "temperature must be a number"),
        ((5, True, None, None), TypeError, "temperature must be a number"),
        ((5, -0.5, None, None), ValueError, "temperature must be >= 0"),
        ((5, math.nan, None, None), ValueError, "temperature must be >= 0"),
        ((5, 1.0, 0, None), ValueError, "top_k must be >= 1"),
        ((5, 1.0, 2.5, None), TypeError, "top_k must be an int"),
        ((5, 1.0, None, 0.0), ValueError, "top_p must be in (0, 1]"),
        ((5, 1.0, None, 1.5), ValueError, "top_p must be in (0, 1]"),
        ((5, 1.0, None, "0.9"), ValueError, "top_p must be in (0, 1]"),
    ],
)
def test_bad_arguments_are_named(args, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace("]", r"\]")):
        check_sampling_args(*args)


@pytest.mark.parametrize(
    "args",
    [(0, 0, None, None), (5, 0.0, 1, 1.0), (5, 2, 40, 0.9), (1, 1e-3, None, 1)],
)
def test_sensible_arguments_pass(args):
    assert check_sampling_args(*args) is None
