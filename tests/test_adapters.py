"""course.adapters: LoRA adapter files written and read back from numpy alone (no torch, no
TensorFlow), and every refusal a load makes before it changes a weight."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from course import adapters
from course.config import GPTConfig

CONFIG = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=12, vocab_size=23, bias=False)
SETTINGS = {"r": 3, "alpha": 6.0, "targets": ["c_attn", "c_fc"]}
SIZES = {"transformer.h.0.attn.c_attn": (8, 24), "transformer.h.0.mlp.c_fc": (8, 32)}


def _tensors(r: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """LoRA weights in PyTorch layout: lora_A (r, in), lora_B (out, r), random values."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (n_in, n_out) in SIZES.items():
        tensors[f"{name}.lora_A"] = rng.normal(size=(r, n_in)).astype(np.float32)
        tensors[f"{name}.lora_B"] = rng.normal(size=(n_out, r)).astype(np.float32)
    return tensors


def _write(tmp_path, name: str = "adapter.safetensors", **changes):
    settings = {**SETTINGS, **changes}
    tensors = _tensors(settings["r"])
    path = adapters.write_adapter(
        tmp_path / name, tensors, settings, CONFIG, "ab" * 32, framework="test"
    )
    return path, tensors


def test_round_trip_keeps_arrays_and_metadata(tmp_path):
    path, tensors = _write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.safetensors"]  # no .part
    read, meta = adapters.read_adapter(path)
    assert sorted(read) == sorted(tensors)
    for name, value in tensors.items():
        assert read[name].dtype == np.float32
        np.testing.assert_array_equal(read[name], value)
    assert meta == {
        "r": 3,
        "alpha": 6.0,
        "targets": ("c_attn", "c_fc"),
        "config": CONFIG,
        "fingerprint": "ab" * 32,
        "framework": "test",
    }
    adapters.check_adapter_fits(path, meta, CONFIG.replace(dropout=0.3), "ab" * 32)
    adapters.check_same_settings(path, meta, SETTINGS)
    adapters.check_tensors_fit(path, read, meta["r"], SIZES)


def test_the_file_is_safetensors_with_the_documented_metadata(tmp_path):
    from safetensors import safe_open

    path, _ = _write(tmp_path)
    with safe_open(path, framework="numpy") as f:
        raw = f.metadata()
    assert raw["format"] == adapters.ADAPTER_FORMAT == "twin-gpt-lora/1"
    assert (raw["r"], raw["alpha"], json.loads(raw["targets"])) == ("3", "6.0", SETTINGS["targets"])
    assert GPTConfig.from_dict(json.loads(raw["config"])) == CONFIG


def test_truncated_garbage_missing_and_foreign_files_are_refused(tmp_path):
    path, _ = _write(tmp_path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 12):
        (tmp_path / "half.safetensors").write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"'.*half\.safetensors' is not a readable"):
            adapters.read_adapter(tmp_path / "half.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01 not a safetensors file" * 40)
    with pytest.raises(ValueError, match=r"garbage\.safetensors.*truncated or corrupt"):
        adapters.read_adapter(tmp_path / "garbage.safetensors")
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors' does not exist"):
        adapters.read_adapter(tmp_path / "missing.safetensors")

    from safetensors.numpy import save

    (tmp_path / "plain.safetensors").write_bytes(save(_tensors()))  # no adapter metadata
    with pytest.raises(ValueError, match="not a Twin GPT LoRA adapter"):
        adapters.read_adapter(tmp_path / "plain.safetensors")
    raw = {"format": adapters.ADAPTER_FORMAT, "r": "3", "alpha": "6.0"}  # no targets
    (tmp_path / "broken.safetensors").write_bytes(save(_tensors(), metadata=raw))
    with pytest.raises(ValueError, match="broken metadata: KeyError\\('targets'\\)"):
        adapters.read_adapter(tmp_path / "broken.safetensors")


def test_another_rank_alpha_or_targets_is_refused(tmp_path):
    path, _ = _write(tmp_path)
    _, meta = adapters.read_adapter(path)
    for key, ours, message in (
        ("r", 2, "has r=3 but this model's LoRA layers have r=2"),
        ("alpha", 3.0, "has alpha=6.0 but .* alpha=3.0"),
        ("targets", ["c_attn"], r"has targets=\['c_attn', 'c_fc'\] but .* targets=\['c_attn'\]"),
    ):
        with pytest.raises(ValueError, match=message):
            adapters.check_same_settings(path, meta, {**SETTINGS, key: ours})


def test_tensors_of_another_rank_or_layer_set_are_refused(tmp_path):
    path, _ = _write(tmp_path, r=2)
    tensors, meta = adapters.read_adapter(path)
    with pytest.raises(ValueError, match=r"c_attn\.lora_A has shape \(2, 8\), .* needs \(3, 8\)"):
        adapters.check_tensors_fit(path, tensors, 3, SIZES)  # the model's rank, not the file's
    adapters.check_tensors_fit(path, tensors, meta["r"], SIZES)
    wider = {**SIZES, "transformer.h.0.mlp.c_fc": (8, 33)}
    with pytest.raises(ValueError, match=r"c_fc\.lora_B has shape \(32, 2\), .* needs \(33, 2\)"):
        adapters.check_tensors_fit(path, tensors, 2, wider)
    fewer = {"transformer.h.0.attn.c_attn": (8, 24)}
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['transformer.h.0.mlp"):
        adapters.check_tensors_fit(path, tensors, 2, fewer)
    more = {**SIZES, "transformer.h.0.attn.c_proj": (8, 8)}
    with pytest.raises(ValueError, match=r"missing \['transformer.h.0.attn.c_proj.lora_A'"):
        adapters.check_tensors_fit(path, tensors, 2, more)


def test_another_model_shape_or_base_is_refused(tmp_path):
    path, _ = _write(tmp_path)
    _, meta = adapters.read_adapter(path)
    with pytest.raises(ValueError, match=r"another model shape.*'n_embd': \(8, 16\)"):
        adapters.check_adapter_fits(path, meta, CONFIG.replace(n_embd=16), "ab" * 32)
    with pytest.raises(ValueError, match=r"'bias': \(False, True\)"):
        adapters.check_adapter_fits(path, meta, CONFIG.replace(bias=True), "ab" * 32)
    with pytest.raises(ValueError, match=r"other base weights \(fingerprint abababababab\.\.\."):
        adapters.check_adapter_fits(path, meta, CONFIG, "cd" * 32)


def test_fingerprint_sees_every_value_name_and_shape_but_not_dtype_or_order():
    rng = np.random.default_rng(1)
    state = {"b": rng.normal(size=(3, 4)).astype(np.float32), "a": np.arange(5.0)}
    reference = adapters.fingerprint(state)
    assert adapters.fingerprint(dict(reversed(state.items()))) == reference
    assert adapters.fingerprint({"b": state["b"], "a": np.arange(5, dtype=np.float32)}) == (
        reference
    )  # hashed as float32
    assert adapters.fingerprint({"b": np.asfortranarray(state["b"]), "a": state["a"]}) == (
        reference
    )  # memory layout does not matter
    changed = state["b"].copy()
    changed[2, 3] += 1e-3
    assert adapters.fingerprint({**state, "b": changed}) != reference
    assert adapters.fingerprint({**state, "b": state["b"].reshape(4, 3)}) != reference
    assert adapters.fingerprint({"c": state["b"], "a": state["a"]}) != reference


def test_settings_and_merged_layers():
    def layer(r=3, alpha=6.0, merged=False):
        return SimpleNamespace(r=r, alpha=alpha, merged=merged)

    layers = {"h.0.attn.c_attn": layer(), "h.0.mlp.c_fc": layer(), "h.1.mlp.c_fc": layer()}
    assert adapters.lora_settings(layers) == SETTINGS
    with pytest.raises(ValueError, match="differ in rank"):
        adapters.lora_settings({**layers, "h.1.attn.c_attn": layer(r=4)})
    with pytest.raises(ValueError, match="call apply_lora"):
        adapters.lora_settings({})
    adapters.check_not_merged(layers.values(), "save an adapter of")
    with pytest.raises(ValueError, match="cannot save an adapter of a merged model"):
        adapters.check_not_merged([layer(), layer(merged=True)], "save an adapter of")


@pytest.mark.parametrize(
    ("check", "value", "error", "message"),
    [
        (adapters.check_alpha, 0, ValueError, "alpha must be > 0"),
        (adapters.check_alpha, float("inf"), ValueError, "alpha must be > 0"),
        (adapters.check_alpha, True, TypeError, "alpha must be a number, got bool"),
        (adapters.check_dropout, 1.0, ValueError, "dropout must be >= 0 and < 1"),
        (adapters.check_dropout, -0.1, ValueError, "dropout must be >= 0 and < 1"),
        (adapters.check_dropout, "0.1", TypeError, "dropout must be a number, got str"),
    ],
)
def test_bad_arguments_are_named(check, value, error, message):
    with pytest.raises(error, match=f"^{message}"):
        check(value)


def test_good_arguments_come_back_as_floats_and_tuples():
    assert adapters.check_alpha(16) == 16.0 and isinstance(adapters.check_alpha(16), float)
    assert adapters.check_dropout(0) == 0.0
    assert adapters.check_targets("c_fc", "Dense") == ("c_fc",)
    assert adapters.check_targets(["c_attn", "c_fc"], "Linear") == ("c_attn", "c_fc")
    for bad in ((), [""], ["c_attn", 3]):
        with pytest.raises(ValueError, match="non-empty sequence of Dense layer names"):
            adapters.check_targets(bad, "Dense")


def test_apply_arguments_are_checked_in_order_and_lora_is_applied_once():
    check = adapters.check_apply_arguments
    assert check(["c_attn"], 4, 8, 0.1, "Linear", {}) == ("c_attn",)
    with pytest.raises(ValueError, match="^targets must be .* Linear layer names"):
        check([], 0, 0, 2.0, "Linear", {"h.0.attn.c_attn": object()})
    with pytest.raises(TypeError, match="^r must be an int"):
        check("c_fc", 2.5, 0, 2.0, "Dense", {})
    with pytest.raises(ValueError, match="^alpha must be > 0"):
        check("c_fc", 2, 0, 2.0, "Dense", {})
    with pytest.raises(ValueError, match="^dropout must be >= 0"):
        check("c_fc", 2, 4, 2.0, "Dense", {"h.0.mlp.c_fc": object()})
    with pytest.raises(ValueError, match="^model already has LoRA layers: apply_lora once"):
        check("c_fc", 2, 4, 0.0, "Dense", {"h.0.mlp.c_fc": object()})


def test_fine_tuning_rules_name_what_stops_a_run():
    from course.config import TrainConfig

    assert adapters.run_lora(TrainConfig()) is None  # lora_r = 0: every weight trains
    assert adapters.run_lora(TrainConfig(lora_r=8, lora_alpha=32.0)) == {"r": 8, "alpha": 32.0}
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32)
    state = {"model_config": config.to_dict(), "lora": None}
    adapters.check_fine_tuning_base(state, config.replace(dropout=0.1), "runs/base")  # fine
    with pytest.raises(ValueError, match="runs/base is a LoRA run"):
        adapters.check_fine_tuning_base({**state, "lora": {"r": 4}}, config, "runs/base")
    with pytest.raises(ValueError, match=r"another model shape .*n_head: 2 vs 4"):
        adapters.check_fine_tuning_base(state, config.replace(n_head=4), "runs/base")
    adapters.check_resumed_lora({"lora": {"r": 4, "alpha": 8.0}}, {"r": 4, "alpha": 8.0})
    with pytest.raises(ValueError, match="LoRA settings"):
        adapters.check_resumed_lora({"lora": None}, {"r": 4, "alpha": 8.0})
