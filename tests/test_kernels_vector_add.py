"""kernels/vector_add.py: add(x, y) against x + y, on lengths that are not whole blocks.

The last program's block runs past the end of the vectors unless the length is a multiple
of BLOCK: lengths 1, BLOCK - 1, BLOCK, BLOCK + 1 and one of many blocks check the masks and
the grid. The output is written inside a NaN buffer, so a missed element stays NaN and a
store past the end shows in the margin. Without a GPU the kernel runs in Triton's
interpreter (conftest calls course.runtime.use_triton); with one, it runs compiled.
"""

import pytest
import torch

from course import runtime

pytest.importorskip("triton", reason="the kernels need Triton (Linux)")
vector_add = runtime.import_kernels("vector_add")
add = vector_add.add

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BLOCK = vector_add.BLOCK


def _randn(n, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=generator).to(DEVICE, dtype)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000], ids=lambda n: f"n{n}")
def test_matches_x_plus_y_on_lengths_that_are_not_whole_blocks(n):
    assert BLOCK == 64, "the lengths here are chosen around a block of 64"
    x, y = _randn(n), _randn(n, seed=1)
    out = add(x, y)
    assert out.shape == (n,) and out.dtype == x.dtype
    torch.testing.assert_close(out, x + y, atol=0, rtol=0)


@pytest.mark.parametrize("block", [16, 32, 128], ids=lambda b: f"block{b}")
def test_other_block_sizes_give_the_same_sum(block):
    x, y = _randn(100, seed=2), _randn(100, seed=3)
    torch.testing.assert_close(add(x, y, block=block), x + y, atol=0, rtol=0)


def test_half_precision_adds_in_its_own_dtype():
    x, y = _randn(77, torch.float16, seed=4), _randn(77, torch.float16, seed=5)
    out = add(x, y)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, x + y, atol=0, rtol=0)


@pytest.mark.parametrize("n", [65, 1000], ids=lambda n: f"n{n}")
def test_out_is_written_in_place_and_nothing_around_it(n):
    margin = 70  # more than one block: a store past the end would land here
    buffer = torch.full((n + 2 * margin,), float("nan"), device=DEVICE)
    out = buffer[margin : margin + n]
    x, y = _randn(n, seed=6), _randn(n, seed=7)
    returned = add(x, y, out=out)
    assert returned is out
    torch.testing.assert_close(out, x + y, atol=0, rtol=0)
    assert torch.isnan(buffer[:margin]).all() and torch.isnan(buffer[-margin:]).all()


def test_out_may_be_one_of_the_inputs():
    x, y = _randn(90, seed=8), _randn(90, seed=9)
    expected = x + y
    add(x, y, out=x)  # each element is read before it is written, by the same program
    torch.testing.assert_close(x, expected, atol=0, rtol=0)


def test_a_kernel_passed_in_is_the_one_that_runs():
    triton = runtime.use_triton()
    tl = triton.language

    @triton.jit
    def subtract_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < n
        x = tl.load(x_ptr + offsets, mask=inside)
        y = tl.load(y_ptr + offsets, mask=inside)
        tl.store(out_ptr + offsets, x - y, mask=inside)

    x, y = _randn(70, seed=10), _randn(70, seed=11)
    torch.testing.assert_close(add(x, y, kernel=subtract_kernel), x - y, atol=0, rtol=0)


_x = torch.zeros(10)
_strided = torch.zeros(20)[::2]


@pytest.mark.parametrize(
    "x, y, out, words",
    [
        (torch.zeros(2, 5), torch.zeros(2, 5), None, r"x must be a 1-D torch.Tensor.*\(2, 5\)"),
        (_x, torch.zeros(2, 5), None, r"y must be a 1-D torch.Tensor.*\(2, 5\)"),
        ([1.0, 2.0], _x, None, "x must be a 1-D torch.Tensor, got list"),
        (_x, torch.tensor(1.0), None, r"y must be a 1-D.*shape \(\)"),
        (_strided, _x, None, "x must be contiguous"),
        (_x, _strided, None, "y must be contiguous"),
        (_x, torch.zeros(10, dtype=torch.float64), None, "one length, dtype and device.*float64"),
        (_x, torch.zeros(11), None, r"one length, dtype and device.*\(11,\)"),
        (_x, _x, torch.zeros(11), r"out must be contiguous, like x.*got shape \(11,\)"),
        (_x, _x, torch.zeros(10, dtype=torch.float16), "out must be .*float16"),
        (_x, _x, _strided, r"out must be contiguous, like x"),
        (_x, _x, torch.zeros(2, 5), r"out must be .*got shape \(2, 5\)"),
    ],
    ids=[
        "2-d-x",
        "2-d-y",
        "list",
        "0-d-y",
        "strided-x",
        "strided-y",
        "dtypes-differ",
        "lengths-differ",
        "out-length",
        "out-dtype",
        "out-strided",
        "out-2-d",
    ],
)
def test_bad_input_names_the_problem(x, y, out, words):
    with pytest.raises(ValueError, match=words):
        add(x, y, out=out)
