"""`python -m course.train --framework tf --strategy mirrored|multiworker`: data-parallel
Keras training that follows the one-process run of the same preset.

TensorFlow fixes its devices when it first runs, so every run is a fresh process of the
command; the multiworker runs are 2 worker processes on 127.0.0.1 each. Every process has
a timeout, and a test that times out kills the command's whole process tree. The preset
makes the gradient clip act on every step: Keras clips each replica's partial gradient
unless the trainer sums them first, and the losses then drift apart (by ~2e-4 here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest
from conftest import REPO, SHARED_DATA_DIR, needs_shared_corpus

from course.train import FAIL_WORKER, build_parser, main

pytest.importorskip("tensorflow")
pytestmark = [pytest.mark.slow, needs_shared_corpus]

# A learning rate high from the first step and a tight clip: the run learns, and clipping
# the sum of the replicas' gradients (not each replica's) matters.
NANO = ["--framework", "tf", "--preset", "nano", "--threads", "1", "--log_interval", "1",
        "--no-progress", "--max_iters", "8", "--eval_interval", "3", "--eval_iters", "2",
        "--warmup_iters", "0", "--learning_rate", "1e-2", "--min_lr", "1e-3",
        "--lr_decay_iters", "8", "--grad_clip", "0.1"]  # fmt: skip
REL = 1e-5  # measured: replicas differ from one process by <= 1.5e-7 (float32 sum order)
TIMEOUT = 120  # seconds for one command: generous on a loaded 2-core machine, but bounded


@pytest.fixture(scope="module", autouse=True)
def token_cache(tmp_path_factory):
    """The runs' token files go to a folder of this module's, never to a real cache."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("COURSE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        env.delenv("TF_CONFIG", raising=False)
        yield


def environment(**extra: str) -> dict[str, str]:
    env = {**os.environ, "COURSE_DATA_DIR": str(SHARED_DATA_DIR or ""), **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.pop("TF_CONFIG", None)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the command; on a timeout, kill it with every process it started (the workers
    run in sessions of their own) before failing."""
    process = subprocess.Popen(
        [sys.executable, "-m", "course.train", *args],
        cwd=REPO, env=env or environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def events(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out) -> tuple[list[int], list[float], list[float]]:
    """(iters of the events, train losses, eval losses) in metrics.jsonl's order."""
    log = events(out)
    train = [e["loss"] for e in log if e["event"] == "train"]
    evals = [v for e in log if e["event"] == "eval" for v in (e["train_loss"], e["val_loss"])]
    return [e["iter"] for e in log], train, evals


def processes_of(out) -> list[psutil.Process]:
    """Processes still running whose command line names the run's folder."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if str(out) in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the same preset on one process, one device."""
    out = tmp_path_factory.mktemp("one") / "run"
    result = run_cli(*NANO, "--out", str(out))
    assert result.returncode == 0, result.stderr
    iters, train, evals = losses(out)
    assert len(train) == 8 and train[-1] < train[0] - 0.05  # it learns: not a constant
    return iters, train, evals


def test_mirrored_replicas_follow_one_process(tmp_path, one_process):
    out = tmp_path / "run"
    result = run_cli(*NANO, "--strategy", "mirrored", "--nproc", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    iters, train, evals = losses(out)
    assert iters == one_process[0]
    assert train == pytest.approx(one_process[1], rel=REL)
    assert evals == pytest.approx(one_process[2], rel=REL)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "MirroredStrategy" and metrics["world_size"] == 2
    assert metrics["iters"] == 8 and metrics["workers"] == 1
    assert result.stdout.count('"world_size"') == 1


def test_multiworker_follows_one_process_and_only_the_chief_writes(tmp_path, one_process):
    out = tmp_path / "run"
    result = run_cli(*NANO, "--strategy", "multiworker", "--nproc", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    iters, train, evals = losses(out)
    assert iters == one_process[0]  # one writer: no event twice
    assert train == pytest.approx(one_process[1], rel=REL)
    assert evals == pytest.approx(one_process[2], rel=REL)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "MultiWorkerMirroredStrategy"
    assert metrics["world_size"] == 2 and metrics["workers"] == 2 and metrics["iters"] == 8
    assert result.stdout.count('"world_size"') == 1  # one report, the chief's
    assert sorted(p.name for p in (out / "workers").iterdir()) == ["worker-0.log", "worker-1.log"]
    checkpoints = [p.name for p in out.iterdir() if p.name.startswith(".ckpt-")]
    assert len(checkpoints) == 1, checkpoints  # one writer: one series of saves
    assert not processes_of(out)


def test_a_dead_worker_stops_the_run_and_the_checkpoint_resumes(tmp_path, one_process):
    from course.tf.train import load_checkpoint

    out = tmp_path / "run"
    args = [*NANO, "--strategy", "multiworker", "--nproc", "2", "--out", str(out)]
    started = time.monotonic()
    died = run_cli(*args, env=environment(**{FAIL_WORKER: "1:5"}))  # after step 5
    seconds = time.monotonic() - started
    assert died.returncode == 1, died.stderr
    assert "worker 1 " in died.stderr and "exited with code 3" in died.stderr, died.stderr
    assert seconds < 60  # the chief, stuck waiting for worker 1, was stopped
    assert not processes_of(out)
    state, _ = load_checkpoint(out)
    assert state["step"] == 3  # the last evaluation's checkpoint, whole
    assert [e["iter"] for e in events(out) if e["event"] == "eval"] == [0, 3]

    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"] == 3 and metrics["iters"] == 8 and metrics["workers"] == 2
    iters, train, evals = losses(out)
    assert iters == one_process[0]  # the log tells one run's story
    assert train == pytest.approx(one_process[1], rel=REL)  # as if never interrupted
    assert evals == pytest.approx(one_process[2], rel=REL)
    assert load_checkpoint(out)[0]["step"] == 8
    assert not processes_of(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "mirrored"], "--strategy is for --framework tf"),
        (["--framework", "tf", "--nproc", "2"], "--nproc with --framework tf needs --strategy"),
        (["--framework", "tf", "--strategy", "multiworker"], "needs --nproc N"),
        (["--framework", "tf", "--strategy", "mirrored", "--nproc", "0"], ">= 1, got 0"),
        (["--framework", "tf", "--strategy", "mirrored", "--nproc", "2", "--batch_size", "5"],
         "batch_size 5 must divide by the number of replicas 2"),
        (["--framework", "tf", "--strategy", "mirrored", "--batch_size", "3"],  # N = 2
         "batch_size 3 must divide by the number of replicas 2"),
        (["--framework", "tf", "--strategy", "multiworker", "--nproc", "2"],
         "grad_accum 2 is not available with --strategy"),
    ],
)  # fmt: skip
def test_what_cannot_run_is_refused_before_it_starts(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    if "grad_accum" in message:
        args = [*args, "--grad_accum", "2"]
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--preset", "nano", "--out", str(out)])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_help_names_the_strategies():
    text = build_parser().format_help()
    assert "--strategy {mirrored,multiworker}" in text and "logical CPUs" in text
