"""How much slower is chapter 02's numpy autograd engine than PyTorch eager? Target: <= 3x.

One training step of a 784 -> 128 -> 10 MLP (ReLU, cross-entropy, plain SGD) on a batch of
256, in float32: forward, backward and update. Both sides start from the same weights, see
the same batches and take turns; the figure is the ratio of median step times after a
warm-up. Run it on a quiet machine: BLAS threads competing with another job distort both.

    python benchmarks/autograd_mlp.py              # 200 timed steps each
    python benchmarks/autograd_mlp.py --steps 50
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/autograd_mlp.py   # one core each
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

TARGET = 3.0
SIZES, BATCH, LR = (784, 128, 10), 256, 0.1


def make_problem(seed: int = 0, n_batches: int = 8):
    """Initial weights (in nn.Linear's default range) and a few batches of random inputs."""
    rng = np.random.default_rng(seed)
    (n_in, n_hidden, n_out) = SIZES
    weights = [
        rng.uniform(-1, 1, (n_in, n_hidden)) / np.sqrt(n_in),  # W1 (784, 128)
        np.zeros(n_hidden),  # b1 (128,)
        rng.uniform(-1, 1, (n_hidden, n_out)) / np.sqrt(n_hidden),  # W2 (128, 10)
        np.zeros(n_out),  # b2 (10,)
    ]
    batches = [
        (rng.standard_normal((BATCH, n_in)), rng.integers(0, n_out, BATCH))
        for _ in range(n_batches)
    ]
    weights = [w.astype(np.float32) for w in weights]
    batches = [(x.astype(np.float32), y) for x, y in batches]
    return weights, batches


def time_steps(steps_by_name: dict, batches, warmup: int, steps: int):
    """{name: (median seconds per step, first step's loss)}.

    The engines take turns, one step each, so that a change in the machine's load (it may be
    shared) slows both alike instead of skewing the ratio.
    """
    first_loss = {name: step(*batches[0]) for name, step in steps_by_name.items()}
    for i in range(1, warmup):
        for step in steps_by_name.values():
            step(*batches[i % len(batches)])
    times = {name: [] for name in steps_by_name}
    for i in range(steps):
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            step(*batches[i % len(batches)])
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), first_loss[name]) for name in steps_by_name}


def engine_step_fn(weights):
    from course import autograd as ag

    params = [ag.tensor(w, requires_grad=True) for w in weights]
    w1, b1, w2, b2 = params
    optimizer = ag.SGD(params, lr=LR)

    def step(x, y):
        hidden = (ag.Tensor(x) @ w1 + b1).relu()  # (256, 128)
        loss = ag.cross_entropy(hidden @ w2 + b2, y)  # logits (256, 10)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def torch_step_fn(weights):
    import torch

    params = [torch.tensor(w, requires_grad=True) for w in weights]
    w1, b1, w2, b2 = params
    optimizer = torch.optim.SGD(params, lr=LR)

    def step(x, y):
        hidden = torch.relu(torch.from_numpy(x) @ w1 + b1)
        loss = torch.nn.functional.cross_entropy(hidden @ w2 + b2, torch.from_numpy(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per engine")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (>= 1)")
    args = parser.parse_args(argv)

    import torch

    weights, batches = make_problem()
    steps = {"engine": engine_step_fn(weights), "torch": torch_step_fn(weights)}
    results = time_steps(steps, batches, args.warmup, args.steps)
    (engine_s, engine_loss), (torch_s, torch_loss) = results["engine"], results["torch"]

    ratio = engine_s / torch_s
    print(f"MLP {'->'.join(map(str, SIZES))}, batch {BATCH}, float32, ReLU, cross-entropy, SGD")
    print(f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"course.autograd  {engine_s * 1e3:8.3f} ms/step (median of {args.steps})")
    print(f"torch eager      {torch_s * 1e3:8.3f} ms/step (median of {args.steps})")
    # Same weights, same batch: the first losses agree to float32 rounding (a sanity check).
    print(f"first step's loss: course.autograd {engine_loss:.6f}, torch {torch_loss:.6f}")
    print(f"ratio {ratio:.2f}x; target <= {TARGET:g}x: {'met' if ratio <= TARGET else 'not met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
