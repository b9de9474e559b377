"""course.torch.lora: LoRA equals peft's (logits and gradients), merges without changing the
output, trains exactly r (in + out) numbers per adapted layer, leaves the base untouched,
and saves adapters that load only onto the base model they were trained on."""

import copy

import pytest
import torch
import torch.nn.functional as F

from course.config import GPTConfig
from course.torch.lora import (
    LoRALinear,
    apply_lora,
    count_trainable,
    disable_lora,
    load_adapter,
    lora_layers,
    lora_parameters,
    merge_lora,
    optimizer_state_bytes,
    save_adapter,
    unmerge_lora,
)
from course.torch.model import GPT, config_from_hf, load_hf_state_dict

SMALL = GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=24, vocab_size=50, bias=True)


def _model(config: GPTConfig = SMALL, seed: int = 0) -> GPT:
    """A GPT in eval mode with every weight perturbed (biases and LayerNorms not trivial)."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _ids(B: int, T: int, vocab: int = SMALL.vocab_size, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def _randomize_b(model, seed: int = 7, std: float = 0.05) -> None:
    """B starts at zero (the adapted model = the base): give it values, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * std)


# --- parity with peft -------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_matches_peft_logits_and_gradients():
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    hf_config = transformers.GPT2Config(
        n_layer=2,
        n_head=4,
        n_embd=48,
        n_positions=20,
        vocab_size=61,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(3)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = load_hf_state_dict(GPT(config_from_hf(hf_config)).eval(), hf.state_dict())
    lora_config = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["c_attn", "c_proj", "c_fc"],
        fan_in_fan_out=True,  # GPT-2's Conv1D stores weights (in, out)
    )
    theirs = peft.get_peft_model(hf, lora_config).eval()
    apply_lora(ours, targets=("c_attn", "c_proj", "c_fc"), r=8, alpha=16)

    # B random in peft (it starts at zero), then A and B copied into ours by name.
    peft_lora = {}
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if ".lora_" in name:
                if ".lora_B." in name:
                    p.copy_(torch.randn_like(p) * 0.1)
                layer, which = name.split(".lora_")
                ours_name = layer.removeprefix("base_model.model.") + ".lora_" + which[0]
                peft_lora[ours_name] = p
    mine = dict(ours.named_parameters())
    assert sorted(peft_lora) == sorted(n for n in mine if ".lora_" in n)  # the same 8 layers
    with torch.no_grad():
        for name, p in peft_lora.items():
            mine[name].copy_(p)  # peft's lora_A (r, in), lora_B (out, r): our layout too
    assert count_trainable(ours) == theirs.get_nb_trainable_parameters()[0]

    idx, targets = _ids(3, 20, vocab=61, seed=5), _ids(3, 20, vocab=61, seed=6)
    peft_logits = theirs(input_ids=idx).logits
    logits, _ = ours(idx)
    assert (logits - peft_logits).abs().max().item() <= 1e-6
    F.cross_entropy(peft_logits.reshape(-1, 61), targets.reshape(-1)).backward()
    F.cross_entropy(logits.reshape(-1, 61), targets.reshape(-1)).backward()
    for name, p in peft_lora.items():
        assert p.grad is not None and p.grad.abs().max() > 0, name
        assert (mine[name].grad - p.grad).abs().max().item() <= 1e-6, name
    base = [p for n, p in ours.named_parameters() if ".lora_" not in n]
    assert base and all(p.grad is None for p in base)


# --- one layer ----------------------------------------------------------------------------


def test_lora_linear_computes_base_plus_scaled_low_rank_update():
    torch.manual_seed(0)
    base = torch.nn.Linear(12, 20, bias=True)
    layer = LoRALinear(base, r=3, alpha=6)
    assert layer.lora_A.shape == (3, 12) and layer.lora_B.shape == (20, 3)
    assert torch.all(layer.lora_B == 0) and torch.all(layer.lora_A != 0)
    assert layer.lora_A.abs().max() <= 1 / 12**0.5  # kaiming-uniform(a=√5): U(±1/√in)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 5, 12)
    expected = x @ base.weight.T + base.bias + (6 / 3) * (x @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(layer(x), expected)
    assert not any(p.requires_grad for p in base.parameters())
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad


def test_dropout_acts_on_the_lora_path_only():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(16, 8), r=4, alpha=4, dropout=0.5).train()
    x = torch.randn(6, 16)
    assert torch.equal(layer(x), layer.base(x))  # B = 0: dropout never reaches the output
    with torch.no_grad():
        layer.lora_B.normal_()
    assert not torch.allclose(layer(x), layer(x))  # two dropout masks
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(r=0), "r"),
        (dict(r=2.5), "r"),
        (dict(alpha=0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
    ],
)
def test_bad_arguments_are_named(kwargs, word):
    with pytest.raises((ValueError, TypeError), match=rf"^{word} must"):
        LoRALinear(torch.nn.Linear(4, 4), **kwargs)
    with pytest.raises((ValueError, TypeError), match=rf"^{word} must"):
        apply_lora(_model(), **kwargs)


def test_unknown_target_lists_the_linear_layers_and_apply_twice_is_refused():
    with pytest.raises(ValueError, match=r"\['q_proj'\].*c_attn.*c_fc.*c_proj.*lm_head"):
        apply_lora(_model(), targets=("c_attn", "q_proj"))
    model = apply_lora(_model())
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model)
    with pytest.raises(ValueError, match="apply_lora"):
        merge_lora(_model())
    with pytest.raises(TypeError, match="base must be a torch.nn.Linear"):
        LoRALinear(torch.nn.Conv1d(3, 3, 1))


# --- a whole model ----------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    ("targets", "r"), [(("c_attn", "c_proj", "c_fc"), 8), (("c_attn",), 4), (("c_fc",), 3)]
)
def test_trainable_count_is_r_times_in_plus_out(bias, targets, r):
    config = SMALL.replace(bias=bias, n_embd=24, n_head=3, n_layer=3)
    C = config.n_embd
    shapes = {"c_attn": [(C, 3 * C)], "c_proj": [(C, C), (4 * C, C)], "c_fc": [(C, 4 * C)]}
    per_block = sum(r * (i + o) for t in targets for i, o in shapes[t])
    model = apply_lora(_model(config), targets=targets, r=r, alpha=2 * r)
    assert count_trainable(model) == config.n_layer * per_block
    assert sum(p.numel() for p in lora_parameters(model)) == config.n_layer * per_block
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n for n in trainable)
    assert not model.transformer.wte.weight.requires_grad  # tied: the lm_head too
    assert model.lm_head.weight is model.transformer.wte.weight

    _randomize_b(model)
    model(_ids(2, 6), _ids(2, 6, seed=2))[1].backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in trainable), name


def test_adapters_off_give_the_base_model_bit_for_bit():
    base = _model()
    idx = _ids(2, 24)
    expected, _ = base(idx)
    model = apply_lora(copy.deepcopy(base))  # B = 0: the update is exactly zero
    assert torch.equal(model(idx)[0], expected)
    _randomize_b(model)
    assert not torch.allclose(model(idx)[0], expected)
    for layer in lora_layers(model).values():  # the base path alone is the base model
        with torch.no_grad():
            layer.lora_B.zero_()
    assert torch.equal(model(idx)[0], expected)
    base_weights = {n.replace(".base.", "."): p for n, p in model.state_dict().items()}
    for name, value in base.state_dict().items():
        assert torch.equal(base_weights[name], value), name


def test_merged_equals_unmerged_and_unmerge_restores_the_base():
    model = apply_lora(_model(), r=4, alpha=12)
    _randomize_b(model, std=0.5)
    idx = _ids(3, 16)
    unmerged, _ = model(idx)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if ".base." in n}
    merge_lora(model)
    merged, _ = model(idx)
    assert (merged - unmerged).abs().max().item() <= 1e-5
    for name, layer in lora_layers(model).items():
        assert layer.merged
        expected = before[f"{name}.base.weight"] + (12 / 4) * layer.lora_B @ layer.lora_A
        torch.testing.assert_close(layer.base.weight, expected, atol=1e-6, rtol=0)
    merged_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    merge_lora(model)  # merging a merged model does nothing
    for name, p in model.named_parameters():
        assert torch.equal(p, merged_weights[name]), name
    saved_a = {name: layer.lora_A.detach().clone() for name, layer in lora_layers(model).items()}
    with torch.no_grad():  # merged: forward no longer reads A and B
        for layer in lora_layers(model).values():
            layer.lora_A.mul_(3.0)
    assert torch.equal(model(idx)[0], merged)
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            layer.lora_A.copy_(saved_a[name])
    unmerge_lora(model)
    for name, p in model.named_parameters():
        if ".base." in name:
            assert torch.equal(p, before[name]), name  # bit for bit, not W + d - d
    assert not any(layer.merged for layer in lora_layers(model).values())
    assert torch.equal(model(idx)[0], unmerged)


# --- adapter files ----------------------------------------------------------------------


def _trained(config: GPTConfig = SMALL, r: int = 4):
    base = _model(config)
    model = apply_lora(copy.deepcopy(base), r=r, alpha=8)
    _randomize_b(model)
    return base, model


def test_save_and_load_round_trip(tmp_path):
    from safetensors import safe_open

    base, model = _trained()
    idx = _ids(2, 12)
    path = save_adapter(model, tmp_path / "adapter.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.safetensors"]  # no .part
    with safe_open(path, framework="numpy") as f:
        names, meta = set(f.keys()), f.metadata()
    assert names == {n for n, _ in model.named_parameters() if ".lora_" in n}
    assert (meta["r"], float(meta["alpha"])) == ("4", 8.0)
    assert GPTConfig.from_dict(__import__("json").loads(meta["config"])) == SMALL
    full = sum(p.numel() for p in base.parameters())
    assert path.stat().st_size < 0.2 * 4 * full  # the LoRA weights, not the model

    fresh = load_adapter(copy.deepcopy(base), path)  # no LoRA yet: applied from the file
    assert torch.equal(fresh(idx)[0], model(idx)[0])
    assert count_trainable(fresh) == count_trainable(model)
    again = apply_lora(copy.deepcopy(base), r=4, alpha=8)
    assert torch.equal(load_adapter(again, path)(idx)[0], model(idx)[0])
    manual = GPT(SMALL.replace(attn_impl="manual", dropout=0.1)).eval()  # same weights
    manual.load_state_dict(base.state_dict())
    torch.testing.assert_close(load_adapter(manual, path)(idx)[0], model(idx)[0])


def _lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def test_adapter_refusals_change_nothing(tmp_path):
    base, model = _trained()
    path = save_adapter(model, tmp_path / "adapter.safetensors")
    data = path.read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01 not a safetensors file" * 40)

    other_weights = copy.deepcopy(base)
    with torch.no_grad():
        other_weights.transformer.h[1].mlp.c_fc.weight[0, 0] += 1e-3
    other_rank = apply_lora(copy.deepcopy(base), r=2, alpha=8)
    other_alpha = apply_lora(copy.deepcopy(base), r=4, alpha=4)
    other_shape = _model(SMALL.replace(n_embd=48))
    other_vocab = _model(SMALL.replace(vocab_size=51))
    cases = [
        (other_weights, path, ValueError, "other base weights"),
        (other_rank, path, ValueError, "r=4.*r=2"),
        (other_alpha, path, ValueError, "alpha=8.0.*alpha=4.0"),
        (other_shape, path, ValueError, r"model shape.*'n_embd': \(32, 48\)"),
        (other_vocab, path, ValueError, r"'vocab_size': \(50, 51\)"),
        (copy.deepcopy(base), tmp_path / "half.safetensors", ValueError, "half.safetensors"),
        (copy.deepcopy(base), tmp_path / "garbage.safetensors", ValueError, "garbage"),
        (copy.deepcopy(base), tmp_path / "missing.safetensors", FileNotFoundError, "missing"),
    ]
    for target, file, error, message in cases:
        state, had_lora = _lora_state(target), bool(lora_layers(target))
        with pytest.raises(error, match=message):
            load_adapter(target, file)
        assert bool(lora_layers(target)) == had_lora  # nothing applied
        after = _lora_state(target)
        assert state.keys() == after.keys()
        assert all(torch.equal(state[k], after[k]) for k in state), file


def test_a_merged_model_is_neither_saved_nor_loaded_into(tmp_path):
    base, model = _trained()
    path = save_adapter(model, tmp_path / "adapter.safetensors")
    merge_lora(model)
    with pytest.raises(ValueError, match="unmerge_lora"):
        save_adapter(model, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="unmerge_lora"):
        load_adapter(model, path)
    assert not (tmp_path / "other.safetensors").exists()
    unmerge_lora(model)  # the base comes back exactly: the file still fits the base
    again = save_adapter(model, tmp_path / "again.safetensors")
    idx = _ids(2, 8)
    assert torch.equal(load_adapter(copy.deepcopy(base), again)(idx)[0], model(idx)[0])


# --- adapters off for a block; optimizer state ---------------------------------------------


def test_disable_lora_gives_the_base_model_inside_the_block_only():
    base = _model()
    idx = _ids(2, 24)
    expected, _ = base(idx)
    model = apply_lora(copy.deepcopy(base), r=4, alpha=8)
    _randomize_b(model, std=0.5)
    adapted, _ = model(idx)
    assert (adapted - expected).abs().max() > 1e-2  # B is not zero: the adapter acts
    with disable_lora(model) as inside:
        assert inside is model
        assert not any(layer.enabled for layer in lora_layers(model).values())
        assert torch.equal(model(idx)[0], expected)
    assert all(layer.enabled for layer in lora_layers(model).values())
    assert torch.equal(model(idx)[0], adapted)


def test_disable_lora_turns_the_adapters_back_on_when_the_block_raises():
    model = apply_lora(_model(), r=4, alpha=8)
    _randomize_b(model, std=0.5)
    idx = _ids(2, 12)
    adapted, _ = model(idx)
    with pytest.raises(RuntimeError, match="inside"):
        with disable_lora(model):
            raise RuntimeError("inside the block")
    assert all(layer.enabled for layer in lora_layers(model).values())
    assert torch.equal(model(idx)[0], adapted)


def test_disable_lora_refuses_a_merged_model_and_a_model_without_lora():
    base = _model()
    with pytest.raises(ValueError, match="apply_lora"):
        with disable_lora(base):
            pass
    model = apply_lora(copy.deepcopy(base), r=4, alpha=8)
    _randomize_b(model, std=0.5)
    idx = _ids(2, 12)
    merge_lora(model)
    merged, _ = model(idx)
    with pytest.raises(ValueError, match="merged.*unmerge_lora"):
        with disable_lora(model):
            pass
    assert all(layer.enabled and layer.merged for layer in lora_layers(model).values())
    assert torch.equal(model(idx)[0], merged)
    unmerge_lora(model)
    with disable_lora(model):
        assert torch.equal(model(idx)[0], base(idx)[0])


def _adamw_bytes(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> int:
    """What AdamW keeps, from the parameters: exp_avg and exp_avg_sq the size of each
    parameter (float32: 4 bytes a number), and `step` a float32 scalar tensor per parameter
    (torch >= 1.12; a plain number would take no tensor memory)."""
    keys = {key for state in optimizer.state.values() for key in state}
    assert keys == {"exp_avg", "exp_avg_sq", "step"}
    steps = [optimizer.state[p]["step"] for p in params]
    assert all(isinstance(s, torch.Tensor) and s.dtype == torch.float32 for s in steps)
    assert all(s.numel() == 1 for s in steps)
    return 2 * 4 * sum(p.numel() for p in params) + 4 * len(params)


@pytest.mark.parametrize("lora", [True, False])
def test_optimizer_state_bytes_of_adamw_are_two_moments_and_a_step_counter(lora):
    model = _model()
    if lora:
        r, C = 4, SMALL.n_embd
        model = apply_lora(model, r=r, alpha=8)
        params = lora_parameters(model)
        per_block = r * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
        assert sum(p.numel() for p in params) == SMALL.n_layer * per_block
    else:
        params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    assert optimizer_state_bytes(optimizer) == 0  # no step yet: no state
    model(_ids(2, 8), _ids(2, 8, seed=2))[1].backward()
    optimizer.step()
    assert len(optimizer.state) == len(params)
    assert optimizer_state_bytes(optimizer) == _adamw_bytes(params, optimizer)
    if lora:  # 2 * 4 bytes per LoRA number and 4 per LoRA tensor (4 per layer, 2 layers)
        assert optimizer_state_bytes(optimizer) == 8 * SMALL.n_layer * per_block + 4 * 16
