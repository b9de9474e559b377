"""course.tf.lora: the Keras LoRA computes what the PyTorch one does, what Keras' own
`Dense.enable_lora` does, merges without changing the output, and shares adapter files with
PyTorch (either framework writes, the other loads, the same refusals)."""

import copy

import numpy as np
import pytest
import torch

from course import runtime
from course.config import GPTConfig
from course.tf import lora as keras_lora
from course.tf.convert import torch_to_keras
from course.tf.model import GPT as KerasGPT
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


def _torch_lora(base: TorchGPT, r: int = 4, alpha: float = 8) -> TorchGPT:
    model = torch_lora.apply_lora(copy.deepcopy(base), r=r, alpha=alpha)
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
