"""course.runtime.set_threads: one thread policy for both frameworks, applied by a call.

PyTorch is checked in this process; TensorFlow in fresh interpreters, because its thread
pool is fixed for good once it has run an operation (which other tests here have done).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from course import runtime


@pytest.fixture
def torch_threads(monkeypatch):
    """torch, its thread count restored after the test; no OMP_NUM_THREADS cap (the test
    suite's workers set one)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


def test_torch_gets_the_count_asked_for(torch_threads):
    assert runtime.set_threads(1) == 1
    assert torch_threads.get_num_threads() == 1
    assert runtime.set_threads(3) == 3
    assert torch_threads.get_num_threads() == 3


def test_zero_means_one_thread_per_usable_core(torch_threads, monkeypatch):
    monkeypatch.setattr(runtime, "_usable_cpus", lambda: 5)  # not this machine's count
    assert runtime.set_threads() == 5 == runtime.set_threads(0)
    assert torch_threads.get_num_threads() == 5


def test_zero_shares_the_cores_among_the_ranks_of_this_machine(torch_threads, monkeypatch):
    """Two ranks that each took every core ran a step 10 times slower (measured)."""
    monkeypatch.setattr(runtime, "_usable_cpus", lambda: 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert runtime.set_threads(0) == 4 == torch_threads.get_num_threads()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert runtime.set_threads(0) == 1  # never 0
    assert runtime.set_threads(3) == 3  # a count asked for is kept
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "not a number")
    assert runtime.set_threads(0) == 8


def test_omp_num_threads_caps_the_default_count_and_nothing_asked_for(torch_threads, monkeypatch):
    """A grading sandbox gives each of its parallel kernels OMP_NUM_THREADS=1: a trainer's
    set_threads(0) must not take every core behind its back."""
    monkeypatch.setattr(runtime, "_usable_cpus", lambda: 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert runtime.set_threads(0) == 1 == torch_threads.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.set_threads(0) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert runtime.set_threads(0) == 2  # the smaller of the cap and the cores' share
    assert runtime.set_threads(5) == 5  # a count asked for is kept
    for ignored in ("0", "-2", "many", ""):
        monkeypatch.setenv("OMP_NUM_THREADS", ignored)
        assert runtime.set_threads(0) == 2, ignored


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                        ("2", TypeError)])  # fmt: skip
def test_bad_counts_are_named(bad, error):
    with pytest.raises(error, match="threads"):
        runtime.set_threads(bad)


def run_python(code: str) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON line last."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_framework_is_imported_by_the_call():
    found = run_python(
        """
        import json, sys
        from course.runtime import set_threads
        count = set_threads(2)
        frameworks = [m for m in ("torch", "tensorflow", "keras") if m in sys.modules]
        print(json.dumps({"count": count, "frameworks": frameworks}))
        """
    )
    assert found == {"count": 2, "frameworks": []}


def test_tensorflow_gets_the_count_and_a_warning_once_it_is_fixed():
    pytest.importorskip("tensorflow")
    found = run_python(
        """
        import json, warnings
        from course import runtime
        tf = runtime.import_tensorflow()
        first = runtime.set_threads(1)
        before_ops = tf.config.threading.get_intra_op_parallelism_threads()
        tf.reduce_sum(tf.ones((4, 4))).numpy()  # TensorFlow is initialised from here on
        with warnings.catch_warnings(record=True) as same:
            warnings.simplefilter("always")
            runtime.set_threads(1)  # what it has already: nothing to say
        with warnings.catch_warnings(record=True) as other:
            warnings.simplefilter("always")
            second = runtime.set_threads(2)
        print(json.dumps({
            "first": first, "before_ops": before_ops, "second": second,
            "after": tf.config.threading.get_intra_op_parallelism_threads(),
            "same": [str(w.message) for w in same], "other": [str(w.message) for w in other],
        }))
        """
    )
    assert found["first"] == 1 and found["before_ops"] == 1
    assert found["same"] == []
    assert found["second"] == 2 and found["after"] == 1  # too late: the pool keeps 1
    assert len(found["other"]) == 1
    assert "stays at 1, not 2" in found["other"][0]
    assert "before anything runs in TensorFlow" in found["other"][0]
