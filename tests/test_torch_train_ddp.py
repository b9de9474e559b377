"""Data-parallel training under torchrun: `python -m course.train --nproc N` and `train`
as one rank of several (2 gloo processes on the CPU)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, SHARED_DATA_DIR, needs_shared_corpus

from course.torch.launch import torchrun_command
from course.torch.train import load_checkpoint, load_model
from course.train import _without_nproc

pytestmark = [pytest.mark.slow, needs_shared_corpus]

NANO = ["--preset", "nano", "--threads", "1", "--log_interval", "1", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def token_cache(tmp_path_factory):
    """The runs' token files go to a folder of this module's, never to a real cache."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("COURSE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def environment() -> dict[str, str]:
    env = {**os.environ, "COURSE_DATA_DIR": str(SHARED_DATA_DIR or "")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # the runs start their own process groups
    return env


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "course.train", *args],
        cwd=REPO, env=environment(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def events(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out) -> tuple[list[int], list[float], list[float]]:
    """(iters of the events, train losses, val losses) in metrics.jsonl's order."""
    log = events(out)
    train = [e["loss"] for e in log if e["event"] == "train"]
    val = [value for e in log if e["event"] == "eval" for value in (e["train_loss"], e["val_loss"])]
    return [e["iter"] for e in log], train, val


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_two_ranks_follow_one_process(tmp_path, grad_accum):
    args = [*NANO, "--max_iters", "6", "--eval_interval", "3", "--grad_accum", str(grad_accum)]
    one = run_cli(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = run_cli(*args, "--nproc", "2", "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    iters_1, train_1, val_1 = losses(tmp_path / "one")
    iters_2, train_2, val_2 = losses(tmp_path / "two")
    assert iters_2 == iters_1 and len(train_2) == 6 and len(val_2) == 6
    assert train_2 == pytest.approx(train_1, rel=1e-4)  # the mean over both ranks
    assert val_2 == pytest.approx(val_1, rel=1e-4)
    assert train_1[-1] < train_1[0]  # it trained: the comparison is not of constants
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["iters"] == 6
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["world_size"] == 1
    assert two.stdout.count('"world_size"') == 1  # rank 0 reports, alone
    model, _ = load_model(tmp_path / "two")  # a plain GPT: no DDP "module." prefix
    assert load_checkpoint(tmp_path / "two" / "ckpt.pt")["step"] == 6 and model.config.n_layer


SLICE_RECORDING = """
import os
import sys

import torch

import course.torch.distributed as distributed
from course.train import main

shard_batch, seen = distributed.shard_batch, []


def recording_shard_batch(x, y, rank, world_size):
    seen.append(x.clone())
    x_rank, y_rank = shard_batch(x, y, rank, world_size)
    seen.append(x_rank.clone())
    return x_rank, y_rank


distributed.shard_batch = recording_shard_batch
status = main(sys.argv[1:])
torch.save(seen, f"{sys.argv[-1]}-rank{os.environ['RANK']}.pt")
sys.exit(status)
"""


def test_each_rank_trains_on_its_own_slice_of_the_same_batch(tmp_path):
    import torch

    script, out = tmp_path / "record.py", tmp_path / "run"
    script.write_text(textwrap.dedent(SLICE_RECORDING))
    command = torchrun_command(2, str(script), *NANO, "--max_iters", "2", "--out", str(out))
    env = {**environment(), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen_0 = torch.load(f"{out}-rank0.pt")
    seen_1 = torch.load(f"{out}-rank1.pt")
    assert len(seen_0) == len(seen_1) == 4  # 2 steps: (global batch, slice) each
    for step in (0, 2):
        batch = seen_0[step]
        assert batch.shape[0] == 8 and torch.equal(seen_1[step], batch)  # the same draw
        assert torch.equal(torch.cat([seen_0[step + 1], seen_1[step + 1]]), batch)  # halves
    assert not torch.equal(seen_0[0], seen_0[2])  # the generator moved on


def test_batch_size_must_divide_by_ranks(tmp_path):
    out = tmp_path / "run"
    result = run_cli(*NANO, "--max_iters", "2", "--batch_size", "5", "--nproc", "2", "--out",
                     str(out))  # fmt: skip
    assert result.returncode != 0
    assert "batch_size 5 must divide by the world size 2" in result.stderr, result.stderr
    assert not (out / "ckpt.pt").exists()


def test_the_ranks_command_line_drops_nproc_only():
    argv = ["--preset", "nano", "--nproc", "2", "--max_iters", "3", "--out", "o"]
    assert _without_nproc(argv) == ["--preset", "nano", "--max_iters", "3", "--out", "o"]
    assert _without_nproc(["--nproc=4", "--resume", "--npro", "2"]) == ["--resume"]
    others = ["--no-progress", "--n_layer", "2", "--n-head", "2"]
    assert _without_nproc(others) == others


def test_nproc_alone_is_for_pytorch_keras_needs_a_strategy(tmp_path):
    result = run_cli("--framework", "tf", "--preset", "nano", "--nproc", "2", "--out",
                     str(tmp_path / "run"), timeout=60)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "needs --strategy" in result.stderr and not (tmp_path / "run").exists()


DYING_RANK = """
import os
import sys

from course.config import get_preset
from course.torch.train import train


def die_on_rank_1(event):
    if event["event"] == "train" and event["iter"] == 6 and os.environ["RANK"] == "1":
        os._exit(7)  # as a crash would: no exception, no clean-up


settings = {"max_iters": "10", "eval_interval": "4", "log_interval": "1", "threads": "1"}
preset = get_preset("nano", settings)
train(preset, sys.argv[1], progress=False, callback=die_on_rank_1)
"""


def test_a_dead_rank_stops_the_run_and_the_checkpoint_resumes(tmp_path):
    script, out = tmp_path / "dying_rank.py", tmp_path / "run"
    script.write_text(textwrap.dedent(DYING_RANK))
    started = time.monotonic()
    command = torchrun_command(2, str(script), str(out))
    env = {**environment(), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode != 0, result.stderr
    assert time.monotonic() - started < 60
    assert re.search(r"exitcode\s*:\s*7\b", result.stderr), result.stderr  # rank 1's death
    assert load_checkpoint(out / "ckpt.pt")["step"] == 4  # the last evaluation's, whole
    load_model(out)
    assert [e["iter"] for e in events(out) if e["event"] == "eval"] == [0, 4]

    args = [*NANO, "--max_iters", "10", "--eval_interval", "4", "--resume", "--out", str(out)]
    resumed = run_cli(*args, "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iters"] == 10 and metrics["resumed_from"] == 4 and metrics["world_size"] == 2
    log = events(out)
    assert [e["iter"] for e in log if e["event"] == "eval"] == [0, 4, 8, 10]
    assert [e["iter"] for e in log if e["event"] == "train"] == list(range(1, 11))
    assert load_checkpoint(out / "ckpt.pt")["step"] == 10
