"""Sample text from a trained GPT's checkpoint.

    python -m course.sample --out out/shakespeare --prompt "ROMEO:" --max-new-tokens 300
    python -m course.sample --out out/shakespeare --temperature 0 --no-cache
    python -m course.sample --out out/keras      # a run of `course.train --framework tf`
    python -m course.sample --out out/nano --adapter out/nano-lora/adapter.safetensors

The framework is the one that wrote --out: the checkpoint file of `course.torch.train`
(ckpt.pt), else the checkpoint folder of `course.tf.train` (ckpt/) when TensorFlow is
installed; both names are in `course.metrics`, so finding the framework imports none.

Prints the prompt followed by the sampled text (and nothing else) on stdout, so the
output can be piped; what was loaded is reported on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from course import runtime
from course.metrics import KERAS_CHECKPOINT, TORCH_CHECKPOINT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=runtime.command_name("course.sample"),
        description="Sample text from the checkpoint in --out (PyTorch's or the Keras one).",
    )
    parser.add_argument("--out", required=True, help="the folder `python -m course.train` wrote")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = always the likeliest")
    parser.add_argument("--top-k", type=int, default=None, help="keep the k likeliest tokens")
    parser.add_argument("--top-p", type=float, default=None, help="keep the top-p of the mass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cache", action="store_true", help="no KV cache (slower, same text)")
    parser.add_argument(
        "--adapter",
        default=None,
        metavar="FILE",
        help="a LoRA adapter (adapter.safetensors) for the model in --out, added before sampling",
    )
    return parser


def _framework_of(out: Path):
    """(load_model, generate, ids -> model input) of the framework whose checkpoint is in
    `out`. TensorFlow is imported only when `out` holds a folder that may be its checkpoint
    and no PyTorch checkpoint; otherwise PyTorch's loader reports what is missing."""
    import numpy as np

    if (
        not (out / TORCH_CHECKPOINT).exists()
        and (out / KERAS_CHECKPOINT).is_dir()
        and importlib.util.find_spec("tensorflow") is not None
    ):
        keras_train = importlib.import_module("course.tf.train")
        from course.tf.sampling import generate

        return keras_train.load_model, generate, lambda ids: np.asarray(ids, dtype=np.int64)

    import torch

    from course.torch.sampling import generate

    torch_train = importlib.import_module("course.torch.train")
    return torch_train.load_model, generate, lambda ids: torch.tensor(ids, dtype=torch.long)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if not args.prompt:
        parser.error("--prompt must not be empty: the model needs at least one token")

    load_model, generate, as_ids = _framework_of(Path(args.out))
    try:
        model, tokenizer = load_model(args.out)
    except (FileNotFoundError, ValueError) as err:
        parser.error(f"cannot load a model from --out {args.out}: {err}")
    if tokenizer is None:
        parser.error(f"the checkpoint in {args.out} has no tokenizer: its text cannot be decoded")
    if args.adapter is not None:
        keras = type(model).__module__.startswith("course.tf")
        lora = importlib.import_module("course.tf.lora" if keras else "course.torch.lora")
        try:
            lora.load_adapter(model, args.adapter)
        except (FileNotFoundError, ValueError, TypeError) as err:
            parser.error(f"cannot add --adapter {args.adapter} to the model in {args.out}: {err}")
    try:
        prompt = tokenizer.encode(args.prompt)
    except ValueError as err:
        parser.error(f"--prompt {args.prompt!r}: {err}")
    print(f"loaded {args.out} ({model.num_params():,} parameters)", file=sys.stderr)
    idx = as_ids([prompt])  # (1, T)
    try:
        out = generate(
            model,
            idx,
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            use_cache=not args.no_cache,
            seed=args.seed,
        )
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    print(tokenizer.decode([int(i) for i in out[0]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
