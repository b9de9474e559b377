"""kernels/testing.py: the harness chapter 07's graded tests run a learner's kernel in.

`run_isolated` must hand back values and exceptions as they were, and turn a child that
dies (a signal, an exit, a loop past its time) into KernelCrashed while this process goes on.
The canaries must catch the two quiet mistakes of a kernel, a store without its mask and a
grid that misses a block, with messages that say so; and the library's own kernels must pass
the same cases a learner's will face. Without a GPU the kernels run in Triton's interpreter
(conftest calls course.runtime.use_triton).
"""

import faulthandler
import os
import pickle
import signal
import time

import numpy as np
import pytest
import torch

from course import runtime

pytest.importorskip("triton", reason="the kernels need Triton (Linux)")
testing = runtime.import_kernels("testing")
attention = runtime.import_kernels("attention")
triton = runtime.use_triton()
tl = triton.language

run_isolated, KernelCrashed = testing.run_isolated, testing.KernelCrashed


# --- run_isolated -------------------------------------------------------------------------


@pytest.fixture
def forks():
    """Skip where run_isolated would not fork: once this process has started CUDA (a GPU
    run of the whole suite), it runs `fn` here, where a crash would end the test run."""
    if torch.cuda.is_initialized():
        pytest.skip("CUDA is initialized in this process: run_isolated runs fn without a fork")


def _power(base, exponent=2):
    return {"value": base**exponent, "pid": os.getpid()}


def test_run_isolated_returns_the_value_computed_in_a_child(forks):
    result = run_isolated(_power, 7, exponent=3)
    assert result["value"] == 343
    assert result["pid"] != os.getpid()


def test_run_isolated_returns_arrays_and_tensors():
    result = run_isolated(lambda n: (np.arange(n), torch.ones(n) * 2), 5)
    np.testing.assert_array_equal(result[0], np.arange(5))
    assert torch.equal(result[1], torch.full((5,), 2.0))


def _raise_value_error(message):
    raise ValueError(message)


def test_run_isolated_raises_the_childs_exception_as_itself():
    with pytest.raises(ValueError, match="block must be 64, got 63"):
        run_isolated(_raise_value_error, "block must be 64, got 63")


def test_run_isolated_raises_an_exception_that_cannot_be_pickled_as_child_error(forks):
    class LocalError(Exception):  # a local class: pickle cannot find it by name
        pass

    def fail():
        raise LocalError("made inside the child")

    with pytest.raises(testing.ChildError, match="LocalError: made inside the child"):
        run_isolated(fail)


def test_run_isolated_reports_a_return_value_that_cannot_be_pickled(forks):
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError), match="pickle"):
        run_isolated(lambda: lambda: 0)  # a lambda cannot be pickled


def _segfault():
    faulthandler.disable()  # no traceback on stderr: the child just dies of the signal
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)  # never reached


def test_a_child_killed_by_sigsegv_becomes_kernel_crashed_naming_the_signal(forks):
    with pytest.raises(KernelCrashed, match="killed by SIGSEGV"):
        run_isolated(_segfault)
    assert run_isolated(_power, 3)["value"] == 9  # and this process goes on


def test_a_child_that_exits_without_an_answer_becomes_kernel_crashed(forks):
    with pytest.raises(KernelCrashed, match=r"exited \(status 3\)"):
        run_isolated(os._exit, 3)


def _note_pid_then_sleep(path, seconds):
    path.write_text(str(os.getpid()))
    time.sleep(seconds)


def test_a_child_past_its_timeout_is_stopped_and_becomes_kernel_crashed(tmp_path, forks):
    started = time.monotonic()
    with pytest.raises(KernelCrashed, match="ran past 1 s and was stopped"):
        run_isolated(_note_pid_then_sleep, tmp_path / "pid", 60, timeout=1)
    assert time.monotonic() - started < 30, "the child was waited for, not stopped"
    child = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left sleeping
        os.kill(child, 0)
    assert run_isolated(_power, 4)["value"] == 16


# --- Canary -------------------------------------------------------------------------------


def test_a_fresh_canary_is_all_unwritten_and_a_full_write_leaves_no_strays():
    canary = testing.Canary((3, 5), margin=8)
    assert canary.tensor.shape == (3, 5) and canary.tensor.is_contiguous()
    assert canary.unwritten() == 15 and canary.strays() == 0
    canary.tensor[1] = 0.0
    assert canary.unwritten() == 10
    canary.tensor.fill_(1.0)
    assert canary.unwritten() == 0 and canary.strays() == 0


def test_a_canary_in_another_stride_order_catches_a_stray_write():
    B, H, T, D = 2, 3, 5, 4
    canary = testing.Canary((B, H, T, D), order=(0, 2, 1, 3))  # (B, T, H, D) in memory
    assert canary.tensor.shape == (B, H, T, D) and not canary.tensor.is_contiguous()
    assert canary.tensor.stride() == (T * H * D, D, H * D, 1)
    canary.tensor.copy_(torch.arange(B * H * T * D, dtype=torch.float32).view(B, H, T, D))
    assert canary.unwritten() == 0 and canary.strays() == 0
    # one element past the end, through the tensor's own strides (as an unmasked store would)
    past_end = canary.tensor.as_strided((1,), (1,), canary.tensor.storage_offset() + B * H * T * D)
    past_end.fill_(0.0)
    assert canary.strays() == 1 and canary.unwritten() == 0
    canary.buffer[canary.margin - 1] = 0.0  # and one before the start
    assert canary.strays() == 2


def test_case_result_check_says_where_values_differ_and_respects_tolerances():
    result = testing.CaseResult(
        "three numbers", {"y": np.array([1.0, 2.0, 3.5])}, {"y": np.array([1.0, 2.0, 3.0])}
    )
    with pytest.raises(
        AssertionError,
        match=r"three numbers: y differs .* at 1 of 3 .*first at index \(2,\): got 3.5, expected 3",
    ):
        result.check(atol=0.1, rtol=0.0)
    result.check(atol=0.0, rtol=0.2)  # 0.5 <= 0.2 * 3


# --- the canaries catch a kernel's quiet mistakes -----------------------------------------


@triton.jit
def _unmasked_store_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """add_kernel without the store's mask: the last block writes past the end of out."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0)
    y = tl.load(y_ptr + offsets, mask=inside, other=0.0)
    tl.store(out_ptr + offsets, x + y)


@triton.jit
def _skip_last_block_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """add_kernel whose last program does nothing: a grid one block short, in effect."""
    pid = tl.program_id(0)
    if pid == tl.num_programs(0) - 1:
        return
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    x = tl.load(x_ptr + offsets, mask=inside)
    y = tl.load(y_ptr + offsets, mask=inside)
    tl.store(out_ptr + offsets, x + y, mask=inside)


@triton.jit
def _subtract_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """Every element written, none outside: wrong only in its numbers."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    x = tl.load(x_ptr + offsets, mask=inside)
    y = tl.load(y_ptr + offsets, mask=inside)
    tl.store(out_ptr + offsets, x - y, mask=inside)


def test_the_library_add_kernel_passes_its_cases():
    add_kernel = runtime.import_kernels("vector_add").add_kernel
    for n in (1, 65, 200):
        run_isolated(testing.vector_add_case, add_kernel, n).check(atol=0, rtol=0)


def test_an_unmasked_store_fails_with_written_outside():
    result = run_isolated(testing.vector_add_case, _unmasked_store_kernel, 100)
    assert result.strays["out"] == 128 - 100  # the rest of the last block of 64
    with pytest.raises(AssertionError, match=r"n=100: 28 element\(s\) written outside out"):
        result.check()


def test_a_missed_last_block_fails_with_nan_elements():
    result = run_isolated(testing.vector_add_case, _skip_last_block_kernel, 100)
    assert result.strays["out"] == 0
    with pytest.raises(AssertionError, match=r"36 of 100 element\(s\) of out are NaN"):
        result.check()


def test_wrong_numbers_fail_with_differs_from_the_reference():
    result = run_isolated(testing.vector_add_case, _subtract_kernel, 70)
    with pytest.raises(AssertionError, match="out differs from the reference"):
        result.check()


# --- the library's kernels pass the cases a learner's will face ---------------------------


@pytest.mark.parametrize(
    "online, transposed, block", [(False, False, None), (True, True, 32)], ids=["fused", "online"]
)
def test_the_library_softmax_kernels_pass_their_cases(online, transposed, block):
    softmax = runtime.import_kernels("softmax")
    kernel = softmax.online_softmax_kernel if online else softmax.softmax_kernel
    result = testing.softmax_case(
        kernel, 5, 77, online=online, scale=100.0, transposed=transposed, block=block
    )
    result.check(atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "B, H, T_q, T_k, D, causal, packed",
    [(1, 2, 13, 45, 16, True, False), (2, 1, 37, 37, 32, False, True)],
    ids=["causal-fewer-queries", "packed-not-causal"],
)
def test_the_library_attention_kernels_pass_forward_and_backward_cases(
    B, H, T_q, T_k, D, causal, packed
):
    shape = dict(B=B, H=H, T_q=T_q, T_k=T_k, D=D, causal=causal, packed=packed)
    forward = run_isolated(testing.forward_case, None, **shape)
    forward.check(atol=1e-5, rtol=1e-5)
    backward = run_isolated(testing.backward_case, {}, **shape)
    assert set(backward.got) == {"delta", "dq", "dk", "dv"}
    backward.check(atol=1e-5, rtol=1e-5)


def test_the_reference_attention_matches_torch_sdpa():
    q, k, v = testing.attention_inputs(2, 3, 11, 11, 16, packed=True)
    for causal in (True, False):
        o, lse = testing.reference_attention(q, k, v, causal)
        expected = torch.nn.functional.scaled_dot_product_attention(
            q.double(), k.double(), v.double(), is_causal=causal
        )
        torch.testing.assert_close(o, expected, atol=1e-12, rtol=1e-12)
    scores = q.double() @ k.double().transpose(-2, -1) / 4.0  # not causal, scale 1/√16
    torch.testing.assert_close(lse, torch.logsumexp(scores, dim=-1), atol=1e-12, rtol=1e-12)
