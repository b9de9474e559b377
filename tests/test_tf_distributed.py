"""course.tf.distributed: data parallelism that trains exactly like one device.

TensorFlow fixes its devices when it first uses them, and this test process may already
have, so everything that needs two logical CPUs runs in a fresh Python process (one for all
MirroredStrategy checks), and the MultiWorkerMirroredStrategy workers are processes anyway.
Every process has a timeout. The model is tiny; the optimizer plain SGD, so one step's
weights compare gradients directly.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import REPO

from course.config import GPTConfig
from course.tf import distributed

CONFIG = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=65)
ATOL, RTOL = 1e-6, 1e-5
SUBPROCESS_TIMEOUT = 240  # seconds: generous for a loaded 2-core machine, but bounded
SETUP = f"""
import json, sys
import numpy as np
from pathlib import Path
from course.config import GPTConfig
from course.tf import distributed as d
config = GPTConfig.from_dict({CONFIG.to_dict()!r})
tokens = np.random.default_rng(0).integers(0, config.vocab_size, 3000).astype(np.uint16)
out = Path(sys.argv[1])
"""


def _tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, CONFIG.vocab_size, 3000).astype(np.uint16)


def _start_python(script: str, out: Path) -> subprocess.Popen:
    """Start SETUP + script in a fresh interpreter (argv[1] = out)."""
    return subprocess.Popen(
        [sys.executable, "-c", SETUP + textwrap.dedent(script), str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish_python(process: subprocess.Popen) -> dict:
    """Wait (bounded) for a `_start_python` process; return its last stdout line, a JSON
    document."""
    try:
        stdout, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, f"subprocess failed:\n{stderr[-3000:]}"
    return json.loads(stdout.strip().splitlines()[-1])


def _run_python(script: str, out: Path) -> dict:
    return _finish_python(_start_python(script, out))


def _assert_weights_close(actual, expected, what: str) -> None:
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        np.testing.assert_allclose(a, e, atol=ATOL, rtol=RTOL, err_msg=f"{what}: weight {i}")


def _max_difference(first, second) -> float:
    return max(float(np.max(np.abs(a - b))) for a, b in zip(first, second, strict=True))


# --------------------------------------------------------------------------------------
# MirroredStrategy over 2 logical CPUs (one fresh process for all of it)
# --------------------------------------------------------------------------------------

MIRRORED = """
strategy = d.mirrored_strategy(2)  # first: before TensorFlow runs anything
from course.tf.data import make_dataset
tf = d.tf
report = {
    "replicas": strategy.num_replicas_in_sync,
    "devices": list(strategy.extended.worker_devices),
    "again": d.logical_cpus(2),
}
init = d.build_gpt(config, seed=3).get_weights()
dataset = make_dataset(tokens, 4, config.block_size, seed=1, steps=1)  # one global batch
one, report["one_losses"] = d.fit_on_strategy(config, dataset, None, weights=init)
two, report["two_losses"] = d.fit_on_strategy(config, dataset, strategy, weights=init)
arrays = {"init": init, "one": one.get_weights(), "two": two.get_weights()}

x, y = (t.numpy() for t in next(iter(dataset)))
y[0, :10], y[1, :] = -1, -1  # ignored targets: the replicas count 6 and 32 tokens
masked = tf.data.Dataset.from_tensors((x, y))
arrays["masked_one"] = d.fit_on_strategy(config, masked, None, weights=init)[0].get_weights()
arrays["masked_two"] = d.fit_on_strategy(config, masked, strategy, weights=init)[0].get_weights()

arrays["loop_one"], report["loop_one_losses"] = d.train_one_process(config, tokens, steps=2)
loop, report["loop_two_losses"] = d.custom_loop(
    strategy, config, tokens, steps=2, global_batch_size=4, learning_rate=0.1, seed=0
)
arrays["loop_two"] = loop.get_weights()

x, y = (t.numpy() for t in next(iter(make_dataset(tokens, 4, config.block_size, seed=2))))
single = d.build_gpt(config, weights=init)
arrays["reference"] = d.replica_gradients(single, [(x, y)])
model = d.build_gpt(config, strategy, weights=init)
equal, unequal = [(x[:2], y[:2]), (x[2:], y[2:])], [(x[:3], y[:3]), (x[3:], y[3:])]
for name, shards, loss, reduction in [
    ("equal_global_sum", equal, "global", "sum"),
    ("unequal_global_sum", unequal, "global", "sum"),
    ("equal_mean_sum", equal, "per_replica_mean", "sum"),
    ("unequal_mean_sum", unequal, "per_replica_mean", "sum"),
    ("unequal_mean_mean", unequal, "per_replica_mean", "mean"),
]:
    arrays[name] = d.replica_gradients(model, shards, strategy, loss=loss, reduction=reduction)
try:
    d.logical_cpus(3)
except RuntimeError as err:
    report["too_late"] = str(err)
np.savez(out / "arrays.npz", **{
    f"{name}/{i:04d}": a for name, values in arrays.items() for i, a in enumerate(values)
})
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Everything the MirroredStrategy tests look at, computed in one fresh process."""
    out = tmp_path_factory.mktemp("mirrored")
    report = _run_python(MIRRORED, out)
    arrays: dict[str, list[np.ndarray]] = {}
    with np.load(out / "arrays.npz") as saved:
        for key in sorted(saved.files):
            name, _ = key.split("/")
            arrays.setdefault(name, []).append(saved[key])
    return report, arrays


@pytest.mark.slow
def test_mirrored_strategy_spans_two_logical_cpus(mirrored):
    report, _ = mirrored
    assert report["replicas"] == 2
    assert [device.lower()[-5:] for device in report["devices"]] == ["cpu:0", "cpu:1"]
    assert report["again"] == ["/cpu:0", "/cpu:1"], "a second call with the same n is harmless"


@pytest.mark.slow
def test_logical_cpus_after_tensorflow_started_says_to_call_it_first(mirrored):
    report, _ = mirrored
    message = report.get("too_late", "")
    assert "logical_cpus(3)" in message and "first" in message and "fresh" in message, message


@pytest.mark.slow
def test_fit_on_mirrored_strategy_steps_like_one_device(mirrored):
    report, arrays = mirrored
    assert _max_difference(arrays["one"], arrays["init"]) > 1e-4, "one SGD step moved nothing"
    _assert_weights_close(arrays["two"], arrays["one"], "2 replicas vs 1 device after one step")
    np.testing.assert_allclose(report["two_losses"], report["one_losses"], rtol=RTOL)


@pytest.mark.slow
def test_fit_on_mirrored_strategy_counts_ignored_targets_across_replicas(mirrored):
    _, arrays = mirrored
    assert _max_difference(arrays["masked_one"], arrays["one"]) > 1e-4, "-1 targets ignored?"
    _assert_weights_close(arrays["masked_two"], arrays["masked_one"], "6 + 32 counted tokens")


@pytest.mark.slow
def test_custom_loop_on_mirrored_strategy_equals_one_device(mirrored):
    report, arrays = mirrored
    _assert_weights_close(arrays["loop_two"], arrays["loop_one"], "custom loop, 2 replicas")
    np.testing.assert_allclose(report["loop_two_losses"], report["loop_one_losses"], rtol=RTOL)


@pytest.mark.slow
def test_global_batch_loss_gives_one_device_gradients_however_the_batch_is_split(mirrored):
    _, arrays = mirrored
    assert max(float(np.max(np.abs(g))) for g in arrays["reference"]) > 1e-3
    _assert_weights_close(arrays["equal_global_sum"], arrays["reference"], "shares 2 + 2")
    _assert_weights_close(arrays["unequal_global_sum"], arrays["reference"], "shares 3 + 1")


@pytest.mark.slow
def test_per_replica_mean_with_summed_gradients_doubles_them(mirrored):
    _, arrays = mirrored
    doubled = [2 * g for g in arrays["reference"]]
    _assert_weights_close(arrays["equal_mean_sum"], doubled, "per-replica mean, SUM")
    assert _max_difference(arrays["equal_mean_sum"], arrays["reference"]) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unequal_mean_sum", "unequal_mean_mean"])
def test_per_replica_mean_with_unequal_shares_is_wrong_whatever_the_reduction(mirrored, name):
    _, arrays = mirrored
    reference = arrays["reference"]
    assert _max_difference(arrays[name], reference) > 1e-3
    relative = [
        np.linalg.norm(g - r) / np.linalg.norm(r)
        for g, r in zip(arrays[name], reference, strict=True)
    ]
    assert max(relative) > 0.05, f"{name} is within {max(relative):.3g} of one device"


# --------------------------------------------------------------------------------------
# MultiWorkerMirroredStrategy: 2 worker processes on loopback
# --------------------------------------------------------------------------------------

ONE_PROCESS = """
weights, losses = d.train_one_process(config, tokens, steps=2, global_batch_size=4, seed=0)
init = d.build_gpt(config, seed=0).get_weights()
np.savez(out / "one.npz", **{f"w{i:04d}": w for i, w in enumerate(weights)})
np.savez(out / "init.npz", **{f"w{i:04d}": w for i, w in enumerate(init)})
print(json.dumps({"losses": losses}))
"""


def _load_list(path: Path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[name] for name in sorted(saved.files)]


def _our_processes(marker: str) -> list[psutil.Process]:
    """Processes whose command line mentions `marker` (a test's own folder)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def _assert_ports_free(ports) -> None:
    listening = [
        c for c in psutil.net_connections("inet") if c.laddr and c.laddr.port in ports
        and c.status == psutil.CONN_LISTEN
    ]  # fmt: skip
    assert listening == [], f"still listening: {listening}"
    for port in ports:  # a new server could bind them (connections may linger in TIME_WAIT)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((distributed.LOOPBACK, port))


@pytest.mark.slow
def test_multiworker_custom_loop_equals_one_process(tmp_path):
    one_process = _start_python(ONE_PROCESS, tmp_path)  # meanwhile, the reference
    try:
        result = distributed.run_multiworker(
            CONFIG, _tokens(), tmp_path / "workers", steps=2, global_batch_size=4, timeout=180
        )
    finally:
        reference = _finish_python(one_process)
    one, init = _load_list(tmp_path / "one.npz"), _load_list(tmp_path / "init.npz")
    assert _max_difference(one, init) > 1e-4, "two SGD steps moved nothing"
    _assert_weights_close(result.weights, one, "2 workers vs 1 process after two steps")
    np.testing.assert_allclose(result.losses, reference["losses"], rtol=RTOL)
    assert _our_processes(str(tmp_path)) == []


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_other_with_a_clear_error(tmp_path):
    ports, timeout = distributed.free_ports(2), 120.0
    started = time.monotonic()
    with pytest.raises(distributed.WorkerError, match=r"worker 1 \(pid \d+\) exited with code 3"):
        distributed.run_multiworker(
            CONFIG, _tokens(), tmp_path, ports=ports, timeout=timeout, fail_worker=1
        )
    assert time.monotonic() - started < timeout, "the failure was noticed only at the timeout"
    assert _our_processes(str(tmp_path)) == [], "a worker was left running"
    _assert_ports_free(ports)
    assert "failing on purpose" in (tmp_path / "worker-1.log").read_text()


@pytest.mark.slow
def test_workers_still_running_at_the_timeout_are_stopped(tmp_path):
    ports = distributed.free_ports(2)
    started = time.monotonic()
    with pytest.raises(distributed.WorkerError, match=r"still running after 1 s") as caught:
        distributed.run_multiworker(CONFIG, _tokens(), tmp_path, ports=ports, timeout=1.0)
    assert caught.value.worker == 0
    assert time.monotonic() - started < 1.0 + distributed._GRACE + 5.0
    assert _our_processes(str(tmp_path)) == [], "a worker was left running"
    _assert_ports_free(ports)


# --------------------------------------------------------------------------------------
# Arguments, checked before any process starts
# --------------------------------------------------------------------------------------


def test_tf_config_names_every_worker_and_this_task():
    config = distributed.tf_config([1234, 5678], 1)
    assert config == {
        "cluster": {"worker": ["127.0.0.1:1234", "127.0.0.1:5678"]},
        "task": {"type": "worker", "index": 1},
    }
    with pytest.raises(ValueError, match="index"):
        distributed.tf_config([1234, 5678], 2)


def test_free_ports_are_distinct():
    ports = distributed.free_ports(3)
    assert len(set(ports)) == 3 and all(0 < port < 65536 for port in ports)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"global_batch_size": 3}, "divisible by n_workers"),
        ({"fail_worker": 2}, "fail_worker"),
        ({"ports": [1234]}, "ports"),
    ],
)
def test_run_multiworker_refuses_bad_arguments_before_starting(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        distributed.run_multiworker(CONFIG, _tokens(), tmp_path, **changes)
    assert not any(tmp_path.glob("worker-*.log")), "a worker was started"


def test_a_thread_limit_too_low_for_the_workers_is_refused_before_starting(tmp_path):
    """A grading sandbox allows 64 processes and threads; a TF worker alone starts ~125
    (gRPC's pools) and aborts in C++ when it cannot. run_multiworker says so first."""
    code = textwrap.dedent(f"""
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        resource.setrlimit(resource.RLIMIT_NPROC, (100, hard))
        from course.tf import distributed
        import numpy as np
        problem = distributed.thread_limit_problem(2)
        print("PROBLEM", problem)
        try:
            distributed.run_multiworker(distributed.GPTConfig(n_layer=1, n_head=1, n_embd=8,
                block_size=4, vocab_size=5), np.zeros(64, dtype=np.int64), {str(tmp_path)!r})
        except RuntimeError as err:
            print("REFUSED", err)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PROBLEM this process may run at most 100 processes and threads" in result.stdout
    assert "REFUSED this process may run at most 100" in result.stdout
    assert not any(tmp_path.glob("worker-*.log")), "a worker was started"
    assert distributed.thread_limit_problem(2) is None  # this machine's own limit suffices
