"""Greedy generation of 256 new tokens with and without the KV cache, on the CPU.

    .venv/bin/python benchmarks/kv_cache.py [--preset NAME ...] [--new-tokens 256]

For each preset (default: shakespeare-char-cpu, the 0.8 M model chapter 05 trains, and
shakespeare-char, nanoGPT's 10.7 M character model), a model of that shape with a
block_size that fits prompt + new tokens (past block_size the window slides and no cache
can help, see course.torch.sampling). Weights are random: speed does not depend on them.
Prints tokens/s both ways, the speed-up (target >= 5x) and whether both produced the same
tokens. The smaller the model, the more of each step is fixed per-op overhead that the
cache cannot remove, so the speed-up grows with the model.
"""

from __future__ import annotations

import argparse
import time


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=["shakespeare-char-cpu", "shakespeare-char"])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: one per usable core")
    args = parser.parse_args()

    import torch

    from course.runtime import report

    if args.threads:
        torch.set_num_threads(args.threads)
    print(report())
    for preset in args.preset:
        measure(preset, args)


def measure(preset: str, args) -> None:
    import torch

    from course.config import get_preset
    from course.torch import GPT, generate

    block = args.prompt_tokens + args.new_tokens
    config = get_preset(preset).model.replace(block_size=block)
    torch.manual_seed(0)
    model = GPT(config).eval()
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt_tokens))

    def run(use_cache: bool) -> torch.Tensor:
        return generate(model, prompt, args.new_tokens, temperature=0, use_cache=use_cache)

    same = torch.equal(run(True), run(False))  # also warms both paths up
    with_cache = best_of(args.repeats, lambda: run(True))
    without = best_of(args.repeats, lambda: run(False))
    n = args.new_tokens
    print(
        f"\nmodel: {preset} shape, block_size {block}, "
        f"{model.num_params() / 1e6:.2f} M parameters, {torch.get_num_threads()} threads"
    )
    print(f"without cache: {without * 1e3:8.1f} ms  {n / without:8.0f} tokens/s")
    print(f"with cache:    {with_cache * 1e3:8.1f} ms  {n / with_cache:8.0f} tokens/s")
    speedup = without / with_cache
    verdict = "meets" if speedup >= 5 else "misses"
    print(f"speed-up: {speedup:.1f}x ({verdict} the >= 5x target); same tokens: {same}")


if __name__ == "__main__":
    main()
