"""course.torch.train: optimizer groups, schedule, learning, exact resume, gradient
accumulation, and checkpoints that are atomic and never run code from a file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED_DATA_DIR, needs_shared_corpus

from course import runtime
from course.config import PRESETS, GPTConfig, get_preset, lr_at
from course.data import get_batch
from course.runtime import seed_everything
from course.tokenizers import BPETokenizer, CharTokenizer
from course.torch.model import GPT
from course.torch.sampling import generate
from course.torch.train import (
    CHECKPOINT,
    REQUIRED_KEYS,
    configure_optimizer,
    estimate_loss,
    load_checkpoint,
    load_model,
    save_checkpoint,
    train,
)

TRAIN_EVENT = {"event", "iter", "loss", "lr", "ms_per_iter", "tokens_per_sec"}
EVAL_EVENT = {"event", "iter", "train_loss", "val_loss"}
METRICS = {"iters", "train_loss", "val_loss", "tokens_per_sec", "ms_per_iter", "peak_rss_mb"}
METRICS |= {"seconds", "preset", "framework", "n_params", "model_config", "train_config"}
METRICS |= {"threads"}
UNIGRAM_VAL_LOSS = 3.35  # best a model that ignores the context can do on the char val split


def nano(**overrides):
    """The nano preset on one thread: tiny matrices gain nothing from a second one."""
    return get_preset("nano", {"threads": 1, **overrides})


def random_tokens(n: int = 4000, vocab: int = 65, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(seed).integers(0, vocab, size=n).astype(np.uint16)
    return ids[: n * 9 // 10], ids[n * 9 // 10 :]


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    """Token files of the corpus go to tmp_path, never to a real cache an earlier run filled."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))


# --- The optimizer and the schedule -------------------------------------------------------


def test_weight_decay_only_on_matrices():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, bias=True))
    optimizer = configure_optimizer(model, PRESETS["nano"].train)
    decay, no_decay = optimizer.param_groups
    names = {id(p): name for name, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == PRESETS["nano"].train.weight_decay > 0
    assert no_decay["weight_decay"] == 0.0
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= decay_names
    assert "transformer.h.0.attn.c_attn.weight" in decay_names
    assert "transformer.h.1.mlp.c_proj.weight" in decay_names
    assert "transformer.h.0.attn.c_attn.bias" in no_decay_names
    assert {"transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias"} <= no_decay_names
    assert "transformer.ln_f.weight" in no_decay_names
    # Every parameter exactly once (the tied lm_head is wte: not a second copy).
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert not decay_names & no_decay_names
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    assert optimizer.defaults["betas"] == (0.9, 0.99)


def test_logged_learning_rate_follows_the_schedule():
    preset = nano(max_iters=30, warmup_iters=10, log_interval=1, eval_interval=100)
    result = train(preset, data=random_tokens(), progress=False)
    logged = [e for e in result.history if e["event"] == "train"]
    assert [e["iter"] for e in logged] == list(range(1, 31))
    for event in logged:  # event "iter" counts steps done: its lr is that of step iter - 1
        assert event["lr"] == lr_at(event["iter"] - 1, preset.train)
    assert logged[0]["lr"] < logged[9]["lr"] > logged[-1]["lr"]  # warm-up, then decay
    for group in result.optimizer.param_groups:  # and it was really set on the optimizer
        assert group["lr"] == lr_at(29, preset.train)


def test_estimate_loss_restores_mode_and_leaves_the_stream_alone():
    torch.manual_seed(0)
    model = GPT(PRESETS["nano"].model).train()
    splits = dict(zip(("train", "val"), random_tokens(), strict=True))
    first = estimate_loss(model, splits, 4, 32, 3, seed=7)
    assert model.training
    assert first == estimate_loss(model, splits, 4, 32, 3, seed=7)  # its own generator
    assert first != estimate_loss(model, splits, 4, 32, 3, seed=8)
    assert set(first) == {"train", "val"}
    assert abs(first["val"] - math.log(65)) < 0.1  # untrained: about uniform over 65


def test_the_preset_threads_are_applied_by_the_one_policy(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the suite's workers set a cap
    monkeypatch.setattr(runtime, "_usable_cpus", lambda: 3)  # not this machine's count
    try:
        one = train(nano(max_iters=1, eval_iters=1), data=random_tokens(), progress=False)
        assert one.metrics["threads"] == 1 == torch.get_num_threads()
        every_core = train(get_preset("nano", {"max_iters": 1, "eval_iters": 1}),
                           data=random_tokens(), progress=False)  # fmt: skip
        assert every_core.metrics["threads"] == 3 == torch.get_num_threads()  # threads=0
    finally:
        torch.set_num_threads(before)


# --- Learning on the real corpus, metrics files -------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """nano trained 1000 steps on Tiny Shakespeare (about 10 s), with every callback event."""
    if SHARED_DATA_DIR is None:
        pytest.skip("no tinyshakespeare.txt in $COURSE_DATA_DIR nor in ../shared/data")
    out = tmp_path_factory.mktemp("nano")
    seen: list[dict] = []
    preset = nano(max_iters=1000, eval_interval=250, eval_iters=20)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("COURSE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return out, train(preset, out, progress=False, callback=seen.append), seen


@pytest.mark.slow
def test_nano_learns_shakespeare(trained):
    _, result, _ = trained
    evals = [e for e in result.history if e["event"] == "eval"]
    assert abs(evals[0]["val_loss"] - math.log(65)) < 0.15  # untrained: uniform guessing
    # Below what any model ignoring the context can reach: it learned to use it.
    assert result.metrics["val_loss"] < UNIGRAM_VAL_LOSS - 0.5
    assert result.metrics["iters"] == 1000


@pytest.mark.slow
def test_metrics_files(trained):
    out, result, seen = trained
    logged = events(out / "metrics.jsonl")
    assert logged == result.history == seen  # one stream: file, history and callback
    train_events = [e for e in logged if e["event"] == "train"]
    eval_events = [e for e in logged if e["event"] == "eval"]
    assert [e["iter"] for e in train_events] == list(range(10, 1001, 10))
    assert [e["iter"] for e in eval_events] == [0, 250, 500, 750, 1000]
    assert all(set(e) == TRAIN_EVENT for e in train_events)
    assert all(set(e) == EVAL_EVENT for e in eval_events)
    for e in train_events:
        assert e["ms_per_iter"] > 0 and math.isfinite(e["loss"])
        assert e["tokens_per_sec"] == pytest.approx(8 * 32 / (e["ms_per_iter"] / 1000))

    metrics = json.loads((out / "metrics.json").read_text())
    assert METRICS <= set(metrics)
    assert metrics == json.loads(json.dumps(result.metrics))
    assert metrics["framework"] == "torch" and metrics["preset"] == "nano"
    assert metrics["val_loss"] == eval_events[-1]["val_loss"]
    assert metrics["n_params"] == result.model.num_params()
    assert metrics["tokens_per_sec"] == pytest.approx(8 * 32 * 1000 / metrics["ms_per_iter"])
    assert 50 < metrics["peak_rss_mb"] < 4000
    assert metrics["threads"] == 1  # the preset's, applied by course.runtime.set_threads
    assert metrics["model_config"] == result.model.config.to_dict()


@pytest.mark.slow
def test_load_model_gives_back_the_trained_model(trained):
    out, result, _ = trained
    model, tokenizer = load_model(out)
    assert isinstance(tokenizer, CharTokenizer) and tokenizer.vocab_size == 65
    assert not model.training
    for name, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    state = load_checkpoint(out / CHECKPOINT)
    assert state["step"] == 1000 and state["preset"] == "nano"
    assert state["best_val_loss"] == min(e["val_loss"] for e in result.history if "val_loss" in e)
    prompt = torch.tensor([tokenizer.encode("ROMEO:")])
    text = tokenizer.decode(generate(model, prompt, 30, seed=0)[0].tolist())
    assert text.startswith("ROMEO:") and len(text) == 36


@pytest.mark.slow
def test_resume_needs_the_same_model(trained):
    out, _, _ = trained
    with pytest.raises(ValueError, match="differs from the preset"):
        train(nano(n_embd=64), out, resume=True, progress=False)


@pytest.mark.slow
@needs_shared_corpus
def test_bpe_runs_store_their_tokenizer(tmp_path):
    train(nano(tokenizer="bpe", vocab_size=300, max_iters=2), tmp_path, progress=False)
    _, tokenizer = load_model(tmp_path)
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == 300
    assert tokenizer.decode(tokenizer.encode("To be, or not")) == "To be, or not"


# --- Exact resume, gradient accumulation ---------------------------------------------------


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    """Stopping at step 20 and resuming gives the losses and weights of one 40-step run.
    Dropout is on, so the torch RNG state must come back too, not just the batches."""
    data = random_tokens()
    settings = dict(max_iters=40, lr_decay_iters=40, eval_interval=10, log_interval=1, dropout=0.1)
    whole = train(nano(**settings), tmp_path / "whole", data=data, progress=False)

    halves = tmp_path / "halves"
    train(nano(**{**settings, "max_iters": 20}), halves, data=data, progress=False)
    with (halves / "metrics.jsonl").open("a") as log:  # a crash after the checkpoint
        log.write(json.dumps({"event": "train", "iter": 21, "loss": 0.0}) + "\n")
    resumed = train(nano(**settings), halves, data=data, resume=True, progress=False)

    def losses(history):
        return [(e["iter"], e.get("loss"), e.get("lr"), e.get("val_loss")) for e in history]

    assert resumed.metrics["resumed_from"] == 20 and resumed.metrics["iters"] == 40
    assert all(e["iter"] > 20 for e in resumed.history)
    after = [e for e in whole.history if e["iter"] > 20]
    assert losses(resumed.history) == losses(after)  # exact float equality
    assert losses(events(halves / "metrics.jsonl")) == losses(whole.history)  # no duplicates
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    # A different seed is a different run: the comparison above can fail.
    other = train(nano(**settings, seed=1), data=data, progress=False)
    assert losses(other.history) != losses(whole.history)


def reference_gradients(preset, data, micro_batches: int) -> dict[str, torch.Tensor]:
    """Gradients of the mean loss over `micro_batches` batches stacked into one."""
    seed_everything(preset.train.seed)
    torch.manual_seed(preset.train.seed)
    model = GPT(preset.model)
    rng = np.random.default_rng(preset.train.seed)
    batches = [get_batch(data, preset.train.batch_size, 32, rng) for _ in range(micro_batches)]
    x, y = (torch.from_numpy(np.concatenate(parts)) for parts in zip(*batches, strict=True))
    model(x, y)[1].backward()
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch():
    data = random_tokens()
    preset = nano(batch_size=4, grad_accum=2, max_iters=1, grad_clip=0.0)
    result = train(preset, data=data, progress=False)
    big = reference_gradients(preset, data[0], micro_batches=2)  # one batch of 8
    for name, p in result.model.named_parameters():
        torch.testing.assert_close(p.grad, big[name], atol=1e-6, rtol=1e-5, msg=name)
    # Without dividing by grad_accum the gradients would be twice as large.
    assert not torch.allclose(2 * big["transformer.wte.weight"], big["transformer.wte.weight"])


@pytest.mark.slow
def test_gradients_are_clipped():
    result = train(nano(max_iters=1, grad_clip=0.01), data=random_tokens(), progress=False)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in result.model.parameters()]))
    assert norm.item() == pytest.approx(0.01, rel=1e-4)


# --- Input checks ------------------------------------------------------------------------


def test_tokens_outside_the_vocabulary_are_refused():
    train_tokens, val_tokens = random_tokens()
    train_tokens = train_tokens.copy()
    train_tokens[5] = 70
    with pytest.raises(ValueError, match="token id 70.*vocab_size to at least 71"):
        train(nano(), data=(train_tokens, val_tokens), progress=False)


def test_resume_without_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt.pt"):
        train(nano(), tmp_path, data=random_tokens(), resume=True, progress=False)


# --- Checkpoint files ----------------------------------------------------------------------


def small_state() -> dict:
    model = GPT(PRESETS["nano"].model)
    state = {key: 0 for key in REQUIRED_KEYS}
    return {**state, "model": model.state_dict(), "numpy_rng": np.random.default_rng(0)
            .bit_generator.state, "tokenizer": {"kind": "char", "chars": ["a", "b"]}}  # fmt: skip


def test_checkpoint_round_trip(tmp_path):
    state = small_state()
    save_checkpoint(tmp_path / "ckpt.pt", **state)
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    assert loaded["numpy_rng"] == state["numpy_rng"]  # 128-bit ints survive weights_only
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, **small_state())
    before = path.read_bytes()
    real_save = torch.save

    def dies_halfway(obj, f):
        real_save(obj, tmp_path / "full")
        f.write((tmp_path / "full").read_bytes()[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, **{**small_state(), "step": 99})
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "full"]  # cleaned up


@pytest.mark.slow
def test_a_process_killed_while_saving_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, **small_state())
    before = path.read_bytes()
    script = textwrap.dedent(
        f"""
        import io, os, signal, torch
        from course.torch.train import save_checkpoint
        def killed_halfway(obj, f):
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        real = torch.save
        torch.save = lambda obj, f: killed_halfway(obj, f) if not isinstance(f, io.BytesIO) \\
            else real(obj, f)
        save_checkpoint({str(path)!r}, model={{"w": torch.ones(100_000)}})
        """
    )
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert child.returncode == -9, child.stderr.decode()
    leftovers = [p for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
    assert leftovers and leftovers[0].stat().st_size > 0  # the child did write, elsewhere
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 0


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.pt")):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="ckpt.pt"):
        load_model(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "flipped"])
def test_damaged_checkpoint_is_refused(tmp_path, damage):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, **small_state())
    good = path.read_bytes()
    bad = {
        "truncated": good[: len(good) // 2],
        "random": np.random.default_rng(0).bytes(len(good)),
        "empty": b"",
        "flipped": good[:40] + bytes(b ^ 0xFF for b in good[40:400]) + good[400:],
    }[damage]
    path.write_bytes(bad)
    with pytest.raises(ValueError, match="corrupt or not a checkpoint"):
        load_checkpoint(path)


class Booby:
    """Unpickling this calls open(marker, "w"): a file appears if its code ever runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "ckpt.pt"
    torch.save({**small_state(), "model": Booby(marker)}, path)
    with pytest.raises(ValueError, match="pickled Python objects.*not loaded"):
        load_checkpoint(path)
    assert not marker.exists()
    # The booby trap works: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_checkpoint_needs_its_keys(tmp_path):
    torch.save({"model": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="missing.*optimizer"):
        load_checkpoint(tmp_path / "ckpt.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="not a dict"):
        load_checkpoint(tmp_path / "tensor.pt")


# --- Fine-tuning from a run, with LoRA (chapter 08) ----------------------------------------


def test_lora_fine_tuning_trains_only_the_adapters_on_the_base_weights(tmp_path):
    from course.torch.lora import load_adapter

    data = random_tokens()
    base = train(nano(max_iters=20, lr_decay_iters=20, eval_interval=10), tmp_path / "base",
                 data=data, progress=False)  # fmt: skip
    preset = nano(max_iters=10, lr_decay_iters=10, eval_interval=5, lora_r=4, lora_alpha=8.0)
    tuned = train(preset, tmp_path / "lora", data=data, init_from=tmp_path / "base",
                  progress=False)  # fmt: skip

    C, r = preset.model.n_embd, 4  # per block: c_attn C->3C, c_proj C->C, c_fc C->4C, 4C->C
    expected = preset.model.n_layer * r * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    assert tuned.metrics["trainable_params"] == expected
    assert tuned.metrics["lora"] == {"r": 4, "alpha": 8.0}
    base_weights = base.model.state_dict()
    for name, value in tuned.model.state_dict().items():
        if "lora_" not in name:  # every base weight is the base run's, untouched
            assert torch.equal(value, base_weights[name.replace(".base.", ".")]), name
    moved = [n for n, p in tuned.model.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert moved, "training moved no adapter weight"

    # The run's checkpoint gives the tuned model back; the adapter file alone, added to the
    # base run's model, gives the same logits.
    x = torch.from_numpy(data[1][:32].astype(np.int64))[None]
    reloaded, _ = load_model(tmp_path / "lora")
    on_base, _ = load_model(tmp_path / "base")
    load_adapter(on_base, tmp_path / "lora" / "adapter.safetensors")
    tuned.model.eval()
    with torch.no_grad():
        want = tuned.model(x)[0]
        torch.testing.assert_close(reloaded(x)[0], want, rtol=0, atol=0)
        torch.testing.assert_close(on_base.eval()(x)[0], want, rtol=1e-6, atol=1e-6)


def test_fine_tuning_refuses_another_shape_a_lora_base_and_other_lora_settings(tmp_path):
    data = random_tokens()
    train(nano(max_iters=2, eval_interval=2), tmp_path / "base", data=data, progress=False)
    with pytest.raises(ValueError, match="another model shape.*n_embd: 32 vs 64"):
        train(nano(max_iters=2, n_embd=64), data=data, init_from=tmp_path / "base",
              progress=False)  # fmt: skip
    lora = nano(max_iters=2, eval_interval=2, lora_r=2)
    train(lora, tmp_path / "lora", data=data, init_from=tmp_path / "base", progress=False)
    with pytest.raises(ValueError, match="is a LoRA run"):
        train(lora, data=data, init_from=tmp_path / "lora", progress=False)
    with pytest.raises(ValueError, match="LoRA settings"):
        train(nano(max_iters=4, lora_r=3), tmp_path / "lora", data=data, resume=True,
              progress=False)  # fmt: skip


# --- Speedrun settings: a time budget, Muon, the whole validation split -------------------


def test_a_time_budget_ends_training_and_the_cosine_with_the_time(tmp_path):
    budget = 1.5
    preset = nano(max_iters=10**6, time_budget_s=budget, warmup_iters=5, log_interval=1,
                  eval_interval=10**6)  # fmt: skip
    result = train(preset, tmp_path, data=random_tokens(), progress=False)
    steps = [e for e in result.history if e["event"] == "train"]
    metrics = result.metrics
    assert 20 < metrics["iters"] < 10**6, "stopped by the clock, not by max_iters"
    one_step = max(e["ms_per_iter"] for e in steps) / 1000
    assert budget <= metrics["train_seconds"] < budget + one_step + 0.05
    assert metrics["seconds"] >= metrics["train_seconds"]
    # the cosine followed the time: the last step's rate is near min_lr, not mid-way down
    t = preset.train
    assert steps[-1]["lr"] < t.min_lr + 0.05 * (t.learning_rate - t.min_lr)
    assert steps[len(steps) // 2]["lr"] > t.min_lr + 0.2 * (t.learning_rate - t.min_lr)
    # the run ends with an evaluation and a checkpoint that knows the time used
    assert result.history[-1]["event"] == "eval" and result.history[-1]["iter"] == metrics["iters"]
    assert load_checkpoint(tmp_path / CHECKPOINT)["trained_seconds"] == metrics["train_seconds"]
    # resuming a run whose budget is spent trains no further
    again = train(preset, tmp_path, data=random_tokens(), resume=True, progress=False)
    assert again.metrics["iters"] == metrics["iters"]


def test_full_val_loss_is_every_target_once(tmp_path):
    train_ids, val_ids = random_tokens(6000)
    val_ids = val_ids[:333]  # windows of 32 do not divide it: the last one is short
    preset = nano(max_iters=20, full_val=True)
    result = train(preset, data=(train_ids, val_ids), progress=False)
    model = result.model.eval()
    # by hand: each position t predicts val[t + 1] from at most block_size tokens before it,
    # the windows starting at 0, 32, 64, ...
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(val_ids) - 1, 32):
            x = torch.as_tensor(val_ids[start : start + 32].astype(np.int64))[None]
            y = torch.as_tensor(val_ids[start + 1 : start + 33].astype(np.int64))[None]
            x = x[:, : y.shape[1]]
            logits, _ = model(x)
            total += torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum").item()
            count += y.shape[1]
    assert count == len(val_ids) - 1
    assert result.metrics["full_val_loss"] == pytest.approx(total / count, rel=1e-5)
    assert train(nano(max_iters=2), data=random_tokens(), progress=False).metrics[
        "full_val_loss"] is None  # fmt: skip


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    from course.torch.train import MuonAdamW

    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, bias=True))
    optimizer = configure_optimizer(model, nano(optimizer="muon").train)
    assert isinstance(optimizer, MuonAdamW)
    names = {id(p): name for name, p in model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in optimizer.adamw.param_groups for p in g["params"]}
    assert "transformer.h.0.attn.c_attn.weight" in muon
    assert "transformer.h.1.mlp.c_proj.weight" in muon
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= adamw  # the tied head too
    assert "transformer.h.0.ln_1.weight" in adamw and "transformer.h.0.attn.c_attn.bias" in adamw
    assert not muon & adamw and len(muon | adamw) == len(list(model.parameters()))
    assert optimizer.muon.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"
    # one learning rate for both, set through param_groups as train_step sets it
    for group in optimizer.param_groups:
        group["lr"] = 0.123
    assert {g["lr"] for o in (optimizer.muon, optimizer.adamw) for g in o.param_groups} == {0.123}


def _newton_schulz_float64(update: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Muon's quintic iteration written out in float64 (Keller Jordan's coefficients)."""
    x = update.double()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = 3.4445 * x + (-4.7750 * gram + 2.0315 * gram @ gram) @ x
    return x.T if tall else x


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (32, 32)])
def test_muon_orthogonalizes_in_float32_on_a_cpu(shape):
    """torch.optim.Muon rounds its iterations to bfloat16 (emulated, ~25x slower, on a CPU
    without AMX); the trainer's stays in float32: close to float64, bfloat16 is not."""
    from course.torch.train import orthogonalize

    update = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    exact = _newton_schulz_float64(update)
    ours = orthogonalize(update, (3.4445, -4.7750, 2.0315), 5, 1e-7)
    assert ours.dtype == torch.float32 and ours.shape == update.shape
    assert float((ours.double() - exact).abs().max()) < 1e-4
    halved = orthogonalize(update, (3.4445, -4.7750, 2.0315), 5, 1e-7, dtype=torch.bfloat16)
    assert float((halved.double() - exact).abs().max()) > 1e-3  # what float32 avoids
    singular = torch.linalg.svdvals(exact)
    assert 0.6 < float(singular.min()) and float(singular.max()) < 1.3  # nearly orthogonal
    with pytest.raises(ValueError, match="matrices"):
        orthogonalize(torch.ones(3), (3.4445, -4.7750, 2.0315), 5, 1e-7)


@pytest.mark.parametrize("weight_decay, nesterov, rule", [
    (0.1, True, "match_rms_adamw"), (0.0, False, "original"), (0.3, True, None)])  # fmt: skip
def test_the_trainers_muon_steps_as_torch_optim_muon_up_to_bfloat16(weight_decay, nesterov, rule):
    from course.torch.train import Muon

    shapes = [(48, 16), (16, 48), (24, 24)]
    start = [torch.randn(*s, generator=torch.Generator().manual_seed(i)) for i, s in
             enumerate(shapes)]  # fmt: skip
    runs = {}
    for cls in (torch.optim.Muon, Muon):
        params = [torch.nn.Parameter(w.clone()) for w in start]
        optimizer = cls(params, lr=0.02, weight_decay=weight_decay, momentum=0.9,
                        nesterov=nesterov, adjust_lr_fn=rule)  # fmt: skip
        for step in range(4):
            for i, p in enumerate(params):
                p.grad = torch.randn(*p.shape, generator=torch.Generator().manual_seed(
                    100 * step + i))  # fmt: skip
            optimizer.step()
        runs[cls] = (params, optimizer.state_dict())
    (theirs, their_state), (ours, our_state) = runs[torch.optim.Muon], runs[Muon]
    theirs, ours = [p.detach() for p in theirs], [p.detach() for p in ours]
    for w, a, b in zip(start, theirs, ours, strict=True):
        moved = float((a - w).abs().max())
        assert moved > 0.01
        assert float((a - b).abs().max()) < 0.03 * moved  # bfloat16's rounding, no more
    assert [g.keys() for g in their_state["param_groups"]] == [
        g.keys() for g in our_state["param_groups"]]  # fmt: skip
    for key, value in their_state["state"].items():  # the momentum: no rounding in it
        assert torch.allclose(value["momentum_buffer"], our_state["state"][key]["momentum_buffer"])


def test_a_muon_run_learns_and_resumes_exactly(tmp_path):
    stream = np.random.default_rng(3).permutation(65)[np.arange(6000) % 65].astype(np.uint16)
    data = (stream[:5000], stream[5000:])  # each token has one successor: learnable
    settings = dict(max_iters=30, lr_decay_iters=30, eval_interval=10, log_interval=1,
                    optimizer="muon", learning_rate=3e-3)  # fmt: skip
    whole = train(nano(**settings), tmp_path / "whole", data=data, progress=False)
    losses = [e["loss"] for e in whole.history if e["event"] == "train"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1
    halves = tmp_path / "halves"
    train(nano(**{**settings, "max_iters": 15, "eval_interval": 15}), halves, data=data,
          progress=False)  # fmt: skip
    resumed = train(nano(**settings), halves, data=data, resume=True, progress=False)
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    # an AdamW checkpoint does not resume as Muon
    adamw = tmp_path / "adamw"
    train(nano(max_iters=2), adamw, data=data, progress=False)
    with pytest.raises(ValueError, match="same optimizer"):
        train(nano(max_iters=4, optimizer="muon"), adamw, data=data, resume=True, progress=False)


def test_a_time_budget_is_refused_for_several_ranks():
    from course.torch.train import _train

    with pytest.raises(ValueError, match="time_budget_s needs one process"):
        _train(nano(time_budget_s=5.0), None, data=random_tokens(), tokenizer=None,
               resume=False, progress=False, callback=None, model=None, init_from=None,
               rank=0, world_size=2)  # fmt: skip
