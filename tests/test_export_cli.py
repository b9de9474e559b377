"""`python -m course.export --out RUN --format onnx|tflite [--int8]`: a trained run of either
framework exported, written where it says, and verified against its model on the run's
validation text; what cannot be exported is refused with a reason, and no file is left."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, SHARED_DATA_DIR, needs_shared_corpus

pytest.importorskip("onnxruntime")
pytestmark = [pytest.mark.slow, needs_shared_corpus]

NANO = ["--preset", "nano", "--threads", "1", "--no-progress", "--max_iters", "30",
        "--eval_interval", "30", "--eval_iters", "2"]  # fmt: skip
VERIFIED = re.compile(
    r"max \|Δlogits\| (\S+), argmax agreement (\S+)%, val loss (\S+) \(reference (\S+)\)"
)


@pytest.fixture(scope="module")
def environment(tmp_path_factory) -> dict[str, str]:
    env = {**os.environ, "COURSE_DATA_DIR": str(SHARED_DATA_DIR or "")}
    env["COURSE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))  # never a real cache
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory, environment):
    out = tmp_path_factory.mktemp("torch-run")
    trained = run("course.train", *NANO, "--out", str(out), env=environment)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory, environment):
    pytest.importorskip("ai_edge_litert")
    out = tmp_path_factory.mktemp("keras-run")
    trained = run("course.train", "--framework", "tf", *NANO, "--out", str(out), env=environment)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return out


def verified(stdout: str) -> tuple[float, float, float, float]:
    """(max |Δlogits|, agreement %, val loss, the model's val loss) from the printed line."""
    found = VERIFIED.search(stdout)
    assert found, stdout
    return tuple(float(v) for v in found.groups())


@pytest.mark.parametrize(
    ("fixture", "fmt"),
    [
        ("torch_run", "onnx"),
        ("keras_run", "tflite"),
        ("keras_run", "onnx"),
        ("torch_run", "tflite"),
    ],  # fmt: skip
)
def test_a_run_exports_and_verifies_in_fp32_and_int8(request, environment, fixture, fmt):
    if (fixture, fmt) == ("torch_run", "tflite"):  # litert-torch: an extra of its own, not in CI
        pytest.importorskip("litert_torch", reason="PyTorch -> TFLite needs litert-torch")
    out = request.getfixturevalue(fixture)
    fp32 = run("course.export", "--out", str(out), "--format", fmt, env=environment)
    assert fp32.returncode == 0, fp32.stderr[-3000:]
    path = out / "export" / f"model.{fmt}"
    assert f"wrote {path}" in fp32.stdout and path.is_file()
    delta, agreement, loss, reference = verified(fp32.stdout)
    assert delta <= 1e-4 and agreement == 100.0 and abs(loss - reference) < 1e-4
    assert 3.0 < reference < 4.4  # a 30-step nano model: below ln 65 = 4.17-ish, not trained

    int8 = run("course.export", "--out", str(out), "--format", fmt, "--int8", env=environment)
    assert int8.returncode == 0, int8.stderr[-3000:]
    small = out / "export" / f"model.int8.{fmt}"
    assert small.is_file() and small.stat().st_size < 0.8 * path.stat().st_size
    delta, agreement, loss, reference = verified(int8.stdout)
    assert delta > 1e-5, "int8 weights should change the logits a little"
    assert agreement >= 90.0 and abs(loss - reference) < 0.05


def test_pytorch_to_tflite_without_its_extra_names_it(torch_run, environment):
    pytest.importorskip("ai_edge_litert")
    if importlib.util.find_spec("litert_torch") is not None:
        pytest.skip("litert-torch is installed: the refusal cannot be seen")
    result = run("course.export", "--out", str(torch_run), "--format", "tflite", env=environment)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "twin-gpt[litert-torch]" in result.stderr and "to_onnx" in result.stderr
    assert not (torch_run / "export" / "model.tflite").exists()


def test_a_folder_without_a_checkpoint_is_named(tmp_path, environment):
    result = run("course.export", "--out", str(tmp_path), "--format", "onnx", env=environment)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(tmp_path) in result.stderr and "no checkpoint" in result.stderr
    assert not (tmp_path / "export").exists()


def test_bad_arguments_are_refused_by_the_parser(torch_run, environment):
    args = ["--out", str(torch_run), "--format"]
    for bad in (["pt"], ["onnx", "--windows", "0"]):
        result = run("course.export", *args, *bad, env=environment)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
