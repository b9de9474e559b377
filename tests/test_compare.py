"""course.compare: the rules that read a comparison (speedup, winner, claims), the decision
matrix and the plot, lines of code, and a run that resumes and survives a dead worker.

The whole comparison at its smoke size runs in chapter 11 (tests/test_chapters.py); here
the runs are limited to the cheap sections."""

from __future__ import annotations

import json
import math

import pytest

from course import compare


def _results(**sections) -> dict:
    """A synthetic results document holding `sections` ({section: {framework: part}})."""
    return {"version": compare.FORMAT_VERSION, "size": "smoke", "sections": sections}


def _train(torch_modes: dict, tf_modes: dict) -> dict:
    return {
        "torch": {"modes": {m: {"step_ms": ms} for m, ms in torch_modes.items()}},
        "tf": {"modes": {m: {"step_ms": ms} for m, ms in tf_modes.items()}},
    }


def _export(torch_rows: list, tf_rows: list) -> dict:
    def rows(items):
        return [{"format": f, "precision": p, "mb": mb, "ms": ms} for f, p, mb, ms in items]

    return {"torch": {"rows": rows(torch_rows)}, "tf": {"rows": rows(tf_rows)}}


def _lora(torch_ms: tuple, tf_ms: tuple | None) -> dict:
    parts = {"torch": {"step_ms": {"full": torch_ms[0], "lora": torch_ms[1]}}}
    if tf_ms is not None:
        parts["tf"] = {"step_ms": {"full": tf_ms[0], "lora": tf_ms[1]}}
    return parts


# --- speedup and winner ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "fast", "expected"),
    [(100.0, 50.0, 1.0), (130.0, 100.0, 0.3), (100.0, 125.0, -0.2), (7, 7, 0.0)],
)
def test_speedup_is_the_gain_in_speed(base, fast, expected):
    assert compare.speedup(base, fast) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [0, -3.0, math.nan, math.inf])
def test_speedup_refuses_a_time_that_is_not_positive(bad):
    with pytest.raises(ValueError, match="fast_ms"):
        compare.speedup(10.0, bad)
    with pytest.raises(ValueError, match="base_ms"):
        compare.speedup(bad, 10.0)


@pytest.mark.parametrize("bad", ["10", None, True])
def test_speedup_refuses_what_is_not_a_number(bad):
    with pytest.raises(TypeError, match="base_ms"):
        compare.speedup(bad, 10.0)


@pytest.mark.parametrize(
    ("torch_value", "tf_value", "kwargs", "expected"),
    [
        (10.0, 20.0, {}, "torch"),
        (20.0, 10.0, {}, "tf"),
        (10.0, 20.0, {"lower_is_better": False}, "tf"),
        (100.0, 104.0, {}, "tie"),  # 4 % of the better one
        (100.0, 106.0, {}, "torch"),
        # 5.2 % of the better (100), 4.9 % of the worse (105.2): not a tie
        (105.2, 100.0, {}, "tf"),
        (100.0, 104.0, {"noise": 0.0}, "torch"),
        (1000.0, 1030.0, {"noise": 0.05}, "tie"),  # relative, not 0.05 absolute
        (None, 5.0, {}, "tf"),
        (5.0, None, {"lower_is_better": False}, "torch"),
        (None, None, {}, "neither"),
    ],
)
def test_winner(torch_value, tf_value, kwargs, expected):
    assert compare.winner(torch_value, tf_value, **kwargs) == expected


def test_winner_refuses_negative_noise():
    with pytest.raises(ValueError, match="noise"):
        compare.winner(1.0, 2.0, noise=-0.1)


# --- claims ----------------------------------------------------------------------------------


def test_claims_of_an_empty_run_are_not_measured():
    assert compare.claims_held(_results()) == {key: None for key in compare.CLAIMS}


def test_the_compile_claim_reads_pytorchs_modes_with_the_tolerance():
    results = _results(train=_train({"eager": 100.0, "compiled": 80.0}, {"xla": 50.0}))
    assert compare.claims_held(results, tolerance=0.05)["compile"] is True  # 0.25 >= 0.25
    assert compare.claims_held(results, tolerance=0.0)["compile"] is False  # 0.25 < 0.30
    slower = _results(train=_train({"eager": 80.0, "compiled": 100.0}, {}))
    assert compare.claims_held(slower)["compile"] is False
    assert compare.claims_held(results)["xla"] is None  # no graph mode measured


def test_the_xla_claim_and_which_framework_is_faster():
    results = _results(train=_train({"eager": 40.0}, {"graph": 60.0, "xla": 50.0}))
    held = compare.claims_held(results, tolerance=0.0)
    assert held["xla"] is True  # 60 / 50 - 1 = 0.2 >= 0.15
    assert held["pytorch_faster"] is True  # Keras' best 50 against PyTorch's 40: 0.25
    close = _results(train=_train({"eager": 48.0}, {"graph": 60.0, "xla": 50.0}))
    assert compare.claims_held(close, tolerance=0.05)["pytorch_faster"] is False  # 0.04


def test_a_failed_section_decides_nothing():
    results = _results(
        train={"torch": {"error": "RuntimeError: boom"}, "tf": {"modes": {"xla": {"step_ms": 1}}}}
    )
    held = compare.claims_held(results)
    assert held["compile"] is None and held["pytorch_faster"] is None


def test_the_tflite_claim_needs_the_smallest_and_the_fastest_file():
    both = _results(export=_export([("onnx", "int8", 0.9, 1.0)], [("tflite", "int8", 0.8, 0.9)]))
    assert compare.claims_held(both)["tflite_edge"] is True
    slower = _results(export=_export([("onnx", "int8", 0.9, 1.0)], [("tflite", "int8", 0.8, 1.10)]))
    assert compare.claims_held(slower, tolerance=0.05)["tflite_edge"] is False
    assert compare.claims_held(slower, tolerance=0.2)["tflite_edge"] is True
    bigger = _results(export=_export([("onnx", "int8", 0.5, 1.0)], [("tflite", "int8", 0.8, 0.5)]))
    assert compare.claims_held(bigger)["tflite_edge"] is False
    no_lite = _results(export=_export([("onnx", "fp32", 3.0, 1.0)], []))
    assert compare.claims_held(no_lite)["tflite_edge"] is None


def test_the_peft_claim():
    same = _results(lora=_lora((30.0, 20.0), (30.0, 20.0)))
    assert compare.claims_held(same)["peft_pytorch"] is False
    keras_gains_less = _results(lora=_lora((30.0, 20.0), (30.0, 28.0)))  # 0.5 vs 0.07
    assert compare.claims_held(keras_gains_less)["peft_pytorch"] is True
    keras_failed = _results(lora={**_lora((30.0, 20.0), None), "tf": {"error": "ValueError"}})
    assert compare.claims_held(keras_failed)["peft_pytorch"] is True
    assert compare.claims_held(_results(lora=_lora((30.0, 20.0), None)))["peft_pytorch"] is None


# --- the matrix, the plot, lines of code -----------------------------------------------------


def test_table_names_the_winner_of_each_row_and_marks_what_is_missing():
    results = _results(
        train={
            **_train({"eager": 40.0}, {"graph": 60.0, "xla": 30.0}),
            "command": "python -m course.compare --out X --size smoke --only train",
        }
    )
    text = compare.table(results)
    eager_row = next(line for line in text.splitlines() if line.startswith("train step ms, eager"))
    assert eager_row.split()[-3:] == ["60", "torch", "train"]
    xla_row = next(line for line in text.splitlines() if "compiled / XLA" in line)
    assert xla_row.split()[-4:] == ["-", "30", "tf", "train"]
    assert "--only train" in text
    assert "claim xla: XLA makes TensorFlow training 15-20 % faster: held" in text


def test_plot_writes_an_image(tmp_path):
    results = _results(
        train=_train({"eager": 40.0}, {"xla": 30.0}),
        export=_export([("onnx", "fp32", 3.0, 1.0)], [("tflite", "int8", 0.8, 0.5)]),
    )
    fig = compare.plot(results, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 4


def test_code_lines_leave_out_comments_docstrings_and_blank_lines(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        '"""Module\ndocstring."""\n\nimport os  # a comment\n\n# a comment line\n'
        'def f(x):\n    """One line."""\n    y = """not a\n    docstring"""\n    return x\n'
    )
    # import, def, y = (two lines of a string that is code), return
    assert compare.code_lines(path) == 5


# --- running ---------------------------------------------------------------------------------


def test_load_names_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="compare.json"):
        compare.load(tmp_path)
    (tmp_path / compare.RESULTS).write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        compare.load(tmp_path)
    (tmp_path / compare.RESULTS).write_text('{"rows": []}')
    with pytest.raises(ValueError, match="not a course.compare results file"):
        compare.load(tmp_path)


def test_run_refuses_unknown_sections_and_another_size(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        compare.run(tmp_path, "smoke", ["trian"], progress=False)
    compare.run(tmp_path, "smoke", ["lines_of_code"], progress=False)
    with pytest.raises(ValueError, match="holds a smoke run"):
        compare.run(tmp_path, "full", ["lines_of_code"], progress=False)


def test_lines_of_code_are_measured_in_this_process_with_their_command(tmp_path):
    results = compare.run(tmp_path, "smoke", ["lines_of_code"], progress=False)
    saved = json.loads((tmp_path / compare.RESULTS).read_text())
    assert saved["sections"] == results["sections"]
    entry = results["sections"]["lines_of_code"]
    assert entry["command"].endswith("--size smoke --only lines_of_code")
    for fw in compare.FRAMEWORKS:
        assert set(entry[fw]["files"]) >= {"model.py", "train.py"}
        assert entry[fw]["total"] == sum(entry[fw]["files"].values()) > 100


def test_a_dead_worker_loses_one_section_and_a_rerun_measures_only_it(tmp_path, monkeypatch):
    monkeypatch.setenv(compare.FAIL_ENV, "torch:shape_error")
    results = compare.run(tmp_path, "smoke", ["shape_error", "attention"], ["torch"],
                          progress=False)  # fmt: skip
    sections = results["sections"]
    assert "exited with -9" in sections["shape_error"]["torch"]["error"]
    assert sections["attention"]["torch"]["ms"]["sdpa"] > 0  # a new worker went on
    assert compare.failures(results) == [
        f"shape_error torch: {sections['shape_error']['torch']['error']}"
    ]
    attention = sections["attention"]["torch"]

    monkeypatch.delenv(compare.FAIL_ENV)
    again = compare.run(tmp_path, "smoke", ["shape_error", "attention"], ["torch"],
                        progress=False)  # fmt: skip
    assert again["sections"]["attention"]["torch"] == attention  # kept, not measured again
    message = again["sections"]["shape_error"]["torch"]["message"]
    assert message.startswith("RuntimeError") and "[8, 16]" in message
    assert compare.failures(again) == []
    log = (tmp_path / compare.LOGS / "torch.log").read_text()
    assert log.count("--- torch attention") == 1 and log.count("--- torch shape_error") == 2
