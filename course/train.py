"""Train a GPT from the command line.

    python -m course.train --framework torch --preset shakespeare-char-cpu --out out/shakespeare
    python -m course.train --preset nano --max_iters 50 --attn_impl manual --out out/nano
    python -m course.train --preset nano --max_iters 100 --out out/nano --resume
    python -m course.train --preset nano --max_iters 100 --init-from out/nano --lora-r 8 \
        --lora-alpha 16 --out out/nano-lora       # LoRA fine-tuning: writes adapter.safetensors

Any other `--key value` pair changes one setting of the preset: a GPTConfig field
(n_layer, attn_impl, ...) or a TrainConfig field (max_iters, learning_rate, ...); `-` and
`_` are the same in keys. A true/false setting may be given alone (`--compile`).

`--framework torch` (the default) runs `course.torch.train.train` and writes the checkpoint
file ckpt.pt; `--framework tf` runs the Keras trainer of chapter 06, `course.tf.train.train`
(same arguments), and writes the checkpoint folder ckpt/. Both write metrics.jsonl and
metrics.json to --out, and `python -m course.sample --out DIR` samples from either.

`--nproc N` (PyTorch only) trains data-parallel on N processes: the command runs itself
again under torchrun (`course.torch.launch.torchrun_command`: the ranks meet on 127.0.0.1;
OMP_NUM_THREADS=1 unless set), each rank trains on a slice of every batch with DDP, and the
exit status is torchrun's (non-zero if any rank fails: torchrun then stops the others).

    python -m course.train --preset nano --max_iters 100 --nproc 2 --out out/nano-ddp

`--framework tf` trains data-parallel with `--strategy` (a `tf.distribute` strategy, the
same global batches as one process, each replica on an equal slice: batch_size must divide
by N; grad_accum must be 1):

- `--strategy mirrored --nproc N`: MirroredStrategy over N logical CPUs in this one process
  (`course.tf.distributed.mirrored_strategy`); N defaults to 2. Keras `fit` as usual.
- `--strategy multiworker --nproc N`: MultiWorkerMirroredStrategy on N worker processes on
  127.0.0.1, each started as `python -m course.train ...` (less --nproc) with its TF_CONFIG;
  their output goes to OUT/workers/worker-K.log. Worker 0, the chief, alone writes to --out.
  If a worker dies, the others are stopped, the command exits 1 naming it, and the last
  complete checkpoint stays for `--resume`. Given TF_CONFIG and no --nproc, the command is
  one worker of a cluster started elsewhere (how it runs across machines).

`--nproc` with `--framework tf` needs a `--strategy` (an error otherwise: the two differ in
what N counts), and `--strategy` is for `--framework tf` only.

    python -m course.train --framework tf --preset nano --strategy mirrored --nproc 2 --out o
    python -m course.train --framework tf --preset nano --strategy multiworker --nproc 2 --out o

A test hook: COURSE_FAIL_WORKER=K:S in a multiworker run's environment makes worker K exit
(os._exit(3), as a crash would) once it has logged training step S.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from course import runtime
from course.config import PRESETS, GPTConfig, TrainConfig, get_preset
from course.metrics import METRICS, METRICS_LOG

FRAMEWORKS = {"torch": "course.torch.train", "tf": "course.tf.train"}  # --framework: trainer
PACKAGES = {"torch": "torch", "tf": "tensorflow"}  # what each trainer needs installed
STRATEGIES = ("mirrored", "multiworker")  # --strategy (TensorFlow)
MIRRORED_REPLICAS = 2  # --strategy mirrored without --nproc: mirrored_strategy's default
WORKER_LOGS = "workers"  # the folder in --out for the multiworker processes' output
FAIL_WORKER = "COURSE_FAIL_WORKER"  # test hook, "K:S": worker K dies after step S


def _bool_fields() -> set[str]:
    return {
        f.name
        for cls in (GPTConfig, TrainConfig)
        for f in dataclasses.fields(cls)
        if str(f.type) == "bool"
    }


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """["--max-iters", "50", "--compile", "--lr=3e-4"] -> {"max_iters": "50", ...}."""
    overrides: dict[str, str] = {}
    flags = _bool_fields()
    i = 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or len(item) == 2:
            raise ValueError(f"expected a --setting, got {item!r}")
        key, has_value, value = item[2:].partition("=")
        key = key.replace("-", "_")
        if not has_value:
            following = extra[i + 1] if i + 1 < len(extra) else None
            if following is None or following.startswith("--"):
                if key not in flags:
                    raise ValueError(f"--{key} needs a value")
                value = "true"  # a bare flag switches a true/false setting on
            else:
                value, i = following, i + 1
        overrides[key] = value
        i += 1
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=runtime.command_name("course.train"),
        description="Train a GPT. Other --key value pairs override the preset's settings.",
        epilog="presets: " + "; ".join(f"{p.name}: {p.about}" for p in PRESETS.values()),
    )
    parser.add_argument("--framework", choices=sorted(FRAMEWORKS), default="torch")
    parser.add_argument("--preset", default="shakespeare-char-cpu", help="a named recipe")
    parser.add_argument("--out", required=True, help="folder for the checkpoint and metrics")
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="DIR",
        help="fine-tune the run in DIR (with --lora-r R: LoRA adapters only)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="train data-parallel on N processes (PyTorch: DDP under torchrun) or, with "
        "--strategy, N replicas (TensorFlow)",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=None,
        help="TensorFlow only: mirrored = N logical CPUs in this process (N defaults to "
        f"{MIRRORED_REPLICAS}); multiworker = N worker processes on 127.0.0.1 (needs --nproc)",
    )
    return parser


def _without_nproc(argv: list[str]) -> list[str]:
    """argv less its --nproc N (or --nproc=N, or an abbreviation argparse accepted)."""
    out, skip = [], False
    for item in argv:
        key, has_value, _ = item.partition("=")
        if skip:
            skip = False
        elif len(key) > 3 and "--nproc".startswith(key):
            skip = not has_value
        else:
            out.append(item)
    return out


def run_torchrun(nproc: int, argv: list[str]) -> int:
    """Run `python -m course.train *argv` on `nproc` ranks under torchrun; its exit code."""
    from course.torch.launch import torchrun_command

    command = torchrun_command(nproc, "-m", "course.train", *argv)
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")  # N ranks share the cores
    return subprocess.run(command, env=env).returncode


def run_tf_workers(nproc: int, argv: list[str], out: Path) -> int:
    """Run `python -m course.train *argv` as `nproc` MultiWorkerMirroredStrategy workers on
    127.0.0.1 (`course.tf.distributed.run_workers`: TF_CONFIG each, free ports, output in
    out/workers/worker-K.log) and wait for them all. A worker that fails stops the others
    and raises `course.tf.distributed.WorkerError` naming it; so does this process ending."""
    from course.tf.distributed import free_ports, run_workers

    logs_dir = out / WORKER_LOGS
    logs_dir.mkdir(parents=True, exist_ok=True)
    ports = free_ports(nproc)
    print(f"{nproc} workers on 127.0.0.1 ports {ports}; their output: {logs_dir}/worker-*.log",
          file=sys.stderr, flush=True)  # fmt: skip
    command = [sys.executable, "-m", "course.train", *argv]
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # stop the workers, too
    try:
        run_workers([command] * nproc, ports, logs_dir, math.inf, math.inf)  # no deadline
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _worker_index() -> int:
    """This worker's index in TF_CONFIG (0 if it names none)."""
    try:
        return int(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    except (KeyError, TypeError, ValueError):
        return 0


def _failing_callback():
    """The COURSE_FAIL_WORKER test hook ("K:S"): a callback that makes worker K exit
    abruptly once it has logged training step S; None for the other workers."""
    hook = os.environ.get(FAIL_WORKER)
    if not hook:
        return None
    worker, _, step = hook.partition(":")
    if int(worker) != _worker_index():
        return None

    def die(event: dict) -> None:
        if event["event"] == "train" and event["iter"] == int(step):
            print(f"{FAIL_WORKER}={hook}: worker {worker} exits", file=sys.stderr, flush=True)
            os._exit(3)  # as a crash would: no clean-up, no goodbye to the others

    return die


def _check_parallel(parser: argparse.ArgumentParser, args) -> None:
    """Refuse the combinations of --framework, --nproc and --strategy that cannot run."""
    if args.nproc is not None and args.nproc < 1:
        parser.error(f"--nproc must be a number of processes >= 1, got {args.nproc}")
    if args.strategy is not None and args.framework != "tf":
        parser.error(
            f"--strategy is for --framework tf; --framework {args.framework} trains "
            "data-parallel with --nproc N alone (DDP under torchrun)"
        )
    if args.framework == "tf" and args.nproc is not None and args.strategy is None:
        parser.error(
            "--nproc with --framework tf needs --strategy: mirrored (N replicas in this "
            "process) or multiworker (N worker processes)"
        )
    if args.strategy == "multiworker":
        if args.nproc is None and "TF_CONFIG" not in os.environ:
            parser.error("--strategy multiworker needs --nproc N (the number of workers)")
        if args.nproc is not None and "TF_CONFIG" in os.environ:
            parser.error("--nproc given to a worker: TF_CONFIG is set already")


def _report(out: Path, metrics: dict, checkpoint_name: str) -> None:
    metrics = {k: v for k, v in metrics.items() if not k.endswith("_config")}
    checkpoint = f"{out / checkpoint_name}{'/' if (out / checkpoint_name).is_dir() else ''}"
    print(f"wrote {checkpoint}, {out / METRICS_LOG} and {out / METRICS}")
    print(json.dumps(metrics, indent=1))


def _trainer(framework: str) -> tuple[ModuleType | None, str]:
    """The framework's trainer module, or None and why it cannot be imported."""
    module_name, package = FRAMEWORKS[framework], PACKAGES.get(framework)
    if package is not None and importlib.util.find_spec(package) is None:
        return None, f"{package} is not installed: pip install 'twin-gpt[{framework}]'"
    try:
        if importlib.util.find_spec(module_name) is None:
            return None, f"there is no module {module_name}"
    except ModuleNotFoundError as err:  # a package on the way is missing
        return None, str(err)
    return importlib.import_module(module_name), ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    try:
        preset = get_preset(args.preset, parse_overrides(extra))
    except KeyError as err:  # an unknown preset
        parser.error(err.args[0])
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    _check_parallel(parser, args)
    if args.strategy is not None:
        return _train_tf_strategy(parser, args, preset, argv)
    if args.nproc is not None:
        if "WORLD_SIZE" in os.environ:
            parser.error("--nproc given to a process that torchrun started already")
        if importlib.util.find_spec("torch") is None:
            parser.error("--nproc needs torch: pip install 'twin-gpt[torch]'")
        return run_torchrun(args.nproc, _without_nproc(argv))
    trainer, problem = _trainer(args.framework)
    if trainer is None:
        parser.error(f"--framework {args.framework} cannot train here: {problem}")
    try:
        result = trainer.train(
            preset,
            args.out,
            resume=args.resume,
            progress=not args.no_progress,
            init_from=args.init_from,
        )
    except (FileNotFoundError, ValueError, TypeError, NotImplementedError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") != "0":
        return 0  # one report per run: rank 0's
    _report(Path(args.out), result.metrics, trainer.CHECKPOINT)
    return 0


def _train_tf_strategy(parser: argparse.ArgumentParser, args, preset, argv: list[str]) -> int:
    """--framework tf --strategy ...: one process with MirroredStrategy, the launcher of
    the multiworker processes, or (TF_CONFIG set, no --nproc) one of those workers."""
    trainer, problem = _trainer(args.framework)
    if trainer is None:
        parser.error(f"--framework {args.framework} cannot train here: {problem}")
    for problem in _strategy_problems(preset, args):
        parser.error(problem)
    out = Path(args.out)
    if args.strategy == "multiworker" and args.nproc is not None:
        try:
            run_tf_workers(args.nproc, _without_nproc(argv), out)
        except RuntimeError as err:  # WorkerError, or a limit too low to start the workers
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
            return 1
        _report(out, json.loads((out / METRICS).read_text()), trainer.CHECKPOINT)
        return 0
    from course.tf import distributed

    runtime.set_threads(preset.train.threads)  # before TensorFlow runs: then it cannot
    callback = None
    if args.strategy == "mirrored":
        strategy = distributed.mirrored_strategy(args.nproc or MIRRORED_REPLICAS)
    else:  # a worker: TF_CONFIG says which
        strategy, callback = distributed.multiworker_strategy(), _failing_callback()
    try:
        result = trainer.train(
            preset,
            out,
            resume=args.resume,
            progress=not args.no_progress,
            init_from=args.init_from,
            strategy=strategy,
            callback=callback,
        )
    except (FileNotFoundError, ValueError, TypeError, NotImplementedError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    if result.metrics["workers"] == 1 or _worker_index() == 0:
        _report(out, result.metrics, trainer.CHECKPOINT)  # one report per run: the chief's
    return 0


def _strategy_problems(preset, args) -> list[str]:
    """What makes --strategy refuse the preset before any process starts."""
    n = args.nproc or MIRRORED_REPLICAS
    t = preset.train
    problems = []
    if args.nproc is not None or args.strategy == "mirrored":
        if t.batch_size % n:
            problems.append(
                f"batch_size {t.batch_size} must divide by the number of replicas {n} (each "
                f"trains on an equal slice of the batch): use a multiple of {n}"
            )
    if t.grad_accum > 1:
        problems.append(
            f"grad_accum {t.grad_accum} is not available with --strategy: use grad_accum 1 "
            "and a larger batch_size"
        )
    return problems


if __name__ == "__main__":
    raise SystemExit(main())
