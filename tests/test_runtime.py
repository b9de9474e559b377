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
from conftest import run_script

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


# --- Triton and TensorFlow: imports without side effects, one explicit policy -----------------

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="needs triton installed"
)
needs_triton_and_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or importlib.util.find_spec("tensorflow") is None,
    reason="needs both triton and tensorflow installed",
)


def _run(code: str, folder: Path):
    """Run `code` in a fresh interpreter started in the repository: process state is the
    subject here."""
    return run_script(code, folder, cwd=REPO_ROOT)


def test_importing_the_framework_packages_loads_no_triton_and_sets_no_variable(tmp_path):
    result = _run(
        """
        import os, sys
        before = dict(os.environ)
        import course.torch, course.torch.model, course.torch.train, course.torch.sampling
        import course.tf, kernels
        from course.torch import GPT
        changed = sorted(set(before.items()) ^ set(os.environ.items()))
        blocked = sorted(name for name, module in sys.modules.items() if module is None)
        loaded = sorted(m for m in ("triton", "tensorflow", "keras") if m in sys.modules)
        print(changed, blocked, loaded, "torch" in sys.modules)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["[]", "[]", "[]", "True"]


@needs_triton
def test_use_triton_without_a_gpu_turns_the_interpreter_on_and_kernels_run(tmp_path):
    # Triton is often loaded before the call (torch.optim does): that is not too late.
    result = _run(
        """
        import os, sys
        import triton
        import torch
        from course import runtime
        runtime._has_cuda_driver = lambda: False  # the case under test, on any machine
        assert "TRITON_INTERPRET" not in os.environ
        triton = runtime.use_triton()
        import triton.language as tl

        @triton.jit
        def double_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
            offsets = tl.arange(0, BLOCK)
            x = tl.load(x_ptr + offsets, mask=offsets < n)
            tl.store(y_ptr + offsets, x * 2, mask=offsets < n)

        x, y = torch.arange(5.0), torch.zeros(5)
        double_kernel[(1,)](x, y, 5, BLOCK=8)
        print(os.environ["TRITON_INTERPRET"], y.tolist(), sys.modules["triton"] is triton)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "[0.0,", "2.0,", "4.0,", "6.0,", "8.0]", "True"]


@needs_triton
def test_tritons_own_functions_run_interpreted_when_triton_was_loaded_first(tmp_path):
    # tl.max and tl.sum are @jit functions of Triton's own, made when Triton is imported.
    # An optimizer imports it before any notebook can decide: a kernel calling them once
    # failed ("Cannot call @triton.jit'd outside of the scope of a kernel"), in the grader's
    # fork server and in any chapter that trained before its first kernel.
    result = _run(
        """
        import sys
        import torch
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
        assert "triton" in sys.modules  # loaded by the optimizer, interpreter undecided
        from course import runtime
        runtime._has_cuda_driver = lambda: False
        triton = runtime.use_triton()
        import triton.language as tl

        @triton.jit
        def max_and_sum_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
            offsets = tl.arange(0, BLOCK)
            x = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
            tl.store(out_ptr, tl.max(x, axis=0))
            tl.store(out_ptr + 1, tl.sum(x, axis=0))

        x, out = torch.tensor([1.0, 5.0, 2.0]), torch.zeros(2)
        max_and_sum_kernel[(1,)](x, out, 3, BLOCK=4)
        print(out.tolist())
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["[5.0,", "8.0]"]


@needs_triton
def test_use_triton_names_kernels_defined_before_the_interpreter_was_on(tmp_path):
    result = _run(
        """
        import triton
        import triton.language as tl
        from course import runtime
        runtime._has_cuda_driver = lambda: False

        @triton.jit
        def early_kernel(x_ptr):
            pass

        @triton.autotune(configs=[triton.Config({})], key=[])
        @triton.jit
        def tuned_kernel(x_ptr):
            pass

        try:
            runtime.use_triton()
        except RuntimeError as err:
            print(err)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    message = result.stdout
    assert "__main__.early_kernel" in message and "__main__.tuned_kernel" in message, message
    assert "Restart the kernel" in message and "use_triton()" in message, message


@needs_triton
def test_use_triton_with_a_gpu_driver_leaves_the_interpreter_off(monkeypatch):
    monkeypatch.setattr(runtime, "_has_cuda_driver", lambda: True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert runtime.use_triton().__name__ == "triton"
    assert "TRITON_INTERPRET" not in os.environ


@needs_triton
@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_use_triton_refuses_an_interpreter_turned_off_without_a_gpu(monkeypatch, value):
    monkeypatch.setattr(runtime, "_has_cuda_driver", lambda: False)
    monkeypatch.setenv("TRITON_INTERPRET", value)
    with pytest.raises(RuntimeError, match=f"TRITON_INTERPRET={value!r}.*no NVIDIA driver"):
        runtime.use_triton()


def test_use_triton_when_triton_is_missing(monkeypatch):
    if "triton" in sys.modules:
        monkeypatch.delitem(sys.modules, "triton")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    assert runtime.use_triton(required=False) is None
    with pytest.raises(ImportError, match=r"pip install 'twin-gpt\[triton\]'"):
        runtime.use_triton()


@needs_triton_and_tensorflow
def test_after_a_plain_tensorflow_import_triton_is_refused_with_the_reason(tmp_path):
    result = _run(
        """
        import sys, warnings
        import tensorflow
        from course import runtime
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tf = runtime.import_tensorflow()
        print("WARNING", [str(w.message) for w in caught if w.category is RuntimeWarning])
        try:
            runtime.use_triton()
        except RuntimeError as err:
            print("ERROR", err)
        print("LOADED", "triton" in sys.modules, tf is tensorflow)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert "TensorFlow was imported before Triton" in lines["WARNING"]
    assert "import_tensorflow()" in lines["WARNING"]
    assert "TensorFlow is already loaded" in lines["ERROR"]
    assert "LLVM" in lines["ERROR"] and "Restart the kernel" in lines["ERROR"]
    assert lines["LOADED"] == "False True"


_TORCH_STEP = """
import torch
model = torch.nn.Linear(3, 2)
optimizer = torch.optim.AdamW(model.parameters())  # loads Triton, through torch._dynamo
model(torch.ones(1, 3)).sum().backward()
optimizer.step()
"""
_TENSORFLOW = """
from course import runtime
tf = runtime.import_tensorflow()
total = float(tf.reduce_sum(tf.ones(2)))
"""
_COMPILE = """
double = torch.compile(lambda x: x * 2, backend="eager")
print("ok", total, float(double(torch.ones(3)).sum()), os.environ.get("TRITON_INTERPRET"))
"""


@needs_triton_and_tensorflow
@pytest.mark.parametrize("tensorflow_first", [True, False], ids=["tensorflow-first", "torch-first"])
def test_tensorflow_and_a_torch_training_step_in_either_order(tensorflow_first, tmp_path):
    parts = [_TENSORFLOW, _TORCH_STEP] if tensorflow_first else [_TORCH_STEP, _TENSORFLOW]
    result = _run("import os\n" + "".join(parts) + _COMPILE, tmp_path)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-2000:]}"
    # import_tensorflow loads Triton first, but deciding its interpreter is use_triton's.
    assert result.stdout.split() == ["ok", "2.0", "6.0", "None"]


@needs_triton_and_tensorflow
def test_the_course_optimizer_after_a_plain_tensorflow_import_is_an_error_not_an_abort(tmp_path):
    """PyTorch's optimizers load Triton; after `import tensorflow` that aborts the process
    (LLVM registered twice). The course's optimizer asks first and says what to do."""
    result = _run(
        """
        import sys
        import tensorflow
        from course.config import get_preset
        from course.torch.model import GPT
        from course.torch.train import configure_optimizer
        preset = get_preset("nano")
        try:
            configure_optimizer(GPT(preset.model), preset.train)
        except RuntimeError as err:
            print("ERROR", err)
        print("LOADED", "triton" in sys.modules)
        """,
        tmp_path,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-2000:]}"
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert "TensorFlow is already loaded" in lines["ERROR"], result.stdout
    assert "import_tensorflow()" in lines["ERROR"]
    assert lines["LOADED"] == "False"


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/venv/bin/twin-gpt-train", "twin-gpt-train"),
        ("/repo/course/train.py", "python -m course.train"),
        ("-c", "python -m course.train"),
    ],
)
def test_command_name_is_the_console_script_or_python_m(monkeypatch, argv0, expected):
    monkeypatch.setattr(sys, "argv", [argv0, "--help"])
    assert runtime.command_name("course.train") == expected
