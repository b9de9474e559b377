"""course.tf.lora: the Keras LoRA computes what the PyTorch one does, what Keras' own
`Dense.enable_lora` does, merges without changing the output, and shares adapter files with
PyTorch (either framework writes, the other loads, the same refusals)."""

import copy

import numpy as np
import pytest
import torch

from course import runtime
from course.config import GPTConfig, get_preset
from course.tf import lora as keras_lora
from course.tf.convert import torch_to_keras
from course.tf.model import GPT as KerasGPT
from course.tf.model import lm_loss
from course.tf.train import configure_optimizer, estimate_loss
from course.torch import lora as torch_lora
from course.torch.model import GPT as TorchGPT

keras = runtime.import_keras()
tf = runtime.import_tensorflow()

SMALL = GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=41, bias=True)


def _torch_base(config: GPTConfig = SMALL, seed: int = 0) -> TorchGPT:
    torch.manual_seed(seed)
    model = TorchGPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _keras_twin(torch_model: TorchGPT) -> KerasGPT:
    return torch_to_keras(torch_model.state_dict(), KerasGPT(torch_model.config))


def _ids(B: int, T: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SMALL.vocab_size, size=(B, T))


def _torch_lora(base: TorchGPT, r: int = 4, alpha: float = 8, **kwargs) -> TorchGPT:
    model = torch_lora.apply_lora(copy.deepcopy(base), r=r, alpha=alpha, **kwargs)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in torch_lora.lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * 0.05)
    return model


def _torch_logits(model: TorchGPT, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x))[0].numpy()


def test_keras_lora_matches_pytorch_lora_and_merges():
    base = _torch_base()
    ours = _torch_lora(base)
    model = keras_lora.apply_lora(_keras_twin(base), r=4, alpha=8)
    x = _ids(2, 16)
    base_logits = np.asarray(model(x))
    np.testing.assert_array_equal(base_logits, np.asarray(_keras_twin(base)(x)))  # B = 0

    # Trainable: exactly the LoRA weights, r (in + out) per adapted Dense, as in PyTorch.
    C = SMALL.n_embd
    per_block = 4 * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    assert keras_lora.count_trainable(model) == SMALL.n_layer * per_block
    assert torch_lora.count_trainable(ours) == SMALL.n_layer * per_block
    lora_ids = {id(v) for v in keras_lora.lora_parameters(model)}
    assert {id(v) for v in model.trainable_weights} == lora_ids
    assert not model.wte.embeddings.trainable  # the tied head
    assert keras_lora.base_fingerprint(model) == torch_lora.base_fingerprint(ours)

    # The same A and B, moved across (transposed): the same logits.
    keras_lora.torch_adapter_to_keras(torch_lora.adapter_state_dict(ours), model)
    layer = model.h[0].attn.c_attn
    torch_layer = ours.transformer.h[0].attn.c_attn
    np.testing.assert_array_equal(layer.lora_A.numpy(), torch_layer.lora_A.detach().numpy().T)
    unmerged = np.asarray(model(x))
    difference = np.abs(unmerged - _torch_logits(ours, x)).max()
    assert difference <= 1e-4, difference
    assert np.abs(unmerged - base_logits).max() > 1e-3  # B is not zero: the adapter acts
    back = keras_lora.keras_adapter_to_torch(model)
    for name, value in torch_lora.adapter_state_dict(ours).items():
        np.testing.assert_array_equal(back[name], value.numpy())

    kernels = {name: lay.kernel.numpy() for name, lay in keras_lora.lora_layers(model).items()}
    keras_lora.merge_lora(model)
    for name, lay in keras_lora.lora_layers(model).items():
        expected = kernels[name] + (8 / 4) * lay.lora_A.numpy() @ lay.lora_B.numpy()
        np.testing.assert_allclose(lay.kernel.numpy(), expected, atol=1e-6, rtol=0)
    merged = np.asarray(model(x))
    assert np.abs(merged - unmerged).max() <= 1e-5
    keras_lora.unmerge_lora(model)
    for name, lay in keras_lora.lora_layers(model).items():
        np.testing.assert_array_equal(lay.kernel.numpy(), kernels[name])
    np.testing.assert_array_equal(np.asarray(model(x)), unmerged)


def test_keras_enable_lora_computes_the_same_update():
    rank, alpha, n_in, n_out = 3, 12.0, 10, 14
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, n_in)).astype(np.float32)
    theirs = keras.layers.Dense(n_out)
    theirs.build((None, n_in))
    theirs.bias.assign(rng.normal(size=n_out).astype(np.float32))
    mine = keras.layers.Dense(n_out)
    mine.build((None, n_in))
    mine.set_weights(theirs.get_weights())
    ours = keras_lora.LoRALinear(mine, r=rank, alpha=alpha)
    theirs.enable_lora(rank, lora_alpha=alpha)
    # Keras' layout is ours: lora_kernel_a (in, rank), lora_kernel_b (rank, out).
    assert tuple(theirs.lora_kernel_a.shape) == tuple(ours.lora_A.shape) == (n_in, rank)
    assert tuple(theirs.lora_kernel_b.shape) == tuple(ours.lora_B.shape) == (rank, n_out)
    a = (0.3 * rng.normal(size=(n_in, rank))).astype(np.float32)
    b = (0.3 * rng.normal(size=(rank, n_out))).astype(np.float32)
    for variable, value in (
        (theirs.lora_kernel_a, a),
        (theirs.lora_kernel_b, b),
        (ours.lora_A, a),
        (ours.lora_B, b),
    ):
        variable.assign(value)
    expected = x @ theirs.get_weights()[0] + theirs.bias.numpy()  # kernel untouched: W
    expected = expected + (alpha / rank) * (x @ a @ b)  # Keras' scale: lora_alpha / rank
    np.testing.assert_allclose(np.asarray(theirs(x)), expected, atol=1e-5, rtol=0)
    assert np.abs(np.asarray(ours(x)) - np.asarray(theirs(x))).max() <= 1e-5
    # What stays trainable: Keras freezes the kernel only, its bias still trains; ours
    # freezes the whole base layer.
    their_trainable = {v.path.rsplit("/", 1)[-1] for v in theirs.trainable_weights}
    assert their_trainable == {"bias", "lora_kernel_a", "lora_kernel_b"}
    assert {id(v) for v in ours.trainable_weights} == {id(ours.lora_A), id(ours.lora_B)}


def test_adapter_files_move_between_frameworks(tmp_path):
    base = _torch_base()
    trained = _torch_lora(base)
    x = _ids(3, 12, seed=1)
    torch_file = torch_lora.save_adapter(trained, tmp_path / "torch.safetensors")

    model = keras_lora.load_adapter(_keras_twin(base), torch_file)  # LoRA applied from the file
    assert np.abs(np.asarray(model(x)) - _torch_logits(trained, x)).max() <= 1e-4
    keras_file = keras_lora.save_adapter(model, tmp_path / "keras.safetensors")
    back = torch_lora.load_adapter(copy.deepcopy(base), keras_file)
    np.testing.assert_array_equal(_torch_logits(back, x), _torch_logits(trained, x))

    # The refusals of the PyTorch side, here too, and nothing changes when refused.
    data = keras_file.read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x07 not safetensors" * 50)
    other = _torch_base(seed=1)
    cases = [
        (_keras_twin(other), keras_file, ValueError, "other base weights"),
        (
            keras_lora.apply_lora(_keras_twin(base), r=2, alpha=8),
            torch_file,
            ValueError,
            "r=4.*r=2",
        ),
        (_keras_twin(_torch_base(SMALL.replace(n_embd=48))), keras_file, ValueError, "n_embd"),
        (_keras_twin(base), tmp_path / "half.safetensors", ValueError, "half.safetensors"),
        (_keras_twin(base), tmp_path / "garbage.safetensors", ValueError, "garbage"),
        (_keras_twin(base), tmp_path / "missing.safetensors", FileNotFoundError, "missing"),
    ]
    for target, file, error, message in cases:
        before = [v.numpy().copy() for v in target.weights]
        had_lora = bool(keras_lora.lora_layers(target))
        with pytest.raises(error, match=message):
            keras_lora.load_adapter(target, file)
        assert bool(keras_lora.lora_layers(target)) == had_lora
        after = [v.numpy() for v in target.weights]
        assert len(before) == len(after)
        assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True)), file


def test_bad_arguments_are_named():
    dense = keras.layers.Dense(4)
    with pytest.raises(ValueError, match="built"):
        keras_lora.LoRALinear(dense)
    dense.build((None, 4))
    for kwargs, word in ((dict(r=0), "r"), (dict(alpha=-1), "alpha"), (dict(dropout=1), "drop")):
        with pytest.raises((ValueError, TypeError), match=rf"^{word}"):
            keras_lora.LoRALinear(dense, **kwargs)
    with pytest.raises(TypeError, match="keras.layers.Dense"):
        keras_lora.LoRALinear(keras.layers.LayerNormalization())
    model = KerasGPT(SMALL)
    with pytest.raises(ValueError, match=r"\['lm_head'\].*c_attn.*c_fc.*c_proj"):
        keras_lora.apply_lora(model, targets=("c_attn", "lm_head"))
    assert not keras_lora.lora_layers(model) and model.trainable_weights  # nothing changed


# --- adapters off for a block; optimizer state ---------------------------------------------


def _keras_lora(base: TorchGPT, std: float = 0.5):
    """The Keras twin of `base` with LoRA (r=4, alpha=8) and B random: the adapter acts."""
    model = keras_lora.apply_lora(_keras_twin(base), r=4, alpha=8, seed=3)
    rng = np.random.default_rng(7)
    for layer in keras_lora.lora_layers(model).values():
        layer.lora_B.assign((std * rng.normal(size=layer.lora_B.shape)).astype(np.float32))
    return model


def test_disable_lora_gives_the_base_model_inside_the_block_only():
    base = _torch_base()
    x = _ids(2, 16, seed=3)
    expected = np.asarray(_keras_twin(base)(x))
    model = _keras_lora(base)
    adapted = np.asarray(model(x))
    assert np.abs(adapted - expected).max() > 1e-2  # B is not zero: the adapter acts
    with keras_lora.disable_lora(model) as inside:
        assert inside is model
        assert not any(layer.enabled for layer in keras_lora.lora_layers(model).values())
        assert np.array_equal(np.asarray(model(x)), expected)
    assert all(layer.enabled for layer in keras_lora.lora_layers(model).values())
    assert np.array_equal(np.asarray(model(x)), adapted)


def test_disable_lora_drops_the_evaluation_traced_with_the_adapters_on():
    """estimate_loss keeps one traced function per model; one traced before the block
    would still run the adapters inside it (and one traced inside, none after it)."""
    base = _torch_base()
    tokens = np.random.default_rng(5).integers(0, SMALL.vocab_size, 400)
    splits = {"val": tokens}
    args = dict(batch_size=3, block_size=SMALL.block_size, eval_iters=2, seed=11)
    base_loss = estimate_loss(_keras_twin(base), splits, **args)["val"]
    model = _keras_lora(base)
    adapted_loss = estimate_loss(model, splits, **args)["val"]  # traced with adapters on
    assert abs(adapted_loss - base_loss) > 1e-2
    with keras_lora.disable_lora(model):
        inside = estimate_loss(model, splits, **args)["val"]
    after = estimate_loss(model, splits, **args)["val"]
    assert inside == pytest.approx(base_loss, rel=1e-6, abs=0)
    assert after == pytest.approx(adapted_loss, rel=1e-6, abs=0)


def test_disable_lora_turns_the_adapters_back_on_when_the_block_raises():
    model = _keras_lora(_torch_base())
    x = _ids(2, 8)
    adapted = np.asarray(model(x))
    with pytest.raises(RuntimeError, match="inside"):
        with keras_lora.disable_lora(model):
            raise RuntimeError("inside the block")
    assert all(layer.enabled for layer in keras_lora.lora_layers(model).values())
    assert np.array_equal(np.asarray(model(x)), adapted)


def test_disable_lora_refuses_a_merged_model_and_a_model_without_lora():
    base = _torch_base()
    with pytest.raises(ValueError, match="apply_lora"):
        with keras_lora.disable_lora(_keras_twin(base)):
            pass
    model = _keras_lora(base)
    x = _ids(2, 8)
    keras_lora.merge_lora(model)
    merged = np.asarray(model(x))
    with pytest.raises(ValueError, match="merged.*unmerge_lora"):
        with keras_lora.disable_lora(model):
            pass
    layers = keras_lora.lora_layers(model).values()
    assert all(layer.enabled and layer.merged for layer in layers)
    assert np.array_equal(np.asarray(model(x)), merged)
    keras_lora.unmerge_lora(model)
    with keras_lora.disable_lora(model):
        assert np.array_equal(np.asarray(model(x)), np.asarray(_keras_twin(base)(x)))


def _one_step(model, optimizer, variables) -> None:
    x = _ids(2, 8, seed=4)
    y = _ids(2, 8, seed=5)
    with tf.GradientTape() as tape:
        loss = lm_loss(y, model(x, training=True))
    gradients = tape.gradient(loss, variables)
    assert all(g is not None for g in gradients)
    optimizer.apply_gradients(zip(gradients, variables, strict=True))


@pytest.mark.parametrize("lora", [True, False])
def test_optimizer_state_bytes_of_adamw_are_the_two_moments(lora):
    base = _torch_base()
    model = _keras_twin(base)
    if lora:
        r, C = 4, SMALL.n_embd
        model = keras_lora.apply_lora(model, r=r, alpha=8)
        n = SMALL.n_layer * r * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
        optimizer = configure_optimizer(model, get_preset("nano").train)
    else:
        n = sum(p.numel() for p in base.parameters())  # the twin's numbers, counted by torch
        optimizer = keras.optimizers.AdamW(learning_rate=1e-3)
    variables = model.trainable_variables
    assert sum(int(np.prod(v.shape)) for v in variables) == n
    assert keras_lora.optimizer_state_bytes(optimizer) == 0  # nothing built yet
    optimizer.build(variables)
    _one_step(model, optimizer, variables)
    assert int(optimizer.iterations.numpy()) == 1
    assert keras_lora.optimizer_state_bytes(optimizer) == 2 * 4 * n  # float32 m and v


def test_whole_adapted_models_move_between_frameworks_with_the_converter():
    """torch_to_keras / keras_to_torch carry a LoRA model's weights, base and A, B, in one
    call, both ways: the same logits, and a state dict that loads strictly."""
    from course.tf.convert import keras_to_torch

    base = _torch_base()
    ours = _torch_lora(base, targets=("c_attn", "c_fc"))
    x = _ids(2, 16)
    model = keras_lora.apply_lora(KerasGPT(SMALL), targets=("c_attn", "c_fc"), r=4, alpha=8)
    torch_to_keras(ours.state_dict(), model)
    assert np.abs(np.asarray(model(x)) - _torch_logits(ours, x)).max() <= 1e-4
    np.testing.assert_array_equal(
        model.h[1].mlp.c_fc.lora_B.numpy(), ours.transformer.h[1].mlp.c_fc.lora_B.detach().numpy().T
    )

    back = torch_lora.apply_lora(TorchGPT(SMALL), targets=("c_attn", "c_fc"), r=4, alpha=8)
    back.load_state_dict(keras_to_torch(model, as_torch=True))  # strict: every name fits
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name].numpy(), value.numpy(), name)

    # A plain state dict loads the base weights of an adapted model and leaves A, B alone.
    lora_B = model.h[0].attn.c_attn.lora_B.numpy()
    torch_to_keras(base.state_dict(), model)
    np.testing.assert_array_equal(model.h[0].attn.c_attn.lora_B.numpy(), lora_B)


def test_the_converter_refuses_lora_weights_that_do_not_fit_and_changes_nothing():
    ours = _torch_lora(_torch_base())  # every default target, r = 4
    cases = {
        "unexpected .*lora_A": _keras_twin(_torch_base(seed=1)),  # no LoRA layers at all
        "unexpected .*c_proj.lora_A": keras_lora.apply_lora(
            _keras_twin(_torch_base(seed=1)), targets=("c_attn", "c_fc"), r=4
        ),
        "PyTorch layout": keras_lora.apply_lora(_keras_twin(_torch_base(seed=1)), r=2),
    }
    for message, model in cases.items():
        before = [v.numpy().copy() for v in model.weights]
        with pytest.raises(ValueError, match=message):
            torch_to_keras(ours.state_dict(), model)
        for old, variable in zip(before, model.weights, strict=True):
            np.testing.assert_array_equal(variable.numpy(), old, variable.path)
