"""Tests for course.checks: the assertion helpers that notebook test cells call.

Every expected value and message fragment here is worked out by hand from the inputs, and
each check is exercised both ways: it passes on a right answer and fails, with a message
that says where and what, on a wrong one.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from course.checks import (
    assert_close,
    assert_dtype,
    assert_finite,
    assert_shape,
    dtype_name,
    to_numpy,
)

INF, NAN = float("inf"), float("nan")


def fails_with(text: str):
    """``pytest.raises(AssertionError)`` whose message must contain ``text`` verbatim."""
    return pytest.raises(AssertionError, match=re.escape(text))


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


# --- to_numpy ---------------------------------------------------------------------------


def test_to_numpy_numpy_array():
    out = to_numpy(np.array([1.5, -2.0], dtype=np.float32))
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.tolist() == [1.5, -2.0]


def test_to_numpy_python_list_and_scalar():
    out = to_numpy([[1, 2], [3, 4]])
    assert isinstance(out, np.ndarray)
    assert out.shape == (2, 2)
    assert out.tolist() == [[1, 2], [3, 4]]
    scalar = to_numpy(2.5)
    assert isinstance(scalar, np.ndarray)
    assert scalar.shape == ()
    assert float(scalar) == 2.5


def test_to_numpy_torch_tensor(torch):
    out = to_numpy(torch.tensor([[1, 2, 3]], dtype=torch.int64))
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.int64
    assert out.tolist() == [[1, 2, 3]]


def test_to_numpy_torch_tensor_that_requires_grad(torch):
    # Calling .numpy() on such a tensor raises inside torch; to_numpy must detach first.
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    y = w * 3  # part of an autograd graph
    out = to_numpy(y)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.tolist() == [3.0, 6.0]
    out = to_numpy(w)
    assert out.tolist() == [1.0, 2.0]


def test_to_numpy_torch_bfloat16_becomes_float32(torch):
    # numpy has no bfloat16; 1.5 and -0.25 are exact in bfloat16 and in float32.
    out = to_numpy(torch.tensor([1.5, -0.25], dtype=torch.bfloat16))
    assert out.dtype == np.float32
    assert out.tolist() == [1.5, -0.25]


def test_to_numpy_tf_tensor_and_variable(tf):
    out = to_numpy(tf.constant([[1, 2], [3, 4]], dtype=tf.int32))
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.int32
    assert out.tolist() == [[1, 2], [3, 4]]
    var = to_numpy(tf.Variable([0.5, 0.25]))
    assert isinstance(var, np.ndarray)
    assert var.dtype == np.float32
    assert var.tolist() == [0.5, 0.25]


# --- dtype_name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.zeros(2, dtype=np.float32), "float32"),
        (np.zeros(2, dtype=np.float16), "float16"),
        (np.zeros(2, dtype=np.int32), "int32"),
        (np.array([True]), "bool"),
        ([1.0, 2.0], "float64"),  # Python floats are doubles
        ([1, 2], "int64"),
        (True, "bool"),
    ],
)
def test_dtype_name_numpy_and_python(value, expected):
    assert dtype_name(value) == expected


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("float32", "float32"), ("bfloat16", "bfloat16"), ("int64", "int64"), ("bool", "bool")],
)
def test_dtype_name_torch(torch, dtype, expected):
    assert dtype_name(torch.zeros(2, dtype=getattr(torch, dtype))) == expected


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("float32", "float32"), ("bfloat16", "bfloat16"), ("int32", "int32"), ("bool", "bool")],
)
def test_dtype_name_tf(tf, dtype, expected):
    assert dtype_name(tf.zeros(2, dtype=getattr(tf, dtype))) == expected


def test_dtype_name_tf_variable(tf):
    assert dtype_name(tf.Variable(np.zeros(3, dtype=np.float64))) == "float64"


# --- assert_shape -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3), [2, 3], (None, 3), (2, None), (None, None)])
def test_assert_shape_passes(shape):
    assert_shape(np.zeros((2, 3)), shape)


def test_assert_shape_scalar_and_list():
    assert_shape(np.float32(1.0), ())
    assert_shape([[1, 2, 3]], (1, 3))


def test_assert_shape_wrong_size():
    with fails_with("result has shape (2, 3), expected (2, 4)"):
        assert_shape(np.zeros((2, 3)), (2, 4))


def test_assert_shape_wildcard_does_not_excuse_other_sizes():
    with fails_with("result has shape (2, 3), expected (None, 4)"):
        assert_shape(np.zeros((2, 3)), (None, 4))


@pytest.mark.parametrize(
    ("shape", "text"),
    [
        ((2, 3, 1), "logits has shape (2, 3) (2 dimension(s)), expected (2, 3, 1) (3 dim"),
        ((6,), "logits has shape (2, 3) (2 dimension(s)), expected (6,) (1 dim"),
        ((None,), "logits has shape (2, 3) (2 dimension(s)), expected (None,) (1 dim"),
        ((None, None, None), "expected (None, None, None) (3 dimension(s))"),
    ],
)
def test_assert_shape_rank_mismatch(shape, text):
    with fails_with(text):
        assert_shape(np.zeros((2, 3)), shape, name="logits")


def test_assert_shape_scalar_is_not_a_vector():
    with fails_with("result has shape () (0 dimension(s)), expected (1,)"):
        assert_shape(5.0, (1,))


def test_assert_shape_torch(torch):
    x = torch.zeros(4, 2, 8, requires_grad=True)
    assert_shape(x, (4, None, 8))
    with fails_with("q has shape (4, 2, 8), expected (4, 8, 2)"):
        assert_shape(x, (4, 8, 2), name="q")


def test_assert_shape_tf(tf):
    x = tf.zeros((3, 5))
    assert_shape(x, (3, 5))
    with fails_with("result has shape (3, 5), expected (5, 3)"):
        assert_shape(x, (5, 3))


# --- assert_close -----------------------------------------------------------------------


def test_assert_close_passes_within_default_tolerance():
    # Allowed at index 1: 1e-6 + 1e-5 * 2.0 = 2.1e-5 > 5e-6.
    assert_close(np.array([1.0, 2.0 + 5e-6]), np.array([1.0, 2.0]))


def test_assert_close_atol_boundary():
    assert_close([1.05], [1.0], atol=0.1, rtol=0.0)
    with fails_with("largest failing difference 0.15 at index (0,): got 1.15, expected 1 "):
        assert_close([1.15], [1.0], atol=0.1, rtol=0.0)


def test_assert_close_rtol_scales_with_expected():
    # |1005 - 1000| = 5 <= 0 + 0.01 * 1000 = 10, but |15 - 10| = 5 > 0.01 * 10 = 0.1.
    assert_close([1005.0], [1000.0], atol=0.0, rtol=0.01)
    with fails_with("got 15, expected 10"):
        assert_close([15.0], [10.0], atol=0.0, rtol=0.01)


def test_assert_close_rtol_is_relative_to_expected_not_actual():
    # |6 - 10| = 4 <= 0.5 * 10 = 5 passes; swapped, |10 - 6| = 4 > 0.5 * 6 = 3 fails.
    assert_close([6.0], [10.0], atol=0.0, rtol=0.5)
    with fails_with("largest failing difference 4 at index (0,): got 10, expected 6"):
        assert_close([10.0], [6.0], atol=0.0, rtol=0.5)


def test_assert_close_reports_index_and_both_values_of_largest_difference():
    expected = np.zeros((2, 3))
    actual = np.zeros((2, 3))
    actual[0, 2] = 0.25
    actual[1, 1] = 0.5  # the largest difference
    with fails_with(
        "result differs from the expected value at 2 of 6 position(s); largest failing "
        "difference 0.5 at index (1, 1): got 0.5, expected 0 (atol=1e-06, rtol=1e-05)"
    ):
        assert_close(actual, expected)


def test_assert_close_points_at_a_failing_position_not_a_tolerated_one():
    # Index 0 differs by 5 but is allowed 1e-6 + 1e-5 * 1e6 = 10.000001; index 1 differs
    # by only 0.001 but is allowed 1e-6, so index 1 is the one to report.
    with fails_with("1 of 2 position(s); largest failing difference 0.001 at index (1,): "):
        assert_close([1e6 + 5.0, 0.001], [1e6, 0.0])


def test_assert_close_shows_enough_digits_to_tell_values_apart():
    # At 6 significant digits both would print as "1".
    with fails_with("got 1.0000001, expected 1 "):
        assert_close([1.0000001], [1.0], atol=1e-9, rtol=0.0)


def test_assert_close_uses_the_given_name():
    with fails_with("probs differs from the expected value at 1 of 1 position(s)"):
        assert_close([0.5], [0.25], name="probs")


def test_assert_close_shape_mismatch_names_both_shapes():
    with fails_with("result has shape (2, 3), expected (3, 2)"):
        assert_close(np.zeros((2, 3)), np.zeros((3, 2)))


def test_assert_close_does_not_broadcast():
    # (3,) against (3, 1) would broadcast to (3, 3) and could pass by accident.
    with fails_with("attn has shape (3,), expected (3, 1)"):
        assert_close(np.ones(3), np.ones((3, 1)), name="attn")
    with fails_with("result has shape (1,), expected ()"):
        assert_close([2.0], 2.0)


def test_assert_close_shape_mismatch_names_the_framework(torch):
    with fails_with("result has shape (4,), expected (2, 2) (torch.Tensor)"):
        assert_close(torch.zeros(4), np.zeros((2, 2)))


def test_assert_close_nan_in_result_names_the_index():
    with fails_with("result has 1 non-finite value(s), first nan at index (1,) where 2.0"):
        assert_close(np.array([1.0, NAN, 3.0]), np.array([1.0, 2.0, 3.0]))


def test_assert_close_inf_in_result_names_the_index():
    actual = np.array([[0.0, 0.0], [INF, INF]])
    with fails_with("result has 2 non-finite value(s), first inf at index (1, 0) where 0.0"):
        assert_close(actual, np.zeros((2, 2)))


def test_assert_close_matching_infinities_pass():
    # A causal mask: -inf above the diagonal on both sides.
    masked = np.array([[0.5, -INF], [0.25, 0.75]])
    assert_close(masked.copy(), masked)


def test_assert_close_missing_infinity_fails():
    expected = np.array([[0.5, -INF], [0.25, 0.75]])
    actual = np.array([[0.5, 0.0], [0.25, 0.75]])  # forgot the mask
    with fails_with("scores is 0 at index (0, 1), expected -inf"):
        assert_close(actual, expected, name="scores")


def test_assert_close_wrong_sign_of_infinity_fails():
    with fails_with("first -inf at index (0,) where inf was expected"):
        assert_close([-INF], [INF])


def test_assert_close_nan_never_matches():
    with fails_with("first nan at index (0,) where nan was expected"):
        assert_close([NAN], [NAN])


def test_assert_close_finite_result_against_infinite_expected_fails():
    # |a - inf| <= atol + rtol * inf would hold (inf <= inf); it must not count as close.
    with fails_with("result is 1 at index (0,), expected inf"):
        assert_close([1.0], [INF])


def test_assert_close_none_hints_at_return():
    with fails_with("result is None: did the function forget to `return`?"):
        assert_close(None, np.zeros(2))
    with fails_with("softmax is None"):
        assert_close(None, [1.0], name="softmax")


def test_assert_close_mixes_frameworks(torch, tf):
    expected = np.array([0.5, 0.25], dtype=np.float32)
    assert_close(torch.tensor([0.5, 0.25], requires_grad=True), expected)
    assert_close(tf.constant([0.5, 0.25]), expected)
    assert_close(torch.tensor([0.5, 0.25]), tf.constant([0.5, 0.25]))
    assert_close([0.5, 0.25], torch.tensor([0.5, 0.25], dtype=torch.bfloat16))
    with fails_with("got 0.75, expected 0.25"):
        assert_close(torch.tensor([0.5, 0.75]), tf.constant([0.5, 0.25]))


def test_assert_close_float32_result_within_float32_precision():
    # 0.1 is not exact in float32 (0.100000001...); the default tolerance allows that.
    assert_close(np.float32(0.1), 0.1)
    with fails_with("got 0.1, expected 0.2"):
        assert_close(np.float32(0.1), 0.2)


# --- assert_dtype -----------------------------------------------------------------------


def test_assert_dtype_by_name_and_numpy_type():
    x = np.zeros(2, dtype=np.float32)
    assert_dtype(x, "float32")
    assert_dtype(x, np.float32)
    assert_dtype(np.zeros(2), float)  # Python float means float64


def test_assert_dtype_mismatch():
    with fails_with("result has dtype float64, expected float32"):
        assert_dtype(np.zeros(2), "float32")
    with fails_with("ids has dtype int32, expected int64"):
        assert_dtype(np.zeros(2, dtype=np.int32), np.int64, name="ids")


def test_assert_dtype_torch(torch):
    x = torch.zeros(2, dtype=torch.int64)
    assert_dtype(x, "int64")
    assert_dtype(x, torch.int64)
    assert_dtype(x, np.int64)
    with fails_with("result has dtype int64, expected float32"):
        assert_dtype(x, torch.float32)
    with fails_with("result has dtype float32, expected bfloat16"):
        assert_dtype(torch.zeros(2), torch.bfloat16)


def test_assert_dtype_tf(tf):
    x = tf.zeros(2, dtype=tf.float16)
    assert_dtype(x, "float16")
    assert_dtype(x, tf.float16)
    assert_dtype(x, np.float16)
    with fails_with("result has dtype float16, expected float32"):
        assert_dtype(x, tf.float32)


def test_assert_dtype_rejects_something_that_is_not_a_dtype():
    with pytest.raises(TypeError, match="assert_dtype: dtype should be a name such as"):
        assert_dtype(np.zeros(2), object())


# --- assert_finite ----------------------------------------------------------------------


def test_assert_finite_passes_on_finite_values():
    assert_finite(np.array([[0.0, -1e30], [1e30, 5.0]]))
    assert_finite([1, 2, 3])


def test_assert_finite_counts_and_locates_the_first_bad_value():
    x = np.array([[1.0, 2.0, NAN], [INF, 5.0, 6.0]])
    with fails_with("result has 2 non-finite value(s), first nan at index (0, 2)"):
        assert_finite(x)


def test_assert_finite_uses_the_given_name():
    with fails_with("loss has 1 non-finite value(s), first inf at index ()"):
        assert_finite(np.float64(INF), name="loss")


def test_assert_finite_torch_and_tf(torch, tf):
    assert_finite(torch.ones(3, requires_grad=True))
    with fails_with("result has 1 non-finite value(s), first -inf at index (1,)"):
        assert_finite(torch.tensor([0.0, -INF, 1.0]))
    with fails_with("result has 1 non-finite value(s), first nan at index (0, 1)"):
        assert_finite(tf.constant([[0.0, NAN]]))
