"""kernels/attention.py: FlashAttention-2, forward and backward, against torch's attention.

The reference is attention written out in float64 (its own mask, not the kernel's) and torch's
scaled_dot_product_attention; shapes are awkward on purpose: T not a multiple of the 32-row
tiles, fewer queries than keys (a KV cache), B != H, head sizes 16 to 128 and one that is
not a power of two, and q, k, v that are views of one packed tensor. Then the GPT with
attn_impl="triton" against attn_impl="sdpa", and a fresh process that shows Triton stays
unloaded until a kernel is used. Without a GPU the kernels run in Triton's interpreter
(conftest calls course.runtime.use_triton); with one, the same tests run compiled on it.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, run_script

from course import runtime
from course.config import GPTConfig
from course.torch import GPT, generate

pytest.importorskip("triton", reason="the kernels need Triton (Linux)")
attention = runtime.import_kernels("attention")
flash_attention = attention.flash_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _randn(*shape, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).to(DEVICE, dtype)


def _qkv(B, H, T_q, T_k, D, dtype=torch.float32, seed=0):
    return (
        _randn(B, H, T_q, D, dtype=dtype, seed=seed),
        _randn(B, H, T_k, D, dtype=dtype, seed=seed + 1),
        _randn(B, H, T_k, D, dtype=dtype, seed=seed + 2),
    )


def reference(q, k, v, causal):
    """(out, logsumexp) in float64: softmax(q kᵀ / √D + mask) v with the queries the last T_q
    of T_k positions, so query i sees keys 0 .. i + T_k - T_q."""
    T_q, T_k, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(D)
    if causal:
        visible = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(T_k - T_q)
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v.double(), torch.logsumexp(scores, dim=-1)


def _grads(fn, q, k, v, grad_out, dtype=None):
    """fn(q, k, v)'s output and the gradients of sum(output * grad_out) for q, k, v, with
    q, k, v first converted to `dtype` (float64 for the reference)."""
    leaves = [x.detach().to(dtype or x.dtype, copy=True).requires_grad_() for x in (q, k, v)]
    out = fn(*leaves)
    (out * grad_out.to(out.dtype)).sum().backward()
    return out.detach(), [x.grad for x in leaves]


def _check_against_reference(q, k, v, causal, atol, rtol):
    grad_out = _randn(*q.shape, seed=9)
    out, grads = _grads(lambda *x: flash_attention(*x, causal=causal), q, k, v, grad_out)
    expected, expected_grads = _grads(
        lambda *x: reference(*x, causal)[0], q, k, v, grad_out, dtype=torch.float64
    )
    assert out.dtype == q.dtype and out.shape == q.shape
    torch.testing.assert_close(out.double(), expected, atol=atol, rtol=rtol)
    for name, grad, want in zip("qkv", grads, expected_grads, strict=True):
        assert grad.dtype == q.dtype, name
        torch.testing.assert_close(grad.double(), want, atol=atol, rtol=rtol, msg=f"d{name}")


# --- forward and backward against the reference -------------------------------------------


@pytest.mark.parametrize(
    "B, H, T, D",
    [(2, 3, 37, 16), (1, 2, 70, 64), (3, 1, 5, 32), (1, 1, 64, 128), (2, 2, 41, 24)],
    ids=["T37-D16", "T70-D64", "T5-below-one-tile", "T64-D128", "D24-not-a-power-of-two"],
)
def test_causal_float32_matches_reference(B, H, T, D):
    _check_against_reference(*_qkv(B, H, T, T, D), causal=True, atol=1e-5, rtol=1e-5)


def test_not_causal_float32_matches_reference():
    _check_against_reference(*_qkv(2, 3, 45, 45, 32), causal=False, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "T_q, T_k, causal",
    [(1, 45, True), (7, 70, True), (33, 65, True), (20, 50, False)],
    ids=["one-new-token", "chunk", "more-than-a-tile", "not-causal"],
)
def test_fewer_queries_than_keys_match_reference(T_q, T_k, causal):
    _check_against_reference(*_qkv(2, 2, T_q, T_k, 32), causal=causal, atol=1e-5, rtol=1e-5)


def test_the_queries_are_the_last_positions_as_with_a_kv_cache():
    # Independent of any mask formula: attending from the last T_q queries of a causal
    # sequence must give the last T_q rows of full causal attention.
    q, k, v = _qkv(1, 2, 67, 67, 32)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for T_q in (1, 8, 40):
        out = flash_attention(q[:, :, -T_q:], k, v)
        torch.testing.assert_close(out, full[:, :, -T_q:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_matches_scaled_dot_product_attention(causal):
    q, k, v = _qkv(2, 3, 50, 50, 64, seed=4)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(flash_attention(q, k, v, causal), expected, atol=1e-5, rtol=1e-5)


def test_logsumexp_is_saved_per_query_row():
    for T_q, T_k, causal in [(37, 37, True), (9, 50, True), (30, 41, False)]:
        q, k, v = _qkv(2, 3, T_q, T_k, 16, seed=T_q)
        out, lse = attention.flash_attention_forward(q, k, v, causal)
        expected_out, expected_lse = reference(q, k, v, causal)
        assert lse.shape == (2, 3, T_q) and lse.dtype == torch.float32
        torch.testing.assert_close(lse.double(), expected_lse, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.double(), expected_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "dtype, atol",
    [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)],
    ids=["fp16", "bf16"],
)
def test_half_precision_matches_reference(dtype, atol):
    # float16 rounds to about 3 decimal digits and bfloat16 to about 2; the reference gets
    # the same rounded inputs, so what remains is the kernel's own rounding (of P, of o).
    q, k, v = _qkv(2, 2, 45, 45, 32, dtype=dtype)
    _check_against_reference(q, k, v, causal=True, atol=atol, rtol=atol)


# --- strides: views of the GPT's packed q, k, v -------------------------------------------


def test_views_of_a_packed_qkv_need_no_copy_and_get_their_gradients():
    B, T, H, D = 2, 39, 3, 32
    packed = _randn(B, T, 3, H, D).requires_grad_()  # what c_attn's output reshapes to
    q, k, v = (packed[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, T, D) views
    assert not any(x.is_contiguous() for x in (q, k, v))
    out = flash_attention(q, k, v)
    # the gradient reaching the kernel is a view too: o.transpose(1, 2)'s backward
    grad_out = _randn(B, T, H, D, seed=5)
    (out.transpose(1, 2) * grad_out).sum().backward()

    expected_packed = packed.detach().double().requires_grad_()
    q, k, v = (expected_packed[:, :, i].transpose(1, 2) for i in range(3))
    expected = reference(q, k, v, causal=True)[0]
    (expected.transpose(1, 2) * grad_out.double()).sum().backward()
    torch.testing.assert_close(out.detach().double(), expected.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed.grad.double(), expected_packed.grad, atol=1e-5, rtol=1e-5)


def test_a_broadcast_output_gradient_works():
    q, k, v = (x.requires_grad_() for x in _qkv(1, 2, 35, 35, 16))
    flash_attention(q, k, v).sum().backward()  # its gradient is ones with stride 0
    mine = [x.grad for x in (q, k, v)]
    ones = torch.ones_like(q)
    expected = _grads(lambda *x: reference(*x, True)[0], q, k, v, ones, torch.float64)[1]
    for grad, want in zip(mine, expected, strict=True):
        torch.testing.assert_close(grad.double(), want, atol=1e-5, rtol=1e-5)


# --- errors that name the problem ---------------------------------------------------------


def _bad(B=1, H=2, T_q=8, T_k=8, D=16, **changes):
    q, k, v = _qkv(B, H, T_q, T_k, D)
    return {"q": q, "k": k, "v": v, **changes}


@pytest.mark.parametrize(
    "args, error, words",
    [
        (_bad(q=torch.zeros(2, 8, 16)), ValueError, r"q must be 4-D \(B, H, T, D\)"),
        (_bad(k=torch.zeros(1, 2, 8, 32)), ValueError, "same head size D = 16"),
        (_bad(v=torch.zeros(1, 2, 8, 24)), ValueError, "same head size D = 16"),
        (_bad(T_q=9, T_k=8), ValueError, "T_q = 9 queries but T_k = 8 keys"),
        (_bad(k=torch.zeros(1, 3, 8, 16)), ValueError, r"same batch and heads \(B, H\)"),
        (_bad(v=torch.zeros(1, 2, 7, 16)), ValueError, "as many keys as values"),
        (_bad(D=8), ValueError, "head size D = 8 is outside the 16..128"),
        (_bad(D=160), ValueError, "head size D = 160 is outside the 16..128"),
        (_bad(T_q=0), ValueError, "q is empty"),
        (_bad(causal=1), TypeError, "causal must be True or False"),
        (_bad(q=[[1.0]]), TypeError, "q must be a torch.Tensor"),
    ],
    ids=[
        "rank",
        "k-head-size",
        "v-head-size",
        "more-queries-than-keys",
        "heads",
        "k-v-lengths",
        "head-size-8",
        "head-size-160",
        "empty",
        "causal-not-bool",
        "not-a-tensor",
    ],
)
def test_bad_input_names_the_problem(args, error, words):
    with pytest.raises(error, match=words):
        flash_attention(**args)


def test_unsupported_dtypes_are_named():
    q, k, v = _qkv(1, 2, 8, 8, 16)
    with pytest.raises(TypeError, match="float64; flash_attention supports float32, float16"):
        flash_attention(q.double(), k.double(), v.double())
    with pytest.raises(TypeError, match="share one dtype"):
        flash_attention(q, k.half(), v)


# --- the GPT with attn_impl="triton" ------------------------------------------------------

# head size 32 // 2 = 16, the kernels' smallest
TINY = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=24, vocab_size=50)


def _twins(spread: float):
    """The same GPT twice, with attention by sdpa and by the Triton kernels."""
    torch.manual_seed(0)
    sdpa = GPT(TINY).to(DEVICE)
    with torch.no_grad():  # a fresh GPT's logits are nearly flat: make greedy output vary
        for p in sdpa.parameters():
            p.add_(torch.randn_like(p) * spread)
    triton = GPT(TINY.replace(attn_impl="triton")).to(DEVICE)
    triton.load_state_dict(sdpa.state_dict())
    return sdpa, triton


def _ids(B, T, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY.vocab_size, (B, T), generator=generator).to(DEVICE)


def test_gpt_loss_and_gradients_match_sdpa():
    sdpa, triton = _twins(spread=0.05)
    idx, targets = _ids(2, 20), _ids(2, 20, seed=2)
    for model in (sdpa, triton):
        model.train()
        _, loss = model(idx, targets)
        loss.backward()
    torch.testing.assert_close(triton(idx)[0], sdpa(idx)[0], atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(sdpa.named_parameters(), triton.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_gpt_with_a_kv_cache_gives_the_full_forward_logits():
    _, triton = _twins(spread=0.05)
    triton.eval()
    idx = _ids(2, 20)
    with torch.no_grad():
        full, _ = triton(idx)
        cache = triton.new_cache(2)
        pieces = [triton(idx[:, :7], cache=cache)[0]]  # a prompt of 7 tokens at once
        pieces += [triton(idx[:, t : t + 1], cache=cache)[0] for t in range(7, 12)]
        pieces.append(triton(idx[:, 12:], cache=cache)[0])  # 8 queries, 20 keys
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_generation_with_the_cache_gives_sdpa_tokens():
    sdpa, triton = _twins(spread=0.3)
    prompt = _ids(2, 4)
    # 4 + 20 tokens fill block_size (24) exactly: every new token is one query over the cache
    expected = generate(sdpa, prompt, 20, temperature=0, use_cache=True)
    tokens = generate(triton, prompt, 20, temperature=0, use_cache=True)
    assert len(set(expected[0, 4:].tolist())) > 2, "the test needs a model that varies"
    assert torch.equal(tokens, expected)


# --- Triton is loaded when a kernel is used, not before ----------------------------------


def test_importing_course_torch_loads_no_triton_until_the_gpt_uses_it(tmp_path):
    result = run_script(
        """
        import os, sys
        before = dict(os.environ)
        import torch
        import course.torch
        from course.config import GPTConfig
        from course.torch import GPT

        config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=20)
        model = GPT(config.replace(attn_impl="triton")).eval()
        print("BUILT", "triton" in sys.modules, "kernels.attention" in sys.modules,
              dict(os.environ) == before)

        from course import runtime
        runtime._has_cuda_driver = lambda: False  # the CPU case, on any machine
        idx = torch.randint(0, 20, (2, 11))
        with torch.no_grad():
            logits, _ = model(idx)
            for block in model.transformer.h:
                block.attn.attn_impl = "sdpa"
            expected, _ = model(idx)
        print("USED", "triton" in sys.modules, os.environ.get("TRITON_INTERPRET"),
              bool(torch.allclose(logits, expected, atol=1e-5)))
        """,
        tmp_path,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["BUILT"] == "False False True"
    assert lines["USED"] == "True 1 True"


# --- use_kernels: other kernels for flash_attention and the GPT ---------------------------

triton_module = runtime.use_triton()
tl = triton_module.language


@triton_module.jit
def _zeros_forward_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_ob, stride_oh, stride_ot, stride_od,
    H, T_q, T_k, D, scale,
    CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """The forward kernel's signature, writing o = 0 and lse = 0: easy to tell apart."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    pointers = o_ptr + b * stride_ob + h * stride_oh
    pointers += rows[:, None] * stride_ot + dims[None, :] * stride_od
    inside = (rows[:, None] < T_q) & (dims[None, :] < D)
    tl.store(pointers, tl.zeros([BLOCK_M, BLOCK_D], tl.float32), mask=inside)
    tl.store(lse_ptr + bh * T_q + rows, tl.zeros([BLOCK_M], tl.float32), mask=rows < T_q)


def test_use_kernels_swaps_the_forward_kernel_inside_the_with_only():
    q, k, v = _qkv(1, 2, 20, 20, 16)
    expected = reference(q, k, v, causal=True)[0]
    with attention.use_kernels(forward=_zeros_forward_kernel):
        inside = flash_attention(q, k, v)
    assert torch.equal(inside, torch.zeros_like(q))
    after = flash_attention(q, k, v)
    torch.testing.assert_close(after.double(), expected, atol=1e-5, rtol=1e-5)
    assert attention._active_kernels == attention.DEFAULT_KERNELS


def test_use_kernels_restores_the_library_kernels_after_an_exception():
    q, k, v = _qkv(1, 2, 20, 20, 16)
    with pytest.raises(RuntimeError, match="learner's mistake"):
        with attention.use_kernels(forward=_zeros_forward_kernel):
            assert torch.equal(flash_attention(q, k, v), torch.zeros_like(q))
            raise RuntimeError("a learner's mistake")
    torch.testing.assert_close(
        flash_attention(q, k, v).double(), reference(q, k, v, True)[0], atol=1e-5, rtol=1e-5
    )


def test_use_kernels_nested_restores_the_outer_choice():
    q, k, v = _qkv(1, 1, 10, 10, 16)
    library = attention.DEFAULT_KERNELS["forward"]
    with attention.use_kernels(forward=_zeros_forward_kernel):
        with attention.use_kernels(forward=library):
            assert not torch.equal(flash_attention(q, k, v), torch.zeros_like(q))
        assert torch.equal(flash_attention(q, k, v), torch.zeros_like(q))


def test_use_kernels_reaches_the_gpt_with_attn_impl_triton():
    _, model = _twins(spread=0.05)
    model.eval()
    idx = _ids(1, 12)
    with torch.no_grad():
        normal, _ = model(idx)
        with attention.use_kernels(forward=_zeros_forward_kernel):
            zeroed, _ = model(idx)  # attention outputs 0: the logits change
        again, _ = model(idx)
    assert (zeroed - normal).abs().max() > 1e-3
    torch.testing.assert_close(again, normal, atol=0, rtol=0)


def test_use_kernels_refuses_an_unknown_role():
    with pytest.raises(ValueError, match=r"unknown kernel role\(s\) \['backward'\].*'forward'"):
        with attention.use_kernels(backward=_zeros_forward_kernel):
            pass
    assert attention._active_kernels == attention.DEFAULT_KERNELS


# --- out=: the launchers write into given tensors ------------------------------------------


def test_forward_out_writes_into_given_tensors_including_strided_ones():
    B, H, T_q, T_k, D = 2, 3, 21, 40, 16
    q, k, v = _qkv(B, H, T_q, T_k, D, seed=3)
    o_storage = torch.full((B, T_q, H, D), float("nan"), device=DEVICE)
    o_out = o_storage.transpose(1, 2)  # (B, H, T_q, D), not contiguous: as the GPT reads it
    lse_out = torch.full((B, H, T_q), float("nan"), device=DEVICE)
    o, lse = attention.flash_attention_forward(q, k, v, True, out=(o_out, lse_out))
    assert o is o_out and lse is lse_out
    expected_o, expected_lse = reference(q, k, v, causal=True)
    torch.testing.assert_close(o_storage.transpose(1, 2).double(), expected_o, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse_out.double(), expected_lse, atol=1e-5, rtol=1e-5)


def test_backward_out_writes_into_given_tensors_including_strided_ones():
    B, H, T_q, T_k, D = 1, 2, 19, 35, 16
    q, k, v = _qkv(B, H, T_q, T_k, D, seed=4)
    do = _randn(B, H, T_q, D, seed=8)
    o, lse = attention.flash_attention_forward(q, k, v, True)
    nan = float("nan")
    out = {
        "delta": torch.full((B, H, T_q), nan, device=DEVICE),
        "dq": torch.full((B, T_q, H, D), nan, device=DEVICE).transpose(1, 2),
        "dk": torch.full((H, B, T_k, D), nan, device=DEVICE).transpose(0, 1),
        "dv": torch.full((H, B, T_k, D), nan, device=DEVICE).transpose(0, 1),
    }
    dq, dk, dv = attention.flash_attention_backward(do, q, k, v, o, lse, True, out=out)
    assert dq is out["dq"] and dk is out["dk"] and dv is out["dv"]
    _, expected = _grads(lambda *x: reference(*x, True)[0], q, k, v, do, torch.float64)
    for name, want in zip(("dq", "dk", "dv"), expected, strict=True):
        torch.testing.assert_close(out[name].double(), want, atol=1e-5, rtol=1e-5, msg=name)
    expected_delta = (o.double() * do.double()).sum(-1)
    torch.testing.assert_close(out["delta"].double(), expected_delta, atol=1e-5, rtol=1e-5)


def test_backward_kernels_given_by_role_run_instead_of_the_library_ones():
    # The preprocess role swapped for a kernel that writes Delta = 0: dq changes (it uses
    # Delta), dv does not (it does not), and the library's other kernels still run.
    q, k, v = _qkv(1, 1, 20, 20, 16, seed=5)
    do = _randn(1, 1, 20, 16, seed=6)
    o, lse = attention.flash_attention_forward(q, k, v, True)

    @triton_module.jit
    def zero_delta_kernel(
        o_ptr, do_ptr, delta_ptr,
        stride_ob, stride_oh, stride_ot, stride_od,
        stride_do_b, stride_do_h, stride_do_t, stride_do_d,
        H, T_q, D,
        BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        bh = tl.program_id(1).to(tl.int64)
        tl.store(delta_ptr + bh * T_q + rows, tl.zeros([BLOCK_M], tl.float32), mask=rows < T_q)

    normal = attention.flash_attention_backward(do, q, k, v, o, lse, True)
    swapped = attention.flash_attention_backward(
        do, q, k, v, o, lse, True, kernels={"preprocess": zero_delta_kernel}
    )
    torch.testing.assert_close(swapped[2], normal[2], atol=0, rtol=0)  # dv
    assert (swapped[0] - normal[0]).abs().max() > 1e-3  # dq
    # dS = P (dP - Delta), so with Delta = 0 dq is scale * (P * dP) @ k, scale = 1 / √16
    p = torch.softmax(
        (q @ k.transpose(-2, -1) / 4.0).masked_fill(
            ~torch.ones(20, 20, dtype=torch.bool, device=DEVICE).tril(), float("-inf")
        ),
        dim=-1,
    )
    dp = do @ v.transpose(-2, -1)
    torch.testing.assert_close(swapped[0], (p * dp) @ k / 4.0, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "out, words",
    [
        ((torch.empty(1, 2, 9, 16), torch.empty(1, 2, 9)), r"out o must be \(1, 2, 8, 16\)"),
        (
            (torch.empty(1, 2, 8, 16, dtype=torch.float16), torch.empty(1, 2, 8)),
            r"out o must be .*torch.float32.*got .*torch.float16",
        ),
        ((torch.empty(1, 2, 8, 16), torch.empty(1, 2, 8, 1)), r"out lse must be \(1, 2, 8\)"),
        (
            (torch.empty(1, 2, 8, 16), torch.empty(1, 2, 8, dtype=torch.float64)),
            "out lse must be .*torch.float32.*got .*torch.float64",
        ),
        ((torch.empty(1, 2, 8, 16), torch.empty(1, 2, 16)[..., ::2]), "lse must be contig"),
    ],
    ids=["o-shape", "o-dtype", "lse-shape", "lse-dtype", "lse-strided"],
)
def test_forward_bad_out_names_the_problem(out, words):
    q, k, v = _qkv(1, 2, 8, 8, 16)
    out = tuple(t.to(DEVICE) for t in out)
    with pytest.raises(ValueError, match=words):
        attention.flash_attention_forward(q, k, v, True, out=out)


@pytest.mark.parametrize(
    "name, tensor, words",
    [
        ("dq", torch.empty(1, 2, 8, 32), r"out dq must be \(1, 2, 8, 16\)"),
        ("dk", torch.empty(1, 2, 12, 16, dtype=torch.float16), "out dk must be .*float16"),
        ("dv", torch.empty(1, 2, 8, 16), r"out dv must be \(1, 2, 12, 16\)"),
        ("delta", torch.empty(1, 2, 8, dtype=torch.float16), "out delta must be .*float16"),
        ("delta", torch.empty(1, 2, 16)[..., ::2], "out delta must be contiguous"),
        ("dk", torch.empty(1, 12, 2, 16).transpose(1, 2), "dk and dv must have the same stri"),
        ("dO", torch.empty(1, 2, 8, 16), r"unknown output\(s\) \['dO'\]"),
    ],
    ids=["dq-shape", "dk-dtype", "dv-shape", "delta-dtype", "delta-strided", "dk-dv", "name"],
)
def test_backward_bad_out_names_the_problem(name, tensor, words):
    q, k, v = _qkv(1, 2, 8, 12, 16)
    o, lse = attention.flash_attention_forward(q, k, v, True)
    with pytest.raises(ValueError, match=words):
        attention.flash_attention_backward(
            torch.ones_like(o), q, k, v, o, lse, True, out={name: tensor.to(DEVICE)}
        )


def test_backward_refuses_an_lse_the_kernels_would_misread():
    # Same values, other strides: the kernels read lse as contiguous rows, so such an lse
    # once gave gradients off by tens without a word.
    q, k, v = _qkv(2, 3, 20, 20, 16)
    o, lse = attention.flash_attention_forward(q, k, v, True)
    strided = torch.empty(2, 20, 3, device=DEVICE).transpose(1, 2)
    strided.copy_(lse)
    with pytest.raises(ValueError, match="lse must be float32 and contiguous"):
        attention.flash_attention_backward(torch.ones_like(o), q, k, v, o, strided, True)


@pytest.mark.parametrize("kernels", [{"dQ": None}, {"dq": None}, {"forward": None}])
def test_backward_refuses_kernels_of_no_backward_role(kernels):
    q, k, v = _qkv(1, 2, 8, 8, 16)
    o, lse = attention.flash_attention_forward(q, k, v, True)
    with pytest.raises(ValueError, match="kernels maps roles"):
        attention.flash_attention_backward(
            torch.ones_like(o), q, k, v, o, lse, True, kernels=kernels
        )


@pytest.mark.parametrize("out", [[1, 2], (torch.empty(1, 2, 8, 16),), "o"])
def test_forward_out_must_be_a_pair_of_tensors(out):
    q, k, v = _qkv(1, 2, 8, 8, 16)
    with pytest.raises(TypeError, match="out"):
        attention.flash_attention_forward(q, k, v, True, out=out)
