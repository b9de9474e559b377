"""Train the shakespeare-char-cpu recipe and compare it with the course's targets.

Targets (the issue's): val loss <= 1.86 after 2000 iterations (nanoGPT's recipe reaches
about 1.88); training speed >= 1.2x nanoGPT's train.py on the same recipe, which runs at
50-70 ms per iteration on the course's 2-core machine (so <= 42 ms/iter against its
best 50 ms); peak RSS <= 1 GB. ms/iter and tokens/s count training steps only (no
evaluation, and not the first step, which holds torch.compile's compilation).

The machine is often shared, so a ms/iter figure alone says little: --classic N also times
N steps of a classic plain loop (the shape of nanoGPT's train.py on a CPU: plain AdamW,
exact GELU, batches stacked from slices, loss.item() every step) against the trainer's
`train_step`, interleaved in windows of 10 steps so both see the same load; the ratio of
their median windows is the speed-up measured here and now.

The val loss the trainer reports uses eval_iters=20 batches (the recipe's): a noisy
figure. The benchmark also measures it over --final-eval-iters batches (default 500,
384,000 tokens) for a steadier one. Needs the corpus (COURSE_DATA_DIR or a download).

    COURSE_DATA_DIR=../shared/data python benchmarks/train_gpt.py
    COURSE_DATA_DIR=../shared/data python benchmarks/train_gpt.py --compile --max-iters 300
    COURSE_DATA_DIR=../shared/data python benchmarks/train_gpt.py --seed 1 --threads 1
    COURSE_DATA_DIR=../shared/data python benchmarks/train_gpt.py --framework both

`--framework tf` trains the Keras GPT with an XLA-compiled step (tf.function with
jit_compile=True); its targets are val loss <= 1.90 and a step time <= 1.25x PyTorch's.
`--framework both` runs each framework in its own process (so each peak RSS is its own)
and prints the ratio of their step times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

VAL_LOSS_TARGET = {"torch": 1.86, "tf": 1.90}
XLA_RATIO_TARGET = 1.25  # Keras/XLA step time / PyTorch step time
NANOGPT_MS_PER_ITER = 50.0  # the fast end of 50-70 ms measured here for nanoGPT's train.py
SPEED_UP_TARGET = 1.2
RSS_TARGET_MB = 1024.0


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def run(framework: str, preset, out: str, final_eval_iters: int) -> dict:
    from course.data import corpus_tokens

    if framework == "torch":
        from course.torch.train import estimate_loss, train
    else:
        from course.tf.train import estimate_loss, train

    result = train(preset, out, progress=True)
    metrics = dict(result.metrics)
    if final_eval_iters:
        train_tokens, val_tokens, _ = corpus_tokens(
            kind=preset.train.tokenizer,
            vocab_size=preset.model.vocab_size,
            val_fraction=preset.train.val_fraction,
            progress=False,
        )
        splits = {"train": train_tokens, "val": val_tokens}
        args = (preset.train.batch_size, preset.model.block_size, final_eval_iters, 12345)
        losses = estimate_loss(result.model, splits, *args)
        metrics["val_loss_many"], metrics["train_loss_many"] = losses["val"], losses["train"]
    return metrics


def compare_with_classic(preset, steps: int) -> tuple[float, float]:
    """Median ms/step of the classic loop and of `train_step`, interleaved: (classic, ours)."""
    import time

    import numpy as np
    import torch

    from course.config import lr_at
    from course.data import get_batch
    from course.torch.model import GPT
    from course.torch.train import configure_optimizer, train_step

    tcfg, block = preset.train, preset.model.block_size
    data = np.random.default_rng(0).integers(0, 65, 1_000_000).astype(np.uint16)
    rng = np.random.default_rng(0)

    classic = GPT(preset.model)
    for block_module in classic.transformer.h:
        block_module.mlp.gelu = torch.nn.GELU()  # exact (erf) GELU, as nanoGPT has it
    matrices = [p for p in classic.parameters() if p.dim() >= 2]
    vectors = [p for p in classic.parameters() if p.dim() < 2]
    # No fused or foreach implementation: nanoGPT asks for fused AdamW on CUDA only.
    classic_optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": tcfg.weight_decay},
         {"params": vectors, "weight_decay": 0.0}],
        lr=tcfg.learning_rate, betas=(tcfg.beta1, tcfg.beta2),
    )  # fmt: skip

    def classic_step(i: int) -> None:
        starts = torch.randint(len(data) - block, (tcfg.batch_size,))
        x = torch.stack([torch.from_numpy(data[j : j + block].astype(np.int64)) for j in starts])
        y = torch.stack([torch.from_numpy(data[j + 1 : j + 1 + block].astype(np.int64))
                         for j in starts])  # fmt: skip
        for group in classic_optimizer.param_groups:
            group["lr"] = lr_at(i, tcfg)
        loss = classic(x, y)[1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(classic.parameters(), tcfg.grad_clip)
        classic_optimizer.step()
        classic_optimizer.zero_grad(set_to_none=True)
        loss.item()  # logged every step

    ours = GPT(preset.model)
    optimizer = configure_optimizer(ours, tcfg)

    def next_batch():
        x, y = get_batch(data, tcfg.batch_size, block, rng)
        return torch.from_numpy(x), torch.from_numpy(y)

    def our_step(i: int) -> None:
        train_step(ours, optimizer, next_batch, lr_at(i, tcfg), tcfg)

    windows: dict[str, list[float]] = {"classic": [], "ours": []}
    for i in range(0, 10 + steps, 10):  # the first window of each is a warm-up
        for name, step in (("classic", classic_step), ("ours", our_step)):
            tick = time.perf_counter()
            for j in range(i, i + 10):
                step(j)
            windows[name].append((time.perf_counter() - tick) * 100)  # ms per step
    return float(np.median(windows["classic"][1:])), float(np.median(windows["ours"][1:]))


def report(metrics: dict) -> None:
    ms, tokens_per_sec = metrics["ms_per_iter"], metrics["tokens_per_sec"]
    speed_up = NANOGPT_MS_PER_ITER / ms
    target = VAL_LOSS_TARGET[metrics["framework"]]
    print(f"\n== {metrics['framework']}: {metrics['preset']}, {metrics['iters']} iterations")
    print(f"val loss      {metrics['val_loss']:.4f} (eval_iters batches)   target <= "
          f"{target}: {met(metrics['val_loss'] <= target)}")  # fmt: skip
    if "val_loss_many" in metrics:
        print(f"val loss      {metrics['val_loss_many']:.4f} (many batches; train "
              f"{metrics['train_loss_many']:.4f})   target: "
              f"{met(metrics['val_loss_many'] <= target)}")  # fmt: skip
    print(f"speed         {ms:.1f} ms/iter, {tokens_per_sec:,.0f} tokens/s, "
          f"{metrics.get('threads', 'default')} threads")  # fmt: skip
    if metrics["framework"] == "torch":  # the speed and memory targets are PyTorch's
        print(f"vs nanoGPT    {speed_up:.2f}x its {NANOGPT_MS_PER_ITER:.0f} ms/iter   target >= "
              f"{SPEED_UP_TARGET}x (<= {NANOGPT_MS_PER_ITER / SPEED_UP_TARGET:.0f} ms/iter): "
              f"{met(speed_up >= SPEED_UP_TARGET)}")  # fmt: skip
        print(f"peak RSS      {metrics['peak_rss_mb']:.0f} MB   target <= {RSS_TARGET_MB:.0f} "
              f"MB: {met(metrics['peak_rss_mb'] <= RSS_TARGET_MB)}")  # fmt: skip
    else:
        print(f"peak RSS      {metrics['peak_rss_mb']:.0f} MB (TensorFlow and Keras loaded)")
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
    parser.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--classic", type=int, default=200, help="steps of a classic loop to "
                        "time against the trainer's, interleaved (torch; 0: skip)")  # fmt: skip
    args = parser.parse_args()

    if args.framework == "both":  # one process each: each peak RSS is its own
        both = {}
        for framework in ("torch", "tf"):
            with tempfile.NamedTemporaryFile(suffix=".json") as record:
                argv = [a for a in sys.argv[1:] if a not in ("both",)]
                argv = [a for a in argv if a != "--framework"]
                command = [sys.executable, __file__, *argv, "--framework", framework,
                           "--json-out", record.name]  # fmt: skip
                subprocess.run(command, check=True)
                both[framework] = json.loads(open(record.name).read())
        ratio = both["tf"]["ms_per_iter"] / both["torch"]["ms_per_iter"]
        print(f"\n== Keras/XLA step time / PyTorch step time: {ratio:.2f} "
              f"({both['tf']['ms_per_iter']:.1f} / {both['torch']['ms_per_iter']:.1f} ms)   "
              f"target <= {XLA_RATIO_TARGET}: {met(ratio <= XLA_RATIO_TARGET)}")  # fmt: skip
        return

    from course.config import get_preset

    overrides = {"compile": args.compile}
    for key in ("max_iters", "seed", "threads"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    preset = get_preset(args.preset, overrides)
    with tempfile.TemporaryDirectory() as scratch:
        out = f"{args.out}/{args.framework}" if args.out else scratch
        metrics = run(args.framework, preset, out, args.final_eval_iters)
    report(metrics)
    if args.classic and args.framework == "torch":
        classic_ms, our_ms = compare_with_classic(preset, args.classic)
        metrics["classic_ms_per_iter"], metrics["interleaved_ms_per_iter"] = classic_ms, our_ms
        print(f"\n== same moment, {args.classic} steps each, interleaved (median of 10-step "
              f"windows)\nclassic loop  {classic_ms:.1f} ms/iter\ntrain_step    {our_ms:.1f} "
              f"ms/iter   speed-up {classic_ms / our_ms:.2f}x   target >= {SPEED_UP_TARGET}x: "
              f"{met(classic_ms / our_ms >= SPEED_UP_TARGET)}")  # fmt: skip
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(metrics, f)


if __name__ == "__main__":
    main()
