"""The command lines: `python -m course.train` and `python -m course.sample`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, SHARED_DATA_DIR, needs_shared_corpus

import course.train as cli
from course.config import TrainConfig, lr_at
from course.torch.train import load_checkpoint


@pytest.fixture(scope="module", autouse=True)
def token_cache(tmp_path_factory):
    """The commands' token files go to a folder of this module's, never to a real cache."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("COURSE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COURSE_DATA_DIR": str(SHARED_DATA_DIR or "")}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True
    )


def refused(result: subprocess.CompletedProcess, *words: str) -> None:
    """The command failed cleanly: status 1 or 2, a message naming the problem, no traceback."""
    assert result.returncode in (1, 2), (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """30 nano steps with an evaluation at 15 and 30, through the command line."""
    if SHARED_DATA_DIR is None:
        pytest.skip("no tinyshakespeare.txt in $COURSE_DATA_DIR nor in ../shared/data")
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ["--framework", "torch", "--preset", "nano", "--max_iters", "30", "--threads", "1"]
    result = run("course.train", *args, "--eval-interval", "15", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.slow
def test_train_writes_checkpoint_and_metrics(trained):
    out, result = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iters"] == 30 and metrics["preset"] == "nano"
    assert metrics["framework"] == "torch" and metrics["resumed_from"] is None
    for key in ("train_loss", "val_loss", "tokens_per_sec", "ms_per_iter", "peak_rss_mb"):
        assert metrics[key] > 0, key
    assert metrics["train_config"]["eval_interval"] == 15  # "--eval-interval" reached it
    assert metrics["train_config"]["lr_decay_iters"] == 30  # the cosine ends with the run
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["iter"] for e in evals if e["event"] == "eval"] == [0, 15, 30]
    assert load_checkpoint(out / "ckpt.pt")["step"] == 30
    assert str(out) in result.stdout and '"val_loss"' in result.stdout


@pytest.mark.slow
def test_resume_continues_a_run(trained, tmp_path):
    out, _ = trained
    first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    args = ["--preset", "nano", "--max-iters", "40", "--threads", "1", "--eval_interval", "15"]
    result = run("course.train", *args, "--out", str(out), "--resume", "--no-progress")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iters"] == 40 and metrics["resumed_from"] == 30
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[: len(first)] == first  # the first run's log is kept...
    later = lines[len(first) :]
    assert [e["iter"] for e in later if e["event"] == "train"] == [40]  # ...and not redone
    assert later[-1] == {**later[-1], "event": "eval", "iter": 40}
    train_cfg = load_checkpoint(out / "ckpt.pt")["train_config"]
    assert train_cfg["max_iters"] == 40
    assert later[0]["lr"] == lr_at(39, TrainConfig.from_dict(train_cfg))


@pytest.mark.slow
def test_sample_prints_text(trained):
    out, _ = trained
    result = run("course.sample", "--out", str(out), "--max-new-tokens", "20", "--seed", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    text = result.stdout[:-1]
    assert len(text) == 1 + 20 and text.startswith("\n")  # the default prompt is a newline
    again = run("course.sample", "--out", str(out), "--max-new-tokens", "20", "--seed", "0")
    assert again.stdout == result.stdout  # seeded
    prompted = run("course.sample", "--out", str(out), "--prompt", "ROMEO:", "--max-new-tokens",
                   "5", "--temperature", "0", "--no-cache")  # fmt: skip
    assert prompted.returncode == 0 and prompted.stdout.startswith("ROMEO:")
    assert len(prompted.stdout) == len("ROMEO:") + 5 + 1


@pytest.mark.slow
def test_sample_refuses_unknown_characters(trained):
    out, _ = trained
    refused(run("course.sample", "--out", str(out), "--prompt", "héllo"), "'é'", "vocabulary")


@pytest.mark.slow
def test_lora_fine_tuning_from_the_command_line_and_sampling_with_its_adapter(tmp_path):
    if SHARED_DATA_DIR is None:
        pytest.skip("no tinyshakespeare.txt in $COURSE_DATA_DIR nor in ../shared/data")
    base, tuned = tmp_path / "base", tmp_path / "lora"
    args = ["--preset", "nano", "--max-iters", "10", "--threads", "1", "--eval-interval", "5"]
    assert run("course.train", *args, "--out", str(base), "--no-progress").returncode == 0
    lora = ["--init-from", str(base), "--lora-r", "4", "--lora-alpha", "8"]
    result = run("course.train", *args, *lora, "--out", str(tuned), "--no-progress")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tuned / "metrics.json").read_text())
    assert metrics["lora"] == {"r": 4, "alpha": 8.0} and metrics["init_from"] == str(base)
    assert 0 < metrics["trainable_params"] < metrics["n_params"] / 5
    adapter = tuned / "adapter.safetensors"
    greedy = ["--max-new-tokens", "12", "--temperature", "0", "--prompt", "ROMEO:"]
    on_base = run("course.sample", "--out", str(base), "--adapter", str(adapter), *greedy)
    assert on_base.returncode == 0, on_base.stderr
    assert on_base.stdout == run("course.sample", "--out", str(tuned), *greedy).stdout
    refused(run("course.sample", "--out", str(base), "--adapter", str(tmp_path / "no.safetensors")),
            "--adapter")  # fmt: skip
    keras = ["--framework", "tf", *args, *lora, "--out", str(tmp_path / "tf-lora")]
    refused(run("course.train", *keras), "no Keras checkpoint")  # a PyTorch run: no Keras base


@pytest.mark.parametrize(
    "args, words",
    [
        (["--preset", "nope"], ["'nope'", "nano"]),
        (["--preset", "nano", "--bogus", "3"], ["'bogus'", "max_iters"]),
        (["--preset", "nano", "--max_iters", "abc"], ["--max_iters", "'abc'"]),
        (["--preset", "nano", "--max_iters"], ["--max_iters needs a value"]),
        (["--preset", "nano", "--n_embd", "33"], ["n_embd (33)"]),
        (["--preset", "nano", "stray"], ["'stray'"]),
    ],
)
def test_train_refuses_bad_settings(tmp_path, args, words):
    out = tmp_path / "run"
    result = run("course.train", *args, "--out", str(out))
    refused(result, *words)
    assert result.returncode == 2
    assert not out.exists()  # refused before anything was written


@needs_shared_corpus
def test_train_resume_without_a_checkpoint(tmp_path):
    refused(run("course.train", "--preset", "nano", "--out", str(tmp_path), "--resume"), "ckpt.pt")


def test_sample_without_a_checkpoint(tmp_path):
    result = run("course.sample", "--out", str(tmp_path / "nothing"))
    refused(result, "ckpt.pt")
    assert result.stdout == ""


def test_sample_refuses_a_damaged_checkpoint(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    refused(run("course.sample", "--out", str(tmp_path)), "corrupt or not a checkpoint")


def test_framework_without_a_trainer_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.FRAMEWORKS, "tf", "course.tf.no_trainer_here")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--framework", "tf", "--preset", "nano", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "--framework tf" in (err := capsys.readouterr().err)
    assert "course.tf.no_trainer_here" in err
    assert not (tmp_path / "run").exists()


def test_framework_not_installed_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.PACKAGES, "tf", "a_framework_nobody_installed")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--framework", "tf", "--preset", "nano", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "a_framework_nobody_installed is not installed" in err
    assert "pip install 'twin-gpt[tf]'" in err
    assert not (tmp_path / "run").exists()


def test_overrides_are_parsed_like_the_command_line():
    assert cli.parse_overrides(["--max-iters", "50", "--compile", "--lr_decay_iters=7"]) == {
        "max_iters": "50",
        "compile": "true",
        "lr_decay_iters": "7",
    }
    with pytest.raises(ValueError, match="needs a value"):
        cli.parse_overrides(["--max_iters", "--compile"])


@pytest.mark.slow
@needs_shared_corpus
def test_keras_run_writes_the_same_metrics_and_samples(trained, tmp_path):
    torch_out, _ = trained
    out = tmp_path / "keras"
    args = ["--framework", "tf", "--preset", "nano", "--max_iters", "30", "--threads", "1"]
    result = run("course.train", *args, "--eval-interval", "15", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    torch_metrics = json.loads((torch_out / "metrics.json").read_text())
    assert metrics["framework"] == "tf" and metrics["iters"] == 30
    for key in ("iters", "train_loss", "val_loss", "tokens_per_sec", "peak_rss_mb"):
        assert key in torch_metrics and metrics[key] > 0, key
    assert (out / "ckpt" / "model.weights.h5").is_file() and (out / "metrics.csv").is_file()
    assert "ckpt/" in result.stdout
    sampled = run("course.sample", "--out", str(out), "--prompt", "ROMEO:", "--max-new-tokens",
                  "12", "--temperature", "0")  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert sampled.stdout.startswith("ROMEO:") and len(sampled.stdout) == len("ROMEO:") + 12 + 1
