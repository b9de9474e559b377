"""Train the shakespeare-char-cpu recipe and compare it with the course's targets.

Targets (the issue's): val loss <= 1.86 after 2000 iterations (nanoGPT's recipe reaches
about 1.88); training speed >= 1.2x nanoGPT's train.py on the same recipe, which runs at
50-70 ms per iteration on the course's 2-core machine (so <= 42 ms/iter against its
best 50 ms); peak RSS <= 1 GB. ms/iter and tokens/s count training steps only (no
evaluation, and not the first step, which holds torch.compile's compilation).

The val loss the trainer reports uses eval_iters=20 batches (the recipe's): a noisy
figure. The benchmark also measures it over --final-eval-iters batches (default 500,
384,000 tokens) for a steadier one. Needs the corpus (COURSE_DATA_DIR or a download).

    COURSE_DATA_DIR=../shared/data python benchmarks/train_gpt.py
    COURSE_DATA_DIR=../shared/data python benchmarks/train_gpt.py --compile --max-iters 300
    COURSE_DATA_DIR=../shared/data python benchmarks/train_gpt.py --seed 1 --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile

VAL_LOSS_TARGET = 1.86
NANOGPT_MS_PER_ITER = 50.0  # the fast end of 50-70 ms measured here for nanoGPT's train.py
SPEED_UP_TARGET = 1.2
RSS_TARGET_MB = 1024.0


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def run_torch(preset, out: str, final_eval_iters: int) -> dict:
    from course.runs import shakespeare_splits
    from course.torch.train import estimate_loss, train

    result = train(preset, out, progress=True)
    metrics = dict(result.metrics)
    if final_eval_iters:
        train_tokens, val_tokens, _ = shakespeare_splits(
            preset.train, preset.model.vocab_size, progress=False
        )
        splits = {"train": train_tokens, "val": val_tokens}
        args = (preset.train.batch_size, preset.model.block_size, final_eval_iters, 12345)
        losses = estimate_loss(result.model, splits, *args)
        metrics["val_loss_many"], metrics["train_loss_many"] = losses["val"], losses["train"]
    return metrics


def run_tf(preset, out: str, final_eval_iters: int) -> dict:
    if importlib.util.find_spec("course.tf.train") is None:
        raise SystemExit("--framework tf: the Keras trainer arrives with chapter 06")
    from course.tf.train import train

    return dict(train(preset, out, progress=True).metrics)


def report(metrics: dict) -> None:
    ms, tokens_per_sec = metrics["ms_per_iter"], metrics["tokens_per_sec"]
    speed_up = NANOGPT_MS_PER_ITER / ms
    print(f"\n== {metrics['framework']}: {metrics['preset']}, {metrics['iters']} iterations")
    print(f"val loss      {metrics['val_loss']:.4f} (eval_iters batches)   target <= "
          f"{VAL_LOSS_TARGET}: {met(metrics['val_loss'] <= VAL_LOSS_TARGET)}")  # fmt: skip
    if "val_loss_many" in metrics:
        print(f"val loss      {metrics['val_loss_many']:.4f} (many batches; train "
              f"{metrics['train_loss_many']:.4f})   target: "
              f"{met(metrics['val_loss_many'] <= VAL_LOSS_TARGET)}")  # fmt: skip
    print(f"speed         {ms:.1f} ms/iter, {tokens_per_sec:,.0f} tokens/s, "
          f"{metrics['threads']} threads")  # fmt: skip
    print(f"vs nanoGPT    {speed_up:.2f}x its {NANOGPT_MS_PER_ITER:.0f} ms/iter   target >= "
          f"{SPEED_UP_TARGET}x (<= {NANOGPT_MS_PER_ITER / SPEED_UP_TARGET:.0f} ms/iter): "
          f"{met(speed_up >= SPEED_UP_TARGET)}")  # fmt: skip
    print(f"peak RSS      {metrics['peak_rss_mb']:.0f} MB   target <= {RSS_TARGET_MB:.0f} MB: "
          f"{met(metrics['peak_rss_mb'] <= RSS_TARGET_MB)}")  # fmt: skip
    print(f"first step    {metrics['first_iter_seconds']:.2f} s (holds the compile time with "
          f"--compile); whole run {metrics['seconds']:.0f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shakespeare-char-cpu")
    parser.add_argument("--framework", choices=("torch", "tf", "both"), default="torch")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--max-iters", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="0 = one per usable core")
    parser.add_argument("--final-eval-iters", type=int, default=500)
    parser.add_argument("--out", default=None, help="keep the run here (default: a temp dir)")
    args = parser.parse_args()

    from course.config import get_preset

    overrides = {"compile": args.compile}
    for key in ("max_iters", "seed", "threads"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    preset = get_preset(args.preset, overrides)
    runners = {"torch": run_torch, "tf": run_tf}
    frameworks = ("torch", "tf") if args.framework == "both" else (args.framework,)
    for framework in frameworks:
        with tempfile.TemporaryDirectory() as scratch:
            out = f"{args.out}/{framework}" if args.out else scratch
            report(runners[framework](preset, out, args.final_eval_iters))


if __name__ == "__main__":
    main()
