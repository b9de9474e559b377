# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Twin GPT · 00 Setup
# Run this cell first. On Colab it installs the course library with this chapter's extras,
# keeping Colab's own PyTorch and TensorFlow; on your machine or on Binder the library is
# already there and nothing is installed.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("course") is None:
    extras = {"torch": "torch", "tf": "tensorflow"}  # extra: the module it installs
    missing = ",".join(e for e, module in extras.items() if not importlib.util.find_spec(module))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         f"twin-gpt[{missing}] @ git+https://github.com/twin-gpt/twin-gpt@v0.1.0"],
        check=True,
    )
from course import runtime

print(runtime.versions_line())

# %% tags=["parameters"] nbgrader={"grade": false, "grade_id": "parameters", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Parameters (this cell is tagged `parameters`). COURSE_SMOKE=1 runs everything small and fast:
# the test suite and the graders use it.
SMOKE = runtime.smoke_mode()
TIMING_SHAPE = (64, 128) if SMOKE else (512, 1024)  # logits for the timing section
TIMING_REPEATS = 3 if SMOKE else 50

# %% [markdown]
# # 00 · Setup: one GPT, built twice
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/twin-gpt/twin-gpt/blob/v0.1.0/notebooks/00_setup/00_setup.ipynb)
#
# <!-- chapter card: written by `python -m autograde release` from solutions/chapters.toml -->
# **Time:** about 40 min to work through; the code runs in at most 2 min on 2 CPU cores.
#
# **You will be able to**
#
# - run a chapter locally, on Binder or on Colab, and switch between its full and smoke
#   sizes
# - read an exercise as explanation, solution cell and test cell, and use a test's message
#   to fix an answer
# - write a numerically stable softmax in numpy, PyTorch and TensorFlow, along any axis
# - time one operation in several frameworks and read the figures with care on a shared
#   machine
#
# **Before you start:** no earlier chapter. From outside the course: Python (functions,
# lists, dicts), numpy arrays and Jupyter basics.
# <!-- end of the chapter card -->
#
# "PyTorch or TensorFlow for LLMs?" is usually argued with opinions. In this course you
# settle it with measurements, on a model you wrote yourself: you build one small GPT
# twice, once in **PyTorch** and once in **TensorFlow / Keras 3**, from tensors and
# autograd up to a GPT trained in both. Wherever both frameworks do the same job, the
# chapters put them side by side and time them. Chapters on Triton kernels, LoRA
# fine-tuning, distributed training and ONNX/TFLite export are planned, not written yet.
#
# | chapter | what you build |
# |---|---|
# | 00 setup | this notebook: environment check, how exercises and grading work |
# | 01 tensors | the same tensor ideas in both frameworks; eager vs graph |
# | 02 autograd | a reverse-mode autograd engine from scratch |
# | 03 tokenizers | characters, bytes and BPE; identical data pipelines in both frameworks |
# | 04–05 attention, GPT | attention, the Transformer block and a GPT in PyTorch |
# | 06 GPT in Keras | the same GPT in Keras 3, weights moving both ways |
# | planned | Triton attention kernels, LoRA, distributed training, ONNX/TFLite export |
#
# Behind the notebooks stands the `course` library: a tested reference implementation of
# everything the chapters build. If an exercise goes wrong, the next chapter still starts
# on solid ground, because it imports the reference (`from course.torch import GPT`)
# instead of your earlier code.

# %% [markdown]
# ## How to run the course
#
# - **On your machine** (Linux or macOS, Python ≥ 3.11): clone the repository and run
#   `make lab`. It creates `.venv`, installs everything once, and opens JupyterLab here.
#   `make test` runs the whole test suite.
# - **On Binder**: the *launch binder* badge in the README builds the environment and
#   opens JupyterLab (2 GB of memory, 1–2 CPUs: every notebook is sized to fit).
# - **On Colab**: each notebook's *Open in Colab* badge opens it; the first cell installs
#   the course library. Colab's own PyTorch and TensorFlow are kept.
#
# Run the cells from the top. The second cell holds the *parameters*: with
# `COURSE_SMOKE=1` in the environment every chapter runs at a tiny size (that is how the
# tests run it); without it you get the real sizes.

# %% [markdown]
# ## Environment check
#
# Which versions, which device, how much memory? Both frameworks should import in the
# same process: chapter 06 moves weights from one to the other.

# %%
import numpy as np
import torch

# TensorFlow and Triton (behind torch.compile, used from chapter 01 on) each bundle LLVM:
# loaded TensorFlow-first, the kernel dies when Triton loads. This helper gets the order right.
tf = runtime.import_tensorflow()

print(runtime.report(with_device=True))

# %%
import psutil

rss_mb = psutil.Process().memory_info().rss / 2**20
print(f"this kernel uses {rss_mb:.0f} MB with numpy, PyTorch and TensorFlow imported")
print(f"available memory: {runtime.free_memory_gb():.1f} GB")
if runtime.free_memory_gb() < 1.0:
    print("Less than 1 GB free: close other notebooks (Kernel > Shut Down) before going on.")

# %% [markdown]
# ## How exercises and grading work
#
# An exercise is three cells:
#
# 1. an explanation (like this one);
# 2. a **solution cell** where you write code in place of
#    `raise NotImplementedError()`;
# 3. a **test cell** (read-only). Run it after your solution: if it finishes silently,
#    your answer passed; if not, its error message says what is wrong.
#
# Graders run extra *hidden* tests in each test cell (other shapes, extreme values), so
# aim for a solution that is right, not one that satisfies the visible asserts.
# Instructors collect notebooks and grade them with `python -m autograde grade`
# (nbgrader underneath); you get a feedback page per notebook.
#
# The test cells use small helpers from `course.checks`: `assert_close` compares arrays
# from any framework and reports where they differ.

# %%
from course import checks

# %% [markdown]
# ## Warm-up 1 · softmax in numpy
#
# Attention turns scores into weights with the softmax, along the last axis:
#
# $$\mathrm{softmax}(x)_i = \frac{e^{x_i}}{\sum_j e^{x_j}}$$
#
# Computed as written, $e^{1000}$ overflows to infinity and the result is `nan`.
# Subtracting the row's maximum first changes nothing mathematically (the factor
# $e^{-m}$ cancels) but keeps every exponent ≤ 0. Write `softmax_numpy(x, axis=-1)`:
# stable, along any `axis`, keeping the input's dtype.

# %% nbgrader={"grade": false, "grade_id": "softmax_numpy", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax_numpy(x, axis=-1):
    """Softmax of the array ``x`` along ``axis``, stable for large values."""
    ### BEGIN SOLUTION
    x = np.asarray(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_softmax_numpy", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""softmax_numpy: matches the formula, rows sum to one, large logits stay finite."""
rng = np.random.default_rng(0)
x = rng.normal(size=(4, 7)).astype(np.float32)
probs = softmax_numpy(x)
checks.assert_shape(probs, (4, 7), "softmax_numpy(x)")
checks.assert_close(probs.sum(axis=-1), np.ones(4), atol=1e-5, name="the sum of each row")
direct = np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)  # fine for small values
checks.assert_close(probs, direct, atol=1e-6, name="softmax_numpy(x)")
checks.assert_dtype(probs, "float32", "softmax_numpy of float32 input")
checks.assert_close(softmax_numpy(x, axis=0).sum(axis=0), np.ones(7), atol=1e-5,
                    name="softmax_numpy(x, axis=0): the sum of each column")
large = np.array([[800.0, 801.0], [-801.0, -800.0]])
checks.assert_close(softmax_numpy(large), np.array([[0.268941, 0.731059]] * 2), atol=1e-5,
                    name="softmax_numpy of logits near ±800 (subtract each row's maximum)")
### BEGIN HIDDEN TESTS
big = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1002.0, -1001.0]])
small = np.array([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
expected = np.exp(small) / np.exp(small).sum(axis=-1, keepdims=True)
checks.assert_close(softmax_numpy(big), expected, name="softmax_numpy of logits near ±1000")
x3 = rng.normal(size=(2, 3, 5))
for axis in (0, 1):
    direct = np.exp(x3) / np.exp(x3).sum(axis=axis, keepdims=True)
    checks.assert_close(softmax_numpy(x3, axis=axis), direct, name=f"softmax_numpy(x, {axis=})")
checks.assert_dtype(softmax_numpy(x), "float32", "softmax_numpy of float32 input")
### END HIDDEN TESTS

# %% [markdown]
# ## Warm-up 2 · the same softmax in PyTorch
#
# Now with torch operations (`amax` or `max`, `exp`, `sum`, and `keepdim=True`), along
# dimension `dim`. Don't call `torch.softmax`: the test compares against it. Because you
# use torch operations, autograd can differentiate your function for free; the test
# checks that gradients flow too.

# %% nbgrader={"grade": false, "grade_id": "softmax_torch", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax_torch(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of the tensor ``x`` along ``dim``, stable and differentiable."""
    ### BEGIN SOLUTION
    shifted = x - x.amax(dim=dim, keepdim=True)
    exp = shifted.exp()
    return exp / exp.sum(dim=dim, keepdim=True)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_softmax_torch", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""softmax_torch: equals torch.softmax, values and gradients."""
torch.manual_seed(0)
x = torch.randn(4, 7, requires_grad=True)
probs = softmax_torch(x)
assert isinstance(probs, torch.Tensor), f"expected a torch.Tensor, got {type(probs)}"
checks.assert_close(probs, torch.softmax(x, dim=-1), atol=1e-6, name="softmax_torch(x)")
weights = torch.randn(4, 7)
(grad,) = torch.autograd.grad((probs * weights).sum(), x)
(expected_grad,) = torch.autograd.grad((torch.softmax(x, -1) * weights).sum(), x)
checks.assert_close(grad, expected_grad, atol=1e-6, name="the gradient of softmax_torch")
checks.assert_close(softmax_torch(x, dim=0), torch.softmax(x, 0), atol=1e-6,
                    name="softmax_torch(x, dim=0)")
large = torch.tensor([[800.0, 801.0], [-801.0, -800.0]])
checks.assert_close(softmax_torch(large), torch.softmax(large, -1), atol=1e-6,
                    name="softmax_torch of logits near ±800 (subtract each row's maximum)")
### BEGIN HIDDEN TESTS
rows = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1002.0, -1001.0]])
checks.assert_close(softmax_torch(rows), torch.softmax(rows, -1), name="rows of very different scale")
x3 = torch.randn(2, 3, 5, dtype=torch.float64)
for dim in (0, 1):
    checks.assert_close(softmax_torch(x3, dim=dim), torch.softmax(x3, dim), name=f"{dim=}")
checks.assert_dtype(softmax_torch(x3), "float64", "softmax_torch of float64 input")
### END HIDDEN TESTS

# %% [markdown]
# ## Warm-up 3 · the same softmax in TensorFlow
#
# TensorFlow spells it `tf.reduce_max`, `tf.exp`, `tf.reduce_sum` with `keepdims=True`
# and `axis`. Your function should also work inside `tf.function`, TensorFlow's graph
# compiler, which the test uses: avoid numpy and Python loops over values.

# %% nbgrader={"grade": false, "grade_id": "softmax_tf", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax_tf(x, axis=-1):
    """Softmax of the tensor ``x`` along ``axis``, stable, usable inside tf.function."""
    ### BEGIN SOLUTION
    x = tf.convert_to_tensor(x)
    shifted = x - tf.reduce_max(x, axis=axis, keepdims=True)
    exp = tf.exp(shifted)
    return exp / tf.reduce_sum(exp, axis=axis, keepdims=True)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_softmax_tf", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""softmax_tf: equals tf.nn.softmax, eagerly and inside tf.function, with gradients."""
x = tf.random.stateless_normal((3, 5), seed=(0, 1))
checks.assert_close(softmax_tf(x), tf.nn.softmax(x), atol=1e-6, name="softmax_tf(x)")
graph_softmax = tf.function(softmax_tf)
checks.assert_close(graph_softmax(x), tf.nn.softmax(x), atol=1e-6, name="tf.function(softmax_tf)")
weights = tf.random.stateless_normal((3, 5), seed=(2, 3))
with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    ours = tf.reduce_sum(softmax_tf(x) * weights)
    reference = tf.reduce_sum(tf.nn.softmax(x) * weights)
checks.assert_close(tape.gradient(ours, x), tape.gradient(reference, x), atol=1e-6,
                    name="the gradient of softmax_tf")
large = tf.constant([[800.0, 801.0], [-801.0, -800.0]])
checks.assert_close(softmax_tf(large), tf.nn.softmax(large), atol=1e-6,
                    name="softmax_tf of logits near ±800 (subtract each row's maximum)")
checks.assert_close(softmax_tf(x, axis=0), tf.nn.softmax(x, axis=0), atol=1e-6,
                    name="softmax_tf(x, axis=0)")
### BEGIN HIDDEN TESTS
square = tf.random.stateless_normal((4, 4), seed=(4, 5))
checks.assert_close(softmax_tf(square), tf.nn.softmax(square), name="softmax_tf of a square matrix")
rows = tf.constant([[1000.0, 1001.0, 1002.0], [-1000.0, -1002.0, -1001.0]])
checks.assert_close(softmax_tf(rows), tf.nn.softmax(rows), name="rows of very different scale")
x3 = tf.random.stateless_normal((2, 3, 5), seed=(6, 7), dtype=tf.float64)
for axis in (0, 1):
    checks.assert_close(softmax_tf(x3, axis=axis), tf.nn.softmax(x3, axis=axis), name=f"{axis=}")
### END HIDDEN TESTS

# %% [markdown]
# ## Measure, don't argue: six softmaxes, timed
#
# The same operation, six ways: your three functions, your TensorFlow one a second time
# compiled with `tf.function`, and the built-in softmaxes of PyTorch and TensorFlow.
# Timings depend on your machine; that is the point of measuring them here rather than
# quoting someone else's.

# %%
import timeit

import matplotlib.pyplot as plt

logits_np = np.random.default_rng(1).normal(size=TIMING_SHAPE).astype(np.float32)
logits_torch = torch.from_numpy(logits_np)
logits_tf = tf.constant(logits_np)
graph_softmax = tf.function(softmax_tf)
graph_softmax(logits_tf)  # trace once before timing

candidates = {
    "numpy (yours)": lambda: softmax_numpy(logits_np),
    "torch (yours)": lambda: softmax_torch(logits_torch),
    "torch.softmax": lambda: torch.softmax(logits_torch, -1),
    "tf (yours, eager)": lambda: softmax_tf(logits_tf),
    "tf (yours, tf.function)": lambda: graph_softmax(logits_tf),
    "tf.nn.softmax": lambda: tf.nn.softmax(logits_tf),
}
times_us = {}
for name, fn in candidates.items():
    best = min(timeit.repeat(fn, number=10, repeat=TIMING_REPEATS)) / 10
    times_us[name] = best * 1e6
    print(f"{name:>24}: {times_us[name]:9.1f} µs per call on {TIMING_SHAPE}")

fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(times_us), list(times_us.values()))
ax.set_xlabel(f"µs per call, shape {TIMING_SHAPE} (lower is better)")
ax.invert_yaxis()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What's next
#
# Chapter 01 puts tensors in the two frameworks side by side: creation, dtypes, broadcasting,
# views and copies, and what `torch.compile` and `tf.function` do to a function.

# %% [markdown]
# ## Check yourself
#
# <!-- written by `python -m autograde release` from solutions/chapters.toml -->
# Answer each in a few sentences, from what this chapter showed you; where you are not sure,
# change the code and see.
#
# 1. Why does subtracting each row's maximum before exponentiating leave the softmax
#    unchanged, and what goes wrong for an input such as [1000, 1000] without it?
# 2. Your softmax passes every visible assert but fails the graded run. What do the hidden
#    tests check that the visible ones may not, and how would you test your function for it
#    yourself?
# 3. The timing table shows PyTorch faster than TensorFlow for one call on a small array.
#    Why is that not enough to conclude which framework is faster for training a GPT?
