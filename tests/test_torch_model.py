"""course.torch: the GPT's shapes, causality, the two attention paths, Hugging Face GPT-2
parity, the KV cache, sampling, and the errors a learner meets first."""

import math

import pytest
import torch
import torch.nn.functional as F

from course.config import GPTConfig
from course.torch import (
    GPT,
    Block,
    CausalSelfAttention,
    KVCache,
    causal_mask,
    filter_logits,
    generate,
    manual_attention,
    sample_next,
)
from course.torch.model import config_from_hf, load_hf_state_dict

SMALL = GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=24, vocab_size=50)


def _model(config: GPTConfig = SMALL, seed: int = 0, spread: float = 0.0) -> GPT:
    """A GPT in eval mode. `spread` adds noise to every weight, so that its greedy output is
    not one token repeated (a freshly initialised GPT's logits are nearly flat)."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    if spread:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * spread)
    return model


def _ids(B: int, T: int, vocab: int = SMALL.vocab_size, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


# --- shapes and structure ---------------------------------------------------------------


def test_shapes_and_loss():
    model = _model()
    idx = _ids(3, 10)
    logits, loss = model(idx)
    assert logits.shape == (3, 10, SMALL.vocab_size) and loss is None
    logits, loss = model(idx, idx)
    assert loss.ndim == 0
    expected = F.cross_entropy(logits.reshape(-1, SMALL.vocab_size), idx.reshape(-1))
    torch.testing.assert_close(loss, expected)
    last, _ = model(idx, last_only=True)
    torch.testing.assert_close(last, logits[:, -1:])


def test_untrained_loss_is_near_log_vocab():
    model = _model(GPTConfig(vocab_size=65, n_layer=2, n_head=2, n_embd=32, block_size=32))
    idx, targets = _ids(8, 32, vocab=65), _ids(8, 32, vocab=65, seed=2)
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(65)) < 0.15


def test_ignore_index_minus_one():
    model = _model()
    idx = _ids(2, 8)
    targets = idx.clone()
    targets[:, :4] = -1
    _, loss = model(idx, targets)
    logits, _ = model(idx)
    expected = F.cross_entropy(logits[:, 4:].reshape(-1, SMALL.vocab_size), idx[:, 4:].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_gpt2_parameter_names_and_weight_tying():
    model = _model(SMALL.replace(bias=True))
    names = set(model.state_dict())
    for name in (
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_attn.bias",
        "transformer.h.0.attn.c_proj.weight",
        "transformer.h.1.ln_2.bias",
        "transformer.h.1.mlp.c_fc.weight",
        "transformer.h.1.mlp.c_proj.weight",
        "transformer.ln_f.weight",
        "lm_head.weight",
    ):
        assert name in names, name
    assert model.lm_head.weight is model.transformer.wte.weight
    no_bias = _model()
    assert not any(name.endswith("bias") for name in no_bias.state_dict())


def test_parameter_count():
    c = SMALL
    C = c.n_embd
    # no biases: each LayerNorm has only its C weights
    per_block = C + (C * 3 * C + C * C) + C + (C * 4 * C + 4 * C * C)
    expected = c.vocab_size * C + c.block_size * C + c.n_layer * per_block + C
    model = _model()
    assert model.num_params(non_embedding=False) == expected
    assert model.num_params() == expected - c.block_size * C


def test_residual_projections_use_the_scaled_init():
    model = _model(GPTConfig(n_layer=8, n_head=4, n_embd=128, block_size=16))
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)


# --- attention ------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_changing_a_future_token_never_changes_an_earlier_logit(impl):
    model = _model(SMALL.replace(attn_impl=impl), spread=0.05)
    idx = _ids(2, 16)
    logits, _ = model(idx)
    for t in (0, 7, 15):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % SMALL.vocab_size
        new_logits, _ = model(changed)
        torch.testing.assert_close(new_logits[:, :t], logits[:, :t], atol=0, rtol=0)
        assert not torch.allclose(new_logits[:, t:], logits[:, t:]), "the token itself counts"


def test_manual_and_sdpa_agree_forward_and_backward():
    manual = _model(SMALL.replace(attn_impl="manual"), spread=0.05).train()
    sdpa = GPT(SMALL.replace(attn_impl="sdpa")).train()
    sdpa.load_state_dict(manual.state_dict())
    idx = _ids(3, SMALL.block_size)
    lm, loss_m = manual(idx, idx)
    ls, loss_s = sdpa(idx, idx)
    assert (lm - ls).abs().max().item() <= 1e-5
    loss_m.backward()
    loss_s.backward()
    for (name, pm), ps in zip(manual.named_parameters(), sdpa.parameters(), strict=True):
        torch.testing.assert_close(pm.grad, ps.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_manual_attention_by_hand():
    # Two keys, the second query sees both; scores are q·k / sqrt(hs).
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    y, w = manual_attention(q, k, v, return_weights=True)
    torch.testing.assert_close(w[0], torch.tensor([1.0, 0.0]))  # query 0 sees key 0 only
    p = torch.softmax(torch.tensor([0.0, 2.0]) / math.sqrt(2), dim=0)
    torch.testing.assert_close(w[1], p)
    torch.testing.assert_close(y[1], p @ v)


def test_causal_mask_with_cached_keys():
    assert causal_mask(3, 3).tolist() == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]
    # two new queries after three cached keys: positions 3 and 4
    assert causal_mask(2, 5).tolist() == [
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]


def test_attention_maps_are_causal_distributions():
    model = _model(spread=0.05)
    maps = model.attention_maps(_ids(1, 12))
    assert maps.shape == (SMALL.n_layer, SMALL.n_head, 12, 12)
    torch.testing.assert_close(maps.sum(-1), torch.ones(SMALL.n_layer, SMALL.n_head, 12))
    assert torch.all(maps.triu(diagonal=1) == 0)
    assert all(b.attn.weights is None and not b.attn.keep_weights for b in model.transformer.h)


def test_dropout_is_random_in_training_and_off_in_eval():
    model = _model(SMALL.replace(dropout=0.3, attn_impl="manual"))
    idx = _ids(2, 8)
    model.train()
    a, _ = model(idx)
    b, _ = model(idx)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0], atol=0, rtol=0)


def test_block_is_pre_layernorm_with_residuals():
    torch.manual_seed(0)
    block = Block(SMALL).eval()
    x = torch.randn(2, 5, SMALL.n_embd) * 3
    h = x + block.attn(block.ln_1(x))
    expected = h + block.mlp.c_proj(F.gelu(block.mlp.c_fc(block.ln_2(h)), approximate="tanh"))
    torch.testing.assert_close(block(x), expected)


def test_triton_attention_refuses_dropout_it_does_not_have():
    attn = CausalSelfAttention(SMALL.replace(attn_impl="triton", dropout=0.1)).train()
    with pytest.raises(ValueError, match="dropout=0.1"):
        attn(torch.randn(1, 4, SMALL.n_embd))


# --- Hugging Face GPT-2 ----------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_gpt2():
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.GPT2Config(
        n_layer=3,
        n_head=4,
        n_embd=64,
        n_positions=32,
        vocab_size=97,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(3)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():  # perturb every weight: GPT-2's init has zero biases and unit LNs
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return hf


def test_hf_gpt2_state_dict_gives_the_same_logits(hf_gpt2):
    model = load_hf_state_dict(GPT(config_from_hf(hf_gpt2.config)).eval(), hf_gpt2.state_dict())
    idx = _ids(2, 32, vocab=97, seed=5)
    with torch.no_grad():
        expected = hf_gpt2(idx).logits
    logits, _ = model(idx)
    assert (logits - expected).abs().max().item() <= 1e-5
    manual = load_hf_state_dict(
        GPT(config_from_hf(hf_gpt2.config, attn_impl="manual")).eval(), hf_gpt2.state_dict()
    )
    assert (manual(idx)[0] - expected).abs().max().item() <= 1e-5


def test_hf_state_dict_that_does_not_fit_is_refused(hf_gpt2):
    no_bias = GPT(config_from_hf(hf_gpt2.config, bias=False))
    with pytest.raises(ValueError, match="bias"):
        load_hf_state_dict(no_bias, hf_gpt2.state_dict())
    wider = GPT(config_from_hf(hf_gpt2.config, vocab_size=98))
    with pytest.raises(ValueError, match="wte"):
        load_hf_state_dict(wider, hf_gpt2.state_dict())


# --- KV cache ---------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_cached_logits_equal_full_forward(impl):
    model = _model(SMALL.replace(attn_impl=impl), spread=0.05)
    idx = _ids(2, 20)
    full, _ = model(idx)
    cache = model.new_cache(2)
    pieces = [model(idx[:, :7], cache=cache)[0]]  # a prompt of 7 tokens at once
    pieces += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(7, 12)]  # one by one
    pieces.append(model(idx[:, 12:], cache=cache)[0])  # then a chunk of 8
    assert cache[0].length == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_greedy_generation_is_the_same_with_and_without_the_cache(impl):
    model = _model(SMALL.replace(attn_impl=impl), spread=0.3)
    prompt = _ids(2, 4)
    # 40 new tokens: past block_size (24), where the window starts to slide
    with_cache = generate(model, prompt, 40, temperature=0, use_cache=True)
    without = generate(model, prompt, 40, temperature=0, use_cache=False)
    assert with_cache.shape == (2, 44)
    assert torch.equal(with_cache, without)
    assert len(set(with_cache[0, 4:].tolist())) > 2, "the test needs a model that varies"
    assert torch.equal(with_cache[:, :4], prompt)


def test_greedy_generation_equals_argmax_of_the_full_forward():
    model = _model(spread=0.3)
    out = generate(model, _ids(1, 3), 10, temperature=0)
    for t in range(3, 13):
        logits, _ = model(out[:, :t])
        assert out[0, t].item() == logits[0, -1].argmax().item()


def test_sampled_generation_with_cache_matches_without_for_the_same_seed():
    model = _model(spread=0.3)
    prompt = _ids(1, 5)
    a = generate(model, prompt, 15, temperature=0.9, top_k=10, seed=4, use_cache=True)
    b = generate(model, prompt, 15, temperature=0.9, top_k=10, seed=4, use_cache=False)
    assert torch.equal(a, b)


def test_cache_refuses_to_overflow():
    model = _model()
    cache = model.new_cache(1)
    model(_ids(1, 20), cache=cache)
    with pytest.raises(ValueError, match="20 cached \\+ 5 new tokens exceeds block_size 24"):
        model(_ids(1, 5), cache=cache)
    kv = KVCache(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))
    with pytest.raises(ValueError, match="KV cache full"):
        kv.append(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4))


# --- sampling ---------------------------------------------------------------------------


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


@pytest.mark.parametrize("top_p, n_kept", [(0.5, 1), (0.7, 2), (0.8, 2), (0.81, 3), (1.0, 4)])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, n_kept):
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    kept = torch.isfinite(filter_logits(probs.log(), top_p=top_p))[0]
    order = [1, 3, 2, 0]  # most to least likely
    assert kept.sum().item() == n_kept
    assert kept[order[:n_kept]].all()


def test_sampling_follows_temperature_and_seed():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert sample_next(logits, temperature=0).item() == 3
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next(logits, 1.0, generator=g) for _ in range(4000)])
    freq = torch.bincount(draws[:, 0], minlength=4) / 4000
    torch.testing.assert_close(freq, torch.softmax(logits[0], 0), atol=0.03, rtol=0)
    cold = torch.cat([sample_next(logits, 0.2, generator=g) for _ in range(500)])
    assert (cold == 3).float().mean() > 0.99
    model = _model(spread=0.3)
    prompt = _ids(1, 3)
    assert torch.equal(generate(model, prompt, 12, seed=7), generate(model, prompt, 12, seed=7))
    assert not torch.equal(generate(model, prompt, 12, seed=7), generate(model, prompt, 12, seed=8))


def test_stop_tokens_end_generation():
    model = _model(spread=0.3)
    prompt = _ids(1, 3)
    free = generate(model, prompt, 20, temperature=0)
    stop = free[0, 8].item()  # the 6th new token
    first = 3 + free[0, 3:].tolist().index(stop)
    stopped = generate(model, prompt, 20, temperature=0, stop_tokens=[stop])
    assert stopped.shape[1] == first + 1
    assert stopped[0, -1].item() == stop


def test_generate_restores_training_mode():
    model = _model().train()
    generate(model, _ids(1, 2), 3)
    assert model.training


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "idx, error, words",
    [
        (_ids(1, 25), ValueError, ["sequence length 25", "block_size 24"]),
        (torch.tensor([[1, 2, 50]]), ValueError, ["token id 50", "0..49"]),
        (torch.tensor([[1, -1, 2]]), ValueError, ["token id -1"]),
        (torch.rand(1, 4), TypeError, ["dtype", "float32"]),
        (torch.tensor([1, 2, 3]), ValueError, ["(B, T)", "(3,)"]),
        ([[1, 2, 3]], TypeError, ["torch.Tensor", "list"]),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, ["empty"]),
    ],
)
def test_bad_input_names_the_problem(idx, error, words):
    with pytest.raises(error) as err:
        _model()(idx)
    for word in words:
        assert word in str(err.value)


def test_bad_targets_name_the_problem():
    model = _model()
    with pytest.raises(ValueError, match=r"targets must have the shape of idx \(1, 4\)"):
        model(_ids(1, 4), _ids(1, 3))
    with pytest.raises(TypeError, match="targets"):
        model(_ids(1, 4), torch.rand(1, 4))


def test_bad_generation_arguments():
    model = _model()
    with pytest.raises(ValueError, match="temperature"):
        generate(model, _ids(1, 2), 3, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, _ids(1, 2), 3, top_p=0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, _ids(1, 2), 3, top_k=0)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        generate(model, _ids(1, 2)[0], 3)


def test_gpt_wants_a_config():
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT({"n_layer": 2})


def test_package_exports_load_lazily():
    import course.torch as package

    assert package.GPT is GPT
    with pytest.raises(AttributeError, match="Transformer"):
        package.Transformer  # noqa: B018
