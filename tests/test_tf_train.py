"""course.tf.train: the Keras trainer follows the PyTorch recipe step for step, resumes
exactly, keeps its checkpoint safe, and works with plain `fit` and callbacks."""

import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import needs_shared_corpus, run_script

from course import runtime
from course.config import get_preset, lr_at
from course.tf.convert import torch_to_keras
from course.tf.model import GPT as KerasGPT
from course.tf.train import (
    CHECKPOINT,
    OPTIMIZER,
    STATE,
    WEIGHTS,
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
def test_files_of_a_run(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the suite's workers set a cap
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


@pytest.mark.slow
def test_resume_drops_the_metrics_line_a_kill_tore(tmp_path):
    run = {"data": TOKENS, "progress": False, "jit_compile": False}
    train(_preset(max_iters=2, eval_interval=2), tmp_path, **run)
    log = tmp_path / "metrics.jsonl"
    before = log.read_text()
    with log.open("a") as f:
        f.write('{"event": "train", "iter": 3, "lo')  # killed while writing step 3's line
    with pytest.warns(RuntimeWarning, match=r"metrics\.jsonl: dropped line \d+,"):
        resumed = train(_preset(max_iters=4, eval_interval=2), tmp_path, resume=True, **run)
    assert resumed.metrics["resumed_from"] == 2
    assert log.read_text().startswith(before)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["iter"] for e in events if e["event"] == "train"] == [1, 2, 3, 4]


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
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ckpt-000002", CHECKPOINT]
    assert os.readlink(tmp_path / CHECKPOINT) == ".ckpt-000002"  # relative: can be moved
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


# --------------------------------------------------------------------------------------
# A save killed at any point, twice: a complete checkpoint is always found
# --------------------------------------------------------------------------------------

# What `os` does to a folder, and fsync: the points where a kill can tell a difference.
_DISK_OPS = ("mkdir", "open", "rename", "replace", "unlink", "remove", "rmdir", "symlink",
             "fsync")  # fmt: skip
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT  # an os.open with one of these writes


@dataclasses.dataclass
class _Recorded:
    """Stands for a model and its optimizer in `save_checkpoint`: writes the weights file
    Keras wrote, and has the optimizer's variables. No TensorFlow runs in a save: it can
    run in a forked process, and thousands of saves take seconds."""

    weights: bytes
    arrays: list[np.ndarray]

    def save_weights(self, path) -> None:
        with open(path, "wb") as f:
            f.write(self.weights)

    @property
    def variables(self) -> list:
        return [_Value(a) for a in self.arrays]


@dataclasses.dataclass
class _Value:
    array: np.ndarray

    def numpy(self) -> np.ndarray:
        return self.array


def _tiny_config():
    return dataclasses.replace(_preset().model, n_layer=1, n_head=1, n_embd=8, block_size=8)


def _recorded(folder, steps=(1, 2, 3)) -> dict[int, _Recorded]:
    """A different real Keras weights file and optimizer state for each step."""
    folder.mkdir()
    model = KerasGPT(_tiny_config())
    model(np.zeros((1, 8), np.int64))
    optimizer = configure_optimizer(model, _preset().train)
    optimizer.build(model.trainable_variables)
    recorded = {}
    for step in steps:
        for variable in model.weights:
            variable.assign(np.full(variable.shape, step / 10, variable.dtype))
        model.save_weights(str(folder / f"{step}.weights.h5"))
        arrays = [np.asarray(v.numpy()) + step for v in optimizer.variables]
        recorded[step] = _Recorded((folder / f"{step}.weights.h5").read_bytes(), arrays)
    return recorded


def _save(out, recorded: dict[int, _Recorded], step: int) -> None:
    model = recorded[step]
    save_checkpoint(out, model, model, step=step, model_config=_tiny_config().to_dict(),
                    train_config={})  # fmt: skip


def _check(out, recorded: dict[int, _Recorded], allowed: set[int], when: str) -> int:
    """The step of the checkpoint `load_checkpoint` finds in `out`, one of `allowed`,
    after checking its files are those of that step."""
    try:
        state, folder = load_checkpoint(out)
    except (FileNotFoundError, ValueError) as err:
        pytest.fail(f"{when}: no checkpoint found: {err}")
    step = state["step"]
    assert step in allowed, f"{when}: found step {step}, expected one of {sorted(allowed)}"
    try:
        weights = (folder / WEIGHTS).read_bytes()
        with np.load(folder / OPTIMIZER) as saved:
            arrays = [saved[key] for key in sorted(saved.files)]
    except OSError as err:
        pytest.fail(f"{when}: found step {step} in {folder.name}, incomplete: {err}")
    assert weights == recorded[step].weights, f"{when}: weights"
    for array, expected in zip(arrays, recorded[step].arrays, strict=True):
        np.testing.assert_array_equal(array, expected, err_msg=f"{when}: optimizer")
    return step


def _fingerprint(out) -> tuple:
    """What is on disk in `out`: names, kinds, sizes and link targets."""

    def kind(path):
        return os.readlink(path) if path.is_symlink() else path.is_dir() or path.stat().st_size

    return tuple((str(p.relative_to(out)), kind(p)) for p in sorted(out.rglob("*")))


class _Killed(BaseException):
    """A simulated kill -9 (see `_dies_at`)."""


@contextlib.contextmanager
def _dies_at(point: int):
    """Number the disk operations of the block (`_DISK_OPS`; fsync does nothing, a kill
    needs none); the process "dies" at `point`: point 2i is just before operation i,
    2i + 1 just after it. Dying raises _Killed, and so does every later operation, before
    it does anything: as after kill -9, the files stay as they are (what was written is in
    the page cache), and no clean-up of the dying process (a `finally`) touches them.

    Yields the names of the operations done, to tell where a failing case died.
    """
    real = {name: getattr(os, name) for name in _DISK_OPS}
    done, dead = [], []

    def wrap(name):
        def operation(*args, **kwargs):
            if name == "open" and not (args[1] if len(args) > 1 else kwargs["flags"]) & _WRITES:
                return real[name](*args, **kwargs)  # reading a folder to sync it, or rmtree
            if dead or point == 2 * len(done):
                dead.append(name)
                raise _Killed(name)
            result = None if name == "fsync" else real[name](*args, **kwargs)
            done.append(name)
            if point == 2 * len(done) - 1:
                dead.append(name)
                raise _Killed(name)
            return result

        return operation

    with pytest.MonkeyPatch.context() as patch:
        for name in _DISK_OPS:
            patch.setattr(os, name, wrap(name))
        yield done


def _save_dying_at(point: int, out, recorded, step: int) -> tuple[bool, list[str]]:
    """Save `step` in `out`, killed at `point`: (whether it was killed, operations done)."""
    with _dies_at(point) as done:
        try:
            _save(out, recorded, step)
        except _Killed:
            return True, done
    return False, done


def _copy(source, dest):
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest, symlinks=True)
    return dest


def test_a_save_killed_at_any_point_even_twice_keeps_a_complete_checkpoint(tmp_path):
    recorded = _recorded(tmp_path / "recorded")
    base = tmp_path / "base"
    _save(base, recorded, 1)
    seen, loaded = set(), set()
    for first in itertools.count():
        run = _copy(base, tmp_path / "run")
        killed, done = _save_dying_at(first, run, recorded, 2)
        when = f"save of step 2 killed at point {first} (after {done})"
        found = _check(run, recorded, {1, 2} if killed else {2}, when)
        if not killed:
            assert first > 10, "a save takes more steps than that"
            break
        if found not in loaded:  # a real Keras model loads what was found
            model, _ = load_model(run)
            assert float(model.weights[0].numpy().flat[0]) == pytest.approx(found / 10)
            loaded.add(found)
        if _fingerprint(run) in seen:
            continue  # the same files as after an earlier point: the same second saves
        seen.add(_fingerprint(run))
        for second in itertools.count():  # the next save, killed too
            again = _copy(run, tmp_path / "again")
            killed_again, done = _save_dying_at(second, again, recorded, 3)
            when_again = f"{when}, then save of step 3 killed at point {second} (after {done})"
            _check(again, recorded, {found, 3} if killed_again else {3}, when_again)
            if not killed_again:
                break
    assert len(seen) > 3 and loaded == {1, 2}
    # a save that completes leaves the checkpoint and nothing else
    _save(run, recorded, 3)
    assert {p.name for p in run.iterdir() if not p.name.startswith(f".{CHECKPOINT}-")} == {
        CHECKPOINT
    }
    assert len(list(run.iterdir())) <= 2, sorted(p.name for p in run.iterdir())


_KILL_SCRIPT = """
import os, shutil, signal
from itertools import count
from pathlib import Path

import numpy as np

import course.tf.train as keras_train

RECORDED, CASES = Path({recorded!r}), Path({cases!r})
OPS, WRITES = {ops!r}, os.O_WRONLY | os.O_RDWR | os.O_CREAT


class Recorded:  # the weights Keras wrote and the optimizer's variables, as in the test
    def __init__(self, step):
        self.weights = (RECORDED / f"{{step}}.weights.h5").read_bytes()
        with np.load(RECORDED / f"{{step}}.npz") as saved:
            self.variables = [Value(saved[key]) for key in sorted(saved.files)]

    def save_weights(self, path):
        with open(path, "wb") as f:
            f.write(self.weights)


class Value:
    def __init__(self, array):
        self.array = array

    def numpy(self):
        return self.array


def die_at(point):
    # Kill -9 at `point` (2i: before disk operation i, 2i + 1: after it). A kill loses
    # nothing the process wrote (the system has it): fsync changes nothing, and is skipped.
    real, done = {{name: getattr(os, name) for name in OPS}}, []

    def wrap(name):
        def operation(*args, **kwargs):
            if name == "open" and not (args[1] if len(args) > 1 else kwargs["flags"]) & WRITES:
                return real[name](*args, **kwargs)
            if point == 2 * len(done):
                os.kill(os.getpid(), signal.SIGKILL)
            result = None if name == "fsync" else real[name](*args, **kwargs)  # see die_at
            done.append(name)
            if point == 2 * len(done) - 1:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return operation

    for name in OPS:
        setattr(os, name, wrap(name))


def save_killed_at(point, out, step):
    \"\"\"Save `step` in `out` in a forked process killed at `point`: whether it was.\"\"\"
    pid = os.fork()  # TensorFlow was imported once; the child runs none of it
    if pid == 0:
        try:
            die_at(point)
            model = Recorded(step)
            keras_train.save_checkpoint(out, model, model, step=step, model_config={{}},
                                        train_config={{}})
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def cases(source, step, name):
    \"\"\"Copies of `source` in which a save of `step` was killed at each point, in turn.\"\"\"
    for point in count():
        out = CASES / f"{{name}}-{{point}}"
        shutil.copytree(source, out, symlinks=True)
        if not save_killed_at(point, out, step):
            shutil.rmtree(out)
            return point


def fingerprint(out):
    return sorted((str(p.relative_to(out)), os.readlink(p) if p.is_symlink() else
                   p.is_dir() or p.stat().st_size) for p in out.rglob("*"))


def in_window(out):
    # killed inside the swap: a complete checkpoint other than the one ckpt names, or none
    named = (out / "ckpt").resolve()
    return {{p.resolve() for p in out.iterdir() if (p / "state.json").is_file()}} != {{named}}


seen, firsts = [], cases(CASES / "base", 2, "first")
print(firsts)
for first in range(firsts):
    state = fingerprint(CASES / f"first-{{first}}")
    if state not in seen:  # the same files as after an earlier point: the same next saves
        seen.append(state)
        if in_window(CASES / f"first-{{first}}") or len(seen) % 8 == 1:  # all: simulated
            cases(CASES / f"first-{{first}}", 3, f"first-{{first}}-second")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 and fork are POSIX")
def test_a_save_killed_by_sigkill_keeps_a_complete_checkpoint(tmp_path):
    """A real kill -9 at each point of a save, and again at each point of the next save
    after those that die inside the swap, and a few others (the simulated kills above try
    all pairs)."""
    recorded = _recorded(tmp_path / "recorded")
    for step, model in recorded.items():
        np.savez(tmp_path / "recorded" / f"{step}.npz",
                 **{f"v{i:04d}": a for i, a in enumerate(model.arrays)})  # fmt: skip
    cases = tmp_path / "cases"
    _save(cases / "base", recorded, 1)
    script = _KILL_SCRIPT.format(recorded=str(tmp_path / "recorded"), cases=str(cases),
                                 ops=_DISK_OPS)  # fmt: skip
    result = run_script(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    firsts = int(result.stdout.split()[0])
    assert firsts > 10, result.stdout
    for first in range(firsts):
        found = _check(cases / f"first-{first}", recorded, {1, 2}, f"killed at point {first}")
        for again in cases.glob(f"first-{first}-second-*"):
            when = f"killed at point {first}, then at point {again.name.split('-')[-1]}"
            _check(again, recorded, {found, 3}, when)
    assert len(list(cases.glob("first-*-second-*"))) > 2 * firsts


def test_a_checkpoint_of_the_earlier_layout_is_found_and_replaced(tmp_path):
    # earlier versions swapped real folders: ckpt/, and .ckpt-old/ if killed mid-swap
    recorded = _recorded(tmp_path / "recorded", steps=(1, 2))
    _save(tmp_path / "new", recorded, 1)
    out = tmp_path / "out"
    shutil.copytree(tmp_path / "new" / CHECKPOINT, out / ".ckpt-old")
    assert _check(out, recorded, {1}, "only .ckpt-old") == 1
    (out / ".ckpt-old").rename(out / CHECKPOINT)
    assert load_checkpoint(out)[1] == out / CHECKPOINT
    _save(out, recorded, 2)
    assert sorted(p.name for p in out.iterdir()) == [".ckpt-000001", CHECKPOINT]
    assert (out / CHECKPOINT).is_symlink() and _check(out, recorded, {2}, "after a save") == 2


def test_lora_fine_tuning_trains_only_the_adapters_on_the_base_weights(tmp_path):
    from course.tf.lora import load_adapter

    run = {"data": TOKENS, "progress": False, "jit_compile": False}
    base = train(_preset(max_iters=10, eval_interval=5), tmp_path / "base", **run)
    preset = _preset(max_iters=6, eval_interval=3, lora_r=4, lora_alpha=8.0)
    tuned = train(preset, tmp_path / "lora", init_from=tmp_path / "base", **run)

    C, r = preset.model.n_embd, 4  # per block: c_attn C->3C, c_proj C->C, c_fc C->4C, 4C->C
    expected = preset.model.n_layer * r * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    assert tuned.metrics["trainable_params"] == expected
    assert tuned.metrics["n_params"] == base.metrics["n_params"] + expected  # frozen ones too
    assert tuned.metrics["lora"] == {"r": 4, "alpha": 8.0}

    def inside(v):  # a weight's path without the model's own name ("gpt_1/")
        return v.path.split("/", 1)[-1]

    frozen = {inside(v): v.numpy() for v in tuned.model.weights if not v.trainable}
    for v in base.model.weights:  # every base weight is the base run's, frozen, untouched
        if "float" in str(v.dtype):
            assert inside(v) in frozen, f"{v.path} is not frozen in the LoRA run"
            np.testing.assert_array_equal(frozen[inside(v)], v.numpy(), err_msg=v.path)
    assert any(np.abs(v.numpy()).sum() > 0 for v in tuned.model.trainable_weights
               if "lora_b" in v.path.lower()), "training moved no adapter weight"  # fmt: skip

    # The run's checkpoint gives the tuned model back; the adapter file alone, added to the
    # base run's model, gives the same logits.
    x = np.asarray(TOKENS[1][:32], dtype=np.int64)[None]
    want = np.asarray(tuned.model(x)[0])
    reloaded, _ = load_model(tmp_path / "lora")
    np.testing.assert_array_equal(np.asarray(reloaded(x)[0]), want)
    on_base, _ = load_model(tmp_path / "base")
    load_adapter(on_base, tmp_path / "lora" / "adapter.safetensors")
    np.testing.assert_allclose(np.asarray(on_base(x)[0]), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="LoRA settings"):
        train(_preset(max_iters=8, lora_r=3), tmp_path / "lora", resume=True, **run)


def test_estimate_loss_takes_any_batch_size_on_the_same_model():
    """A second evaluation with another batch size is traced anew (it was refused: the
    traced function cached on the model kept the first call's shape)."""
    from course.data import get_batch
    from course.tf.model import lm_loss
    from course.tf.train import estimate_loss

    config = get_preset("nano").model.replace(n_layer=1, n_embd=32, n_head=2, block_size=8)
    model = KerasGPT(config)
    splits = {"val": TOKENS[1] % config.vocab_size}
    for batch_size in (3, 5, 3):
        got = estimate_loss(model, splits, batch_size, config.block_size, 2, seed=4)["val"]
        rng = np.random.default_rng(4)
        want = np.mean([
            float(lm_loss(y, model(x, training=False)))
            for x, y in (get_batch(splits["val"], batch_size, config.block_size, rng)
                         for _ in range(2))
        ])  # fmt: skip
        assert got == pytest.approx(want, rel=1e-6), batch_size


# --- Speedrun settings: a time budget, Muon, the whole validation split -------------------


def test_schedule_with_a_time_budget_is_lr_at_with_progress():
    t = _preset(warmup_iters=10).train
    used = tf.Variable(0.0, dtype=tf.float64)
    schedule = WarmupCosine.from_train_config(t, used)
    for step, progress in ((3, 0.9), (10, 0.0), (10, 0.25), (500, 0.5), (40, 1.0), (40, 1.4)):
        used.assign(progress)
        assert float(schedule(tf.constant(step))) == pytest.approx(
            lr_at(step, t, progress), rel=1e-6
        ), (step, progress)


def test_muon_steps_as_the_pytorch_trainer_does():
    """Keras' Muon (Muon on the blocks' matrices, Adam on the rest, rms_rate 0.2) and the
    PyTorch trainer's MuonAdamW (match_rms_adamw) give the same losses and weights, step for
    step, from the same weights on the same batches; with clipping and decay acting."""
    preset = _preset(optimizer="muon", learning_rate=3e-3, grad_clip=0.5, max_iters=12,
                     warmup_iters=3, lr_decay_iters=12)  # fmt: skip
    torch.manual_seed(0)
    torch_model = TorchGPT(preset.model)
    keras_model = torch_to_keras(torch_model.state_dict(), KerasGPT(preset.model))
    ours = train(preset, data=TOKENS, model=keras_model, progress=False, jit_compile=False)
    theirs = torch_train(preset, data=TOKENS, model=torch_model, progress=False)
    assert type(ours.optimizer).__name__ == "Muon"

    def losses(result):
        return np.array([e["loss"] for e in result.history if e["event"] == "train"])

    np.testing.assert_allclose(losses(ours), losses(theirs), rtol=2e-4)
    block = torch_model.transformer.h[0].mlp.c_fc.weight.detach().numpy()
    np.testing.assert_allclose(keras_model.h[0].mlp.c_fc.kernel.numpy(), block.T, atol=2e-4)
    wte = torch_model.transformer.wte.weight.detach().numpy()
    np.testing.assert_allclose(keras_model.wte.embeddings.numpy(), wte, atol=2e-4)
    # and Muon is not AdamW: the same run with AdamW ends elsewhere
    adamw = torch_train(_preset(learning_rate=3e-3, grad_clip=0.5, max_iters=12, warmup_iters=3,
                                lr_decay_iters=12), data=TOKENS, progress=False)  # fmt: skip
    assert not np.allclose(losses(adamw)[-4:], losses(theirs)[-4:], rtol=1e-3)


def test_a_time_budget_ends_the_keras_run_with_the_time(tmp_path):
    # Eagerly: a traced first step counts against the budget too, and tracing took more
    # than the whole budget on a busy 2-core machine (1 step in 6 s); eager steps are all
    # alike, so the budget holds many of them however loaded the machine is.
    budget = 4.0
    preset = _preset(max_iters=10**6, time_budget_s=budget, warmup_iters=5,
                     eval_interval=10**6)  # fmt: skip
    result = train(preset, tmp_path, data=TOKENS, progress=False, run_eagerly=True)
    metrics = result.metrics
    steps = [e for e in result.history if e["event"] == "train"]
    assert 3 < metrics["iters"] < 10**6, "stopped by the clock, not by max_iters"
    last_step = steps[-1]["ms_per_iter"] / 1000
    assert budget <= metrics["train_seconds"] < budget + last_step + 0.05
    t = preset.train
    assert steps[-1]["lr"] < t.min_lr + 0.1 * (t.learning_rate - t.min_lr)
    assert result.history[-1]["event"] == "eval" and result.history[-1]["iter"] == metrics["iters"]
    state, _ = load_checkpoint(tmp_path)
    assert state["trained_seconds"] == pytest.approx(metrics["train_seconds"])
    again = train(preset, tmp_path, data=TOKENS, resume=True, progress=False, run_eagerly=True)
    assert again.metrics["iters"] == metrics["iters"]


def test_full_val_loss_is_the_pytorch_trainers_on_the_same_weights():
    from course.tf.train import full_split_loss as keras_full
    from course.torch.train import full_split_loss as torch_full

    config = get_preset("nano").model
    torch.manual_seed(2)
    torch_model = TorchGPT(config)
    keras_model = torch_to_keras(torch_model.state_dict(), KerasGPT(config))
    val = TOKENS[1][:1001]  # 1000 targets: windows of 32 leave a short last one
    want = torch_full(torch_model, val, config.block_size)
    assert keras_full(keras_model, val, config.block_size) == pytest.approx(want, rel=1e-5)
    assert keras_full(keras_model, val, config.block_size, batch_size=7) == pytest.approx(
        want, rel=1e-5
    )
    # and it is the whole split: the first 500 targets alone give another number
    assert keras_full(keras_model, val[:501], config.block_size) != pytest.approx(want, rel=1e-4)


def test_speedrun_settings_under_a_strategy_are_refused():
    from course.tf.distributed import mirrored_strategy

    strategy = mirrored_strategy(1)
    for changes in ({"time_budget_s": 5.0}, {"optimizer": "muon"}):
        with pytest.raises(ValueError, match="for one device"):
            train(_preset(**changes), data=TOKENS, progress=False, strategy=strategy)


def test_both_trainers_report_the_same_summary_keys(tmp_path):
    from course.metrics import SUMMARY_KEYS

    preset = _preset(max_iters=2, eval_interval=2)
    ours = train(preset, tmp_path / "keras", data=TOKENS, progress=False, jit_compile=False)
    theirs = torch_train(preset, tmp_path / "torch", data=TOKENS, progress=False)
    assert list(ours.metrics) == list(theirs.metrics) == list(SUMMARY_KEYS)
    for folder in ("keras", "torch"):  # metrics.json too
        assert list(json.loads((tmp_path / folder / "metrics.json").read_text())) == list(
            SUMMARY_KEYS
        )
    assert ours.metrics["torch_version"] is None and theirs.metrics["keras_version"] is None
    assert ours.metrics["tensorflow_version"] and theirs.metrics["torch_version"]
    assert ours.metrics["device"] == theirs.metrics["device"] == "cpu"
