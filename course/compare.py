"""PyTorch and TensorFlow/Keras side by side on the course's GPT: chapter 11's measurements.

    python -m course.compare --out compare-run             # full size: about 10 min on 2 cores
    python -m course.compare --out compare-smoke --size smoke   # the small size CI runs
    python -m course.compare --out compare-run --only train,export   # some sections only

One run measures, for each framework, in this order (SECTIONS):

- train: the trainer's step time in each of its modes (PyTorch eager and `torch.compile`,
  Keras without and with XLA), the first step (which holds the compilation), tokens/s, the
  training seconds to reach a target val loss, and the process's peak memory;
- generation: tokens/s of `generate` with and without the KV cache (greedy: both must give
  the same tokens);
- attention: one causal attention forward, (B, H, T, D), in each backend (PyTorch: the
  written-out softmax, SDPA, chapter 07's Triton kernel; Keras: written out, the same under
  XLA, `keras.ops.dot_product_attention`);
- lora: the share of the weights LoRA trains and the step time of LoRA against full
  fine-tuning;
- distributed: data parallel on 2 CPU processes or replicas (`python -m course.train
  --nproc 2`, and `--strategy mirrored` for Keras): what ran, its step time and its memory;
- export: each export path that works here (ONNX from PyTorch, TFLite and ONNX from Keras,
  fp32 and int8) with its size, latency at batch 1 and largest difference from eager;
- lines_of_code: the lines of code of each framework's implementation (model, training,
  sampling, LoRA, distributed, export), comments and docstrings left out;
- shape_error: the error each framework gives for the same shape bug (q @ k without the
  transpose), shown, never scored.

Each framework's sections run in a worker process of their own (`--worker`), so PyTorch and
TensorFlow never share a process and a crash loses one section, not the run: the results
are written to OUT/compare.json after every section, and running the same command again
measures only what is missing (or failed). `--fresh` starts over. Every number in the
JSON sits in a section that carries the command that measured it. `plot` draws the run,
`table` prints it as a decision matrix, and `claims_held` reads which of the claims
commonly made about the two frameworks (CLAIMS) held on this machine.

A time measured here is the median of several calls after a warm-up call, on whatever
else the machine runs at the same time: on a shared machine every figure is an upper bound.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from course import runtime
from course.files import write_json
from course.metrics import median_ms

__all__ = [
    "CLAIMS",
    "FRAMEWORKS",
    "RESULTS",
    "SECTIONS",
    "SIZES",
    "Claim",
    "claims_held",
    "failures",
    "load",
    "plot",
    "run",
    "speedup",
    "table",
    "winner",
]

FRAMEWORKS = ("torch", "tf")
FRAMEWORK_NAMES = {"torch": "PyTorch", "tf": "TensorFlow/Keras"}
SECTIONS = ("train", "generation", "attention", "lora", "distributed", "export",
            "lines_of_code", "shape_error")  # fmt: skip
RESULTS = "compare.json"  # in the run's --out folder
PLOT = "compare.png"
LOGS = "logs"  # each worker's output: OUT/logs/torch.log, OUT/logs/tf.log
FORMAT_VERSION = 1
PACKAGE = Path(__file__).resolve().parent
FAIL_ENV = "COURSE_COMPARE_FAIL"  # "<framework>:<section>": that worker dies there (tests)


@dataclass(frozen=True)
class Size:
    """How big each measurement is: `smoke` checks that everything runs (CI), `full` is
    what a learner runs to decide."""

    preset: str  # the model and the recipe the trainers run (course.config.PRESETS)
    train_iters: int  # steps of the eager / graph and the XLA runs
    compiled_iters: int  # steps of the torch.compile run (its first step compiles); 0: none
    eval_interval: int  # steps between the evaluations read for the time to target
    eval_iters: int  # batches per evaluation
    target_val_loss: float  # the val loss whose training time is measured
    prompt: int  # tokens of prompt, then `new_tokens` generated
    new_tokens: int
    attention_shape: tuple[int, int, int, int]  # (B, H, T, D)
    triton_shape: tuple[int, int, int, int]  # the same, for Triton's interpreter on a CPU
    lora_steps: int  # timed steps of LoRA and of full fine-tuning
    distributed_iters: int
    export_runs: int  # timed calls of each exported model
    repeats: int  # timed calls of the other measurements


SIZES = {
    "smoke": Size("nano", 30, 0, 10, 2, 3.9, 4, 12, (2, 2, 32, 16), (1, 2, 32, 16), 5, 6, 10, 3),
    "full": Size("shakespeare-char-cpu", 600, 120, 50, 20, 2.4, 16, 240, (8, 4, 256, 32),
                 (1, 4, 128, 32), 40, 100, 200, 10),
}  # fmt: skip


# --- reading the results: the functions chapter 11's exercises mirror -----------------------


def speedup(base_ms: float, fast_ms: float) -> float:
    """How much faster `fast` is than `base`, as a fraction of base's speed: 0.30 is "30 %
    faster" (1.3x the steps per second; base_ms / fast_ms = 1.3), -0.2 is slower. Both
    times must be positive numbers (ValueError otherwise)."""
    for name, value in (("base_ms", base_ms), ("fast_ms", fast_ms)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number of milliseconds, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive time, got {value!r}")
    return base_ms / fast_ms - 1.0


def winner(torch_value, tf_value, *, lower_is_better: bool = True, noise: float = 0.05) -> str:
    """The winner of one row of the decision matrix: "torch", "tf" or "tie", a tie when
    the two differ by no more than `noise`, relative to the better one (what a shared
    machine blurs). A missing value (None: not measured, or it failed) loses to a present
    one; "neither" if both are missing."""
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if torch_value is None or tf_value is None:
        if torch_value is None and tf_value is None:
            return "neither"
        return "tf" if torch_value is None else "torch"
    best, worst = sorted((torch_value, tf_value), reverse=not lower_is_better)
    if abs(worst - best) <= noise * abs(best):
        return "tie"
    torch_better = torch_value < tf_value if lower_is_better else torch_value > tf_value
    return "torch" if torch_better else "tf"


@dataclass(frozen=True)
class Claim:
    text: str  # the claim as articles make it
    reads: str  # what in the results decides it, and the rule


CLAIMS = {
    "compile": Claim(
        "torch.compile makes training 30-60 % faster",
        "speedup(eager step_ms, compiled step_ms) of PyTorch's train section >= 0.30 - tolerance",
    ),
    "xla": Claim(
        "XLA makes TensorFlow training 15-20 % faster",
        "speedup(graph step_ms, xla step_ms) of Keras' train section >= 0.15 - tolerance",
    ),
    "pytorch_faster": Claim(
        "PyTorch trains an LLM faster than TensorFlow",
        "speedup(Keras' best step_ms, PyTorch's best step_ms), each framework's fastest mode, "
        "> tolerance",
    ),
    "tflite_edge": Claim(
        "TFLite is the best format for the edge",
        "the smallest TFLite file <= (1 + tolerance) x the smallest export, and the fastest "
        "TFLite file's ms <= (1 + tolerance) x the fastest export's",
    ),
    "peft_pytorch": Claim(
        "parameter-efficient fine-tuning (LoRA) is a PyTorch story",
        "Keras' LoRA failed, or what LoRA saves per step there, speedup(full step_ms, "
        "lora step_ms), is below PyTorch's by more than tolerance",
    ),
}


def _part(results: dict, section: str, framework: str) -> dict | None:
    """One framework's measurements of one section, or None if missing or failed."""
    part = results.get("sections", {}).get(section, {}).get(framework)
    return part if isinstance(part, dict) and "error" not in part else None


def _step_ms(results: dict, framework: str, mode: str) -> float | None:
    part = _part(results, "train", framework)
    return ((part or {}).get("modes", {}).get(mode) or {}).get("step_ms")


def _best_step_ms(results: dict, framework: str) -> float | None:
    part = _part(results, "train", framework) or {}
    times = [m["step_ms"] for m in part.get("modes", {}).values() if m.get("step_ms")]
    return min(times) if times else None


def claims_held(results: dict, tolerance: float = 0.05) -> dict[str, bool | None]:
    """For each CLAIMS key: True if the claim held on these results, False if not, None if
    the results lack what decides it (a section not run, or failed). `tolerance` is the
    machine's noise: a claim of a size ("30 % faster") is forgiven a shortfall of that
    much, a claim that one side wins must win by more than that (CLAIMS[key].reads)."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")

    def at_least(base, fast, threshold):
        return None if base is None or fast is None else speedup(base, fast) >= threshold

    held: dict[str, bool | None] = {
        "compile": at_least(_step_ms(results, "torch", "eager"),
                            _step_ms(results, "torch", "compiled"), 0.30 - tolerance),
        "xla": at_least(_step_ms(results, "tf", "graph"), _step_ms(results, "tf", "xla"),
                        0.15 - tolerance),
    }  # fmt: skip
    torch_best, tf_best = _best_step_ms(results, "torch"), _best_step_ms(results, "tf")
    held["pytorch_faster"] = (
        None if torch_best is None or tf_best is None else speedup(tf_best, torch_best) > tolerance
    )
    rows = [row for rows in _export_rows(results).values() for row in rows]
    lite = [row for row in rows if row["format"] == "tflite"]
    if not lite:
        held["tflite_edge"] = None
    else:
        held["tflite_edge"] = min(r["mb"] for r in lite) <= (1 + tolerance) * min(
            r["mb"] for r in rows
        ) and min(r["ms"] for r in lite) <= (1 + tolerance) * min(r["ms"] for r in rows)
    torch_lora, tf_lora = _part(results, "lora", "torch"), _part(results, "lora", "tf")
    if torch_lora is None:
        held["peft_pytorch"] = None
    elif tf_lora is None:
        tried = "tf" in results.get("sections", {}).get("lora", {})  # then it failed
        held["peft_pytorch"] = True if tried else None
    else:
        saved = {fw: speedup(p["step_ms"]["full"], p["step_ms"]["lora"])
                 for fw, p in (("torch", torch_lora), ("tf", tf_lora))}  # fmt: skip
        held["peft_pytorch"] = saved["tf"] < saved["torch"] - tolerance
    return held


def failures(results: dict) -> list[str]:
    """One line per section that failed in a framework: "<section> <framework>: <why>"."""
    return [
        f"{section} {fw}: {part['error']}"
        for section, entry in results.get("sections", {}).items()
        for fw, part in entry.items()
        if isinstance(part, dict) and "error" in part
    ]


# --- the decision matrix and the plot --------------------------------------------------------


def _rows(results: dict) -> list[tuple[str, Any, Any, bool, str]]:
    """(criterion, torch value, tf value, lower is better, section) for the matrix."""
    rows = []
    for mode_label, torch_mode, tf_mode in (("eager / graph", "eager", "graph"),
                                             ("compiled / XLA", "compiled", "xla")):  # fmt: skip
        rows.append((f"train step ms, {mode_label}", _step_ms(results, "torch", torch_mode),
                     _step_ms(results, "tf", tf_mode), True, "train"))  # fmt: skip

    def value(section, *keys):
        out = {}
        for fw in FRAMEWORKS:
            item = _part(results, section, fw)
            for key in keys:
                item = item.get(key) if isinstance(item, dict) else None
            out[fw] = item
        return out["torch"], out["tf"]

    compiled_first = (
        value("train", "modes", "compiled", "first_step_s")[0],
        value("train", "modes", "xla", "first_step_s")[1],
    )
    rows.append(("first compiled step s", *compiled_first, True, "train"))
    for label, section, keys, lower in (
        ("train tokens/s, default mode", "train", ("tokens_per_s",), False),
        ("train s to the target val loss", "train", ("time_to_target_s",), True),
        ("peak memory MB (training)", "train", ("peak_rss_mb",), True),
        ("generation tokens/s, KV cache", "generation", ("tokens_per_s", "cache"), False),
        ("generation tokens/s, no cache", "generation", ("tokens_per_s", "no_cache"), False),
        ("LoRA: share of weights trained", "lora", ("trainable_share",), True),
        ("LoRA step ms", "lora", ("step_ms", "lora"), True),
        ("2 ranks/replicas: step ms", "distributed", ("step_ms",), True),
        ("2 ranks/replicas: MB per process", "distributed", ("peak_rss_mb",), True),
        ("lines of code", "lines_of_code", ("total",), True),
    ):
        rows.append((label, *value(section, *keys), lower, section))
    exports = _export_rows(results)
    for label, key in (("fastest export, ms at batch 1", "ms"), ("smallest export, MB", "mb")):
        best = [min((row[key] for row in exports[fw]), default=None) for fw in FRAMEWORKS]
        rows.append((label, *best, True, "export"))
    return rows


def _export_rows(results: dict) -> dict[str, list[dict]]:
    return {fw: (_part(results, "export", fw) or {}).get("rows", []) for fw in FRAMEWORKS}


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(results: dict, noise: float = 0.05) -> str:
    """The decision matrix as text: one row per criterion, each framework's figure, the
    winner (`winner` with `noise`), and the section whose command measured it; then the
    claims and the shape errors."""
    lines = [f"{'criterion':<34} {'PyTorch':>10} {'Keras':>10}  {'winner':<7} section"]
    for label, t, k, lower, section in _rows(results):
        best = winner(t, k, lower_is_better=lower, noise=noise)
        lines.append(f"{label:<34} {_cell(t):>10} {_cell(k):>10}  {best:<7} {section}")
    lines.append("")
    for key, held in claims_held(results).items():
        verdict = {True: "held", False: "did not hold", None: "not measured"}[held]
        lines.append(f"claim {key}: {CLAIMS[key].text}: {verdict}")
    lines.append("")
    commands = {s: results["sections"][s].get("command") for s in results.get("sections", {})}
    for section, command in commands.items():
        lines.append(f"{section}: {command}")
    return "\n".join(lines)


def plot(results: dict, path: str | os.PathLike[str] | None = None):
    """Four panels (train step time by mode, generation with and without the cache,
    attention backends, export size against latency); saved to `path` if given. Returns the
    matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    colors = {"torch": "tab:red", "tf": "tab:orange"}

    def bars(ax, section, key, title, unit):
        labels, values, cols = [], [], []
        for fw in FRAMEWORKS:
            for name, item in ((_part(results, section, fw) or {}).get(key) or {}).items():
                number = item.get("step_ms") if isinstance(item, dict) else item
                if number is not None:
                    labels.append(f"{FRAMEWORK_NAMES[fw].split('/')[0]}\n{name}")
                    values.append(number)
                    cols.append(colors[fw])
        ax.bar(range(len(values)), values, color=cols)
        ax.set_xticks(range(len(values)), labels, fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(unit)
        if not values:
            ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)

    bars(axes[0, 0], "train", "modes", "training step (lower is better)", "ms")
    bars(axes[0, 1], "generation", "tokens_per_s", "generation (higher is better)", "tokens/s")
    bars(axes[1, 0], "attention", "ms", "attention forward (lower is better)", "ms")
    axes[1, 0].set_yscale("log")
    ax = axes[1, 1]
    for fw, rows in _export_rows(results).items():
        for row in rows:
            ax.scatter(row["mb"], row["ms"], color=colors[fw])
            ax.annotate(f"{row['format']} {row['precision']}", (row["mb"], row["ms"]), fontsize=8)
    ax.set_xlabel("MB on disk")
    ax.set_ylabel("ms per call at batch 1")
    ax.set_title("export: size and latency (lower left is better)")
    fig.suptitle(f"PyTorch (red) and Keras (orange), {results.get('size', '?')} size")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# --- running: the parent writes the results, a worker per framework measures ----------------


def load(out: str | os.PathLike[str]) -> dict:
    """The results a run wrote to out/compare.json (FileNotFoundError names the file;
    ValueError says what is wrong with a file that is not a comparison's results)."""
    path = Path(out) / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"no results {path}: run `python -m course.compare --out {out}`")
    try:
        results = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not JSON ({err}): delete it or run with --fresh") from None
    if not isinstance(results, dict) or results.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a course.compare results file (version "
                         f"{FORMAT_VERSION}): delete it or run with --fresh")  # fmt: skip
    return results


def _command(out: Path, size: str, section: str) -> str:
    return f"python -m course.compare --out {out} --size {size} --only {section}"


def run(
    out: str | os.PathLike[str],
    size: str = "full",
    sections: Iterable[str] | None = None,
    frameworks: Iterable[str] = FRAMEWORKS,
    *,
    fresh: bool = False,
    progress: bool = True,
    timeout: float | None = None,
) -> dict:
    """Measure what out/compare.json does not hold yet (every section by default) and
    return the results; the file is rewritten after each section. A section that failed
    before is measured again. `timeout`: seconds a worker may run without finishing a
    section (default: 30 min at full size, 10 at smoke size)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    sections = list(SECTIONS if sections is None else sections)
    unknown = sorted(set(sections) - set(SECTIONS)) + sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown:
        raise ValueError(f"unknown {unknown}: sections are {SECTIONS}, frameworks {FRAMEWORKS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = None if fresh or not (out / RESULTS).exists() else load(out)
    if results is not None and results["size"] != size:
        raise ValueError(f"{out / RESULTS} holds a {results['size']} run, not {size}: use "
                         "another --out, or --fresh to start over")  # fmt: skip
    if results is None:
        results = {"version": FORMAT_VERSION, "size": size, "preset": SIZES[size].preset,
                   "started": datetime.now(UTC).isoformat(timespec="seconds"),
                   "machine": runtime.report(), "sections": {}}  # fmt: skip
    timeout = timeout or (1800 if size == "full" else 600)

    def missing(fw: str) -> list[str]:
        return [s for s in sections if s in _WORKER_SECTIONS and
                not _part(results, s, fw) and fw in frameworks]  # fmt: skip

    todo = [(s, fw) for fw in FRAMEWORKS for s in missing(fw)]
    here = [s for s in sections if s not in _WORKER_SECTIONS]
    from tqdm.auto import tqdm

    with tqdm(total=len(todo) + len(here), disable=not progress, desc="compare",
              unit="part") as bar:  # fmt: skip
        for section in here:  # framework-neutral: measured in this process
            bar.set_postfix_str(section)
            _store(results, out, section, {fw: _lines_of_code(fw) for fw in frameworks})
            bar.update(1)
        for fw in FRAMEWORKS:
            pending = missing(fw)
            while pending:

                def keep(section: str, part: dict, fw: str = fw) -> None:
                    _store(results, out, section, {fw: part})

                done = _run_worker(out, size, fw, pending, timeout, bar, keep)
                pending = [s for s in pending if s not in done]
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(out / RESULTS, results, indent=1)
    return results


def _store(results: dict, out: Path, section: str, parts: dict) -> None:
    entry = results["sections"].setdefault(section, {})
    entry.update(parts)
    entry["command"] = _command(out, results["size"], section)
    write_json(out / RESULTS, results, indent=1)


def _run_worker(
    out: Path, size: str, fw: str, sections: list[str], timeout: float, bar, keep
) -> dict:
    """Run one worker for `fw` over `sections`; the parts it finished ({section: part}),
    each handed to keep(section, part) as soon as it is written. A worker that crashes, or
    finishes no section for `timeout` seconds, is stopped, and the section it was on is
    recorded as an error with the end of its log; the caller starts a new worker for the
    rest."""
    parts_dir = Path(tempfile.mkdtemp(prefix=f"compare-{fw}-", dir=out))
    log_path = out / LOGS / f"{fw}.log"
    log_path.parent.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "course.compare", "--worker", fw, "--size", size,
               "--out", str(parts_dir), "--only", ",".join(sections)]  # fmt: skip
    done: dict[str, dict] = {}
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        last, timed_out = time.monotonic(), False
        try:
            while True:
                finished = proc.poll() is not None
                for section in sections:
                    path = parts_dir / f"{section}.json"
                    if section not in done and path.exists():
                        done[section] = json.loads(path.read_text())
                        keep(section, done[section])
                        bar.set_postfix_str(f"{fw} {section}")
                        bar.update(1)
                        last = time.monotonic()
                if finished:
                    break
                if time.monotonic() - last > timeout:
                    timed_out = True
                    proc.kill()
                    proc.wait()
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for path in parts_dir.iterdir():
        path.unlink()
    parts_dir.rmdir()
    rest = [s for s in sections if s not in done]
    if rest:  # the worker died on rest[0]: say why, from the end of its log
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        why = (f"no section finished in {timeout:.0f} s" if timed_out
               else f"the worker exited with {proc.returncode}")  # fmt: skip
        done[rest[0]] = {"error": f"{why}: {tail[0][:300]} (see {log_path})"}
        keep(rest[0], done[rest[0]])
        bar.update(1)
    return done


# --- the measurements ------------------------------------------------------------------------


def _preset(size: Size, **train_changes):
    from course.config import get_preset

    return get_preset(size.preset, {"eval_iters": size.eval_iters, "log_interval": 10**6,
                                     **train_changes})  # fmt: skip


def _time_to_target(history: list[dict], metrics: dict, target: float) -> tuple:
    """(steps, training seconds) until the first evaluation at or under `target`: the first
    step's seconds plus the other steps at the run's median step time."""
    for event in history:
        if event.get("event") == "eval" and event.get("val_loss", math.inf) <= target:
            steps = event["iter"]
            later_steps = max(steps - 1, 0) * metrics["ms_per_iter"] / 1e3
            return steps, metrics["first_iter_seconds"] + later_steps
    return None, None


def _train(fw: str, size: Size) -> dict:
    """The trainer's step in each mode; the default mode's run also gives the time to the
    target val loss."""
    modes = {"torch": {"eager": {"compile": False}, "compiled": {"compile": True}},
             "tf": {"graph": {"jit_compile": False}, "xla": {"jit_compile": True}}}[fw]  # fmt: skip
    default = {"torch": "eager", "tf": "xla"}[fw]
    part: dict[str, Any] = {"modes": {}, "default_mode": default,
                            "target_val_loss": size.target_val_loss}  # fmt: skip
    for mode, options in modes.items():
        iters = size.compiled_iters if mode == "compiled" else size.train_iters
        if iters == 0:  # the smoke size leaves out torch.compile's 30-50 s
            part.setdefault("skipped", {})[mode] = "not at this size: compiling takes 30-50 s"
            continue
        interval = size.eval_interval if mode == default else iters
        preset = _preset(size, max_iters=iters, lr_decay_iters=iters, eval_interval=interval,
                         compile=options.get("compile", False))  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            if fw == "torch":
                from course.torch.train import train

                result = train(preset, tmp, progress=False)
            else:
                from course.tf.train import train

                result = train(preset, tmp, progress=False,
                               jit_compile=options["jit_compile"])  # fmt: skip
        m = result.metrics
        part["modes"][mode] = {"step_ms": m["ms_per_iter"], "first_step_s": m["first_iter_seconds"],
                               "tokens_per_s": m["tokens_per_sec"], "val_loss": m["val_loss"],
                               "steps": m["iters"]}  # fmt: skip
        if mode == default:
            part["tokens_per_s"] = m["tokens_per_sec"]
            steps, seconds = _time_to_target(result.history, m, size.target_val_loss)
            part["steps_to_target"], part["time_to_target_s"] = steps, seconds
    from course.metrics import peak_rss_mb

    part["peak_rss_mb"] = peak_rss_mb()
    return part


def _model(fw: str, config):
    """A GPT of `config` with random weights (speed does not depend on them)."""
    if fw == "torch":
        import torch

        from course.torch import GPT

        torch.manual_seed(0)
        return GPT(config).eval()
    from course.tf import GPT

    keras = runtime.import_keras()
    keras.utils.set_random_seed(0)
    model = GPT(config)
    model(__import__("numpy").zeros((1, 1), "int32"))  # build
    return model


def _generation(fw: str, size: Size) -> dict:
    import numpy as np

    from course.config import get_preset

    config = get_preset(size.preset).model.replace(block_size=size.prompt + size.new_tokens)
    model = _model(fw, config)
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, size.prompt))
    if fw == "torch":
        import torch

        from course.torch import generate

        prompt = torch.from_numpy(prompt)
    else:
        from course.tf import generate
    outputs, rates = {}, {}
    # Without the cache every token recomputes its whole context: a few calls are enough.
    for name, cache, repeats in (("cache", True, size.repeats), ("no_cache", False, 2)):

        def call(cache=cache, name=name):
            outputs[name] = np.asarray(generate(model, prompt, size.new_tokens, top_k=1,
                                                use_cache=cache))  # fmt: skip

        rates[name] = size.new_tokens / (median_ms(call, repeats) / 1e3)
    return {"tokens_per_s": rates, "prompt": size.prompt, "new_tokens": size.new_tokens,
            "same_tokens": bool(np.array_equal(outputs["cache"], outputs["no_cache"]))}  # fmt: skip


def _attention(fw: str, size: Size) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    B, H, T, D = size.attention_shape
    q, k, v = (rng.standard_normal((B, H, T, D)).astype("float32") for _ in range(3))
    part: dict[str, Any] = {"shape": list(size.attention_shape), "ms": {}, "notes": {}}
    if fw == "torch":
        import torch
        import torch.nn.functional as F

        from course.torch.model import manual_attention

        q, k, v = map(torch.from_numpy, (q, k, v))
        with torch.no_grad():
            part["ms"]["manual"] = median_ms(lambda: manual_attention(q, k, v), size.repeats)
            part["ms"]["sdpa"] = median_ms(
                lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), size.repeats
            )
            try:
                attention = runtime.import_kernels("attention")
                shape = size.triton_shape
                small = [torch.from_numpy(rng.standard_normal(shape).astype("float32"))
                         for _ in range(3)]  # fmt: skip
                part["ms"]["triton"] = median_ms(lambda: attention.flash_attention(*small), 1)
                if attention.interpreted():
                    part["notes"]["triton"] = (f"Triton's interpreter on the CPU, shape "
                                               f"{list(shape)}: it times the interpreter, "
                                               "not the kernel")  # fmt: skip
            except Exception as err:  # no Triton here, or it cannot run: say so
                part["notes"]["triton"] = f"did not run: {type(err).__name__}: {err}"[:300]
        return part
    tf = runtime.import_tensorflow()
    keras = runtime.import_keras()
    from course.tf.model import manual_attention

    q, k, v = map(tf.constant, (q, k, v))
    compiled = tf.function(manual_attention, jit_compile=True)
    part["ms"]["manual"] = median_ms(lambda: manual_attention(q, k, v), size.repeats)
    part["ms"]["xla"] = median_ms(lambda: compiled(q, k, v).numpy(), size.repeats)
    qt, kt, vt = (tf.transpose(x, (0, 2, 1, 3)) for x in (q, k, v))  # keras wants (B, T, H, D)
    part["ms"]["dot_product_attention"] = median_ms(
        lambda: keras.ops.dot_product_attention(qt, kt, vt, is_causal=True), size.repeats
    )
    return part


def _lora(fw: str, size: Size) -> dict:
    import numpy as np

    from course.config import get_preset

    config = get_preset(size.preset).model
    batch = get_preset(size.preset).train.batch_size
    rng = np.random.default_rng(0)
    x = rng.integers(0, config.vocab_size, (batch, config.block_size))
    y = rng.integers(0, config.vocab_size, (batch, config.block_size))
    part: dict[str, Any] = {"r": 8, "step_ms": {}}
    for name in ("full", "lora"):
        model = _model(fw, config)
        step, trainable, total = _fine_tuning_step(fw, model, name == "lora", x, y)
        part["step_ms"][name] = median_ms(step, size.lora_steps)
        if name == "lora":
            part["trainable_share"] = trainable / total
    return part


def _fine_tuning_step(fw: str, model, lora: bool, x, y) -> tuple[Callable[[], Any], int, int]:
    """(one AdamW step on (x, y), numbers trained, numbers in the model) for `model`, with
    LoRA adapters (r=8) on the attention's and MLP's matrices if `lora`."""
    import numpy as np

    if fw == "torch":
        import torch

        from course.torch.lora import apply_lora, count_trainable

        if lora:
            apply_lora(model, r=8)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def step():
            optimizer.zero_grad(set_to_none=True)
            model(xt, yt)[1].backward()
            optimizer.step()

        return step, count_trainable(model), sum(p.numel() for p in model.parameters())
    keras = runtime.import_keras()
    from course.tf.lora import apply_lora, count_trainable

    if lora:
        apply_lora(model, r=8, seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=True)
    xi, yi = x.astype("int32"), y.astype("int32")
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    return (lambda: model.train_on_batch(xi, yi)), count_trainable(model), total


def _distributed(fw: str, size: Size) -> dict:
    """`python -m course.train` on 2 processes (PyTorch DDP) or 2 replicas (Keras
    MirroredStrategy), as a learner would start it; its metrics.json read back."""
    iters = size.distributed_iters
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "course.train", "--framework", fw, "--preset",
                   size.preset, "--out", tmp, "--no-progress", "--nproc", "2",
                   "--max_iters", str(iters), "--lr_decay_iters", str(iters),
                   "--eval_interval", str(iters), "--eval_iters", str(size.eval_iters)]  # fmt: skip
        if fw == "tf":
            command += ["--strategy", "mirrored"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"{' '.join(command[1:])} exited with {done.returncode}: {last}")
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
    ran = {"torch": "DDP, 2 processes (gloo)", "tf": "MirroredStrategy, 2 replicas in 1 process"}
    return {"ran": ran[fw], "processes": 2 if fw == "torch" else 1, "replicas": 2,
            "step_ms": metrics["ms_per_iter"], "peak_rss_mb": metrics["peak_rss_mb"],
            "val_loss": metrics["val_loss"], "steps": metrics["iters"]}  # fmt: skip


def _export(fw: str, size: Size) -> dict:
    import numpy as np

    from course.config import get_preset
    from course.export import onnx_model, quantize_int8, size_on_disk

    config = get_preset(size.preset).model
    model = _model(fw, config)
    idx = np.random.default_rng(0).integers(0, config.vocab_size, (1, config.block_size))
    rows, files = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if fw == "torch":
            from course.torch.export import eager_model, to_onnx

            files["onnx", "fp32"] = lambda p: to_onnx(model, p)
        else:
            from course.tf.export import eager_model, tflite_model, to_onnx, to_tflite

            files["tflite", "fp32"] = lambda p: to_tflite(model, p)
            files["tflite", "int8"] = lambda p: to_tflite(model, p, int8="dynamic")
            files["onnx", "fp32"] = lambda p: to_onnx(model, p)
        files["onnx", "int8"] = lambda p: quantize_int8(folder / "model-onnx-fp32.onnx", p)
        eager = eager_model(model)
        reference = eager(idx)
        part: dict[str, Any] = {"eager_ms": median_ms(lambda: eager(idx), size.repeats),
                                "rows": [], "failed": {}}  # fmt: skip
        for (fmt, precision), write in files.items():
            path = folder / f"model-{fmt}-{precision}.{fmt}"
            try:
                write(path)
                runner = (tflite_model if fmt == "tflite" else onnx_model)(path, config)
                logits = runner(idx)
                rows.append({"format": fmt, "precision": precision,
                             "mb": size_on_disk(path) / 1e6,
                             "ms": median_ms(lambda run=runner: run(idx), size.export_runs),
                             "max_abs_diff": float(np.abs(logits - reference).max())})  # fmt: skip
            except Exception as err:  # a converter missing or failing: the row says why
                part["failed"][f"{fmt} {precision}"] = f"{type(err).__name__}: {err}"[:300]
    part["rows"] = rows
    return part


_SHAPE_BUG = "attention scores as q @ k instead of q @ kᵀ, q and k (B=2, H=4, T=8, D=16)"


def _shape_error(fw: str, size: Size) -> dict:
    import numpy as np

    q = np.ones((2, 4, 8, 16), "float32")
    try:
        if fw == "torch":
            import torch

            torch.from_numpy(q) @ torch.from_numpy(q)
        else:
            keras = runtime.import_keras()
            keras.ops.matmul(q, q)
    except Exception as err:
        message = f"{type(err).__name__}: {str(err).strip()}"
        return {"bug": _SHAPE_BUG, "message": message[:600]}
    return {"bug": _SHAPE_BUG, "message": None}


_CODE_FILES = ("model.py", "train.py", "sampling.py", "lora.py", "distributed.py", "export.py")


def code_lines(path: str | os.PathLike[str]) -> int:
    """Lines of a Python file that hold code: blank lines, comments and docstrings left out."""
    source = Path(path).read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant) and isinstance(
                body[0].value.value, str):  # fmt: skip
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}  # fmt: skip
    for token in tokenize.tokenize(io.BytesIO(source.encode()).readline):
        if token.type not in skip:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return len(lines)


def _lines_of_code(fw: str) -> dict:
    """The lines_of_code section, the one measured in the calling process (it reads files)."""
    folder = PACKAGE / fw
    files = {name: code_lines(folder / name) for name in _CODE_FILES if (folder / name).exists()}
    return {"files": files, "total": sum(files.values()), "folder": f"course/{fw}"}


_WORKER_SECTIONS: dict[str, Callable[[str, Size], dict]] = {
    "train": _train,
    "generation": _generation,
    "attention": _attention,
    "lora": _lora,
    "distributed": _distributed,
    "export": _export,
    "shape_error": _shape_error,
}


def _worker(fw: str, size_name: str, parts_dir: Path, sections: list[str]) -> int:
    """Measure `sections` for `fw` in this process, writing parts_dir/<section>.json after
    each; a Python error in one section is recorded and the next one runs."""
    import traceback

    if fw == "tf":
        runtime.import_tensorflow()  # before anything else: Triton and TF load in one order
    else:
        import torch  # noqa: F401  (set_threads applies to the frameworks already imported)
    runtime.set_threads(0)
    size = SIZES[size_name]
    for section in sections:
        print(f"--- {fw} {section}", flush=True)
        if os.environ.get(FAIL_ENV) == f"{fw}:{section}":  # tests: a worker that dies here
            os.kill(os.getpid(), signal.SIGKILL)
        start = time.perf_counter()
        try:
            part = _WORKER_SECTIONS[section](fw, size)
        except Exception as err:
            traceback.print_exc()
            part = {"error": f"{type(err).__name__}: {err}"[:600]}
        part["seconds"] = time.perf_counter() - start
        write_json(parts_dir / f"{section}.json", part)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=runtime.command_name("course.compare"),
        description="PyTorch and TensorFlow/Keras side by side on the course's GPT.",
    )
    parser.add_argument("--out", required=True, help="folder for compare.json and the plot")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--only", default=None, metavar="SECTIONS",
                        help=f"comma-separated, of: {', '.join(SECTIONS)}")  # fmt: skip
    parser.add_argument("--framework", choices=FRAMEWORKS, default=None, help="default: both")
    parser.add_argument("--fresh", action="store_true", help="start over: ignore earlier results")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--worker", choices=FRAMEWORKS, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"no section {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    if args.worker:
        return _worker(args.worker, args.size, Path(args.out), sections)
    frameworks = (args.framework,) if args.framework else FRAMEWORKS
    try:
        results = run(args.out, args.size, sections, frameworks, fresh=args.fresh,
                      progress=not args.no_progress)  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")  # a file, no window
    plot(results, Path(args.out) / PLOT)
    print(table(results))
    print(f"\nresults: {Path(args.out) / RESULTS}; plot: {Path(args.out) / PLOT}")
    problems = failures(results)
    for problem in problems:
        print(f"failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
