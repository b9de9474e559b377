"""course.tf.train: the Keras trainer follows the PyTorch recipe step for step, resumes
exactly, keeps its checkpoint safe, and works with plain `fit` and callbacks."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import needs_shared_corpus

from course import runtime
from course.config import get_preset, lr_at
from course.tf.convert import torch_to_keras
from course.tf.model import GPT as KerasGPT
from course.tf.train import (
    CHECKPOINT,
    STATE,
    WarmupCosine,
    configure_optimizer,
    load_checkpoint,
    load_model,
    save_checkpoint,
    train,
)
from course.torch.model import GPT as TorchGPT
from course.torch.train import train as torch_train

tf = pytest.importorskip("tensorflow")

# A random token stream is enough to compare trainers; the corpus only for learning.
_RNG = np.random.default_rng(0)
TOKENS = (_RNG.integers(0, 65, 20_000), _RNG.integers(0, 65, 4_000))


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    """Token files of the corpus go to tmp_path, never to a real cache an earlier run filled."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))


def _preset(**overrides):
    base = {"max_iters": 20, "eval_interval": 10, "eval_iters": 2, "log_interval": 1}
    return get_preset("nano", {**base, **overrides})


def test_schedule_is_lr_at():
    t = get_preset("shakespeare-char-cpu").train
    schedule = WarmupCosine.from_train_config(t)
    steps = np.arange(0, 2300)
    got = np.asarray(schedule(tf.constant(steps)))
    expected = np.array([lr_at(int(s), t) for s in steps])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_weight_decay_skips_vectors():
    model = KerasGPT(_preset().model)
    optimizer = configure_optimizer(model, _preset().train)
    for variable in model.trainable_variables:
        decays = optimizer._use_weight_decay(variable)
        assert decays == (len(variable.shape) >= 2), variable.path


@pytest.mark.slow
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_keras_trainer_matches_the_pytorch_trainer_step_for_step(grad_accum):
    # grad_clip 0.5 and a high learning rate make clipping and decay matter
    preset = _preset(grad_accum=grad_accum, grad_clip=0.5, learning_rate=3e-3)
    torch.manual_seed(0)
    torch_model = TorchGPT(preset.model)
    keras_model = torch_to_keras(torch_model.state_dict(), KerasGPT(preset.model))
    ours = train(preset, data=TOKENS, model=keras_model, progress=False, jit_compile=False)
    theirs = torch_train(preset, data=TOKENS, model=torch_model, progress=False)

    def losses(result, event, key):
        return np.array([e[key] for e in result.history if e["event"] == event])

    np.testing.assert_allclose(losses(ours, "train", "lr"), losses(theirs, "train", "lr"))
    np.testing.assert_allclose(
        losses(ours, "train", "loss"), losses(theirs, "train", "loss"), rtol=1e-4
    )
    np.testing.assert_allclose(
        losses(ours, "eval", "val_loss"), losses(theirs, "eval", "val_loss"), rtol=1e-4
    )
    # and the weights end up where PyTorch's do
    wte = keras_model.wte.embeddings.numpy()
    np.testing.assert_allclose(wte, torch_model.transformer.wte.weight.detach(), atol=1e-4)


@pytest.mark.slow
def test_resume_gives_the_same_losses(tmp_path):
    preset = _preset(max_iters=16, eval_interval=8)
    straight = train(preset, tmp_path / "a", data=TOKENS, progress=False)
    half = get_preset("nano", {**preset.train.to_dict(), "max_iters": 8, "lr_decay_iters": 16})
    half = half.__class__(preset.name, preset.model, half.train)
    train(half, tmp_path / "b", data=TOKENS, progress=False)
    resumed = train(preset, tmp_path / "b", data=TOKENS, resume=True, progress=False)
    assert resumed.metrics["resumed_from"] == 8 and resumed.metrics["iters"] == 16

    def train_losses(result):
        return [e["loss"] for e in result.history if e["event"] == "train"]

    assert train_losses(resumed) == train_losses(straight)[8:]
    for a, b in zip(straight.model.weights, resumed.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    iters = [json.loads(line)["iter"] for line in lines if '"train"' in line]
    assert iters == sorted(set(iters)), "metrics.jsonl repeats steps after the resume"


@pytest.mark.slow
def test_files_of_a_run(tmp_path):
    result = train(_preset(), tmp_path, data=TOKENS, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("iters", "train_loss", "val_loss", "tokens_per_sec", "peak_rss_mb"):
        assert isinstance(metrics[key], int | float), key
    assert metrics["iters"] == 20 and metrics["framework"] == "tf"
    assert metrics["threads"] == runtime._usable_cpus()  # threads=0: one per usable core
    assert (tmp_path / "metrics.csv").read_text().startswith("event,iter,loss")
    assert list((tmp_path / "tb").iterdir()), "no TensorBoard event file"
    model, _ = load_model(tmp_path)
    x = TOKENS[1][:32][None]
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(result.model(x)), atol=1e-6)


@pytest.mark.slow
def test_a_save_that_dies_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    result = train(_preset(max_iters=4, eval_interval=4), tmp_path, data=TOKENS, progress=False)
    before = (tmp_path / "ckpt" / "model.weights.h5").read_bytes()

    def dies(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(np, "savez", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, result.model, result.optimizer, step=99, model_config={},
                        train_config={})  # fmt: skip
    state, folder = load_checkpoint(tmp_path)
    assert state["step"] == 4 and folder.name == "ckpt"
    assert (folder / "model.weights.h5").read_bytes() == before
    # died between the two renames: the previous checkpoint is still found
    (tmp_path / "ckpt").rename(tmp_path / ".ckpt-old")
    assert load_checkpoint(tmp_path)[0]["step"] == 4


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Keras checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path)
    config = _preset().model.to_dict()
    (tmp_path / "ckpt" / "state.json").write_text(json.dumps({"step": 1, "model_config": config,
                                                              "train_config": {}}))  # fmt: skip
    (tmp_path / "ckpt" / "model.weights.h5").write_bytes(b"\x89HDF\r\n garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_model(tmp_path)


class _Checked(Exception):
    """Stops the trainer once it has checked its tokens."""


def test_threads_and_tokens_are_set_up_as_the_pytorch_trainer_does(monkeypatch):
    import course.tf.train as keras_trainer

    asked = []
    monkeypatch.setattr(runtime, "set_threads", lambda n=0: asked.append(n) or 7)

    def stop(name, *args):
        raise _Checked

    monkeypatch.setattr(keras_trainer, "check_tokens", stop)
    with pytest.raises(_Checked):
        train(_preset(threads=3), data=TOKENS, progress=False)
    assert asked == [3]


def test_checkpoint_files_are_strict_json_and_nothing_is_left_over(tmp_path):
    preset = _preset()
    model = KerasGPT(preset.model)
    model(TOKENS[0][:32][None])  # built: its weights exist
    optimizer = configure_optimizer(model, preset.train)
    optimizer.build(model.trainable_variables)
    config = preset.model.to_dict()
    for step in (1, 2):  # the second save replaces the first
        save_checkpoint(tmp_path, model, optimizer, step=step, model_config=config,
                        train_config={}, best_val_loss=math.nan)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]
    folder = tmp_path / CHECKPOINT
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["model.weights.h5", "optimizer.npz", STATE]
    )
    text = (folder / STATE).read_text()
    state = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {STATE}"))
    assert state["step"] == 2 and state["best_val_loss"] is None
    assert load_checkpoint(tmp_path)[0]["step"] == 2


def test_fit_works_with_keras_callbacks():
    preset = _preset()
    model = KerasGPT(preset.model)
    model.compile(optimizer=configure_optimizer(model, preset.train), jit_compile=False)
    x = TOKENS[0][:2048].reshape(-1, 32)[:, :32]
    y = np.roll(TOKENS[0][:2048], -1).reshape(-1, 32)
    history = model.fit(
        x, y, batch_size=8, epochs=3, verbose=0,
        callbacks=[tf.keras.callbacks.History()] if hasattr(tf, "keras") else None,
    )  # fmt: skip
    losses = history.history["loss"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    evaluated = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert math.isfinite(evaluated["loss"])


@pytest.mark.slow
@needs_shared_corpus
def test_loss_on_nano_falls_like_the_pytorch_one():
    preset = get_preset("nano", {"max_iters": 300})
    result = train(preset, progress=False)
    assert result.metrics["val_loss"] < 2.9, "300 steps should get well below ln(65) = 4.17"
