"""Tests for course.runtime: smoke switch, device choice, seeding, versions, report."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from course import runtime

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- smoke_mode -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", "on", " on "])
def test_smoke_mode_on(monkeypatch, value):
    monkeypatch.setenv("COURSE_SMOKE", value)
    assert runtime.smoke_mode() is True


@pytest.mark.parametrize("value", [None, "", "0", "false", "False", "no", "off"])
def test_smoke_mode_off(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("COURSE_SMOKE", raising=False)
    else:
        monkeypatch.setenv("COURSE_SMOKE", value)
    assert runtime.smoke_mode() is False


@pytest.mark.parametrize("value", ["2", "ture", "maybe", "-1"])
def test_smoke_mode_rejects_unknown_values(monkeypatch, value):
    monkeypatch.setenv("COURSE_SMOKE", value)
    with pytest.raises(ValueError, match="COURSE_SMOKE") as info:
        runtime.smoke_mode()
    assert repr(value) in str(info.value)
    assert "'true'" in str(info.value) and "'false'" in str(info.value)


# --- seed_everything --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_hash_seed_leak(monkeypatch):
    """seed_everything sets PYTHONHASHSEED; undo it after each test (kernels inherit it)."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)


def _draws() -> tuple[list[float], list[float]]:
    return [random.random() for _ in range(5)], np.random.rand(5).tolist()


def test_seed_everything_repeats_python_and_numpy(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    runtime.seed_everything(1234)
    first = _draws()
    runtime.seed_everything(1234)
    assert _draws() == first
    assert os.environ["PYTHONHASHSEED"] == "1234"
    runtime.seed_everything(1235)
    other = _draws()
    assert other[0] != first[0]
    assert other[1] != first[1]


@pytest.mark.parametrize(
    ("seed", "error"),
    [(-1, ValueError), (2**32, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)],
)
def test_seed_everything_rejects_bad_seeds(seed, error):
    with pytest.raises(error, match="seed"):
        runtime.seed_everything(seed)


def test_seed_everything_seeds_torch_once_imported():
    torch = pytest.importorskip("torch")
    runtime.seed_everything(7)
    first = torch.rand(4)
    runtime.seed_everything(7)
    assert torch.equal(torch.rand(4), first)
    runtime.seed_everything(8)
    assert not torch.equal(torch.rand(4), first)


# --- versions ---------------------------------------------------------------------------


def test_versions_reports_numpy_and_python():
    found = runtime.versions()
    assert found["numpy"] == np.__version__
    assert found["python"] == ".".join(map(str, sys.version_info[:3]))
    expected_keys = {"platform", "torch", "tensorflow", "keras", "triton", "onnx"}
    assert expected_keys | {"onnxruntime", "nbgrader"} <= found.keys()


@pytest.mark.parametrize("module", ["torch", "tensorflow", "keras"])
def test_versions_sees_installed_frameworks(module):
    # find_spec locates a package without importing it; versions() must agree with it.
    installed = importlib.util.find_spec(module) is not None
    assert (runtime.versions()[module] is not None) == installed


def test_versions_torch_matches_the_module():
    torch = pytest.importorskip("torch")
    assert runtime.versions()["torch"] == torch.__version__


def test_missing_distribution_is_none():
    assert runtime._dist_version(("no-such-distribution-for-twin-gpt",)) is None


# --- staying light ----------------------------------------------------------------------


def test_core_modules_import_no_framework():
    code = (
        "import sys\n"
        "import course.runtime, course.data\n"
        "course.runtime.seed_everything(0)\n"
        "course.runtime.versions()\n"
        "course.runtime.report()\n"
        "heavy = sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"frameworks imported: {result.stdout}"


# --- pick_device ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "reliable"),
    [("2.13.0+cpu", True), ("2.4.0a0+git1234", True), ("2.3.1", False), ("1.13.1", False)],
)
def test_mps_version_threshold_compares_numbers(version, reliable):
    assert (runtime._version_tuple(version) >= runtime.MPS_MIN_TORCH) is reliable


def test_pick_device_auto(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    device = runtime.pick_device()
    if torch.cuda.is_available():
        assert device == "cuda"
    elif torch.backends.mps.is_available():
        pytest.skip("MPS is present; the CPU fallback cannot be observed here")
    else:
        assert device == "cpu"


def test_pick_device_cpu_always_works(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")  # the argument wins over the env var
    assert runtime.pick_device("cpu") == "cpu"
    assert runtime.pick_device("CPU") == "cpu"


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_pick_device_unavailable_device_says_why(monkeypatch, device):
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    if runtime._device_problem(torch, device) is None:
        pytest.skip(f"{device} is usable on this machine")
    with pytest.raises(RuntimeError, match=device) as info:
        runtime.pick_device(device)
    assert "is_available() is False" in str(info.value) or "older than" in str(info.value)


def test_pick_device_honours_env_var(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert runtime.pick_device() == "cpu"
    if not torch.cuda.is_available():
        monkeypatch.setenv("COURSE_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="COURSE_DEVICE='cuda'"):
            runtime.pick_device()


def test_pick_device_rejects_unknown_names(monkeypatch):
    with pytest.raises(ValueError, match="prefer='tpu'.*'cpu'"):
        runtime.pick_device("tpu")
    monkeypatch.setenv("COURSE_DEVICE", "gpu")
    with pytest.raises(ValueError, match="COURSE_DEVICE='gpu'"):
        runtime.pick_device()


# --- report and memory ------------------------------------------------------------------


def test_free_memory_is_positive_and_below_total():
    psutil = pytest.importorskip("psutil")
    free = runtime.free_memory_gb()
    assert 0 < free <= psutil.virtual_memory().total / 2**30


def test_report_lists_versions_and_smoke_mode(monkeypatch):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    text = runtime.report()
    assert np.__version__ in text
    smoke_line = next(line for line in text.splitlines() if "smoke mode" in line)
    assert smoke_line.split()[2] == "on"
    assert "device" not in text  # only when asked for
    monkeypatch.setenv("COURSE_SMOKE", "bogus")
    assert "invalid" in runtime.report()  # a report must not crash on a bad setting


def test_report_with_device(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    text = runtime.report(with_device=True)
    device_line = next(line for line in text.splitlines() if "device" in line)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert device_line.split()[-1] == "cpu"


# --- TensorFlow beside Triton ---------------------------------------------------------------

_TRITON_AFTER_TF = """
import sys, warnings
from course import runtime
tf = runtime.import_tensorflow()
assert "triton" in sys.modules, "Triton was not loaded before TensorFlow"
import torch
p = torch.nn.Parameter(torch.ones(3))
opt = torch.optim.SGD([p], lr=0.5)
(p * p).sum().backward()
opt.step()  # goes through torch._dynamo, which loads Triton's LLVM
compiled = torch.compile(lambda x: x * 2, backend="eager")
print("ok", float(p.sum()), float(tf.reduce_sum(tf.ones(2))), float(compiled(p).sum()))
"""


@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or importlib.util.find_spec("tensorflow") is None,
    reason="needs both triton and tensorflow installed",
)
def test_import_tensorflow_lets_triton_load_later_in_the_same_process():
    result = subprocess.run(
        [sys.executable, "-c", _TRITON_AFTER_TF], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", "0.0", "2.0", "0.0"]


@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or importlib.util.find_spec("tensorflow") is None,
    reason="needs both triton and tensorflow installed",
)
def test_preload_triton_warns_when_tensorflow_came_first():
    code = (
        "import warnings, sys\n"
        "import tensorflow\n"
        "from course import runtime\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    loaded = runtime.preload_triton()\n"
        "loaded_now = sys.modules.get('triton') is not None\n"
        "print(loaded, loaded_now, [str(w.message)[:40] for w in caught])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("False False ['TensorFlow was imported before Triton")
