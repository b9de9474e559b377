"""How fast is chapter 03's pure-Python BPE? Targets: train vocab 1024 on Tiny Shakespeare in
<= 10 s, and encode it at >= 1 MB/s; tiktoken (Rust) with the same merges is the yardstick.

Training time is one run of `BPETokenizer.train`. Encoding is timed on the whole corpus with
a cold chunk cache (`clear_cache()` first), best of `--repeats` runs, as is tiktoken's
`encode_ordinary` on an `Encoding` built from our merges (`to_tiktoken()`); the two id
lists are compared too. Needs the corpus (COURSE_DATA_DIR or a download) and tiktoken.

    COURSE_DATA_DIR=../shared/data python benchmarks/bpe.py
    COURSE_DATA_DIR=../shared/data python benchmarks/bpe.py --vocab-size 4096
"""

from __future__ import annotations

import argparse
import time

from course.data import load_text
from course.tokenizers import BPETokenizer

TRAIN_TARGET_SECONDS = 10.0
ENCODE_TARGET_MB_PER_S = 1.0


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="encode timings; best is kept")
    args = parser.parse_args()

    text = load_text("tinyshakespeare", progress=False)
    megabytes = len(text.encode("utf-8")) / 1e6
    print(f"Tiny Shakespeare: {megabytes:.2f} MB, vocab_size {args.vocab_size}")

    start = time.perf_counter()
    tokenizer = BPETokenizer.train(text, args.vocab_size)
    train_seconds = time.perf_counter() - start
    print(
        f"train:  {train_seconds:6.2f} s   "
        f"(target <= {TRAIN_TARGET_SECONDS:.0f} s: {met(train_seconds <= TRAIN_TARGET_SECONDS)})"
    )

    def encode_cold():
        tokenizer.clear_cache()
        return tokenizer.encode(text, allowed_special="none")

    ours_seconds = best_time(encode_cold, args.repeats)
    ours_rate = megabytes / ours_seconds
    print(
        f"encode: {ours_rate:6.2f} MB/s (cold cache; "
        f"target >= {ENCODE_TARGET_MB_PER_S:.0f} MB/s: {met(ours_rate >= ENCODE_TARGET_MB_PER_S)})"
    )

    try:
        import tiktoken  # noqa: F401
    except ImportError:
        print("tiktoken: not installed (pip install -e '.[dev]'); no comparison")
        return
    encoding = tokenizer.to_tiktoken()
    tiktoken_seconds = best_time(lambda: encoding.encode_ordinary(text), args.repeats)
    tiktoken_rate = megabytes / tiktoken_seconds
    same = encoding.encode_ordinary(text) == encode_cold()
    print(f"tiktoken: {tiktoken_rate:6.2f} MB/s on the same merges (same ids: {same})")
    print(
        f"ratio:  ours / tiktoken = {ours_rate / tiktoken_rate:.2f} "
        f"(tiktoken is {tiktoken_rate / ours_rate:.1f}x faster)"
    )


if __name__ == "__main__":
    main()
