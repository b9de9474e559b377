"""course/torch/flash.py and course/tf/flash.py: tiled attention with an online softmax, in
plain PyTorch and in keras.ops, against attention written out in float64 here.

The reference builds the whole matrix of scores and masks it with its own `tril`, not the
code's formula; shapes are awkward on purpose: T not a multiple of the tiles (17, 100),
tiles that do and do not divide T, tiles larger than T, fewer queries than keys (a KV
cache), B != H, head sizes 16 and 32. The Keras mirror runs the same reference on two
shapes; TensorFlow is imported only by that test (after Triton, which conftest loads).
"""

import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course.torch.flash import tiled_attention


def _randn(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)


def _qkv(B, H, T_q, T_k, D, seed=0):
    lengths = (T_q, T_k, T_k)
    return tuple(_randn(B, H, T, D, seed=seed + i) for i, T in enumerate(lengths))


def reference(q, k, v, causal):
    """(o, lse) in float64: the whole (T_q, T_k) matrix, queries the last T_q positions."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    q, k, v = (torch.from_numpy(t) for t in (q, k, v))
    T_q, T_k, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    if causal:
        visible = torch.ones(T_q, T_k, dtype=torch.bool).tril(T_k - T_q)
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v, torch.logsumexp(scores, dim=-1)


CASES = [
    # B, H, T_q, T_k, D, causal, block_m, block_n
    (2, 3, 17, 17, 16, True, 32, 32),  # T below one tile
    (1, 2, 100, 100, 32, True, 32, 32),  # tiles do not divide T: a ragged last tile
    (2, 1, 100, 100, 16, True, 25, 20),  # tiles that divide T, not square
    (3, 2, 17, 17, 32, False, 16, 8),
    (2, 1, 100, 100, 32, False, 32, 48),
    (2, 3, 13, 45, 16, True, 8, 16),  # fewer queries than keys: a KV cache
    (1, 2, 1, 33, 32, True, 32, 32),  # one new token
    (2, 2, 30, 70, 16, False, 32, 16),
    (1, 3, 17, 40, 16, True, 64, 64),  # tiles larger than T
    (1, 1, 9, 12, 16, True, 1, 1),  # one score at a time
]
IDS = [
    "T17-one-tile",
    "T100-ragged",
    "T100-dividing-tiles",
    "T17-not-causal",
    "T100-not-causal",
    "T_q13-T_k45",
    "T_q1",
    "T_q30-T_k70-not-causal",
    "tiles-past-T",
    "tiles-of-1",
]


@pytest.mark.parametrize("B, H, T_q, T_k, D, causal, block_m, block_n", CASES, ids=IDS)
def test_torch_tiled_attention_matches_float64_reference(
    B, H, T_q, T_k, D, causal, block_m, block_n
):
    q, k, v = _qkv(B, H, T_q, T_k, D, seed=T_q + T_k)
    o, lse = tiled_attention(q, k, v, causal=causal, block_m=block_m, block_n=block_n)
    assert o.shape == (B, H, T_q, D) and o.dtype == torch.float32
    assert lse.shape == (B, H, T_q) and lse.dtype == torch.float32
    want_o, want_lse = reference(q, k, v, causal)
    torch.testing.assert_close(o.double(), want_o, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), want_lse, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "not-causal"])
def test_torch_tiled_attention_matches_scaled_dot_product_attention(causal):
    q, k, v = _qkv(2, 3, 45, 45, 32, seed=4)
    o, _ = tiled_attention(q, k, v, causal=causal, block_m=16, block_n=32)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(o, expected, atol=1e-5, rtol=1e-5)


def test_torch_the_queries_are_the_last_positions_as_with_a_kv_cache():
    # No mask formula: the last 11 queries of a causal sequence of 50 give the last 11 rows
    q, k, v = _qkv(1, 2, 50, 50, 16, seed=5)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    o, _ = tiled_attention(q[:, :, -11:], k, v, causal=True, block_m=8, block_n=16)
    torch.testing.assert_close(o, full[:, :, -11:], atol=1e-5, rtol=1e-5)


def test_torch_half_precision_input_gives_its_dtype_and_float32_lse():
    q, k, v = (t.half() for t in _qkv(1, 2, 40, 40, 16, seed=6))
    o, lse = tiled_attention(q, k, v)
    assert o.dtype == torch.float16 and lse.dtype == torch.float32
    want_o, want_lse = reference(q.float(), k.float(), v.float(), True)
    torch.testing.assert_close(o.double(), want_o, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse.double(), want_lse, atol=1e-5, rtol=1e-5)


def test_torch_the_block_sizes_change_nothing_but_rounding():
    q, k, v = _qkv(2, 2, 70, 70, 16, seed=7)
    one, _ = tiled_attention(q, k, v, block_m=70, block_n=70)  # one tile: plain softmax
    for block_m, block_n in [(16, 16), (7, 33), (64, 5)]:
        other, _ = tiled_attention(q, k, v, block_m=block_m, block_n=block_n)
        torch.testing.assert_close(other, one, atol=1e-6, rtol=1e-5)


def _bad(B=1, H=2, T_q=8, T_k=8, D=16, **changes):
    q, k, v = _qkv(B, H, T_q, T_k, D)
    return {"q": q, "k": k, "v": v, **changes}


@pytest.mark.parametrize(
    "args, words",
    [
        (_bad(q=torch.zeros(2, 8, 16)), r"q must be a 4-D tensor \(B, H, T, D\), got \(2, 8, 16\)"),
        (_bad(k=[[1.0]]), r"k must be a 4-D tensor .*got list"),
        (_bad(v=torch.zeros(1, 2, 8)), r"v must be a 4-D tensor"),
        (_bad(k=torch.zeros(1, 2, 8, 32)), r"must agree, got q \(1, 2, 8, 16\), k \(1, 2, 8, 32\)"),
        (_bad(v=torch.zeros(1, 2, 7, 16)), r"must agree.*v \(1, 2, 7, 16\)"),
        (_bad(k=torch.zeros(1, 3, 8, 16), v=torch.zeros(1, 3, 8, 16)), "must agree"),
        (_bad(T_q=9, T_k=8), "need 1 <= T_q <= T_k, got T_q=9, T_k=8"),
        (_bad(T_q=0), "need 1 <= T_q <= T_k, got T_q=0"),
        (_bad(block_m=0), "block_m must be a positive int, got 0"),
        (_bad(block_n=-4), "block_n must be a positive int, got -4"),
        (_bad(block_m=16.0), "block_m must be a positive int, got 16.0"),
    ],
    ids=[
        "q-3-d",
        "k-list",
        "v-3-d",
        "head-sizes",
        "k-v-lengths",
        "heads",
        "more-queries-than-keys",
        "no-queries",
        "block_m-0",
        "block_n-negative",
        "block_m-float",
    ],
)
def test_torch_bad_input_names_the_problem(args, words):
    with pytest.raises(ValueError, match=words):
        tiled_attention(**args)


# --- the Keras mirror ---------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow")
def test_keras_tiled_attention_matches_float64_reference():
    # Imported here, so the torch tests above never wait for TensorFlow to load; conftest
    # has loaded Triton first (the other order aborts the process).
    from course.tf.flash import tiled_attention as keras_tiled_attention

    cases = [(2, 3, 17, 17, 16, True, 8, 16), (1, 2, 13, 45, 32, True, 32, 32)]
    cases += [(2, 1, 30, 70, 16, False, 16, 32)]
    for B, H, T_q, T_k, D, causal, block_m, block_n in cases:
        q, k, v = (t.numpy() for t in _qkv(B, H, T_q, T_k, D, seed=T_k))
        o, lse = keras_tiled_attention(q, k, v, causal, block_m, block_n)
        o, lse = np.asarray(o), np.asarray(lse)
        assert o.shape == (B, H, T_q, D) and lse.shape == (B, H, T_q), (o.shape, lse.shape)
        assert o.dtype == np.float32 and lse.dtype == np.float32
        want_o, want_lse = (t.numpy() for t in reference(q, k, v, causal))
        np.testing.assert_allclose(o, want_o, atol=1e-5, rtol=1e-5, err_msg=f"o {B, H, T_q, T_k}")
        np.testing.assert_allclose(lse, want_lse, atol=1e-5, rtol=1e-5, err_msg="lse")
    q, k, v = (t.numpy() for t in _qkv(1, 1, 9, 8, 16))
    with pytest.raises(ValueError, match="T_q <= T_k"):
        keras_tiled_attention(q, k, v)
