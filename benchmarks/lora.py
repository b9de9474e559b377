"""Compare LoRA (r=8, alpha=16) with full fine-tuning, in PyTorch and in Keras.

The new domain is Tiny Shakespeare in capitals (`course.finetune.upper_case`): the same plays,
every character in the base model's vocabulary, the same text on every machine. Each framework
fine-tunes one base model (shakespeare-char-cpu, 2000 steps; --base DIR, or trained here in a
temporary folder) for --iters steps on the upper-case train split twice: every weight
(lr FULL_LR) and LoRA adapters only (lr LORA_LR). The Keras runs start from the PyTorch base's
weights (`course.tf.convert.torch_to_keras`).

Targets, per framework:
- LoRA trains <= 10% of the adapted model's numbers (all of them: positions and LoRA included);
- LoRA's val loss on the new domain is within 5% of full fine-tuning's (ratio <= 1.05);
- with its adapters off (`disable_lora`) the LoRA model is the base model: its Shakespeare val
  loss == the base's over the same batches, and its frozen weights == the base's, bit for bit;
- the adapter file is <= 5% of the full fine-tune's checkpoint (weights, optimizer moments and
  run state: what that run has to keep); its ratio to the weights alone is printed too.

Every val loss in the table is one evaluation: `estimate_loss` over the same --eval-iters
batches of 32 windows (seed 0) of the upper-case val split ("new") and of Shakespeare's ("old").
Needs the corpus (COURSE_DATA_DIR or a download).

    COURSE_DATA_DIR=../shared/data python benchmarks/lora.py
    COURSE_DATA_DIR=../shared/data python benchmarks/lora.py --quick
    COURSE_DATA_DIR=../shared/data python benchmarks/lora.py --base out/shakespeare --framework tf
    COURSE_DATA_DIR=../shared/data python benchmarks/lora.py --iters 600 --json lora.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from run_record import RunRecord  # beside this script

PRESET = "shakespeare-char-cpu"
# Peak learning rates chosen by a sweep at 300 steps (full fine-tuning 3e-4, 1e-3, 2e-3; LoRA
# 3e-3, 1e-2, 2e-2): the best new-domain val loss of each.
FULL_LR = 1e-3
LORA_LR = 1e-2
LORA_R, LORA_ALPHA = 8, 16
EVAL_BATCH = 32  # windows per evaluation batch
SHARE_TARGET = 0.10  # LoRA's trained numbers / all numbers
LOSS_RATIO_TARGET = 1.05  # LoRA's new-domain val loss / full fine-tuning's
ADAPTER_SHARE_TARGET = 0.05  # adapter file / full fine-tune's checkpoint


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def fine_tune_preset(iters: int, lr: float, lora: bool, eval_iters: int | None):
    from course.config import get_preset

    overrides = {"max_iters": iters, "lr_decay_iters": iters, "warmup_iters": iters // 10,
                 "learning_rate": lr, "min_lr": lr / 10, "eval_interval": iters}  # fmt: skip
    if lora:
        overrides |= {"lora_r": LORA_R, "lora_alpha": LORA_ALPHA}
    if eval_iters is not None:  # the trainer's own evaluations (--quick: a few batches)
        overrides["eval_iters"] = eval_iters
    return get_preset(PRESET, overrides)


def torch_side(base_dir: Path, base_state: dict, data: dict) -> SimpleNamespace:
    from course.torch import lora
    from course.torch import train as trainer

    def fine_tune(preset, out):
        return trainer.train(preset, out, data=data["new"], tokenizer=data["tok"],
                             init_from=base_dir, progress=True)  # fmt: skip

    return SimpleNamespace(
        lora=lora, estimate_loss=trainer.estimate_loss, fine_tune=fine_tune,
        base_model=lambda: trainer.load_model(base_dir)[0],
        checkpoint=lambda out: out / trainer.CHECKPOINT,
        adapted_weights=lambda model: {k: v.numpy() for k, v in model.state_dict().items()},
    )  # fmt: skip


def keras_side(base_dir: Path, base_state: dict, data: dict) -> SimpleNamespace:
    from course.config import GPTConfig
    from course.tf import GPT, lora, torch_to_keras
    from course.tf import train as trainer
    from course.tf.convert import keras_to_torch

    config = GPTConfig.from_dict(data["model_config"])

    def base_model():
        model = GPT(config)
        model(np.zeros((1, config.block_size), dtype="int32"))  # built
        return torch_to_keras(base_state, model)

    def fine_tune(preset, out):
        return trainer.train(preset, out, data=data["new"], tokenizer=data["tok"],
                             model=base_model(), progress=True)  # fmt: skip

    return SimpleNamespace(
        lora=lora, estimate_loss=trainer.estimate_loss, fine_tune=fine_tune,
        base_model=base_model, checkpoint=lambda out: out / trainer.CHECKPOINT,
        adapted_weights=keras_to_torch,
    )  # fmt: skip


def same_weights(adapted: dict, base: dict) -> bool:
    """Whether the non-LoRA weights of an adapted state dict (PyTorch names) are `base`'s."""
    from course.adapters import base_weights

    plain = base_weights(adapted)
    return plain.keys() == base.keys() and all(np.array_equal(plain[k], base[k]) for k in base)


def run_framework(name: str, side, args, data: dict, base_state: dict, scratch: Path):
    """(rows, checks) of one framework: the base, full fine-tuning and LoRA."""
    from course.adapters import ADAPTER_FILE
    from course.finetune import comparison_row, file_bytes

    splits = {"new": data["new"][1], "old": data["old"][1]}  # the val splits

    def evaluate(model) -> dict:  # the same batches for every model
        block = data["model_config"]["block_size"]
        return side.estimate_loss(model, splits, EVAL_BATCH, block, args.eval_iters, seed=0)

    base = side.base_model()
    base_losses = evaluate(base)
    base_row = comparison_row(
        f"{name} base", trainable=0, total=base.num_params(non_embedding=False),
        saved_bytes=data["weights_bytes"], optimizer_state_bytes=0, ms_per_iter=0.0,
        new_val_loss=base_losses["new"], old_val_loss=base_losses["old"],
    )  # fmt: skip
    rows, results = [base_row | {"ms_per_iter": None}], {}
    for run, lr, lora in (("full", FULL_LR, False), ("lora", LORA_LR, True)):
        out = scratch / name / run
        preset = fine_tune_preset(args.iters, lr, lora, 4 if args.quick else None)
        result = side.fine_tune(preset, out)
        losses = evaluate(result.model)
        saved = out / ADAPTER_FILE if lora else side.checkpoint(out)
        rows.append(comparison_row(
            f"{name} {run}", trainable=result.metrics["trainable_params"],
            # metrics["n_params"] leaves out the positions (wpe): count every number here
            total=result.model.num_params(non_embedding=False), saved_bytes=file_bytes(saved),
            optimizer_state_bytes=side.lora.optimizer_state_bytes(result.optimizer),
            ms_per_iter=result.metrics["ms_per_iter"], new_val_loss=losses["new"],
            old_val_loss=losses["old"],
        ))  # fmt: skip
        results[run] = (result, rows[-1], file_bytes(saved))
    (full, full_row, full_bytes), (lora_run, lora_row, adapter_bytes) = results.values()
    model = lora_run.model
    with side.lora.disable_lora(model):
        off = evaluate(model)
    total = model.num_params(non_embedding=False)
    ratio = lora_row["new_val_loss"] / full_row["new_val_loss"]
    frozen_same = same_weights(side.adapted_weights(model), base_state)
    checks = {
        "trainable_share": {"value": lora_row["trainable_share"], "target": SHARE_TARGET,
                            "met": lora_row["trainable_share"] <= SHARE_TARGET,
                            "trainable": lora_row["trainable"], "total": total},
        "new_loss_ratio": {"value": ratio, "target": LOSS_RATIO_TARGET,
                           "met": ratio <= LOSS_RATIO_TARGET},
        "adapters_off": {"old_val_loss": off["old"], "base_old_val_loss": base_losses["old"],
                         "frozen_weights_equal": frozen_same,
                         "met": off["old"] == base_losses["old"] and frozen_same},
        "adapter_share": {"value": adapter_bytes / full_bytes, "target": ADAPTER_SHARE_TARGET,
                          "met": adapter_bytes / full_bytes <= ADAPTER_SHARE_TARGET,
                          "adapter_bytes": adapter_bytes, "checkpoint_bytes": full_bytes,
                          "of_weights_alone": adapter_bytes / data["weights_bytes"]},
    }  # fmt: skip
    return rows, checks


def report(name: str, rows: list, checks: dict, weights_bytes: int) -> None:
    from course.finetune import format_table

    label = {"torch": "PyTorch", "tf": "Keras"}[name]
    print(f"\n== {label}: LoRA r={LORA_R}, alpha={LORA_ALPHA} against full fine-tuning\n")
    print(format_table(rows))
    c = checks["trainable_share"]
    print(f"\nLoRA trains     {c['trainable']:,} of {c['total']:,} numbers ({c['value']:.1%})   "
          f"target <= {SHARE_TARGET:.0%}: {met(c['met'])}")  # fmt: skip
    c, full, lora = checks["new_loss_ratio"], rows[1], rows[2]
    print(f"new-domain loss LoRA {lora['new_val_loss']:.4f} / full {full['new_val_loss']:.4f} = "
          f"{c['value']:.3f}   target <= {LOSS_RATIO_TARGET}: {met(c['met'])}")  # fmt: skip
    c = checks["adapters_off"]
    same = "==" if c["old_val_loss"] == c["base_old_val_loss"] else "!="
    print(f"adapters off    Shakespeare val loss {c['old_val_loss']!r} {same} base "
          f"{c['base_old_val_loss']!r}; frozen weights "
          f"{'==' if c['frozen_weights_equal'] else '!='} base's   target ==: "
          f"{met(c['met'])}")  # fmt: skip
    c = checks["adapter_share"]
    print(f"adapter file    {c['adapter_bytes']:,} bytes = {c['value']:.1%} of the full "
          f"fine-tune's checkpoint ({c['checkpoint_bytes']:,} bytes)   target <= "
          f"{ADAPTER_SHARE_TARGET:.0%}: {met(c['met'])}\n                "
          f"= {c['of_weights_alone']:.1%} of the weights alone ({weights_bytes:,} bytes, "
          f"safetensors, float32)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="a PyTorch run folder (ckpt.pt) of "
                        f"{PRESET}; default: train one in a temporary folder")  # fmt: skip
    parser.add_argument("--framework", choices=("torch", "tf", "both"), default="both")
    parser.add_argument("--iters", type=int, default=None, help="fine-tuning steps (300)")
    parser.add_argument("--eval-iters", type=int, default=None, help="eval batches (100)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: base 60 steps, --iters 20, --eval-iters 4")  # fmt: skip
    parser.add_argument("--json", default=None, help="write the rows and checks to this file")
    args = parser.parse_args()
    args.iters = args.iters or (20 if args.quick else 300)
    args.eval_iters = args.eval_iters or (4 if args.quick else 100)
    run = RunRecord()

    from safetensors.numpy import save_file

    from course.config import get_preset
    from course.data import load_text
    from course.finetune import domain_tokens, file_bytes, upper_case
    from course.runtime import set_threads
    from course.tokenizers import CharTokenizer
    from course.torch.train import load_model, train

    set_threads(0)  # the trainers' policy, before any evaluation
    text = load_text("tinyshakespeare")
    tok = CharTokenizer.from_text(text)
    data = {"tok": tok, "old": domain_tokens(text, tok),
            "new": domain_tokens(upper_case(text, tok), tok)}  # fmt: skip
    frameworks = ("torch", "tf") if args.framework == "both" else (args.framework,)
    all_rows, all_checks = {}, {}
    with tempfile.TemporaryDirectory(prefix="lora-benchmark-") as tmp:
        scratch = Path(tmp)
        base_dir = Path(args.base) if args.base else scratch / "base"
        if args.base is None:
            quick = {"max_iters": 60, "warmup_iters": 6, "eval_iters": 4} if args.quick else {}
            train(get_preset(PRESET, quick), base_dir, data=data["old"], tokenizer=tok)
        base, base_tok = load_model(base_dir)
        if getattr(base_tok, "chars", None) != tok.chars:
            raise ValueError(f"the base in {base_dir} has another vocabulary than the corpus's")
        base_state = {k: v.detach().numpy().copy() for k, v in base.state_dict().items()}
        data["model_config"] = base.config.to_dict()
        weights = {k: v for k, v in base_state.items() if k != "lm_head.weight"}  # tied: wte
        save_file(weights, str(scratch / "weights.safetensors"))
        data["weights_bytes"] = file_bytes(scratch / "weights.safetensors")
        for name in frameworks:
            side = (torch_side if name == "torch" else keras_side)(base_dir, base_state, data)
            all_rows[name], all_checks[name] = run_framework(
                name, side, args, data, base_state, scratch
            )
    for name in frameworks:
        report(name, all_rows[name], all_checks[name], data["weights_bytes"])
    finished = run.finish()
    if args.json:
        record = {"rows": all_rows, "checks": all_checks, "iters": args.iters,
                  "eval_iters": args.eval_iters, "base": args.base,
                  "full_lr": FULL_LR, "lora_lr": LORA_LR, **finished}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
