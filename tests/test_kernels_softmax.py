"""kernels/softmax.py: the fused row-wise softmax against torch.softmax, on awkward rows.

Without a GPU the kernel runs in Triton's interpreter (conftest calls course.runtime.use_triton);
with one, the same tests run compiled on it.
"""

import pytest
import torch

from course import runtime

pytest.importorskip("triton", reason="the kernels need Triton (Linux)")
softmax_module = runtime.import_kernels("softmax")
softmax = softmax_module.softmax

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _randn(*shape, dtype=torch.float32, scale=3.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * scale).to(DEVICE, dtype)


@pytest.mark.parametrize(
    "shape",
    [(1, 1), (5, 37), (3, 128), (2, 1000), (3, 4, 100), (70,)],
    ids=["one-entry", "odd-row", "power-of-two", "long-row", "3-d", "1-d"],
)
def test_matches_torch_softmax(shape):
    x = _randn(*shape)
    y = softmax(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)


def test_rows_are_independent_distributions():
    x = _randn(6, 50)
    x[2] += 100.0  # shifting one row changes nothing, in that row or the others
    y = softmax(x)
    torch.testing.assert_close(y.sum(dim=-1), torch.ones(6, device=DEVICE))
    torch.testing.assert_close(y[2], torch.softmax(x[2] - 100.0, dim=-1), atol=1e-6, rtol=1e-5)


def test_large_logits_do_not_overflow():
    # exp(1000) is inf in float32: without subtracting the row max, inf / inf = NaN
    x = _randn(4, 33, scale=1000.0)
    y = softmax(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)


def test_minus_infinity_entries_get_zero_weight():
    x = _randn(3, 40)
    x[:, 17:] = float("-inf")  # a row's masked tail, as attention masks it
    y = softmax(x)
    assert (y[:, 17:] == 0).all()
    torch.testing.assert_close(y, torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)


def test_strided_inputs_are_read_through_their_strides():
    x = _randn(45, 30)
    for view in (x.t(), x[:, ::3], x[::2]):  # (30, 45), (45, 10), (23, 30): none contiguous
        torch.testing.assert_close(softmax(view), torch.softmax(view, dim=-1), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "dtype, atol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)], ids=["fp16", "bf16"]
)
def test_half_precision_is_computed_in_float32(dtype, atol):
    x = _randn(7, 77, dtype=dtype, scale=8.0)  # float16's exp overflows past 11
    y = softmax(x)
    assert y.dtype == dtype
    expected = torch.softmax(x.float(), dim=-1)
    torch.testing.assert_close(y.float(), expected, atol=atol, rtol=0)


def test_gradient_matches_torch_autograd():
    x = _randn(5, 37).requires_grad_()
    g = _randn(5, 37, seed=1)
    (softmax(x) * g).sum().backward()
    mine, x.grad = x.grad, None
    (torch.softmax(x, dim=-1) * g).sum().backward()
    torch.testing.assert_close(mine, x.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "x, error, words",
    [
        (torch.tensor(1.0), ValueError, "0-d"),
        (torch.empty(0, 5), ValueError, "empty"),
        (torch.empty(3, 0), ValueError, "empty"),
        (torch.ones(2, 3, dtype=torch.float64), TypeError, "float64.*float32, float16, bfloat16"),
        (torch.ones(2, 3, dtype=torch.int64), TypeError, "int64"),
        (torch.empty(1, 2**16 + 1), ValueError, "65537 entries.*at most MAX_ROW_LENGTH = 65536"),
        ([[1.0, 2.0]], TypeError, "torch.Tensor"),
    ],
    ids=["0-d", "no-rows", "empty-rows", "float64", "int64", "row-too-long", "list"],
)
def test_bad_input_names_the_problem(x, error, words):
    with pytest.raises(error, match=words):
        softmax(x)
