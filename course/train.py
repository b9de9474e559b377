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
again under torchrun (`python -m torch.distributed.run --standalone --nproc-per-node N`,
OMP_NUM_THREADS=1 unless set), each rank trains on a slice of every batch with DDP, and the
exit status is torchrun's (non-zero if any rank fails: torchrun then stops the others).

    python -m course.train --preset nano --max_iters 100 --nproc 2 --out out/nano-ddp
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from course import runtime
from course.config import PRESETS, GPTConfig, TrainConfig, get_preset
from course.metrics import METRICS, METRICS_LOG

FRAMEWORKS = {"torch": "course.torch.train", "tf": "course.tf.train"}  # --framework: trainer
PACKAGES = {"torch": "torch", "tf": "tensorflow"}  # what each trainer needs installed


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
        help="train data-parallel on N processes (PyTorch, DDP under torchrun)",
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
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(nproc), "-m", "course.train", *argv,
    ]  # fmt: skip
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")  # N ranks share the cores
    return subprocess.run(command, env=env).returncode


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
    if args.nproc is not None:
        if args.framework != "torch":
            parser.error(
                f"--nproc trains PyTorch only: data-parallel training with --framework "
                f"{args.framework} (a --strategy option) is not available yet"
            )
        if args.nproc < 1:
            parser.error(f"--nproc must be a number of processes >= 1, got {args.nproc}")
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
    metrics = {k: v for k, v in result.metrics.items() if not k.endswith("_config")}
    out = Path(args.out)
    checkpoint = f"{out / trainer.CHECKPOINT}{'/' if (out / trainer.CHECKPOINT).is_dir() else ''}"
    print(f"wrote {checkpoint}, {out / METRICS_LOG} and {out / METRICS}")
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
