# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Twin GPT · 01 Tensors
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
MLP_ROWS = 64 if SMOKE else 512  # rows (B*T tokens) through the MLP block of the last section
MLP_WIDTH = 64 if SMOKE else 256  # its n_embd; the hidden layer is 4x wider, as in GPT-2
TIMING_REPEATS = 5 if SMOKE else 30  # timeit repeats; the best one is reported
# Inductor, torch.compile's default backend, generates and compiles C++: 30-50 s on a 2-core
# CPU. Smoke mode uses backend="eager" (Dynamo captures the graph, nothing is compiled).
COMPILE_BACKEND = "eager" if SMOKE else "inductor"

# %% [markdown]
# # 01 · Tensors, side by side
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/twin-gpt/twin-gpt/blob/v0.1.0/notebooks/01_tensors/01_tensors.ipynb)
#
# <!-- chapter card: written by `python -m autograde release` from solutions/chapters.toml -->
# **Time:** about 90 min to work through; the code runs in at most 3 min on 2 CPU cores.
#
# **You will be able to**
#
# - predict the dtype, shape and memory sharing of a tensor operation in PyTorch and in
#   TensorFlow
# - replace Python loops with broadcasting, gathering, `einsum` and masked reductions in
#   both frameworks
# - split attention heads with a view, and accumulate repeated rows in place (`index_add_`,
#   a `tf.Variable`)
# - explain tracing, retracing and graph breaks, and measure when `tf.function` or
#   `torch.compile` pays for its first call
#
# **Before you start:** chapter 00 (Setup: one GPT, built twice). From outside the course:
# numpy indexing and broadcasting; matrix products.
# <!-- end of the chapter card -->
#
# A GPT is a few dozen tensor operations repeated many times. Before building one, this
# chapter puts the tensors of **PyTorch** and **TensorFlow** next to each other: how to
# create them, what their dtypes and devices are, how broadcasting, indexing and gathering
# work, when two tensors share memory, how to update one in place, `einsum`, and
# reductions. Each idea gets a short explanation, a PyTorch cell and a TensorFlow cell,
# then an exercise you write in both. The last section compiles the same small function
# with `torch.compile` and `tf.function`, looks at what tracing does, and times it.
#
# You know numpy; most of what follows will look familiar. The names differ:
#
# | idea | numpy | PyTorch | TensorFlow |
# |---|---|---|---|
# | from data | `np.array(x)` | `torch.tensor(x)` | `tf.constant(x)` |
# | axis argument | `axis=`, `keepdims=` | `dim=`, `keepdim=` | `axis=`, `keepdims=` |
# | sum | `a.sum(axis)` | `t.sum(dim)` | `tf.reduce_sum(t, axis)` |
# | join | `np.concatenate` | `torch.cat` | `tf.concat` |
# | reshape | `a.reshape` | `t.view` / `t.reshape` | `tf.reshape` |
# | reorder axes | `a.transpose(axes)` | `t.permute(dims)` | `tf.transpose(t, perm)` |
# | pick rows | `a[idx]` | `t[idx]` | `tf.gather(t, idx)` |
# | change in place | `a[i] += v` | `t.add_(v)`, `t[i] += v` | a `tf.Variable`: `v.assign_add(v2)` |

# %%
import logging
import math
import textwrap
import timeit

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch._dynamo

from course import checks

# TensorFlow and Triton (behind torch.compile) each bundle LLVM: if TensorFlow loads first,
# loading Triton later kills the kernel ("LLVM ERROR: inconsistency in registered CommandLine
# options"). runtime.import_tensorflow() loads them in the order that works.
tf = runtime.import_tensorflow()
print(f"torch {torch.__version__}, TensorFlow {tf.__version__}, numpy {np.__version__}")

# %% [markdown]
# ## Creating tensors
#
# Both frameworks create tensors from Python lists, from numpy arrays, and from
# constructors such as `zeros`, `ones`, `arange`/`range` and random generators. One
# difference matters at once: `torch.from_numpy` **shares memory** with the array (change
# one, the other changes), while `torch.tensor` and `tf.constant` copy the data.

# %%
a = np.zeros(3, dtype=np.float32)
shared = torch.from_numpy(a)  # same memory as a
copied = torch.tensor(a)  # a copy
a[0] = 7.0
print("after a[0] = 7:  from_numpy ->", shared, "  torch.tensor ->", copied)

torch.manual_seed(0)  # one global generator (per device)
print(torch.zeros(2, 3).shape, torch.arange(5), torch.randn(2, 2), sep="\n")

# %%
frozen = tf.constant(a)  # a copy of a as it is now: [7, 0, 0]
a[1] = 8.0
print("after a[1] = 8:  tf.constant ->", frozen.numpy(), "  (and a is", a, ")")
# Stateless random ops take the seed as an argument: same seed, same numbers, no hidden state.
print(tf.zeros((2, 3)).shape, tf.range(5), tf.random.stateless_normal((2, 2), seed=(0, 0)),
      sep="\n")

# %% [markdown]
# ## Dtypes and devices
#
# The defaults differ, and so does what happens when two dtypes meet:
#
# - A Python float becomes **float32** in both. A Python int becomes **int64** in PyTorch
#   but **int32** in TensorFlow. From numpy, both keep numpy's dtype (often float64).
# - PyTorch *promotes*: int64 + float32 gives float32, float32 + float64 gives float64.
#   TensorFlow *refuses*: float32 + float64 is an error until you `tf.cast` one of them.
#
# A PyTorch tensor lives on one **device** (`"cpu"`, `"cuda"`, `"mps"`), and every tensor
# in an operation must be on the same one: create new tensors with `device=x.device`.
# The `"meta"` device keeps only shapes and dtypes, no data, which makes it handy for
# checking code without a GPU. TensorFlow places operations itself (a GPU if it has one);
# `x.device` tells you where a tensor landed and `with tf.device("/CPU:0"):` overrides it.

# %%
print(torch.tensor([1.0]).dtype, torch.tensor([1]).dtype, torch.from_numpy(np.ones(1)).dtype)
print("int64 + float32 ->", (torch.tensor([1]) + torch.tensor([0.5])).dtype)
print("float32 + float64 ->", (torch.ones(1) + torch.ones(1, dtype=torch.float64)).dtype)
ghost = torch.empty(4096, 4096, device="meta")  # no memory allocated
print(ghost.device, ghost.shape, (ghost @ ghost).shape)

# %%
print(tf.constant([1.0]).dtype, tf.constant([1]).dtype, tf.constant(np.ones(1)).dtype)
try:
    tf.ones(1) + tf.ones(1, dtype=tf.float64)
except tf.errors.InvalidArgumentError as err:
    print("float32 + float64 ->", type(err).__name__, str(err).splitlines()[0][:80])
print("with a cast ->", (tf.cast(tf.ones(1), tf.float64) + tf.ones(1, dtype=tf.float64)).dtype)
print("placed on", tf.ones(1).device)

# %% [markdown]
# ## Exercise 1 · token ids, from disk to the model
#
# A tokenized corpus is stored as `np.uint16` (GPT-2's 50,257 token ids fit in 16 bits,
# half the size of int32). Neither framework wants that dtype for looking up embeddings.
# Write:
#
# - `ids_to_torch(ids, device="cpu")`: a PyTorch tensor of **int64** on `device`, same shape
#   and values as the numpy array `ids`;
# - `ids_to_tf(ids)`: a TensorFlow tensor of **int32**, TensorFlow's default integer type
#   (the type `tf.range` and `tf.shape` return, so the ids can meet them in an operation).
#
# Careful: the values go up to 50,256, beyond what a signed 16-bit integer holds.

# %% nbgrader={"grade": false, "grade_id": "ids_to_tensors", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ids_to_torch(ids: np.ndarray, device="cpu") -> torch.Tensor:
    """uint16 token ids -> int64 torch tensor on ``device``, same shape and values."""
    ### BEGIN SOLUTION
    return torch.from_numpy(ids.astype(np.int64)).to(device)
    ### END SOLUTION


def ids_to_tf(ids: np.ndarray) -> tf.Tensor:
    """uint16 token ids -> int32 TensorFlow tensor, same shape and values."""
    ### BEGIN SOLUTION
    return tf.convert_to_tensor(ids.astype(np.int32))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_ids_to_tensors", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
"""ids_to_torch / ids_to_tf: right dtype, device, shape and values, even above 32767."""
ids = np.array([[0, 1, 50256], [31000, 32768, 40000]], dtype=np.uint16)
expected = ids.astype(np.int64)  # numpy widens without loss
ids_torch = ids_to_torch(ids)
assert isinstance(ids_torch, torch.Tensor), f"expected a torch.Tensor, got {type(ids_torch)}"
checks.assert_dtype(ids_torch, "int64", "ids_to_torch(ids)")
checks.assert_close(ids_torch, expected, atol=0, rtol=0, name="ids_to_torch(ids)")
ids_tf = ids_to_tf(ids)
assert isinstance(ids_tf, tf.Tensor), f"expected a tf.Tensor, got {type(ids_tf)}"
checks.assert_dtype(ids_tf, "int32", "ids_to_tf(ids)")
checks.assert_close(ids_tf, expected, atol=0, rtol=0, name="ids_to_tf(ids)")
on_meta = ids_to_torch(ids, device="meta")
assert on_meta.device.type == "meta", f"ids_to_torch(ids, device='meta') is on {on_meta.device}"
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(1)
row = rng.integers(0, 2**16, size=17).astype(np.uint16)  # 1-D, the whole uint16 range
checks.assert_close(ids_to_torch(row), row.astype(np.int64), atol=0, rtol=0, name="1-D ids")
checks.assert_close(ids_to_tf(row), row.astype(np.int64), atol=0, rtol=0, name="1-D ids (tf)")
cube = rng.integers(0, 50257, size=(2, 3, 4)).astype(np.uint16)
checks.assert_shape(ids_to_torch(cube), (2, 3, 4), "ids_to_torch of a (2, 3, 4) array")
checks.assert_shape(ids_to_tf(cube), (2, 3, 4), "ids_to_tf of a (2, 3, 4) array")
meta = ids_to_torch(cube, device=torch.device("meta"))
assert meta.device.type == "meta" and meta.dtype == torch.int64, (meta.device, meta.dtype)
checks.assert_shape(meta, (2, 3, 4), "ids_to_torch(cube, device='meta')")
checks.assert_dtype(ids_to_tf(cube), "int32", "ids_to_tf of a (2, 3, 4) array")
### END HIDDEN TESTS

# %% [markdown]
# ## Broadcasting
#
# When an operation combines tensors of different shapes, both frameworks follow numpy's
# rules. Line the shapes up **from the right**; each pair of sizes must be equal, or one of
# them 1 (that axis is stretched, without copying), or missing (counts as 1). So a
# `(T, C)` table of position embeddings adds to a `(B, T, C)` batch, and `(N, 1, D)` minus
# `(1, M, D)` gives `(N, M, D)`: every row of one against every row of the other.
# Insert a size-1 axis with `x[:, None]` in both frameworks (or `unsqueeze` / `tf.expand_dims`).

# %%
x = torch.ones(2, 5, 8)  # (B, T, C)
positions = torch.arange(5 * 8, dtype=torch.float32).reshape(5, 8)  # (T, C)
print((x + positions).shape, torch.broadcast_shapes((4, 1, 3), (1, 6, 3)))
try:
    torch.ones(2, 5, 8) + torch.ones(2, 8)  # (2, 5, 8) vs (2, 8): 5 against 2
except RuntimeError as err:
    print("RuntimeError:", err)

# %%
x = tf.ones((2, 5, 8))
positions = tf.reshape(tf.range(5 * 8, dtype=tf.float32), (5, 8))
print((x + positions).shape, tf.broadcast_static_shape(tf.TensorShape([4, 1, 3]),
                                                       tf.TensorShape([1, 6, 3])))
try:
    tf.ones((2, 5, 8)) + tf.ones((2, 8))
except tf.errors.InvalidArgumentError as err:
    print("InvalidArgumentError:", str(err).splitlines()[0][:90])

# %% [markdown]
# ## Exercise 2 · all pairwise squared distances, by broadcasting
#
# Which token embeddings lie closest to a given vector? The first step is every squared
# distance at once. Given `a` of shape `(N, D)` and `b` of shape `(M, D)`, return the
# `(N, M)` matrix with entry `[i, j] = sum_d (a[i, d] - b[j, d])**2`, in both frameworks,
# without a Python loop. Insert size-1 axes so that the difference broadcasts to
# `(N, M, D)`, then reduce the right axis. Keep the input's dtype.

# %% nbgrader={"grade": false, "grade_id": "pairwise_sq_dists", "locked": false, "schema_version": 3, "solution": true, "task": false}
def pairwise_sq_dists_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) squared Euclidean distances."""
    ### BEGIN SOLUTION
    diff = a[:, None, :] - b[None, :, :]  # (N, M, D)
    return (diff * diff).sum(dim=-1)
    ### END SOLUTION


def pairwise_sq_dists_tf(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """(N, D), (M, D) -> (N, M) squared Euclidean distances."""
    ### BEGIN SOLUTION
    diff = a[:, None, :] - b[None, :, :]  # (N, M, D)
    return tf.reduce_sum(diff * diff, axis=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_pairwise_sq_dists", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""pairwise_sq_dists_torch / _tf: every pair, the right shape, squared, in both frameworks."""


def sq_dists_reference(a, b):
    """The definition, one pair at a time (numpy, float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.array([[np.sum((a[i] - b[j]) ** 2) for j in range(len(b))] for i in range(len(a))])


rng = np.random.default_rng(0)
a_np = rng.normal(size=(4, 3)).astype(np.float32)
b_np = rng.normal(size=(6, 3)).astype(np.float32)
expected = sq_dists_reference(a_np, b_np)
dists = pairwise_sq_dists_torch(torch.from_numpy(a_np), torch.from_numpy(b_np))
checks.assert_shape(dists, (4, 6), "pairwise_sq_dists_torch(a (4, 3), b (6, 3))")
checks.assert_close(dists, expected, atol=1e-5, name="pairwise_sq_dists_torch(a, b)")
dists = pairwise_sq_dists_tf(tf.constant(a_np), tf.constant(b_np))
checks.assert_shape(dists, (4, 6), "pairwise_sq_dists_tf(a (4, 3), b (6, 3))")
checks.assert_close(dists, expected, atol=1e-5, name="pairwise_sq_dists_tf(a, b)")
### BEGIN HIDDEN TESTS
for n, m, d in [(5, 2, 7), (1, 1, 1), (3, 3, 3), (2, 9, 4)]:
    a_np, b_np = rng.normal(size=(n, d)), rng.normal(size=(m, d))  # float64
    expected = sq_dists_reference(a_np, b_np)
    ours = pairwise_sq_dists_torch(torch.from_numpy(a_np), torch.from_numpy(b_np))
    checks.assert_close(ours, expected, name=f"pairwise_sq_dists_torch, {n=} {m=} {d=}")
    checks.assert_dtype(ours, "float64", "pairwise_sq_dists_torch of float64 input")
    ours = pairwise_sq_dists_tf(tf.constant(a_np), tf.constant(b_np))
    checks.assert_close(ours, expected, name=f"pairwise_sq_dists_tf, {n=} {m=} {d=}")
    checks.assert_dtype(ours, "float64", "pairwise_sq_dists_tf of float64 input")
same = np.array([[1.0, 2.0], [3.0, -1.0]], dtype=np.float32)
checks.assert_close(pairwise_sq_dists_tf(tf.constant(same), tf.constant(same)),
                    np.array([[0.0, 13.0], [13.0, 0.0]]), name="distances of a set to itself")
### END HIDDEN TESTS

# %% [markdown]
# ## Indexing and gathering
#
# Slicing reads the same in both: `x[:, -1]`, `x[..., :2]`, `x[:, None]`. Indexing with a
# *tensor of integers* differs. PyTorch accepts it in brackets, like numpy: `wte[idx]`
# looks up one embedding row per token id, and `x[rows, cols]` pairs the two index tensors
# element by element. TensorFlow brackets take slices, single integers, `None` and `...`
# only; tensors of indices go through functions:
#
# - `tf.gather(params, indices, axis=0)`: pick entries along one axis;
# - `tf.gather(params, indices, axis=1, batch_dims=1)`: a separate index list per batch row;
# - `tf.gather_nd(params, coords)`: pick by full coordinates.
#
# `torch.gather(x, dim, index)` is a different thing from `tf.gather`: `index` has as many
# dimensions as `x`, and `out[i][j] = x[i][index[i][j]]` for `dim=1`.

# %%
wte = torch.arange(12.0).reshape(6, 2)  # a (V=6, C=2) embedding table
idx = torch.tensor([[5, 0, 5], [1, 2, 3]])  # (B=2, T=3) token ids
print(wte[idx].shape)  # (2, 3, 2): one row per id
scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
print(scores[torch.arange(2), torch.tensor([1, 0])])  # row 0 col 1, row 1 col 0
print(torch.gather(scores, 1, torch.tensor([[1], [0]])))  # the same, as (2, 1)

# %%
wte = tf.reshape(tf.range(12.0), (6, 2))
idx = tf.constant([[5, 0, 5], [1, 2, 3]])
print(tf.gather(wte, idx).shape)
scores = tf.constant([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
print(tf.gather(scores, [1, 0], axis=1, batch_dims=1))  # per-row index
print(tf.gather_nd(scores, [[0, 1], [1, 0]]))  # by (row, col) coordinates

# %% [markdown]
# ## Exercise 3 · the logits of each sequence's last real token
#
# To generate text from a batch of prompts of different lengths, the prompts are padded
# on the right to a common length `T`, run through the model, and for each row you need
# the logits at its **last real token**. Given `logits` of shape `(B, T, V)` and `lengths`
# of shape `(B,)` (row `b` has `lengths[b]` real tokens, `1 <= lengths[b] <= T`), return
# the `(B, V)` logits at those positions. No Python loop over the batch; the TensorFlow
# version must also work inside `tf.function`.

# %% nbgrader={"grade": false, "grade_id": "last_token_logits", "locked": false, "schema_version": 3, "solution": true, "task": false}
def last_token_logits_torch(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B,) lengths -> (B, V) logits at position lengths - 1 of each row."""
    ### BEGIN SOLUTION
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, lengths - 1]  # (B, V)
    ### END SOLUTION


def last_token_logits_tf(logits: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """(B, T, V) logits, (B,) lengths -> (B, V) logits at position lengths - 1 of each row."""
    ### BEGIN SOLUTION
    return tf.gather(logits, lengths - 1, axis=1, batch_dims=1)  # (B, V)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_last_token_logits", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""last_token_logits_torch / _tf: one row per sequence, at its last real token."""


def last_token_reference(logits, lengths):
    logits, lengths = np.asarray(logits), np.asarray(lengths)
    return np.stack([logits[b, lengths[b] - 1] for b in range(len(lengths))])


rng = np.random.default_rng(0)
logits_np = rng.normal(size=(3, 5, 7)).astype(np.float32)  # (B, T, V)
lengths_np = np.array([2, 5, 1])
expected = last_token_reference(logits_np, lengths_np)
ours = last_token_logits_torch(torch.from_numpy(logits_np), torch.from_numpy(lengths_np))
checks.assert_shape(ours, (3, 7), "last_token_logits_torch(logits (3, 5, 7), lengths (3,))")
checks.assert_close(ours, expected, name="last_token_logits_torch")
ours = last_token_logits_tf(tf.constant(logits_np), tf.constant(lengths_np))
checks.assert_shape(ours, (3, 7), "last_token_logits_tf(logits (3, 5, 7), lengths (3,))")
checks.assert_close(ours, expected, name="last_token_logits_tf")
### BEGIN HIDDEN TESTS
for b, t, v in [(1, 1, 4), (4, 3, 3), (2, 6, 1)]:
    logits_np = rng.normal(size=(b, t, v))
    lengths_np = rng.integers(1, t + 1, size=b)
    lengths_np[0] = t  # at least one full row
    expected = last_token_reference(logits_np, lengths_np)
    ours = last_token_logits_torch(torch.from_numpy(logits_np), torch.from_numpy(lengths_np))
    checks.assert_close(ours, expected, name=f"last_token_logits_torch, shape {(b, t, v)}")
    for dtype in (tf.int32, tf.int64):
        lengths_tf = tf.constant(lengths_np, dtype=dtype)
        ours = last_token_logits_tf(tf.constant(logits_np), lengths_tf)
        checks.assert_close(ours, expected, name=f"last_token_logits_tf, {(b, t, v)}, {dtype}")
graph_fn = tf.function(last_token_logits_tf, input_signature=[
    tf.TensorSpec([None, None, None], tf.float32), tf.TensorSpec([None], tf.int32)])
logits_np = rng.normal(size=(3, 4, 5)).astype(np.float32)
lengths_np = np.array([4, 1, 3], dtype=np.int32)
checks.assert_close(graph_fn(tf.constant(logits_np), tf.constant(lengths_np)),
                    last_token_reference(logits_np, lengths_np),
                    name="tf.function(last_token_logits_tf) with unknown shapes")
### END HIDDEN TESTS

# %% [markdown]
# ## Views and copies
#
# A PyTorch tensor is a window onto a block of memory (its *storage*): a shape, a
# **stride** per dimension (how many elements to skip to move one step along it) and an
# offset. `view`, `transpose`, `permute`, slicing and `[:, None]` only compute a new
# window: they return a **view** that shares the storage, at no cost. Write through a view
# and the original changes. After a `transpose` the elements are no longer in row-major
# order (`is_contiguous()` is False) and `view` refuses to reshape them; `reshape` then
# copies, and `contiguous()` copies on purpose.
#
# TensorFlow tensors are **immutable**: no operation can change one after it is made, so
# whether `tf.reshape` copies is invisible to you (and left to TensorFlow). Mutable state
# lives in a `tf.Variable` (next section).

# %%
x = torch.arange(6.0).reshape(2, 3)
t = x.t()  # a view: same storage, strides swapped
print("strides", x.stride(), t.stride(), "contiguous?", x.is_contiguous(), t.is_contiguous())
print("same storage:", x.untyped_storage().data_ptr() == t.untyped_storage().data_ptr())
t[0, 1] = 100.0  # writes into x[1, 0]
print(x)
try:
    t.view(6)
except RuntimeError as err:
    print("t.view(6):", str(err)[:70], "...")
flat = t.reshape(6)  # copies here, because it has to
print("reshape copied:", flat.untyped_storage().data_ptr() != x.untyped_storage().data_ptr())

# %%
x = tf.reshape(tf.range(6.0), (2, 3))
try:
    x[0, 1] = 100.0
except TypeError as err:
    print("TypeError:", err)
y = tf.tensor_scatter_nd_update(x, [[0, 1]], [100.0])  # a new tensor; x is unchanged
print(x.numpy(), y.numpy(), sep="\n")

# %% [markdown]
# ## Exercise 4 · splitting attention heads
#
# Multi-head attention cuts the `C = n_head * hs` channels of each token into `n_head`
# heads of size `hs`, and moves the head axis before time, so that every head attends on
# its own: `(B, T, C) -> (B, T, n_head, hs) -> (B, n_head, T, hs)`. Channel `c` of token
# `t` ends up in head `c // hs`, at position `c % hs`.
#
# - `split_heads_torch(x, n_head)` must return a **view** of `x` (no copy: it shares `x`'s
#   storage). You may assume `x` is contiguous.
# - `split_heads_tf(x, n_head)` must work inside `tf.function` when the batch and time
#   sizes are unknown until run time (`None` in the input signature). There `x.shape[0]`
#   is `None`; `tf.shape(x)[0]` is a tensor that holds the actual size when the graph runs.

# %% nbgrader={"grade": false, "grade_id": "split_heads", "locked": false, "schema_version": 3, "solution": true, "task": false}
def split_heads_torch(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, n_head, T, C // n_head), a view sharing x's storage."""
    ### BEGIN SOLUTION
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)
    ### END SOLUTION


def split_heads_tf(x: tf.Tensor, n_head: int) -> tf.Tensor:
    """(B, T, C) -> (B, n_head, T, C // n_head); B and T may be unknown while tracing."""
    ### BEGIN SOLUTION
    B, T = tf.shape(x)[0], tf.shape(x)[1]  # dynamic sizes: known when the graph runs
    C = x.shape[-1]  # static: the model width is fixed
    x = tf.reshape(x, (B, T, n_head, C // n_head))  # (B, T, nh, hs)
    return tf.transpose(x, (0, 2, 1, 3))  # (B, nh, T, hs)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_split_heads", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""split_heads_torch / _tf: heads in the right place; torch returns a view; tf under tf.function."""


def split_heads_reference(x, n_head):
    """out[b, h, t, i] = x[b, t, h * hs + i], one element at a time."""
    x = np.asarray(x)
    B, T, C = x.shape
    hs = C // n_head
    out = np.empty((B, n_head, T, hs), dtype=x.dtype)
    for b in range(B):
        for h in range(n_head):
            for t in range(T):
                out[b, h, t] = x[b, t, h * hs:(h + 1) * hs]
    return out


x_np = np.arange(2 * 3 * 8, dtype=np.float32).reshape(2, 3, 8)  # (B=2, T=3, C=8)
x = torch.from_numpy(x_np.copy())
heads = split_heads_torch(x, 4)
checks.assert_shape(heads, (2, 4, 3, 2), "split_heads_torch(x (2, 3, 8), n_head=4)")
checks.assert_close(heads, split_heads_reference(x_np, 4), name="split_heads_torch(x, 4)")
assert heads.untyped_storage().data_ptr() == x.untyped_storage().data_ptr(), (
    "split_heads_torch returned a copy: it should be a view sharing x's storage "
    "(avoid .contiguous() and .clone())"
)
heads_tf = split_heads_tf(tf.constant(x_np), 4)
checks.assert_close(heads_tf, split_heads_reference(x_np, 4), name="split_heads_tf(x, 4)")
graph_split = tf.function(lambda t: split_heads_tf(t, 4),
                          input_signature=[tf.TensorSpec([None, None, 8], tf.float32)])
checks.assert_close(graph_split(tf.constant(x_np)), split_heads_reference(x_np, 4),
                    name="split_heads_tf inside tf.function with unknown B and T")
### BEGIN HIDDEN TESTS
x = torch.zeros(3, 5, 12)
heads = split_heads_torch(x, 3)
heads[2, 1, 4, 0] = 1.0  # head 1, token 4, first channel of the head
assert x[2, 4, 4] == 1.0 and x.sum() == 1.0, "writing through the view must change x there"
for B, T, C, nh in [(1, 1, 6, 2), (2, 7, 6, 6), (3, 4, 12, 1), (2, 5, 12, 3)]:
    x_np = np.random.default_rng(B * T + C).normal(size=(B, T, C))
    expected = split_heads_reference(x_np, nh)
    checks.assert_close(split_heads_torch(torch.from_numpy(x_np), nh), expected,
                        name=f"split_heads_torch, x {(B, T, C)}, n_head={nh}")
    checks.assert_close(split_heads_tf(tf.constant(x_np), nh), expected,
                        name=f"split_heads_tf, x {(B, T, C)}, n_head={nh}")
    graph_split = tf.function(lambda t, nh=nh: split_heads_tf(t, nh),
                              input_signature=[tf.TensorSpec([None, None, C], tf.float64)])
    checks.assert_close(graph_split(tf.constant(x_np)), expected,
                        name=f"tf.function(split_heads_tf), x {(B, T, C)}, n_head={nh}")
### END HIDDEN TESTS

# %% [markdown]
# ## In-place updates
#
# PyTorch methods ending in `_` change their tensor in place and return it (`x.add_(1)`,
# `x.zero_()`, `x.index_add_(...)`), and so does assigning into a slice (`x[0] = ...`).
# One trap: `x[ids] += v` with a *repeated* id adds only once, because it reads all the
# rows, adds, then writes them back: the duplicate writes overwrite each other.
# `index_add_` accumulates every one. (Autograd adds its own rule: if you modify in place a
# tensor it saved for the backward pass, `backward()` raises an error.)
#
# In TensorFlow, only a `tf.Variable` can change: `assign`, `assign_add`,
# `scatter_nd_add`, `v[0].assign(...)`. Functions such as `tf.tensor_scatter_nd_add`
# return a **new** tensor; assigning that to a local name does not touch the variable.
# Model weights are variables; that is how an optimizer updates them.

# %%
table = torch.zeros(4)
ids = torch.tensor([1, 1, 3])
table[ids] += 1.0
print("table[ids] += 1  ->", table)  # row 1 got 1, not 2
table = torch.zeros(4)
table.index_add_(0, ids, torch.ones(3))
print("index_add_       ->", table)

# %%
var = tf.Variable(tf.zeros(4))
var.assign_add(tf.ones(4))
var[0].assign(-1.0)
print("after assign_add and var[0].assign:", var.numpy())
var.scatter_nd_add([[1], [1], [3]], [1.0, 1.0, 1.0])  # repeated ids accumulate
print("after scatter_nd_add:              ", var.numpy())
new = tf.tensor_scatter_nd_add(var, [[0]], [10.0])  # a new tensor
print("tensor_scatter_nd_add made", new.numpy(), "and left the variable at", var.numpy())

# %% [markdown]
# ## Exercise 5 · adding rows in place
#
# The gradient of an embedding lookup is *sparse*: only the rows of the token ids in the
# batch receive something, and a token that appears twice receives two contributions. Add
# `updates[k]` to row `ids[k]` of a table, for every `k`, **in place**, with repeated ids
# accumulating:
#
# - `scatter_add_rows_torch_(table, ids, updates)`: `table` is a `(V, C)` tensor, `ids` a
#   `(N,)` int64 tensor, `updates` `(N, C)`. Modify `table` and return it (like torch's
#   own in-place methods).
# - `scatter_add_rows_tf(var, ids, updates)`: the same on a `tf.Variable` `var`; `ids` may
#   be int32 or int64. Afterwards `var` holds the result (what you return is ignored).

# %% nbgrader={"grade": false, "grade_id": "scatter_add_rows", "locked": false, "schema_version": 3, "solution": true, "task": false}
def scatter_add_rows_torch_(table: torch.Tensor, ids: torch.Tensor, updates: torch.Tensor):
    """table[ids[k]] += updates[k] for every k, in place (repeats accumulate); return table."""
    ### BEGIN SOLUTION
    return table.index_add_(0, ids, updates)
    ### END SOLUTION


def scatter_add_rows_tf(var: tf.Variable, ids: tf.Tensor, updates: tf.Tensor):
    """var[ids[k]] += updates[k] for every k, in the variable (repeats accumulate)."""
    ### BEGIN SOLUTION
    var.scatter_nd_add(tf.reshape(ids, (-1, 1)), updates)  # indices: (N, 1) row coordinates
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_scatter_add_rows", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""scatter_add_rows_torch_ / _tf: in place, every update counted, repeated ids included."""


def scatter_add_reference(table, ids, updates):
    out = np.array(table, dtype=np.float64)
    for row, update in zip(np.asarray(ids), np.asarray(updates), strict=True):
        out[row] += update
    return out


rng = np.random.default_rng(0)
table_np = rng.normal(size=(5, 3)).astype(np.float32)
ids_np = np.array([4, 0, 4, 2])  # row 4 twice
updates_np = rng.normal(size=(4, 3)).astype(np.float32)
expected = scatter_add_reference(table_np, ids_np, updates_np)

table = torch.from_numpy(table_np.copy())
address = table.untyped_storage().data_ptr()
returned = scatter_add_rows_torch_(table, torch.from_numpy(ids_np), torch.from_numpy(updates_np))
checks.assert_close(table, expected, atol=1e-5, name="table after scatter_add_rows_torch_")
assert returned is table, "scatter_add_rows_torch_ should return table itself (in place)"
assert table.untyped_storage().data_ptr() == address, "table must be updated in its own memory"

var = tf.Variable(table_np)
scatter_add_rows_tf(var, tf.constant(ids_np), tf.constant(updates_np))
checks.assert_close(var, expected, atol=1e-5, name="var after scatter_add_rows_tf")
### BEGIN HIDDEN TESTS
for V, C, N in [(3, 1, 6), (7, 4, 1), (4, 2, 8)]:
    table_np, updates_np = rng.normal(size=(V, C)), rng.normal(size=(N, C))
    ids_np = rng.integers(0, V, size=N)
    ids_np[-1] = ids_np[0]  # always a repeat (or N == 1)
    expected = scatter_add_reference(table_np, ids_np, updates_np)
    table = torch.from_numpy(table_np.copy())
    scatter_add_rows_torch_(table, torch.from_numpy(ids_np), torch.from_numpy(updates_np))
    checks.assert_close(table, expected, name=f"scatter_add_rows_torch_, {V=} {C=} {N=}")
    for dtype in (tf.int32, tf.int64):
        var = tf.Variable(table_np)
        scatter_add_rows_tf(var, tf.constant(ids_np, dtype=dtype), tf.constant(updates_np))
        checks.assert_close(var, expected, name=f"scatter_add_rows_tf, {V=} {C=} {N=}, {dtype}")
same = torch.zeros(2, 2)
scatter_add_rows_torch_(same, torch.tensor([1, 1, 1]), torch.ones(3, 2))
checks.assert_close(same, [[0.0, 0.0], [3.0, 3.0]], name="three updates to the same row")
### END HIDDEN TESTS

# %% [markdown]
# ## einsum
#
# `einsum` names each axis with a letter and says which letters survive: letters in the
# output are kept, letters that appear in the inputs but not in the output are **summed
# over** (after multiplying). `"ij,jk->ik"` is a matrix product, `"bij,bjk->bik"` a batch of
# them, `"i,i->"` a dot product, `"ij->ji"` a transpose. The same string works in numpy,
# PyTorch and TensorFlow, and it documents the shapes as it computes.

# %%
A, B = torch.randn(2, 3), torch.randn(3, 4)
print(torch.allclose(torch.einsum("ij,jk->ik", A, B), A @ B))
xs = torch.randn(5, 3)
print("row norms²:", torch.einsum("nd,nd->n", xs, xs))

# %%
A, B = tf.random.stateless_normal((2, 3), (0, 1)), tf.random.stateless_normal((3, 4), (0, 2))
print(np.allclose(tf.einsum("ij,jk->ik", A, B), A @ B))
xs = tf.random.stateless_normal((5, 3), (0, 3))
print("row norms²:", tf.einsum("nd,nd->n", xs, xs).numpy())

# %% [markdown]
# ## Exercise 6 · attention scores with einsum
#
# Attention compares each query with each key: for queries `q` of shape `(B, H, T, D)`
# and keys `k` of shape `(B, H, S, D)` (`S` may differ from `T`, for example when keys
# come from a cache of earlier tokens), the scores are
#
# $$\text{scores}[b, h, t, s] = \frac{1}{\sqrt{D}} \sum_d q[b, h, t, d]\, k[b, h, s, d]$$
#
# of shape `(B, H, T, S)`. Write it with one `einsum` call in each framework (the scale
# $1/\sqrt{D}$ keeps the scores' variance near 1 whatever the head size).

# %% nbgrader={"grade": false, "grade_id": "attention_scores", "locked": false, "schema_version": 3, "solution": true, "task": false}
def attention_scores_torch(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D), (B, H, S, D) -> (B, H, T, S) scaled dot products."""
    ### BEGIN SOLUTION
    return torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])
    ### END SOLUTION


def attention_scores_tf(q: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """(B, H, T, D), (B, H, S, D) -> (B, H, T, S) scaled dot products."""
    ### BEGIN SOLUTION
    return tf.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_attention_scores", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""attention_scores_torch / _tf: q·k over the head dimension, scaled by 1/sqrt(D)."""


def scores_reference(q, k):
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    return q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])


rng = np.random.default_rng(0)
q_np = rng.normal(size=(2, 3, 4, 8)).astype(np.float32)  # (B, H, T, D)
k_np = rng.normal(size=(2, 3, 6, 8)).astype(np.float32)  # (B, H, S, D)
expected = scores_reference(q_np, k_np)
ours = attention_scores_torch(torch.from_numpy(q_np), torch.from_numpy(k_np))
checks.assert_shape(ours, (2, 3, 4, 6), "attention_scores_torch(q (2, 3, 4, 8), k (2, 3, 6, 8))")
checks.assert_close(ours, expected, atol=1e-5, name="attention_scores_torch")
ours = attention_scores_tf(tf.constant(q_np), tf.constant(k_np))
checks.assert_shape(ours, (2, 3, 4, 6), "attention_scores_tf(q (2, 3, 4, 8), k (2, 3, 6, 8))")
checks.assert_close(ours, expected, atol=1e-5, name="attention_scores_tf")
### BEGIN HIDDEN TESTS
for shape_q, shape_k in [((1, 1, 5, 5), (1, 1, 5, 5)), ((3, 2, 1, 16), (3, 2, 7, 16)),
                         ((2, 4, 3, 2), (2, 4, 2, 2))]:
    q_np, k_np = rng.normal(size=shape_q), rng.normal(size=shape_k)  # float64
    expected = scores_reference(q_np, k_np)
    ours = attention_scores_torch(torch.from_numpy(q_np), torch.from_numpy(k_np))
    checks.assert_close(ours, expected, name=f"attention_scores_torch, q {shape_q} k {shape_k}")
    checks.assert_dtype(ours, "float64", "attention_scores_torch of float64 input")
    ours = attention_scores_tf(tf.constant(q_np), tf.constant(k_np))
    checks.assert_close(ours, expected, name=f"attention_scores_tf, q {shape_q} k {shape_k}")
    checks.assert_dtype(ours, "float64", "attention_scores_tf of float64 input")
### END HIDDEN TESTS

# %% [markdown]
# ## Reductions
#
# `sum`, `mean`, `max`, `argmax` and friends collapse one or more axes. PyTorch calls the
# argument `dim` and keeps the reduced axis with `keepdim=True`; TensorFlow's functions
# are `tf.reduce_sum`, `tf.reduce_mean`, ... with `axis` and `keepdims=True`. Keeping the
# axis (size 1) is what lets the result broadcast back against the input, as in softmax.
# Two differences bite: `torch.max(x, dim)` returns values *and* indices, and
# `tf.reduce_mean` of an integer tensor returns an integer (the mean of 1 and 2 is 1),
# where PyTorch refuses to take the mean of integers at all.

# %%
x = torch.tensor([[1.0, 5.0, 2.0], [4.0, 0.0, 3.0]])
print(x.sum(dim=1), x.sum(dim=1, keepdim=True).shape, x.mean(dim=0))
values, indices = x.max(dim=1)
print("max:", values, "at", indices)
try:
    torch.tensor([1, 2]).mean()
except RuntimeError as err:
    print("RuntimeError:", str(err)[:80])

# %%
x = tf.constant([[1.0, 5.0, 2.0], [4.0, 0.0, 3.0]])
print(tf.reduce_sum(x, axis=1), tf.reduce_sum(x, axis=1, keepdims=True).shape,
      tf.reduce_mean(x, axis=0))
print("max:", tf.reduce_max(x, axis=1), "at", tf.argmax(x, axis=1))
print("integer mean of [1, 2]:", tf.reduce_mean(tf.constant([1, 2])).numpy())

# %% [markdown]
# ## Exercise 7 · a masked mean over time
#
# To summarize a padded batch of sequences by one vector each (mean pooling), average each
# row's **real** positions only. Given `x` of shape `(B, T, C)` and `mask` of shape
# `(B, T)` (True or 1 where the token is real, False or 0 where it is padding; bool or
# any number dtype), return the `(B, C)` mean of `x` over the real positions of each row.
# A row without any real position has mean **0** (not NaN: a division by zero must not
# happen). Return `x`'s dtype. No Python loop over the batch.

# %% nbgrader={"grade": false, "grade_id": "masked_mean", "locked": false, "schema_version": 3, "solution": true, "task": false}
def masked_mean_torch(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C), (B, T) -> (B, C) mean over the positions where mask is true; 0 if none."""
    ### BEGIN SOLUTION
    weights = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    total = (x * weights).sum(dim=1)  # (B, C)
    count = weights.sum(dim=1).clamp(min=1.0)  # (B, 1): a row with no token divides by 1
    return total / count
    ### END SOLUTION


def masked_mean_tf(x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """(B, T, C), (B, T) -> (B, C) mean over the positions where mask is true; 0 if none."""
    ### BEGIN SOLUTION
    weights = tf.cast(mask, x.dtype)[:, :, None]  # (B, T, 1)
    total = tf.reduce_sum(x * weights, axis=1)  # (B, C)
    count = tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)  # (B, 1)
    return total / count
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_masked_mean", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""masked_mean_torch / _tf: mean over real positions only; an empty row gives zeros."""


def masked_mean_reference(x, mask):
    x, mask = np.asarray(x, np.float64), np.asarray(mask).astype(bool)
    out = np.zeros((x.shape[0], x.shape[2]))
    for b in range(x.shape[0]):
        if mask[b].any():
            out[b] = x[b][mask[b]].mean(axis=0)
    return out


rng = np.random.default_rng(0)
x_np = rng.normal(size=(3, 4, 5)).astype(np.float32)  # (B, T, C)
mask_np = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)  # last row: no token
expected = masked_mean_reference(x_np, mask_np)
ours = masked_mean_torch(torch.from_numpy(x_np), torch.from_numpy(mask_np))
checks.assert_shape(ours, (3, 5), "masked_mean_torch(x (3, 4, 5), mask (3, 4))")
assert np.isfinite(checks.to_numpy(ours)).all(), (
    "masked_mean_torch returns NaN or inf for the row without tokens: 0 / 0? guard the count"
)
checks.assert_close(ours, expected, atol=1e-6, name="masked_mean_torch (the last row is empty)")
checks.assert_dtype(ours, "float32", "masked_mean_torch of float32 x")
ours = masked_mean_tf(tf.constant(x_np), tf.constant(mask_np))
checks.assert_shape(ours, (3, 5), "masked_mean_tf(x (3, 4, 5), mask (3, 4))")
assert np.isfinite(checks.to_numpy(ours)).all(), (
    "masked_mean_tf returns NaN or inf for the row without tokens: 0 / 0? guard the count"
)
checks.assert_close(ours, expected, atol=1e-6, name="masked_mean_tf (the last row is empty)")
checks.assert_dtype(ours, "float32", "masked_mean_tf of float32 x")
### BEGIN HIDDEN TESTS
for B, T, C in [(2, 3, 3), (1, 1, 2), (4, 6, 1), (2, 5, 5)]:  # includes T == C
    x_np = rng.normal(size=(B, T, C))
    mask_np = rng.random((B, T)) < 0.5
    mask_np[0] = True  # a full row
    if B > 1:
        mask_np[-1] = False  # an empty row
    expected = masked_mean_reference(x_np, mask_np)
    for mask_dtype in (bool, np.int64, np.float64):
        mask_any = mask_np.astype(mask_dtype)
        ours = masked_mean_torch(torch.from_numpy(x_np), torch.from_numpy(mask_any))
        checks.assert_close(ours, expected, name=f"masked_mean_torch, x {(B, T, C)}, {mask_dtype}")
        checks.assert_dtype(ours, "float64", "masked_mean_torch of float64 x")
        ours = masked_mean_tf(tf.constant(x_np), tf.constant(mask_any))
        checks.assert_close(ours, expected, name=f"masked_mean_tf, x {(B, T, C)}, {mask_dtype}")
        checks.assert_dtype(ours, "float64", "masked_mean_tf of float64 x")
graph_mean = tf.function(masked_mean_tf)
x_np = rng.normal(size=(2, 3, 4)).astype(np.float32)
mask_np = np.array([[True, False, True], [False, False, False]])
checks.assert_close(graph_mean(tf.constant(x_np), tf.constant(mask_np)),
                    masked_mean_reference(x_np, mask_np), name="tf.function(masked_mean_tf)")
### END HIDDEN TESTS

# %% [markdown]
# ## Eager and graph execution
#
# Everything so far ran **eagerly**: each line executes when Python reaches it, and you
# can print any intermediate value. Both frameworks can also capture a function as a
# **graph** of tensor operations, then optimize and run that graph without Python:
#
# - TensorFlow: `tf.function(f)` *traces* `f`: it calls the Python function once with
#   symbolic tensors and records the operations. Later calls with compatible inputs run the
#   recorded graph; Python code inside `f` does not run again.
# - PyTorch: `torch.compile(f)` lets *Dynamo* read `f`'s Python bytecode on the first call,
#   capture the tensor operations, and hand the graph to a *backend* (Inductor by default,
#   which generates fused C++ or Triton kernels). Whatever it cannot capture, it leaves to
#   ordinary Python: a **graph break**.
#
# The subject is the same in both: the feed-forward block of a GPT layer,
# `x + gelu(x @ w_fc) @ w_proj` (tanh GELU, as in GPT-2), on `MLP_ROWS` tokens of width
# `MLP_WIDTH`.

# %%
def mlp_torch(x, w_fc, w_proj):
    """(N, C), (C, 4C), (4C, C) -> (N, C): residual + GELU feed-forward."""
    hidden = torch.nn.functional.gelu(x @ w_fc, approximate="tanh")  # (N, 4C)
    return x + hidden @ w_proj  # (N, C)


def mlp_tf(x, w_fc, w_proj):
    """(N, C), (C, 4C), (4C, C) -> (N, C): residual + GELU feed-forward."""
    hidden = tf.nn.gelu(x @ w_fc, approximate=True)  # (N, 4C)
    return x + hidden @ w_proj  # (N, C)


init = np.random.default_rng(0)
x_np = init.normal(size=(MLP_ROWS, MLP_WIDTH)).astype(np.float32)
w_fc_np = (0.02 * init.normal(size=(MLP_WIDTH, 4 * MLP_WIDTH))).astype(np.float32)
w_proj_np = (0.02 * init.normal(size=(4 * MLP_WIDTH, MLP_WIDTH))).astype(np.float32)
args_torch = [torch.from_numpy(a) for a in (x_np, w_fc_np, w_proj_np)]
args_tf = [tf.constant(a) for a in (x_np, w_fc_np, w_proj_np)]
gap = np.abs(mlp_torch(*args_torch).numpy() - mlp_tf(*args_tf).numpy()).max()
print(f"the two frameworks agree: max |difference| = {gap:.2e}")

# %% [markdown]
# ### Tracing: Python runs once per trace
#
# Inside a `tf.function`, a Python `print` runs only while tracing; `tf.print` becomes an
# operation of the graph and runs on every call. A new trace happens whenever the input
# *signature* changes: another dtype, another shape (by default every dimension is part of
# the signature), or another Python value for a non-tensor argument.

# %%
@tf.function
def mlp_tf_graph(x, w_fc, w_proj):
    print("  Python print: tracing with x of shape", x.shape)
    tf.print("  tf.print: running the graph")
    return mlp_tf(x, w_fc, w_proj)


x_tf, w_fc_tf, w_proj_tf = args_tf
for call in range(3):
    print(f"call {call}, rows {x_tf.shape[0]}")
    mlp_tf_graph(x_tf, w_fc_tf, w_proj_tf)
print("traces so far:", mlp_tf_graph.experimental_get_tracing_count())

# %% [markdown]
# ### Retracing on new shapes, and how to avoid it
#
# A language model sees prompts of every length. Call a plain `tf.function` with 8, 16,
# 24 and 32 rows and it traces four graphs, each costing time and memory. Two fixes:
# `input_signature` declares the shapes up front, with `None` for a size that varies; and
# `reduce_retracing=True` lets TensorFlow generalize: after a second shape it traces once
# more with a `None` dimension and reuses that graph. (When it sees the same function
# retraced again and again, TensorFlow prints a warning saying so: you will see it below.)
#
# `torch.compile` decides the same question with `dynamic=`: `False` compiles one graph
# per shape, `True` compiles shape-generic code from the start, and the default (`None`)
# starts specialized and recompiles *once* with symbolic sizes when a shape changes. To
# count the graphs, we pass our own backend: Dynamo hands it each captured graph and its
# example inputs, and it runs the graph as is.

# %%
lengths_to_try = [8, 16, 24, 32]
row_spec = tf.TensorSpec([None, MLP_WIDTH], tf.float32)
tf_variants = {
    "tf.function": tf.function(mlp_tf),
    "reduce_retracing=True": tf.function(mlp_tf, reduce_retracing=True),
    "input_signature, None rows": tf.function(mlp_tf, input_signature=[
        row_spec,  # x: any number of rows
        tf.TensorSpec([MLP_WIDTH, 4 * MLP_WIDTH], tf.float32),  # w_fc
        tf.TensorSpec([4 * MLP_WIDTH, MLP_WIDTH], tf.float32),  # w_proj
    ]),
}
for name, fn in tf_variants.items():
    for rows in lengths_to_try:
        fn(x_tf[:rows], w_fc_tf, w_proj_tf)
    traces = fn.experimental_get_tracing_count()
    print(f"{name:>28}: {traces} trace(s) for {len(lengths_to_try)} shapes")


# %%
def counting_backend(captured):
    """A torch.compile backend that records the shapes each graph was built for, then runs
    the graph as is. Dynamo stores a fake tensor (shape and dtype, no data) on each input."""

    def backend(graph_module, example_inputs):
        inputs = [node.meta.get("example_value") for node in graph_module.graph.nodes
                  if node.op == "placeholder"]
        captured.append([tuple(v.shape) for v in inputs if isinstance(v, torch.Tensor)])
        return graph_module.forward

    return backend


x_t, w_fc_t, w_proj_t = args_torch
for dynamic in (False, None, True):
    # Forget earlier compilations, so that each setting starts afresh (and reruns repeat).
    # PyTorch may print a harmless "Exception ignored ... KeyError" while cleaning them up.
    torch._dynamo.reset()
    graphs = []
    compiled = torch.compile(mlp_torch, backend=counting_backend(graphs), dynamic=dynamic)
    for rows in lengths_to_try:
        compiled(x_t[:rows], w_fc_t, w_proj_t)
    print(f"dynamic={dynamic!s:>5}: {len(graphs)} graph(s), for input shapes")
    for shapes in graphs:
        print("               ", ", ".join(str(shape) for shape in shapes))

# %% [markdown]
# In the symbolic graphs, a size printed as `s` and a number stands for "any size"; with
# `dynamic=True`
# even the weights' sizes become symbolic. Before each call Dynamo runs cheap *guards*
# (checks that the new inputs still fit a compiled graph) and recompiles only when they fail.
#
# ### A graph break
#
# Dynamo captures tensor operations; a `print`, or a Python `if` on a tensor's *value*,
# cannot be part of a graph: the value (`.item()`) does not exist until the graph runs.
# Dynamo then **breaks** the graph: it compiles what comes before, runs the offending
# Python eagerly, and starts a new graph after it. The result stays correct, but each
# break costs a return to Python and splits work a compiler could have fused.
# `torch._dynamo.explain` lists the graphs, the breaks and their reasons.

# %%
def mlp_with_branch_torch(x, w_fc, w_proj):
    hidden = torch.nn.functional.gelu(x @ w_fc, approximate="tanh")  # (N, 4C)
    if hidden.abs().max().item() > 10.0:  # a Python decision on a tensor's value
        hidden = hidden.clamp(-10.0, 10.0)
    return x + hidden @ w_proj  # (N, C)


torch._logging.set_logs(dynamo=logging.ERROR)  # the break is reported below, not as a warning
torch._dynamo.reset()
explanation = torch._dynamo.explain(mlp_with_branch_torch)(*args_torch)
print(f"graphs: {explanation.graph_count}, graph breaks: {explanation.graph_break_count}, "
      f"operations per graph: {[len(ops) for ops in explanation.ops_per_graph]}")
for number, brk in enumerate(explanation.break_reasons, 1):
    where = brk.user_stack[-1] if brk.user_stack else None
    place = f"line {where.lineno}: {where.line}" if where is not None else "?"
    print(f"break {number}: {brk.reason.splitlines()[0]}\n    at {place}")
torch._logging.set_logs()  # back to the default log levels

# %% [markdown]
# `tf.function` handles the same branch differently. *AutoGraph* rewrites a Python `if`
# whose condition is a tensor into `tf.cond`, an operation that picks a branch inside the
# graph: one graph, no break. The price: both branches must produce tensors of compatible
# shapes and dtypes, and both are traced, so Python code in either one runs while tracing,
# whichever branch the data later takes.

# %%
@tf.function
def mlp_with_branch_tf(x, w_fc, w_proj):
    hidden = tf.nn.gelu(x @ w_fc, approximate=True)  # (N, 4C)
    if tf.reduce_max(tf.abs(hidden)) > 10.0:  # AutoGraph turns this into tf.cond
        hidden = tf.clip_by_value(hidden, -10.0, 10.0)
    return x + hidden @ w_proj  # (N, C)


graph = mlp_with_branch_tf.get_concrete_function(*args_tf).graph
op_types = sorted({op.type for op in graph.get_operations()})
print("one graph; its operations include", [t for t in op_types if "If" in t or "MatMul" in t])


# %% [markdown]
# ### What an error looks like
#
# Pass the weights in the wrong order, so that the first matrix product has mismatched
# sizes. Eagerly, both frameworks fail inside the operation and give the actual sizes.
# Inside `tf.function`, the error comes **while tracing**, before anything runs:
# TensorFlow infers the shape of every node of the graph and points at your line of code.
# Inside `torch.compile`, Dynamo runs the function on *fake* tensors (shapes without data)
# while capturing it; it reports the failing operation, your line, and a hint to try the
# code eagerly. The messages are printed in full (blank lines dropped, long lines wrapped).

# %%
def show_error(err, width=110):
    """The type and whole message of an exception, blank lines dropped, long lines wrapped."""
    lines = []
    for line in str(err).splitlines():
        if line.strip():
            lines += textwrap.wrap(line, width, subsequent_indent="      ",
                                   break_long_words=False, break_on_hyphens=False)
    return f"{type(err).__module__}.{type(err).__name__}:\n    " + "\n    ".join(lines)


# Dynamo also logs the failure while it happens; the message below says the same.
torch._logging.set_logs(modules={"torch._subclasses.fake_tensor": logging.CRITICAL})
torch._dynamo.reset()
compiled_mlp = torch.compile(mlp_torch, backend="eager")  # the error comes before any backend
graph_mlp = tf.function(mlp_tf)
wrong_order = {
    "PyTorch eager": lambda: mlp_torch(x_t, w_proj_t, w_fc_t),
    "torch.compile": lambda: compiled_mlp(x_t, w_proj_t, w_fc_t),
    "TensorFlow eager": lambda: mlp_tf(x_tf, w_proj_tf, w_fc_tf),
    "tf.function": lambda: graph_mlp(x_tf, w_proj_tf, w_fc_tf),
}
for name, attempt in wrong_order.items():
    try:
        attempt()
        print(f"--- {name}: no error?!")
    except Exception as err:  # noqa: BLE001 - we want to see whichever error comes
        print(f"--- {name}: {show_error(err)}")
torch._logging.set_logs()

# %% [markdown]
# ### Measured, not claimed: eager vs graph timings
#
# The same block, five ways. For each we time the **first call** (which includes tracing
# or compiling) and the best of `TIMING_REPEATS` repeats of later calls. In smoke mode,
# `torch.compile` uses `backend="eager"`: Dynamo captures the graph but nothing is
# compiled, so it measures Dynamo's own overhead (guards, running the captured graph from
# Python). At full size it uses Inductor,
# whose first call compiles C++ (expect tens of seconds on a small CPU; a rerun is faster
# because Inductor caches what it built on disk). `jit_compile=True` asks TensorFlow to
# compile the graph with XLA.

# %%
torch._dynamo.reset()
contenders = {
    "PyTorch eager": (mlp_torch, args_torch),
    f"torch.compile ({COMPILE_BACKEND})": (
        torch.compile(mlp_torch, backend=COMPILE_BACKEND), args_torch),
    "TensorFlow eager": (mlp_tf, args_tf),
    "tf.function": (tf.function(mlp_tf), args_tf),
    "tf.function (XLA)": (tf.function(mlp_tf, jit_compile=True), args_tf),
}
first_call_s, per_call_us = {}, {}
for name, (fn, args) in contenders.items():
    start = timeit.default_timer()
    result = fn(*args)
    first_call_s[name] = timeit.default_timer() - start
    checks.assert_close(result, mlp_torch(*args_torch), atol=1e-4, name=name)  # same answer
    runs = timeit.repeat(lambda fn=fn, args=args: fn(*args), number=10, repeat=TIMING_REPEATS)
    per_call_us[name] = min(runs) / 10 * 1e6


def break_even(name, eager):
    """Calls after which the graph's set-up cost is paid back by its faster calls."""
    saved_us = per_call_us[eager] - per_call_us[name]
    if name == eager:
        return "-"
    if saved_us < 0.05 * per_call_us[eager]:  # within timing noise, or slower
        return "never: not measurably faster"
    extra_us = (first_call_s[name] - first_call_s[eager]) * 1e6
    if extra_us <= 0:
        return "from the first call"
    return f"{extra_us / saved_us:,.0f} calls"


print(f"MLP block, x ({MLP_ROWS}, {MLP_WIDTH}), hidden {4 * MLP_WIDTH}")
print(f"{'':>26} {'first call':>12} {'later calls (best)':>19}  pays off after")
for name in contenders:
    eager = "PyTorch eager" if "torch" in name.lower() else "TensorFlow eager"
    print(f"{name:>26} {first_call_s[name] * 1e3:>9.1f} ms {per_call_us[name]:>16.1f} µs  "
          f"{break_even(name, eager)}")

fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(per_call_us), list(per_call_us.values()))
ax.set_xlabel(f"µs per call, x ({MLP_ROWS}, {MLP_WIDTH}) (lower is better)")
ax.invert_yaxis()
plt.tight_layout()
plt.show()

# %% [markdown]
# Read your own numbers rather than anyone's rule of thumb. The last column compares each
# graph with its own framework's eager mode: the extra cost of its first call divided by
# what it saves per call. Most of the work is in the two matrix products, which every mode
# hands to an optimized library routine; what a graph can save is the per-operation
# overhead of Python and dispatch, plus memory traffic where it fuses the element-wise work
# (GELU, the residual add). Rerun the notebook with `COURSE_SMOKE=0` to see how that
# changes with size, and with Inductor instead of the `eager` backend. On a shared machine
# another busy process can distort any of these figures: run the cell twice.
#
# ## What's next
#
# Chapter 02 builds a reverse-mode autograd engine from scratch.

# %% [markdown]
# ## Check yourself
#
# <!-- written by `python -m autograde release` from solutions/chapters.toml -->
# Answer each in a few sentences, from what this chapter showed you; where you are not sure,
# change the code and see.
#
# 1. `x[ids] += v` and `x.index_add_(0, ids, v)` give different results when `ids` holds the
#    same index twice. Why, and which one does an embedding's gradient need?
# 2. A `tf.function` called with prompts of 8, 16, 24 and 32 tokens traces four times. What
#    is part of the signature that triggers a trace, and which two changes make it trace at
#    most twice?
# 3. After `x.transpose(1, 2)`, `view` refuses to reshape but `reshape` works. What does the
#    transpose change in memory, and why can `split_heads_torch` return a view when it
#    transposes too?
