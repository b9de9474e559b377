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


# --- online_softmax: rows of any length, a block at a time --------------------------------

online_softmax = softmax_module.online_softmax


@pytest.mark.parametrize(
    "shape, block",
    [((3, 200), 64), ((2, 64), 16), ((4, 97), 32), ((2, 5, 130), 64), ((3, 20), 64)],
    ids=["ragged-last-block", "whole-blocks-of-16", "blocks-of-32", "3-d", "under-one-block"],
)
def test_online_matches_torch_softmax_over_several_blocks(shape, block):
    x = _randn(*shape)
    y = online_softmax(x, block=block)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)


def test_online_max_in_a_late_block_rescales_the_sum_so_far():
    # Each block's max is larger than the last: every step of pass 1 rescales the running sum
    x = torch.arange(150, dtype=torch.float32, device=DEVICE).repeat(2, 1) * 0.1
    x[1] = x[1].flip(0)  # and the other way round: the max in the first block
    y = online_softmax(x, block=16)
    torch.testing.assert_close(y, torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)


def test_online_large_logits_do_not_overflow():
    x = _randn(3, 150, scale=1000.0)
    y = online_softmax(x, block=32)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)


def test_online_minus_infinity_filling_the_first_block_gets_zero_weight_not_nan():
    x = _randn(3, 100)
    x[:, :40] = float("-inf")  # all of the first block of 32 and part of the second
    x[1, :64] = float("-inf")  # row 1: the first two whole blocks
    y = online_softmax(x, block=32)
    assert not torch.isnan(y).any()
    assert (y[:, :40] == 0).all() and (y[1, :64] == 0).all()
    torch.testing.assert_close(y, torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's
def test_online_row_of_only_minus_infinity_is_nan_like_torch():
    x = torch.full((2, 70), float("-inf"), device=DEVICE)
    x[1, 3] = 0.0
    y = online_softmax(x, block=32)
    assert torch.isnan(y[0]).all() and torch.isnan(torch.softmax(x, dim=-1)[0]).all()
    torch.testing.assert_close(y[1], torch.softmax(x[1], dim=-1), atol=0, rtol=0)


def test_online_strided_input_is_read_through_its_strides():
    x = _randn(90, 40)
    for view in (x.t(), x[:, ::3]):  # (40, 90) and (90, 14): not contiguous
        y = online_softmax(view, block=32)
        torch.testing.assert_close(y, torch.softmax(view, dim=-1), atol=1e-6, rtol=1e-5)


def test_online_half_precision_is_computed_in_float32():
    x = _randn(5, 150, dtype=torch.float16, scale=8.0)  # float16's exp overflows past 11
    y = online_softmax(x, block=64)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), torch.softmax(x.float(), dim=-1), atol=2e-3, rtol=0)


def test_rows_past_max_row_length_are_for_online_softmax_only():
    n = softmax_module.MAX_ROW_LENGTH + 3
    x = _randn(1, n)
    x[0, -1] = 20.0  # in the ragged last block: the row's max, most of its weight
    with pytest.raises(ValueError, match=f"{n} entries.*MAX_ROW_LENGTH"):
        softmax_module.softmax_forward(x)
    y = online_softmax(x, block=2**14)  # big blocks: the interpreter's loop has 5 steps
    torch.testing.assert_close(y, torch.softmax(x, dim=-1), atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("block", [0, 8, 15, 48, 100], ids=lambda b: f"block{b}")
def test_online_refuses_a_block_that_is_not_a_power_of_two_of_at_least_16(block):
    with pytest.raises(ValueError, match=f"block must be a power of two >= 16, got {block}"):
        online_softmax(_randn(2, 40), block=block)


def test_online_bad_input_names_the_problem():
    with pytest.raises(TypeError, match="float64"):
        online_softmax(torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty"):
        online_softmax(torch.empty(3, 0))


# --- out=: both launchers write into a given buffer ---------------------------------------


@pytest.mark.parametrize("online", [False, True], ids=["fused", "online"])
def test_out_is_written_in_place_and_nothing_around_it(online):
    x = _randn(4, 3, 37)
    margin = 50
    buffer = torch.full((x.numel() + 2 * margin,), float("nan"), device=DEVICE)
    out = buffer[margin:-margin].view(x.shape)
    if online:  # a 3-D input that is not contiguous: its rows are gathered, out is still x's shape
        strided = x.transpose(0, 1).contiguous().transpose(0, 1)
        returned = online_softmax(strided, out=out, block=16)
    else:
        returned = softmax_module.softmax_forward(x, out=out)
    assert returned is out
    torch.testing.assert_close(out, torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)
    assert torch.isnan(buffer[:margin]).all() and torch.isnan(buffer[-margin:]).all()


def test_a_kernel_passed_in_is_the_one_that_runs():
    # softmax_kernel in the online launcher: a kernel of the same signature runs instead
    x = _randn(3, 50)
    y = online_softmax(x, kernel=softmax_module.softmax_kernel, block=64)
    torch.testing.assert_close(y, torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)
    cut = online_softmax(x, kernel=softmax_module.softmax_kernel, block=16)  # first 16 only
    torch.testing.assert_close(cut[:, :16], torch.softmax(x[:, :16], dim=-1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("online", [False, True], ids=["fused", "online"])
@pytest.mark.parametrize(
    "out, words",
    [
        (torch.empty(3, 41), r"shape \(3, 40\).*got \(3, 41\)"),
        (torch.empty(3, 40, dtype=torch.float16), "dtype torch.float32, got .*float16"),
        (torch.empty(40, 3).t(), "out must be contiguous"),
    ],
    ids=["shape", "dtype", "strided"],
)
def test_a_bad_out_names_the_problem(online, out, words):
    x, out = _randn(3, 40), out.to(DEVICE)
    launch = online_softmax if online else softmax_module.softmax_forward
    with pytest.raises(ValueError, match=words):
        launch(x, out=out)
