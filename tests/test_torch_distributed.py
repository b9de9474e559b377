"""course.torch.distributed: 2 gloo processes on the CPU against one process on the whole
batch. DDP, the hand-written all-reduce, no_sync accumulation and FSDP2 must give one
process's gradients (or weights after SGD); a checkpoint saved by 2 FSDP2 ranks loads into
1 plain process bit for bit; a failing rank is reported, in bounded time, with nothing left.
"""

from __future__ import annotations

import os
import socket
import textwrap
import time

import psutil
import pytest
import torch
from conftest import REPO, run_script

from course.config import GPTConfig
from course.torch import _distributed_workers as workers
from course.torch import distributed as D
from course.torch import launch as L
from course.torch.model import GPT

pytestmark = pytest.mark.slow  # each launch starts 2 Python processes that import torch

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65)
B, T = 6, 12  # the whole batch: 3 rows per rank (B != T != n_embd)
LR = 0.1
TOL = dict(atol=1e-6, rtol=1e-5)


def _batch(seed: int, rows: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, CONFIG.vocab_size, (rows, T), generator=g)
    y = torch.randint(0, CONFIG.vocab_size, (rows, T), generator=g)
    return x, y


def _model(start: dict[str, torch.Tensor]) -> GPT:
    model = GPT(CONFIG)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(start[name])
    return model


def _one_process_grads(start, micro_batches) -> dict[str, torch.Tensor]:
    """One process, every micro-batch whole: the gradient of the mean loss."""
    model = _model(start)
    for x, y in micro_batches:
        (model(x, y)[1] / len(micro_batches)).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def _assert_close(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), what
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TOL, msg=f"{what}: {name}")


def _children() -> set[int]:
    """This process's descendants, but the fork server (it outlives launches by design)."""
    return {child.pid for child in psutil.Process().children(recursive=True)} - {
        L.fork_server_pid()
    }


# --------------------------------------------------------------------------------------
# Data parallel: DDP and the hand-written all-reduce (one launch, several checks)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_parallel():
    x, y = _batch(1)
    out = L.launch(workers.data_parallel, 2, CONFIG, x, y, 5, LR, max_seconds=120)
    return out, (x, y)


def test_shard_batch_slices_are_disjoint_and_cover_the_batch():
    x, y = _batch(2, rows=8)
    for world_size in (1, 2, 4):
        shards = [D.shard_batch(x, y, rank, world_size) for rank in range(world_size)]
        assert torch.equal(torch.cat([xs for xs, _ in shards]), x)
        assert torch.equal(torch.cat([ys for _, ys in shards]), y)
        assert all(xs.size(0) == 8 // world_size for xs, _ in shards)
    xs0, _ = D.shard_batch(x, y, 0, 2)
    xs1, _ = D.shard_batch(x, y, 1, 2)
    assert torch.equal(xs0, x[:4]) and torch.equal(xs1, x[4:])  # contiguous, in rank order


def test_shard_batch_errors_name_the_argument():
    x, y = _batch(2, rows=6)
    with pytest.raises(ValueError, match="divide by world_size 4"):
        D.shard_batch(x, y, 0, 4)
    with pytest.raises(ValueError, match=r"rank must be in 0\.\.1"):
        D.shard_batch(x, y, 2, 2)
    with pytest.raises(ValueError, match="rank must be >= 0"):
        D.shard_batch(x, y, -1, 2)
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        D.shard_batch(x, y, 0, 0)
    with pytest.raises(ValueError, match="same batch size"):
        D.shard_batch(x, y[:3], 0, 2)


def test_ddp_gradients_on_shards_equal_one_process_on_the_whole_batch(data_parallel):
    out, (x, y) = data_parallel
    assert out["shard"] == (0, B // 2)  # rank 0 took the first half
    _assert_close(out["ddp"], _one_process_grads(out["start"], [(x, y)]), "DDP vs one process")


def test_hand_written_all_reduce_equals_ddp_and_a_sum_is_twice_it(data_parallel):
    out, _ = data_parallel
    _assert_close(out["by_hand"], out["ddp"], "all_reduce_gradients vs DDP")
    # SUM without the division: world_size times the average, which is wrong.
    _assert_close(out["summed"], {k: 2 * v for k, v in out["ddp"].items()}, "SUM vs 2 x mean")
    big = max(out["ddp"], key=lambda name: out["ddp"][name].abs().max())
    assert not torch.allclose(out["summed"][big], out["ddp"][big], **TOL)


def test_ranks_seeded_differently_hold_identical_weights_after_a_step(data_parallel):
    out, _ = data_parallel
    assert out["weights_differed_before_broadcast"]  # the test could fail
    assert out["identical_after_broadcast"]  # broadcast_parameters, as DDP does when it wraps
    assert out["ddp_ranks_identical"]
    assert out["by_hand_ranks_identical"]


def test_no_sync_accumulation_all_reduces_once_per_step():
    steps = [[_batch(10 + 3 * step + i) for i in range(3)] for step in range(2)]  # 3 micro each
    out = L.launch(workers.no_sync_steps, 2, CONFIG, steps, 6, LR, max_seconds=120)
    assert out["syncs"] == [1, 1], "exactly one gradient synchronisation per optimizer step"
    assert out["calls"] == [1, 1], "the tiny GPT's gradients fit in one bucket"
    _assert_close(out["grads"][0], _one_process_grads(out["start"], steps[0]), "no_sync step 1")
    model = _model(out["start"])  # the second step starts from the first step's SGD update
    grads = _one_process_grads(out["start"], steps[0])
    with torch.no_grad():
        after = {n: p - LR * grads[n] for n, p in model.named_parameters()}
    _assert_close(out["grads"][1], _one_process_grads(after, steps[1]), "no_sync step 2")


# --------------------------------------------------------------------------------------
# FSDP2 and sharded checkpoints (one launch)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dcp") / "ckpt"
    x, y = _batch(3)
    out = L.launch(workers.fsdp_step_and_save, 2, CONFIG, x, y, 9, LR, str(folder), max_seconds=150)
    return out, (x, y), folder


def test_fsdp2_sgd_step_equals_one_process(fsdp):
    out, (x, y), _ = fsdp
    assert out["tied"] and out["root_owns_wte"]  # wte = lm_head stays one parameter, at the root
    assert out["root_size"] == 3  # wte (= lm_head), wpe, ln_f.weight: the rest is in blocks
    assert all("Shard(dim=0)" in placement for placement in out["placements"].values())
    model = _model(out["start"])
    model(x, y)[1].backward()
    torch.optim.SGD(model.parameters(), lr=LR).step()
    want = {name: p.detach() for name, p in model.named_parameters()}
    _assert_close(out["after_sgd"], want, "FSDP2 vs one process after SGD")


def test_fsdp2_mixed_precision_computes_in_bfloat16_keeps_float32_weights(fsdp):
    out, (x, y), _ = fsdp
    bf16 = out["bf16"]
    assert bf16["logits_dtype"] == torch.bfloat16
    assert bf16["param_dtype"] == torch.float32 and bf16["grad_dtype"] == torch.float32
    loss = _model(out["start"])(x[: B // 2], y[: B // 2])[1].item()  # rank 0's shard, fp32
    assert loss == pytest.approx(bf16["loss"], abs=0.05)


def test_shard_model_refuses_what_it_cannot_shard():
    with pytest.raises(TypeError, match="model must be a course GPT"):
        D.shard_model(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="mixed_precision must be a .*MixedPrecisionPolicy"):
        D.shard_model(GPT(CONFIG), mixed_precision=torch.bfloat16)


def test_checkpoint_from_two_fsdp2_ranks_loads_into_one_plain_process(fsdp):
    out, _, folder = fsdp
    assert (folder / ".metadata").is_file()
    assert not any(p.name.startswith(".ckpt.") for p in folder.parent.iterdir())  # no leftovers
    model = GPT(CONFIG)  # fresh weights, no process group
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    assert not torch.equal(model.transformer.wte.weight, out["saved"]["transformer.wte.weight"])
    assert D.load_sharded(folder, model, optimizer) == 7
    for name, param in model.named_parameters():
        assert torch.equal(param, out["saved"][name]), name
        assert torch.equal(optimizer.state[param]["exp_avg"], out["saved_exp_avg"][name]), name
    assert model.lm_head.weight is model.transformer.wte.weight


def test_a_crash_mid_save_keeps_the_last_complete_checkpoint(fsdp, tmp_path, monkeypatch):
    import shutil

    import torch.distributed.checkpoint as dcp

    _, _, saved = fsdp
    folder = tmp_path / "ckpt"
    shutil.copytree(saved, folder)
    model = GPT(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    D.load_sharded(folder, model, optimizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with monkeypatch.context() as patch:
        patch.setattr(dcp, "save", _crash)
        with pytest.raises(OSError, match="disk full"):
            D.save_sharded(folder, model, optimizer, step=8)
    fresh = GPT(CONFIG)
    assert D.load_sharded(folder, fresh, torch.optim.AdamW(fresh.parameters())) == 7
    for name, param in fresh.named_parameters():
        assert torch.equal(param, before[name]), name
    D.save_sharded(folder, model, optimizer, step=8)  # the next save replaces the debris
    assert D.load_sharded(folder, fresh, torch.optim.AdamW(fresh.parameters())) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def _crash(*args, **kwargs):
    raise OSError("disk full")


# --------------------------------------------------------------------------------------
# launch: results, failures, refusals
# --------------------------------------------------------------------------------------


def test_launch_returns_rank_zeros_result():
    environ = dict(os.environ)
    assert L.launch(workers.echo, 2, "hello", max_seconds=60) == ("hello", 2, 1.0)
    assert dict(os.environ) == environ  # MASTER_PORT and the rest are set in the ranks only


def test_ranks_see_the_callers_environment_as_it_is_at_each_launch(monkeypatch):
    """The ranks come from a fork server started at the first launch: a variable set after
    that reaches the next launch's ranks all the same, and one removed is gone there."""
    monkeypatch.setenv("TWIN_GPT_LAUNCH_PROBE", "first")
    first, first_pid = L.launch(workers.environment, 2, "TWIN_GPT_LAUNCH_PROBE", max_seconds=60)
    monkeypatch.setenv("TWIN_GPT_LAUNCH_PROBE", "second")
    second, second_pid = L.launch(workers.environment, 2, "TWIN_GPT_LAUNCH_PROBE", max_seconds=60)
    monkeypatch.delenv("TWIN_GPT_LAUNCH_PROBE")
    gone, _ = L.launch(workers.environment, 2, "TWIN_GPT_LAUNCH_PROBE", max_seconds=60)
    assert (first, second, gone) == ("first", "second", None)
    assert first_pid != second_pid, "each launch has processes of its own"
    server = L.fork_server_pid()
    assert server is not None and psutil.pid_exists(server)
    assert server in {child.pid for child in psutil.Process().children()}


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failing_rank_is_named_in_bounded_time_and_nothing_is_left(how):
    before = _children()
    start = time.monotonic()
    with pytest.raises(L.LaunchError) as info:
        L.launch(workers.fail_on_rank, 2, 1, how, timeout_s=30, max_seconds=60)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert message.startswith("rank 1 of 2 "), message
    if how == "raise":
        assert "ValueError: rank 1 was told to fail" in message
        assert "ValueError" in info.value.remote_traceback
    else:
        assert "exit code 3" in message and info.value.exitcode == 3
    assert info.value.rank == 1
    assert elapsed < 25, f"took {elapsed:.1f} s to report a failed rank"
    assert _children() <= before, "a rank's process outlived launch"


def test_the_ranks_stderr_stays_out_of_the_caller_and_comes_back_with_a_failure(tmp_path):
    """A rank's warnings (gloo's, in a sandbox without host names) would land in a notebook
    cell, and nbgrader scores a test cell with any stderr 0: the ranks write theirs to a
    file, and a rank that dies without a traceback has its last lines in the LaunchError."""
    result = run_script(
        """
        from course.torch import _distributed_workers as workers, launch as L
        if __name__ == "__main__":
            print("RESULT", L.launch(workers.noisy, 2, "NOISE-7", False, max_seconds=60))
            try:
                L.launch(workers.noisy, 2, "NOISE-8", True, max_seconds=60)
            except L.LaunchError as err:
                print("ERROR", str(err).replace("\\n", " | "))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RESULT done" in result.stdout
    assert "NOISE" not in result.stderr, result.stderr[-3000:]
    error = next(line for line in result.stdout.splitlines() if line.startswith("ERROR"))
    assert error.startswith("ERROR rank 1 of 2 died with exit code 5"), error
    assert "NOISE-8 from Python, rank 1" in error and "NOISE-8 from C, rank 1" in error, error


def test_a_rank_that_never_arrives_is_stopped_after_max_seconds():
    before = _children()
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"rank\(s\) \[0, 1\] of 2 still running"):
        L.launch(workers.fail_on_rank, 2, 1, "hang", timeout_s=60, max_seconds=8)
    assert time.monotonic() - start < 25
    assert _children() <= before


def test_the_port_is_free_after_a_failed_launch(monkeypatch):
    ports = []
    real_free_port = L.free_port

    def remembered():
        ports.append(real_free_port())
        return ports[-1]

    monkeypatch.setattr(L, "free_port", remembered)
    with pytest.raises(L.LaunchError):
        L.launch(workers.fail_on_rank, 2, 1, "exit", timeout_s=30, max_seconds=60)
    with socket.socket() as sock:  # how the next TCPStore would listen on it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", ports[0]))
        sock.listen()


def test_launch_refuses_a_function_from_main_or_a_lambda():
    def local(rank, world_size):
        return rank

    local.__module__ = "__main__"
    local.__qualname__ = "local"
    with pytest.raises(TypeError, match=r"__main__ .*importable \.py file.*from workers import"):
        L.launch(local, 2)
    with pytest.raises(TypeError, match="lambda"):
        L.launch(lambda rank, world_size: rank, 2)
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        L.launch(workers.echo, 0, "x")
    with pytest.raises(ValueError, match="backend must be 'gloo'"):
        L.launch(workers.echo, 2, "x", backend="nccI")
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        L.launch(workers.echo, 2, "x", timeout_s=0)
    with pytest.raises(ValueError, match="threads_per_rank must be >= 1"):
        L.launch(workers.echo, 2, "x", threads_per_rank=0)
    with pytest.raises(TypeError, match="args must be picklable"):
        L.launch(workers.echo, 2, lambda: 0)


def test_a_script_may_launch_its_own_function(tmp_path):
    """Unlike a notebook cell's, a script's function is found again by the spawned ranks."""
    result = run_script(
        """
        from course.torch import launch

        def worker(rank, world_size):
            return rank + 10 * world_size

        if __name__ == "__main__":
            print("result", launch.launch(worker, 2, max_seconds=60))
        """,
        tmp_path,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "result 20" in result.stdout


def test_torchrun_runs_the_same_worker_through_run_from_env(tmp_path, monkeypatch):
    import subprocess

    script = tmp_path / "train.py"
    script.write_text(  # one write of one short line: the two ranks share the pipe
        "import sys\n"
        "from course.torch import _distributed_workers as workers, launch\n"
        "result = launch.run_from_env(workers.echo, 'hi')\n"
        "sys.stdout.write(f'result {result}\\n')\n"
        "sys.stdout.flush()\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        L.torchrun_command(2, str(script)),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("result ('hi', 2, 1.0)") == 2  # both ranks, one group
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="start it with torchrun"):
        L.run_from_env(workers.echo, "hi")


def test_free_port_is_a_bindable_port():
    port = L.free_port()
    assert 1024 <= port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def _cell(source: str, number: int) -> dict:
    """Run `source` as IPython runs a notebook cell: in __main__, its lines in linecache."""
    import linecache

    filename = f"<ipython-input-{number}-cell>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


def test_a_notebook_cells_function_runs_on_the_ranks_as_source():
    cell = _cell(
        textwrap.dedent("""
            def scaled(t, k):
                return t * k

            def cell_worker(rank, world_size, k):
                t = torch.tensor([float(rank + 1)])
                torch.distributed.all_reduce(t)  # 1 + 2
                return scaled(t, k).item(), world_size
        """),
        7,
    )
    with pytest.raises(TypeError, match=r"notebook_worker\(cell_worker"):
        L.launch(cell["cell_worker"], 2, 10)  # refused, with the way out
    worker = L.notebook_worker(cell["cell_worker"], cell["scaled"], imports="import torch")
    assert L.launch(worker, 2, 10, max_seconds=60) == (30.0, 2)


def test_a_notebook_worker_missing_a_helper_fails_naming_it():
    cell = _cell("def lonely(rank, world_size):\n    return helper_from_another_cell(rank)\n", 8)
    with pytest.raises(L.LaunchError, match="NameError.*helper_from_another_cell"):
        L.launch(L.notebook_worker(cell["lonely"]), 2, max_seconds=60)
    with pytest.raises(SyntaxError):
        L.SourceWorker(["def broken(:\n    pass\n"], "broken")
    with pytest.raises(NameError, match="no function 'absent'"):
        L.SourceWorker(["x = 1\n"], "absent")(0, 1)
