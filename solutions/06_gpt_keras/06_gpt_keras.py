# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Twin GPT · 06 The same GPT in Keras 3
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
# Parameters (this cell is tagged `parameters`). COURSE_SMOKE=1 runs everything small and fast.
SMOKE = runtime.smoke_mode()
# The model both frameworks build, train and time: chapter 05's 4-layer character GPT
# (batch 12 x 64 characters); smoke mode uses the 2-layer nano preset.
PRESET = "nano" if SMOKE else "shakespeare-char-cpu"
TRANSFER_ITERS = 10 if SMOKE else 500  # PyTorch steps before the model moves to Keras
TWIN_ITERS = 15 if SMOKE else 200  # steps of each framework on the same batches
TWIN_XLA = not SMOKE  # the Keras run XLA-compiled (its first step then compiles, ~10 s)
GREEDY_TOKENS = 20 if SMOKE else 200  # characters both models write greedily
RETRACE_TOKENS = 4 if SMOKE else 15  # greedy steps of the retracing demo
WARMUP_STEPS = 1 if SMOKE else 3  # untimed steps per variant (tracing, compiling)
TIMED_STEPS = 3 if SMOKE else 30  # timed training steps per variant
TIME_TORCH_COMPILE = not SMOKE  # torch.compile: 30-50 s to compile on 2 CPU cores
SEED = 1337

# %% [markdown]
# # 06 · The same GPT in Keras 3
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/twin-gpt/twin-gpt/blob/v0.1.0/notebooks/06_gpt_keras/06_gpt_keras.ipynb)
#
# <!-- chapter card: written by `python -m autograde release` from solutions/chapters.toml -->
# **Time:** about 115 min to work through; the code runs in at most 2 min on 2 CPU cores.
#
# **You will be able to**
#
# - write Keras layers (`__init__`, `build`, `call`) for causal self-attention, the MLP and
#   the pre-LayerNorm block, and stack them into a Keras GPT with GPT-2's names
# - move weights between `nn.Linear` and `Dense`, and a whole GPT from PyTorch to Keras,
#   with logits that agree to 1e-4
# - write a training step with `tf.GradientTape`, global-norm clipping and the shared
#   schedule, and explain why the two frameworks' loss curves on the same batches drift
#   apart only slowly
# - write a KV cache of fixed shape that one `tf.function` trace serves at every step, and
#   sample with temperature and top-k in `keras.ops`
# - read one shape bug as eager, `tf.function` and XLA report it, and time a training step
#   in five execution modes
#
# **Before you start:** chapters 01 (Tensors, side by side), 04 (Attention) and 05 (The
# GPT). From outside the course: object-oriented Python (subclassing, `super().__init__`).
# <!-- end of the chapter card -->
#
# Chapters 04 and 05 built a GPT in PyTorch. This chapter builds the *same* GPT in Keras 3
# (on TensorFlow), then puts the two side by side: same architecture, same weights, same
# batches, same training recipe, two frameworks, measured.
#
# 1. **Keras layers**: causal self-attention (exercise 1), the MLP (exercise 2) and the
#    pre-LayerNorm block (exercise 3), each checked against the library's Keras layer
#    (`course.tf.model`) with the same weights;
# 2. **moving weights**: one `nn.Linear` into a Keras `Dense` (exercise 4), then a whole
#    PyTorch GPT into Keras with `course.tf.convert.torch_to_keras`: into your own Keras
#    GPT (exercise 5), and a trained one into the library's, whose logits agree and which
#    writes the same text;
# 3. **training twice**: your training step with a `GradientTape` (exercise 6), checked
#    against PyTorch's step on the same batch; then both frameworks' trainers from the same
#    initial weights on the same batches, their loss curves on one plot;
# 4. **debugging**: one shape bug as PyTorch eager, TensorFlow eager, `tf.function` and XLA
#    report it; TensorFlow's GPU memory setting, and *retracing*, the `tf.function` trap;
# 5. **generating**: sampling with temperature and top-k in `keras.ops` (exercise 7), and
#    a KV cache of fixed shape, written in place so that one trace serves every step
#    (exercise 8), which together make the library's Keras GPT write;
# 6. **measured**: the time of one training step in PyTorch eager, `torch.compile`, Keras
#    eager, `tf.function` and `tf.function(jit_compile=True)`, and the memory it takes.
#
# The library holds both models, with the same class names and GPT-2 parameter names on
# each side: `course.torch.GPT` (chapter 05) and `course.tf.GPT` (this chapter's reference).

# %%
import gc
import math
import os
import re
import time

import matplotlib.pyplot as plt
import numpy as np
import psutil

from course import checks, data
from course.metrics import peak_rss_mb

tf = runtime.import_tensorflow()  # never `import tensorflow` first (chapter 00 says why)
keras = runtime.import_keras()  # Keras 3 on the TensorFlow backend
for gpu in tf.config.list_physical_devices("GPU"):  # before any op runs: see "memory" below
    tf.config.experimental.set_memory_growth(gpu, True)
import torch
from keras import ops

from course.config import GPTConfig, get_preset, lr_at
from course.tf import GPT as KerasGPT
from course.tf import generate as keras_generate
from course.tf import keras_to_torch, torch_to_keras
from course.tf.model import MLP, Block, CausalSelfAttention, lm_loss  # the Keras reference
from course.torch import GPT as TorchGPT  # built in chapters 04-05
from course.torch import generate as torch_generate

keras.utils.set_random_seed(SEED)  # Python, numpy and TensorFlow generators
torch.manual_seed(SEED)
device = runtime.pick_device()  # PyTorch's device; TensorFlow places its ops by itself
preset = get_preset(PRESET)
print(f"TensorFlow {tf.__version__}, Keras {keras.__version__} "
      f"(backend {keras.backend.backend()}), PyTorch {torch.__version__}")
print(f"preset {preset.name!r}: {preset.model}")

# %% [markdown]
# ## Keras in one page, for a PyTorch reader
#
# A Keras model is made of **layers**, as a PyTorch model is made of modules. The idiom
# differs in when things happen:
#
# | | PyTorch | Keras 3 |
# |---|---|---|
# | a building block | `nn.Module`, `forward(x)` | `keras.layers.Layer`, `call(x, training=False)` |
# | weights created | in `__init__` (sizes given) | in `build(input_shape)`, on first call |
# | linear map | `nn.Linear(in, out)`: `weight` (out, in) | `Dense(out)`: `kernel` (in, out) |
# | layer norm | `nn.LayerNorm(C, eps=1e-5)`: `weight`, `bias` | `LayerNormalization(epsilon=1e-3)`: `gamma`, `beta` |
# | GELU | `nn.GELU(approximate="tanh")` | `keras.ops.gelu(x)` (tanh by default) |
# | tensor maths | `torch.*`, methods | `keras.ops.*` (numpy names), no methods |
# | training mode | `model.train()` / `model.eval()` | `training=True` passed to `call` |
# | the training loop | yours | `compile` + `fit`, which call `train_step` |
#
# Two rows hold traps. Keras' `LayerNormalization` has `epsilon=1e-3` by default, a
# hundred times PyTorch's and GPT-2's `1e-5`; and `keras.activations.gelu` is the *exact*
# GELU by default while `keras.ops.gelu` is the tanh approximation. Get either wrong and
# the model still trains, it just never matches the PyTorch one.
#
# A `Dense` layer has no weights until it knows its input size:

# %%
dense = keras.layers.Dense(3, name="dense")
print("before the first call:", dense.weights)
dense(np.zeros((2, 5), dtype="float32"))  # builds it: the input has 5 features
print("after it:", [(w.path, tuple(w.shape)) for w in dense.weights])
linear = torch.nn.Linear(5, 3)
print("nn.Linear(5, 3):", [(name, tuple(p.shape)) for name, p in linear.named_parameters()])

# %% [markdown]
# ## Checking a layer against the library's
#
# Each exercise below writes a Keras layer that the library already has
# (`course.tf.model`). The test gives both the *same weights* and compares their
# outputs. The helpers here do the copying by **attribute name**, so name your sub-layers
# as GPT-2 does: `self.c_attn`, `self.c_proj`, `self.c_fc`, `self.ln_1`, `self.attn`,
# `self.ln_2`, `self.mlp`. Before copying, the tests draw larger random weights than a
# freshly initialised GPT has (its 0.02 standard deviation makes every attention almost
# uniform, which would hide a missing scale or mask).

# %% nbgrader={"grade": false, "grade_id": "weight_helpers", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Read-only: the graded tests below use these helpers.
SUBLAYERS = ("ln_1", "attn", "ln_2", "mlp", "c_attn", "c_fc", "c_proj")
WEIGHTS = ("kernel", "bias", "gamma", "beta")  # Dense and LayerNormalization variables


def weight_paths(layer, prefix=""):
    """Dotted paths of every weight of a course layer: 'ln_1.gamma', 'attn.c_attn.kernel', ..."""
    for name in WEIGHTS:
        if getattr(layer, name, None) is not None:  # no bias when config.bias is False
            yield prefix + name
    for name in SUBLAYERS:
        if hasattr(layer, name):
            yield from weight_paths(getattr(layer, name), prefix + name + ".")


def _resolve(layer, path, who):
    for part in path.split("."):
        if not hasattr(layer, part):
            raise AssertionError(f"{who} has no attribute {path!r}: name the sub-layer "
                                 f"self.{path.split('.')[0]}, as the library does")
        layer = getattr(layer, part)
    if layer is None:
        raise AssertionError(f"{who}.{path} is None: is use_bias / center set as asked?")
    return layer


def copy_weights(source, target):
    """Assign each weight of `source` (a library layer) to the same path of `target`."""
    for path in weight_paths(source):
        value = _resolve(source, path, "the reference layer")
        variable = _resolve(target, path, "your layer")
        if tuple(variable.shape) != tuple(value.shape):
            raise AssertionError(f"{path}: yours has shape {tuple(variable.shape)}, the "
                                 f"library's {tuple(value.shape)}")
        variable.assign(value)


def randomize_weights(layer, seed):
    """Weights large enough for mistakes to show: kernels N(0, 1/fan_in), gains near 1."""
    rng = np.random.default_rng(seed)
    for path in weight_paths(layer):
        variable = _resolve(layer, path, "the layer")
        shape, kind = tuple(variable.shape), path.rsplit(".", 1)[-1]
        if kind == "kernel":
            value = rng.normal(0.0, 1.0 / math.sqrt(shape[0]), shape)
        elif kind == "gamma":
            value = 1.0 + rng.normal(0.0, 0.2, shape)
        else:
            value = rng.normal(0.0, 0.2, shape)
        variable.assign(value.astype("float32"))


demo = CausalSelfAttention(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=4))
demo(np.zeros((1, 4, 8), dtype="float32"))
print("weights of the library's attention layer:", list(weight_paths(demo)))

# %% [markdown]
# ## Exercise 1 · causal self-attention as a Keras layer
#
# Write `MyCausalSelfAttention(config)`, a `keras.layers.Layer`: chapter 04's attention,
# the Keras way.
#
# - `__init__(self, config, **kwargs)`: call `super().__init__(**kwargs)`, keep `n_head`
#   and `n_embd`, and create two `keras.layers.Dense` layers, `self.c_attn` with
#   `3 * n_embd` units (queries, keys and values in one product) and `self.c_proj` with
#   `n_embd` units, both with `use_bias=config.bias`.
# - `build(self, input_shape)`: build both (`self.c_attn.build(input_shape)`; `c_proj`'s
#   input has the same shape). Keras would otherwise build them on first use; building
#   explicitly is the idiom, and lets Keras know the layer's weights before any call.
# - `call(self, x)`, x (B, T, C) → (B, T, C): `c_attn`, split into q, k, v
#   (`ops.split(qkv, 3, axis=-1)`); give each its heads, (B, T, C) → (B, T, nh, hs) →
#   **(B, nh, T, hs)**; scores `q kᵀ / √hs` (B, nh, T, T); set the scores of future
#   keys (column > row) to `-inf` **before** the softmax; softmax over the keys; times v;
#   heads back side by side, (B, nh, T, hs) → (B, T, nh, hs) → (B, T, C); `c_proj`.
#
# Use `keras.ops` (numpy's names: `ops.reshape`, `ops.transpose(x, axes)`,
# `ops.swapaxes`, `ops.matmul`, `ops.where`, `ops.softmax(x, axis=-1)`, `ops.arange`)
# and take B and T from `ops.shape(x)`, so that the layer also works inside `tf.function`.
# Dropout is left out (the course trains without it).

# %% nbgrader={"grade": false, "grade_id": "keras_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
class MyCausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention: c_attn (C -> 3C), attention, c_proj (C -> C)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        ### BEGIN SOLUTION
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = keras.layers.Dense(3 * config.n_embd, use_bias=config.bias)
        self.c_proj = keras.layers.Dense(config.n_embd, use_bias=config.bias)
        ### END SOLUTION

    def build(self, input_shape):
        ### BEGIN SOLUTION
        self.c_attn.build(input_shape)
        self.c_proj.build(input_shape)
        ### END SOLUTION

    def call(self, x):
        ### BEGIN SOLUTION
        B, T = ops.shape(x)[0], ops.shape(x)[1]
        hs = self.n_embd // self.n_head
        q, k, v = ops.split(self.c_attn(x), 3, axis=-1)  # 3 x (B, T, C)

        def heads(t):  # (B, T, C) -> (B, nh, T, hs)
            return ops.transpose(ops.reshape(t, (B, T, self.n_head, hs)), (0, 2, 1, 3))

        q, k, v = heads(q), heads(k), heads(v)
        scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) / math.sqrt(hs)  # (B, nh, T, T)
        visible = ops.arange(T)[None, :] <= ops.arange(T)[:, None]  # (T, T): key <= query
        scores = ops.where(visible, scores, float("-inf"))
        y = ops.matmul(ops.softmax(scores, axis=-1), v)  # (B, nh, T, hs)
        y = ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (B, T, self.n_embd))  # (B, T, C)
        return self.c_proj(y)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_keras_attention", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""MyCausalSelfAttention: the library's CausalSelfAttention with the same weights; causal."""
# Without biases, then with them: other sizes for every role (B, T, C, heads) each time.
for seed, (n_head, n_embd, B, T, bias) in enumerate([(4, 32, 2, 10, False), (2, 24, 3, 7, True)]):
    cfg = GPTConfig(n_layer=1, n_head=n_head, n_embd=n_embd, block_size=16, bias=bias,
                    attn_impl="manual")
    x = np.random.default_rng(seed).standard_normal((B, T, n_embd)).astype("float32")
    reference, mine = CausalSelfAttention(cfg), MyCausalSelfAttention(cfg)
    reference(x)  # calling a layer builds its weights
    mine(x)
    n_mine, n_ref = len(mine.trainable_weights), len(reference.trainable_weights)
    assert n_mine == n_ref, f"your layer has {n_mine} weights, the library's {n_ref} ({bias=})"
    randomize_weights(reference, seed=seed + 1)
    copy_weights(reference, mine)
    y = mine(x)
    checks.assert_shape(y, (B, T, n_embd), name="MyCausalSelfAttention(x)")
    checks.assert_close(y, reference(x), atol=1e-5,
                        name=f"attention vs the library's (same weights, {bias=})")
    x_future = x.copy()
    x_future[:, 5:] = 0.0  # change every token from position 5 on
    checks.assert_close(mine(x_future)[:, :5], y[:, :5], atol=1e-5,
                        name="outputs 0..4 after changing tokens 5.. (they must not look ahead)")
### BEGIN HIDDEN TESTS
# With biases, other head counts and lengths (T = 1, and the whole block).
for seed, (n_head, n_embd, B, T, bias) in enumerate(
    [(2, 48, 3, 16, True), (1, 8, 1, 7, False), (8, 64, 2, 1, True), (3, 24, 2, 5, False)]
):
    cfg = GPTConfig(n_layer=2, n_head=n_head, n_embd=n_embd, block_size=16, bias=bias,
                    attn_impl="manual")
    x = np.random.default_rng(seed).standard_normal((B, T, n_embd)).astype("float32")
    reference, mine = CausalSelfAttention(cfg), MyCausalSelfAttention(cfg)
    reference(x)
    mine(x)
    assert len(mine.trainable_weights) == len(reference.trainable_weights), f"{bias=}"
    randomize_weights(reference, seed=seed + 10)
    copy_weights(reference, mine)
    checks.assert_close(mine(x), reference(x), atol=1e-5, name=f"{n_head} heads, {T=}, {bias=}")
# The PyTorch layer with the same weights (a Dense kernel is an nn.Linear weight transposed).
from course.torch.model import CausalSelfAttention as TorchAttention

cfg = GPTConfig(n_layer=1, n_head=4, n_embd=32, block_size=16, bias=True)
x = np.random.default_rng(5).standard_normal((2, 12, 32)).astype("float32")
mine = MyCausalSelfAttention(cfg)
mine(x)
randomize_weights(mine, seed=6)
theirs = TorchAttention(cfg)
with torch.no_grad():
    for name in ("c_attn", "c_proj"):
        getattr(theirs, name).weight.copy_(torch.from_numpy(getattr(mine, name).kernel.numpy().T))
        getattr(theirs, name).bias.copy_(torch.from_numpy(getattr(mine, name).bias.numpy()))
    expected = theirs(torch.from_numpy(x))
checks.assert_close(mine(x), expected, atol=1e-5, name="attention vs course.torch's")
# Traced and XLA-compiled, it computes the same.
compiled = tf.function(mine, jit_compile=True)
checks.assert_close(compiled(tf.constant(x)), expected, atol=1e-5, name="inside tf.function")
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 2 · the MLP
#
# Write `MyMLP(config)`: `self.c_fc`, a `Dense` with `4 * n_embd` units, a GELU, then
# `self.c_proj`, a `Dense` back to `n_embd` units (both `use_bias=config.bias`). The GELU
# is GPT-2's **tanh approximation**, `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`,
# which is what PyTorch's `nn.GELU(approximate="tanh")` computes: `keras.ops.gelu(h)`
# (approximate by default) or `keras.activations.gelu(h, approximate=True)`. The two GELUs
# differ by at most 5·10⁻⁴, and the test can tell. (The approximation also matters for
# export: the exact GELU becomes an `Erfc` operation in ONNX, which onnxruntime rejects.)

# %% nbgrader={"grade": false, "grade_id": "keras_mlp", "locked": false, "schema_version": 3, "solution": true, "task": false}
class MyMLP(keras.layers.Layer):
    """Position-wise feed-forward: C -> 4C -> GELU (tanh approximation) -> C."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        ### BEGIN SOLUTION
        self.c_fc = keras.layers.Dense(4 * config.n_embd, use_bias=config.bias)
        self.c_proj = keras.layers.Dense(config.n_embd, use_bias=config.bias)
        ### END SOLUTION

    def build(self, input_shape):
        ### BEGIN SOLUTION
        self.c_fc.build(input_shape)
        self.c_proj.build((*input_shape[:-1], 4 * input_shape[-1]))
        ### END SOLUTION

    def call(self, x):
        ### BEGIN SOLUTION
        return self.c_proj(ops.gelu(self.c_fc(x), approximate=True))
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_keras_mlp", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""MyMLP: the library's MLP with the same weights, to 1e-5: the tanh GELU, not the exact."""
for seed, (n_embd, B, T, bias) in enumerate([(16, 2, 5, False), (20, 3, 4, True)]):
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=n_embd, block_size=8, bias=bias)
    x = np.random.default_rng(seed + 10).standard_normal((B, T, n_embd)).astype("float32")
    reference, mine = MLP(cfg), MyMLP(cfg)
    reference(x)
    mine(x)
    n_mine, n_ref = len(mine.trainable_weights), len(reference.trainable_weights)
    assert n_mine == n_ref, f"your MLP has {n_mine} weights, the library's {n_ref} ({bias=})"
    randomize_weights(reference, seed=seed + 11)
    copy_weights(reference, mine)
    y = mine(x)
    checks.assert_shape(y, (B, T, n_embd), name="MyMLP(x)")
    checks.assert_close(y, reference(x), atol=1e-5, rtol=0,
                        name=f"MyMLP vs the library's MLP (same weights, {bias=})")
### BEGIN HIDDEN TESTS
for seed, (n_embd, bias) in enumerate([(8, True), (32, False), (24, True)]):
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=n_embd, block_size=8, bias=bias)
    x = 1.5 * np.random.default_rng(seed).standard_normal((3, 4, n_embd)).astype("float32")
    reference, mine = MLP(cfg), MyMLP(cfg)
    reference(x)
    mine(x)
    assert len(mine.trainable_weights) == len(reference.trainable_weights), f"{bias=}"
    randomize_weights(reference, seed=seed + 20)
    copy_weights(reference, mine)
    checks.assert_close(mine(x), reference(x), atol=1e-5, rtol=0, name=f"{n_embd=}, {bias=}")
# An independent reference: the formula in numpy, and PyTorch's MLP.
cfg = GPTConfig(n_layer=1, n_head=2, n_embd=12, block_size=8, bias=True)
x = 2.0 * np.random.default_rng(7).standard_normal((2, 3, 12)).astype("float32")
mine = MyMLP(cfg)
mine(x)
randomize_weights(mine, seed=8)
h = x.astype(np.float64) @ mine.c_fc.kernel.numpy() + mine.c_fc.bias.numpy()
h = 0.5 * h * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h**3)))
expected = h @ mine.c_proj.kernel.numpy() + mine.c_proj.bias.numpy()
checks.assert_close(mine(x), expected, atol=1e-5, rtol=0, name="MyMLP vs the formula")
from course.torch.model import MLP as TorchMLP

theirs = TorchMLP(cfg)
with torch.no_grad():
    for name in ("c_fc", "c_proj"):
        getattr(theirs, name).weight.copy_(torch.from_numpy(getattr(mine, name).kernel.numpy().T))
        getattr(theirs, name).bias.copy_(torch.from_numpy(getattr(mine, name).bias.numpy()))
    expected = theirs(torch.from_numpy(x))
checks.assert_close(mine(x), expected, atol=1e-5, rtol=0, name="MyMLP vs course.torch's MLP")
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 3 · the pre-LayerNorm block
#
# Write `MyBlock(config)`, GPT-2's Transformer block: each sub-layer reads a
# **normalised** copy of the residual stream and **adds** its result back to it,
#
# ```
# x = x + attn(ln_1(x))
# x = x + mlp(ln_2(x))
# ```
#
# (The original Transformer normalised *after* adding, `ln(x + attn(x))`, "post-LN";
# GPT-2 moved the norms in front, which keeps a clean identity path from the input to the
# output and makes deep stacks much easier to train.)
#
# Sub-layers: `self.ln_1` and `self.ln_2`, two `keras.layers.LayerNormalization` with
# `epsilon=config.layer_norm_eps` (not Keras' default) and `center=config.bias` (a shift
# `beta` only when the model has biases); `self.attn = CausalSelfAttention(config)` and
# `self.mlp = MLP(config)`, the library's (your layers from exercises 1 and 2 do the same,
# but a mistake there should not cost you twice). In `build`, build all four on
# `input_shape` (the residual stream keeps its shape).

# %% nbgrader={"grade": false, "grade_id": "keras_block", "locked": false, "schema_version": 3, "solution": true, "task": false}
class MyBlock(keras.layers.Layer):
    """Pre-LayerNorm Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        ### BEGIN SOLUTION
        eps = config.layer_norm_eps
        self.ln_1 = keras.layers.LayerNormalization(epsilon=eps, center=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = keras.layers.LayerNormalization(epsilon=eps, center=config.bias)
        self.mlp = MLP(config)
        ### END SOLUTION

    def build(self, input_shape):
        ### BEGIN SOLUTION
        for layer in (self.ln_1, self.attn, self.ln_2, self.mlp):
            layer.build(input_shape)
        ### END SOLUTION

    def call(self, x):
        ### BEGIN SOLUTION
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_keras_block", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""MyBlock: the library's Block with the same weights, to 1e-5 (pre-LN, residuals, eps)."""
for seed, (n_head, n_embd, B, T, bias) in enumerate([(4, 32, 2, 9, False), (2, 12, 3, 5, True)]):
    cfg = GPTConfig(n_layer=2, n_head=n_head, n_embd=n_embd, block_size=16, bias=bias)
    x = np.random.default_rng(seed + 20).standard_normal((B, T, n_embd)).astype("float32")
    reference, mine = Block(cfg), MyBlock(cfg)
    reference(x)
    mine(x)
    n_mine, n_ref = len(mine.trainable_weights), len(reference.trainable_weights)
    assert n_mine == n_ref, f"your block has {n_mine} weights, the library's {n_ref} ({bias=})"
    randomize_weights(reference, seed=seed + 21)
    copy_weights(reference, mine)
    y = mine(x)
    checks.assert_shape(y, (B, T, n_embd), name="MyBlock(x)")
    checks.assert_close(y, reference(x), atol=1e-5, rtol=0,
                        name=f"MyBlock vs the library's Block ({bias=})")
### BEGIN HIDDEN TESTS
for seed, (n_head, n_embd, B, T, bias, scale) in enumerate(
    [(2, 16, 1, 16, True, 1.0), (4, 48, 3, 5, False, 0.1), (1, 8, 2, 1, True, 3.0)]
):
    cfg = GPTConfig(n_layer=3, n_head=n_head, n_embd=n_embd, block_size=16, bias=bias)
    x = scale * np.random.default_rng(seed).standard_normal((B, T, n_embd)).astype("float32")
    reference, mine = Block(cfg), MyBlock(cfg)
    reference(x)
    mine(x)
    assert len(mine.trainable_weights) == len(reference.trainable_weights), f"{bias=}"
    randomize_weights(reference, seed=seed + 30)
    copy_weights(reference, mine)
    checks.assert_close(mine(x), reference(x), atol=1e-5, rtol=0,
                        name=f"{n_head} heads, {n_embd=}, {T=}, {bias=}, x scale {scale}")
# PyTorch's Block, with every weight moved across (LayerNorm gamma/beta = weight/bias).
from course.torch.model import Block as TorchBlock

cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, bias=True)
x = 0.3 * np.random.default_rng(9).standard_normal((2, 8, 16)).astype("float32")
mine = MyBlock(cfg)
mine(x)
randomize_weights(mine, seed=40)
theirs = TorchBlock(cfg)
torch_names = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
with torch.no_grad():
    for path in weight_paths(mine):
        *parents, attribute = path.split(".")
        module = theirs
        for part in parents:
            module = getattr(module, part)
        value = _resolve(mine, path, "your block").numpy()
        getattr(module, torch_names[attribute]).copy_(
            torch.from_numpy(value.T if attribute == "kernel" else value))
    expected = theirs(torch.from_numpy(x))
checks.assert_close(mine(x), expected, atol=1e-5, rtol=0, name="MyBlock vs course.torch's Block")
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 4 · moving one linear layer from PyTorch to Keras
#
# The two models have the same parameter names, so moving a state dict from one to the
# other is a loop over names. Only the layout differs: an `nn.Linear(in, out)` computes
# `x @ weight.T + bias` with `weight` of shape (out, in), a `Dense(out)` computes
# `x @ kernel + bias` with `kernel` of shape (in, out). So `kernel = weight.T`.
#
# Write `linear_to_dense(linear, dense)`: copy the weight (and the bias, if the linear layer
# has one) of the `torch.nn.Linear` into the already built Keras `Dense`, with
# `variable.assign(numpy_array)`, and return `dense`. A parameter that requires a gradient
# must be `.detach()`ed before `.numpy()`. Beware of `reshape`: it gives the right shape
# and the wrong matrix.

# %% nbgrader={"grade": false, "grade_id": "linear_to_dense", "locked": false, "schema_version": 3, "solution": true, "task": false}
def linear_to_dense(linear, dense):
    """Copy a torch ``nn.Linear``'s weight (out, in) and bias into a built Keras ``Dense``."""
    ### BEGIN SOLUTION
    dense.kernel.assign(linear.weight.detach().cpu().numpy().T)  # (out, in) -> (in, out)
    if linear.bias is not None:
        dense.bias.assign(linear.bias.detach().cpu().numpy())
    return dense
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_linear_to_dense", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""linear_to_dense: the Dense computes what the nn.Linear computes (transposed weight, bias)."""
torch.manual_seed(0)
x = np.random.default_rng(1).standard_normal((4, 5)).astype("float32")
for n_in, n_out, bias in [(5, 3, True), (5, 5, True), (4, 2, False)]:
    linear = torch.nn.Linear(n_in, n_out, bias=bias)
    dense = keras.layers.Dense(n_out, use_bias=bias)
    dense.build((None, n_in))
    out = linear_to_dense(linear, dense)
    assert out is dense, "return the Dense layer you were given"
    with torch.no_grad():
        expected = linear(torch.from_numpy(x[:, :n_in]))
    checks.assert_close(dense(x[:, :n_in]), expected, atol=1e-6,
                        name=f"Dense vs nn.Linear({n_in}, {n_out}, {bias=})")
### BEGIN HIDDEN TESTS
for n_in, n_out, bias in [(7, 2, False), (16, 48, True), (6, 6, False), (12, 4, True)]:
    linear = torch.nn.Linear(n_in, n_out, bias=bias)
    before = [p.detach().clone() for p in linear.parameters()]
    dense = keras.layers.Dense(n_out, use_bias=bias)
    dense.build((None, n_in))
    linear_to_dense(linear, dense)
    checks.assert_close(dense.kernel, linear.weight.T, atol=0, name=f"kernel ({n_in}, {n_out})")
    if bias:
        checks.assert_close(dense.bias, linear.bias, atol=0, name="bias")
    assert all(torch.equal(a, b) for a, b in zip(before, linear.parameters())), "linear changed"
    x = np.random.default_rng(n_in).standard_normal((3, 2, n_in)).astype("float32")
    with torch.no_grad():
        expected = linear(torch.from_numpy(x))
    checks.assert_close(dense(x), expected, atol=1e-5, name=f"Dense vs nn.Linear({n_in}, {n_out})")
### END HIDDEN TESTS

# %% [markdown]
# ## A trained PyTorch GPT, moved into Keras
#
# `course.tf.convert.torch_to_keras(state_dict, keras_model)` does your exercise for every
# weight of a GPT, guided by one table, `weight_pairs(config)`: (PyTorch name, Keras
# sub-layer, attribute, transpose?). Besides the transposes, one entry needs care:
# PyTorch's state dict lists the tied `lm_head.weight`, which on the Keras side is the
# token embedding itself. First a few rows of the table:

# %%
from course.tf.convert import weight_pairs

for row in list(weight_pairs(preset.model))[:8]:
    print("{:<34} -> {:<18} {:<11} transpose={}".format(*row))
print(f"... {len(list(weight_pairs(preset.model)))} weights in all, plus the tied lm_head")

# %% [markdown]
# ## Exercise 5 · your Keras GPT
#
# Stack `n_layer` of your blocks between the embeddings and a final LayerNorm, tie the
# output head to the token embedding, and you have the GPT. Write `GPT(config)`, a
# `keras.Model`, with the sub-layer names that `torch_to_keras` looks up:
#
# - `self.config = config` (the converter reads the table of names from it);
# - `self.wte`, a `keras.layers.Embedding(vocab_size, n_embd)`, the token embedding, and
#   `self.wpe`, a `keras.layers.Embedding(block_size, n_embd)`, the position embedding;
# - `self.h`, a Python list of `n_layer` `MyBlock(config)` (exercise 3): Keras tracks the
#   layers in a list attribute, as PyTorch needs an `nn.ModuleList` for;
# - `self.ln_f`, the final `LayerNormalization` (`epsilon=config.layer_norm_eps`,
#   `center=config.bias`, as in the block).
#
# `call(self, idx, training=False)`, idx (B, T) integer token ids → logits (B, T, vocab):
# token embeddings plus the position embeddings of positions `0 .. T-1`
# (`self.wpe(ops.arange(T))`, with T from `ops.shape(idx)[1]`), the blocks in order,
# `ln_f`, and the **tied head**: `logits = x @ wteᵀ`, with `ops.matmul` and the embedding
# matrix itself, `self.wte.embeddings` (vocab, C). There is no separate output layer; the
# PyTorch GPT's `lm_head.weight` *is* its `wte.weight`.
#
# Look the positions up **inside `call`**. A position table computed once, outside the
# layer's `call` (in `__init__`, or a functional `Embedding(...)(ops.arange(T))`), is a
# constant: it never changes when the weights do, and it never trains.
#
# No `build` is needed: Keras builds each sub-layer the first time `call` reaches it, so
# the test calls your model once before moving weights into it.

# %% nbgrader={"grade": false, "grade_id": "keras_gpt", "locked": false, "schema_version": 3, "solution": true, "task": false}
class GPT(keras.Model):
    """Token + position embeddings, n_layer MyBlocks, a final LayerNorm, the tied head."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        ### BEGIN SOLUTION
        self.config = config
        self.wte = keras.layers.Embedding(config.vocab_size, config.n_embd)
        self.wpe = keras.layers.Embedding(config.block_size, config.n_embd)
        self.h = [MyBlock(config) for _ in range(config.n_layer)]
        self.ln_f = keras.layers.LayerNormalization(epsilon=config.layer_norm_eps,
                                                    center=config.bias)
        ### END SOLUTION

    def call(self, idx, training=False):
        ### BEGIN SOLUTION
        T = ops.shape(idx)[1]
        x = self.wte(idx) + self.wpe(ops.arange(T))  # (B, T, C): positions looked up here
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        return ops.matmul(x, ops.transpose(self.wte.embeddings))  # (B, T, vocab), tied
        ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "gpt_helpers", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Read-only: the graded tests below use this helper.
def random_torch_gpt(config, seed):
    """A PyTorch GPT on the model's device, with weights large enough for mistakes to show:
    matrices N(0, 0.3²), LayerNorm gains near 1, biases N(0, 0.2²)."""
    torch.manual_seed(seed)
    model = TorchGPT(config).to(device).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
            else:
                p.normal_(1.0 if ".ln_" in name and name.endswith("weight") else 0.0, 0.2)
    return model


def logits_in_torch(model, idx):
    """The PyTorch GPT's logits (B, T, vocab) for idx, a numpy array, as numpy."""
    with torch.no_grad():
        return model(torch.from_numpy(idx).to(device))[0].cpu().numpy()


# %% nbgrader={"grade": true, "grade_id": "test_keras_gpt", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""GPT: a PyTorch GPT's weights, moved by name with torch_to_keras, give its logits (1e-4)."""
# Two models, with and without biases; a different size for every role each time.
for seed, (n_layer, n_head, n_embd, block, vocab, B, T, bias) in enumerate(
    [(2, 2, 16, 9, 11, 3, 7, False), (1, 4, 24, 8, 13, 2, 5, True)]
):
    cfg = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block,
                    vocab_size=vocab, bias=bias)
    idx = np.random.default_rng(seed).integers(0, vocab, (B, T))
    mine = GPT(cfg)
    assert isinstance(mine, keras.Model), "GPT must subclass keras.Model"
    checks.assert_shape(mine(idx), (B, T, vocab), name="GPT(idx) before moving weights")
    n_mine, n_ref = len(mine.trainable_weights), len(KerasGPT(cfg).trainable_weights)
    assert n_mine == n_ref, (f"your GPT has {n_mine} weights, the library's {n_ref} ({bias=}): "
                             "a separate output layer? a LayerNorm that ignores config.bias?")
    theirs = random_torch_gpt(cfg, seed)
    torch_to_keras(theirs.state_dict(), mine)  # by the names wte, wpe, h_N/..., ln_f
    checks.assert_close(mine(idx), logits_in_torch(theirs, idx), atol=1e-4, rtol=0,
                        name=f"your GPT's logits vs PyTorch's ({n_layer} layers, {bias=})")
# The position embedding trains: the loss has a gradient for the rows of positions 0..T-1.
with tf.GradientTape() as tape:
    loss = lm_loss(idx, mine(idx, training=True))
grad = tape.gradient(loss, mine.wpe.embeddings)
assert grad is not None, "no gradient reaches wpe: are the positions looked up inside call?"
grad = np.asarray(tf.convert_to_tensor(grad))
assert np.abs(grad[:T]).sum(axis=1).min() > 0, "some position 0..T-1 gets no gradient"
### BEGIN HIDDEN TESTS
# A three-layer model, T = block_size and T = 1, both bias settings.
for seed, (n_layer, n_head, n_embd, block, vocab, B, T, bias) in enumerate(
    [(3, 3, 12, 6, 17, 2, 6, True), (2, 1, 8, 10, 7, 4, 1, False), (2, 2, 20, 12, 23, 1, 12, False)]
):
    cfg = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block,
                    vocab_size=vocab, bias=bias)
    idx = np.random.default_rng(seed + 40).integers(0, vocab, (B, T))
    mine = GPT(cfg)
    mine(idx)
    assert len(mine.trainable_weights) == len(KerasGPT(cfg).trainable_weights), f"{bias=}"
    theirs = random_torch_gpt(cfg, seed + 40)
    torch_to_keras(theirs.state_dict(), mine)
    checks.assert_close(mine(idx), logits_in_torch(theirs, idx), atol=1e-4, rtol=0,
                        name=f"{n_layer} layers, {T=}, {bias=}")
    # The library's Keras GPT, same weights: the same logits, traced too.
    reference = torch_to_keras(theirs.state_dict(), KerasGPT(cfg))
    traced = tf.function(mine)
    checks.assert_close(traced(tf.constant(idx)), reference(idx), atol=1e-4, rtol=0,
                        name=f"inside tf.function vs the library's ({bias=})")
    with tf.GradientTape() as tape:
        loss = lm_loss(idx, mine(idx, training=True))
    grad = np.asarray(tf.convert_to_tensor(tape.gradient(loss, mine.wpe.embeddings)))
    assert np.abs(grad[:T]).sum(axis=1).min() > 0, "a position gets no gradient"
### END HIDDEN TESTS

# %% [markdown]
# Now a real model: train the PyTorch GPT for `TRANSFER_ITERS` steps with chapter 05's
# `course.torch.train.train`, move it into a fresh Keras GPT, and compare their logits on
# a batch of text. Both run in float32, in a different order of operations, so they may
# differ in the last bits; the course's target is a maximum absolute difference of 1e-4.

# %%
from course.torch.train import train as torch_train

train_tokens, val_tokens, tokenizer = data.corpus_tokens(  # the trainers' own path
    "tinyshakespeare", kind="char", val_fraction=preset.train.val_fraction
)

transfer = get_preset(PRESET, {"max_iters": TRANSFER_ITERS, "eval_iters": 5,
                               "eval_interval": TRANSFER_ITERS})
torch_model = torch_train(transfer, data=(train_tokens, val_tokens), tokenizer=tokenizer).model
torch_model.eval()
keras_model = torch_to_keras(torch_model.state_dict(), KerasGPT(preset.model))

x, _ = data.get_batch(val_tokens, 4, preset.model.block_size, np.random.default_rng(SEED))
with torch.no_grad():
    torch_logits = torch_model(torch.from_numpy(x).to(device))[0].cpu().numpy()
keras_logits = np.asarray(keras_model(x))
print(f"logits {keras_logits.shape}: max |PyTorch - Keras| = "
      f"{np.abs(torch_logits - keras_logits).max():.2e} (largest logit "
      f"{np.abs(torch_logits).max():.1f})")
checks.assert_close(keras_logits, torch_logits, atol=1e-4, rtol=0, name="Keras vs PyTorch logits")

back = keras_to_torch(keras_model, as_torch=True)  # and back again: the same state dict
same = all(torch.equal(back[name], value.cpu()) for name, value in torch_model.state_dict().items())
print(f"keras_to_torch(torch_to_keras(weights)) gives back the same tensors: {same}")

# %% [markdown]
# The same weights should write the same text. Greedy decoding (temperature 0) takes the
# most likely character at every step, so it involves no randomness at all: the two
# `generate` functions (same arguments on both sides; each with a KV cache) should agree
# character for character, unless two candidates are so close that the last-bit
# differences above swap them.

# %%
prompt = np.array([tokenizer.encode("ROMEO:\n")])
by_torch = torch_generate(torch_model, torch.from_numpy(prompt).to(device), GREEDY_TOKENS,
                          temperature=0)
by_keras = keras_generate(keras_model, prompt, GREEDY_TOKENS, temperature=0)
texts = {"PyTorch": tokenizer.decode(by_torch[0].tolist()),
         "Keras": tokenizer.decode(by_keras[0].tolist())}
for name, sample in texts.items():
    print(f"--- {name} ---\n{sample}\n")
if texts["PyTorch"] == texts["Keras"]:
    print(f"the same {GREEDY_TOKENS} characters")
else:
    first = next(i for i, (a, b) in enumerate(zip(*texts.values())) if a != b)
    print(f"they part at character {first}: a near tie between two candidates")

# %% [markdown]
# Your `GPT` from exercise 5 can write too: move the trained weights into it and decode
# greedily with `keras.ops` alone. Without a cache, every step runs the model on the
# whole text so far (cropped to the last `block_size` tokens) and keeps only the last
# position's logits; `course.tf.generate` keeps each layer's keys and values instead
# (its KV cache, one tensor of fixed shape so that one `tf.function` trace serves every
# step). Same weights, same greedy rule: the same characters, unless a near tie tips.

# %%
try:
    yours = GPT(preset.model)
    yours(prompt)  # builds its weights
    torch_to_keras(torch_model.state_dict(), yours)
    out = ops.convert_to_tensor(prompt, dtype="int32")
    for _ in range(GREEDY_TOKENS):
        logits = yours(out[:, -preset.model.block_size :])  # (1, T, vocab), no cache
        token = ops.cast(ops.argmax(logits[:, -1, :], axis=-1), "int32")[:, None]  # (1, 1)
        out = ops.concatenate([out, token], axis=1)
    same = np.array_equal(np.asarray(out), np.asarray(by_keras))
    print(f"--- your GPT, greedy in keras.ops ---\n{tokenizer.decode(np.asarray(out)[0].tolist())}")
    print("the same text as course.tf.generate" if same else "a near tie made them part")
except NotImplementedError:
    print("write your GPT (exercise 5) first, then run this cell again")

# %% [markdown]
# ## Exercise 6 · one training step, the Keras way
#
# Chapter 05's `course.torch.train.train_step` is the body of PyTorch's training loop:
# set the learning rate, forward, loss, `backward()`, clip the gradients' global norm,
# `optimizer.step()`. TensorFlow has no `backward()` on a tensor: a `tf.GradientTape`
# records the operations run inside its `with` block, and `tape.gradient(loss, variables)`
# differentiates the loss with respect to the variables you name.
#
# Write `keras_train_step(model, optimizer, x, y, step, train_cfg)`, one optimizer step on
# the batch x, y (B, T) of token ids; return the loss (before the update):
#
# 1. inside `with tf.GradientTape() as tape:`, the forward pass and the loss:
#    `loss = lm_loss(y, model(x, training=True))` (`course.tf.model.lm_loss`, Keras'
#    argument order: targets first);
# 2. the gradients of the loss for **every** trainable variable of the model,
#    `model.trainable_variables` (the tied head is `wte`: one variable, counted once);
#    the embeddings' gradients come as `tf.IndexedSlices`, which
#    `tf.convert_to_tensor(g)` turns into ordinary tensors;
# 3. if `train_cfg.grad_clip > 0`, scale them together so that their **global** norm (the
#    norm of all of them as one long vector) is at most `grad_clip`:
#    `grads, _ = tf.clip_by_global_norm(grads, train_cfg.grad_clip)`; a grad_clip of 0
#    turns clipping off, as in PyTorch's trainer;
# 4. the learning rate of this step from the schedule both frameworks share,
#    `lr_at(step, train_cfg)` (warm-up, cosine, then flat), written into the optimizer
#    with `optimizer.learning_rate.assign(...)`, **before** the update;
# 5. the update: `optimizer.apply(grads, variables)`.
#
# The test builds the same model twice from one set of weights (a PyTorch GPT, moved into
# the library's Keras GPT with `torch_to_keras`), runs PyTorch's `train_step` and yours on
# the same batch with the same optimizer, and compares: with plain SGD (w ← w − lr·g) the
# weights after one step show the learning rate and the clipped gradient directly; with
# the trainers' AdamW, the losses of a few steps in a row must agree. (Adam divides each
# gradient by its own running size, so a gradient of 10⁻⁸ moves a weight as far as one of
# 10⁻²: there the last bits of float32, and where each framework adds Adam's epsilon,
# decide how far a weight moves, by up to the learning rate. A weight-by-weight comparison
# after AdamW would be unfair to a correct answer.)
#
# Run eagerly, this step takes a fraction of a second; `fit` would trace it into a
# `tf.function` (the retracing section below shows the catch: a new Python float for
# the learning rate would retrace it at every step, which is why the library's trainer
# computes the schedule in TensorFlow ops, `course.tf.train.WarmupCosine`).

# %% nbgrader={"grade": false, "grade_id": "keras_train_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def keras_train_step(model, optimizer, x, y, step, train_cfg):
    """One optimizer step on the batch (x, y): forward, loss, gradients, global-norm
    clipping, the scheduled learning rate, the update. Returns the loss."""
    ### BEGIN SOLUTION
    with tf.GradientTape() as tape:
        loss = lm_loss(y, model(x, training=True))
    variables = model.trainable_variables
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
    if train_cfg.grad_clip > 0:
        grads, _ = tf.clip_by_global_norm(grads, train_cfg.grad_clip)
    optimizer.learning_rate.assign(lr_at(step, train_cfg))
    optimizer.apply(grads, variables)
    return loss
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "train_step_helpers", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Read-only: the graded tests below use these helpers.
from course.config import TrainConfig
from course.torch.train import configure_optimizer as torch_optimizer
from course.torch.train import train_step as torch_train_step


def twin_gpts(config, seed):
    """A PyTorch GPT with random weights, and the library's Keras GPT with the same ones."""
    theirs = random_torch_gpt(config, seed)
    return theirs, torch_to_keras(theirs.state_dict(), KerasGPT(config))


def sgd_pair(torch_model, keras_model):
    """Plain SGD on both sides, w <- w - lr * g (the step sets the lr)."""
    return torch.optim.SGD(torch_model.parameters(), lr=0.0), keras.optimizers.SGD(0.0)


def adamw_pair(torch_model, keras_model, train_cfg):
    """AdamW as both trainers build it: decay on matrices only, PyTorch's epsilon."""
    t = train_cfg
    optimizer = keras.optimizers.AdamW(learning_rate=0.0, weight_decay=t.weight_decay,
                                       beta_1=t.beta1, beta_2=t.beta2, epsilon=1e-8)
    vectors = [v for v in keras_model.trainable_variables if len(v.shape) < 2]
    optimizer.exclude_from_weight_decay(var_list=vectors)
    return torch_optimizer(torch_model, t), optimizer


def step_both(torch_model, keras_model, optimizers, x, y, step, train_cfg):
    """course.torch's train_step, then yours, on the batch (x, y): (your loss, PyTorch's)."""
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    lr = lr_at(step, train_cfg)
    expected = torch_train_step(torch_model, optimizers[0], lambda: (xt, yt), lr, train_cfg)
    loss = keras_train_step(keras_model, optimizers[1], x, y, step, train_cfg)
    return loss, float(expected)


def assert_same_weights(keras_model, torch_model, atol, name):
    state = torch_model.state_dict()
    for key, value in keras_to_torch(keras_model).items():
        checks.assert_close(value, state[key], atol=atol, rtol=0, name=f"{name}: {key}")


def random_batch(config, B, T, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, config.vocab_size, (2, B, T))


# %% nbgrader={"grade": true, "grade_id": "test_keras_train_step", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""keras_train_step: PyTorch's loss and PyTorch's weights after the same step."""
# SGD, one step: in the warm-up with clipping on, then in the cosine with clipping off.
schedule = dict(learning_rate=0.5, min_lr=0.05, warmup_iters=10, lr_decay_iters=50)
for seed, (cfg, B, T, step, clip) in enumerate([
    (GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11), 3, 6, 3, 0.1),
    (GPTConfig(n_layer=1, n_head=4, n_embd=24, block_size=7, vocab_size=13, bias=True),
     2, 7, 30, 0.0),
]):
    tcfg = TrainConfig(grad_clip=clip, **schedule)
    theirs, mine = twin_gpts(cfg, seed)
    x, y = random_batch(cfg, B, T, seed)
    loss, expected = step_both(theirs, mine, sgd_pair(theirs, mine), x, y, step, tcfg)
    checks.assert_close(loss, expected, atol=1e-5, rtol=0, name=f"the loss ({step=})")
    assert_same_weights(mine, theirs, atol=1e-5,
                        name=f"after one SGD step ({step=}, lr {lr_at(step, tcfg):.3g}, "
                             f"grad_clip={clip}, bias={cfg.bias})")
# AdamW as the trainers build it, four steps through warm-up and decay: the same losses
# (to 5e-4: the two AdamWs place epsilon differently, which shows on tiny gradients).
cfg = GPTConfig(n_layer=2, n_head=3, n_embd=12, block_size=9, vocab_size=10, bias=True)
tcfg = TrainConfig(learning_rate=1e-2, min_lr=1e-3, warmup_iters=2, lr_decay_iters=6)
theirs, mine = twin_gpts(cfg, 7)
optimizers = adamw_pair(theirs, mine, tcfg)
for step in range(4):
    x, y = random_batch(cfg, 3, 8, 10 + step)
    loss, expected = step_both(theirs, mine, optimizers, x, y, step, tcfg)
    checks.assert_close(loss, expected, atol=5e-4, rtol=0, name=f"AdamW, the loss of step {step}")
### BEGIN HIDDEN TESTS
# SGD after the decay (min_lr), clipping on, both bias settings, other sizes; two steps.
for seed, (cfg, B, T, first, clip) in enumerate([
    (GPTConfig(n_layer=3, n_head=3, n_embd=12, block_size=5, vocab_size=17, bias=True),
     4, 5, 80, 0.3),
    (GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=12, vocab_size=9), 1, 11, 9, 0.05),
]):
    tcfg = TrainConfig(grad_clip=clip, **schedule)
    theirs, mine = twin_gpts(cfg, seed + 20)
    optimizers = sgd_pair(theirs, mine)
    for step in (first, first + 1):
        x, y = random_batch(cfg, B, T, seed + step)
        loss, expected = step_both(theirs, mine, optimizers, x, y, step, tcfg)
        checks.assert_close(loss, expected, atol=1e-5, rtol=0, name=f"the loss ({step=})")
    assert_same_weights(mine, theirs, atol=1e-5, name=f"after SGD steps {first}, {first + 1}")
# AdamW without biases, clipping tight, the flat tail of the schedule included.
cfg = GPTConfig(n_layer=1, n_head=2, n_embd=20, block_size=6, vocab_size=14)
tcfg = TrainConfig(learning_rate=5e-3, min_lr=5e-4, warmup_iters=1, lr_decay_iters=3,
                   grad_clip=0.2)
theirs, mine = twin_gpts(cfg, 30)
optimizers = adamw_pair(theirs, mine, tcfg)
for step in range(5):
    x, y = random_batch(cfg, 2, 6, 30 + step)
    loss, expected = step_both(theirs, mine, optimizers, x, y, step, tcfg)
    checks.assert_close(loss, expected, atol=5e-4, rtol=0, name=f"AdamW, the loss of step {step}")
### END HIDDEN TESTS

# %% [markdown]
# ## Both frameworks, the same run
#
# Same weights give the same outputs; do the same *recipe* and the same *batches* give the
# same training run? `course.tf.train.train` is the Keras side's trainer: `compile` with
# an AdamW that excludes the 1-D weights from decay and clips the global gradient norm, the
# learning-rate schedule as a `LearningRateSchedule`, the batches from chapter 03's
# `make_dataset` (identical to the PyTorch trainer's), and `fit`, whose steps run
# XLA-compiled (`jit_compile=True`, turned off in smoke mode to save the compile). We
# give both trainers the same initial weights and log the loss of every step.

# %%
from course.tf.train import train as keras_train

twin = get_preset(PRESET, {"max_iters": TWIN_ITERS, "log_interval": 1, "eval_iters": 5,
                           "eval_interval": TWIN_ITERS})
torch.manual_seed(SEED)
start_torch = TorchGPT(twin.model).to(device)
start_keras = torch_to_keras(start_torch.state_dict(), KerasGPT(twin.model))  # same weights
splits = (train_tokens, val_tokens)
keras_name = "Keras (fit, XLA)" if TWIN_XLA else "Keras (fit, tf.function)"
runs = {
    "PyTorch (explicit loop)": torch_train(twin, data=splits, model=start_torch),
    keras_name: keras_train(twin, data=splits, model=start_keras, jit_compile=TWIN_XLA),
}
curves = {name: np.array([e["loss"] for e in run.history if e["event"] == "train"])
          for name, run in runs.items()}
torch_losses, keras_losses = curves.values()
gap = np.abs(torch_losses - keras_losses)

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
for (name, losses), style in zip(curves.items(), ["-", "--"]):
    left.plot(np.arange(1, len(losses) + 1), losses, style, lw=2, label=name)
left.set_xlabel("step")
left.set_ylabel("training loss (one batch)")
left.set_title(f"{twin.name}: same weights, same batches")
left.legend()
right.semilogy(np.arange(1, len(gap) + 1), np.maximum(gap, 1e-9))
right.set_xlabel("step")
right.set_title("|PyTorch loss - Keras loss|")
plt.tight_layout()
plt.show()
for name, run in runs.items():
    m = run.metrics
    print(f"{name:<24} final train loss {curves[name][-1]:.4f}, val loss {m['val_loss']:.4f}, "
          f"{m['ms_per_iter']:.1f} ms/step, first step {m['first_iter_seconds']:.1f} s")
print(f"largest difference between the two loss curves: {gap.max():.1e}")

# %% [markdown]
# The curves lie on top of each other: the difference starts at float32 rounding
# (about 10⁻⁶) and grows slowly, as any two float32 computations in a different order
# drift apart over many updates, but it stays far below the step-to-step noise of the
# loss. That is the strongest check two implementations can pass: not "both learn", but
# "both compute the same numbers". Note the first step of each: Keras traced and
# XLA-compiled its `train_step` there, PyTorch ran eagerly from the start.
#
# ## One bug, five error messages
#
# A classic attention bug: the scores are `q @ kᵀ`, and forgetting the transpose gives
# `q @ k`, whose inner dimensions (hs and T) do not match. Here is how each way of running
# reports it: PyTorch eager, TensorFlow eager, inside a `tf.function`, and inside an
# XLA-compiled `tf.function`. (For the last two the shapes are left unknown when tracing,
# `input_signature` with `None` sizes, as for a model that must accept any length; with
# known shapes both fail while tracing, like the third.)

# %%
def scores_torch(q, k):
    return q @ k * 0.5  # bug: should be q @ k.transpose(-2, -1); 0.5 = 1/sqrt(hs) for hs=4


def scores_tf(q, k):
    return tf.matmul(q, k) * 0.5  # the same bug


q_np = np.random.default_rng(0).standard_normal((6, 4)).astype("float32")  # T=6, hs=4
unknown = [tf.TensorSpec((None, None), tf.float32)] * 2
attempts = {
    "PyTorch eager": lambda: scores_torch(torch.from_numpy(q_np), torch.from_numpy(q_np)),
    "TensorFlow eager": lambda: scores_tf(q_np, q_np),
    "tf.function": lambda: tf.function(scores_tf)(q_np, q_np),
    "tf.function, shapes unknown when traced":
        lambda: tf.function(scores_tf, input_signature=unknown)(q_np, q_np),
    "tf.function(jit_compile=True), shapes unknown":
        lambda: tf.function(scores_tf, input_signature=unknown, jit_compile=True)(q_np, q_np),
}


def first_lines(message, n=6, width=140):
    """The first lines of an error message, without the frames of Python and Jupyter."""
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)  # TF's kernel name
    lines = [line.rstrip() for line in message.splitlines() if line.strip()]
    ours = [line for line in lines  # frames in the notebook's own cells only
            if not line.lstrip().startswith("File") or re.search(r"ipykernel_\d+", line)]
    ours = ours if len(ours) <= n else [*ours[: n - 2], "...", ours[-1]]  # and the last line
    return [line if len(line) <= width else line[: width - 3] + "..." for line in ours]


for name, attempt in attempts.items():
    try:
        attempt()
        print(f"=== {name}: no error (!)")
    except Exception as err:  # whatever each one raises: we want to read it
        print(f"=== {name}: {type(err).__name__}")
        print("\n".join("    " + line for line in first_lines(str(err))))

# %% [markdown]
# Read them in order:
#
# - **PyTorch eager** fails on the very line, with both shapes: `mat1 and mat2 shapes
#   cannot be multiplied (6x4 and 6x4)`. The traceback is ordinary Python; a debugger or
#   a `print` just before the line works as everywhere else.
# - **TensorFlow eager** is just as immediate, in the words of the C++ kernel that
#   refused: `Matrix size-incompatible: In[0]: [6,4], In[1]: [6,4] [Op:MatMul]`.
# - **`tf.function`** turns Python into a graph by *tracing*: running the function once
#   with symbolic tensors. TensorFlow's shape inference catches the bug then, before any
#   number is computed, and reports `in user code:` with the file and line of the Python
#   that built the bad node (the line marked `*`), then `Dimensions must be equal`.
#   A `print` inside a `tf.function` runs only while tracing; `tf.print` runs every call.
# - **Shapes unknown when traced**: tracing cannot check, so the graph is built and the
#   error comes when it runs: `Graph execution error: Detected at node MatMul defined at
#   (most recent call last)`, a traceback *to where the node was created*, not to a line
#   that is executing (nothing Python is executing: the graph runs in C++).
# - **XLA** compiles the graph for the concrete shapes of the first call, and fails in
#   the compiler (`tf2xla conversion failed`), again pointing back at the Python line that
#   defined the op. With shapes known at trace time it fails earlier, while tracing.
#
# The practical rule: debug in eager mode (`run_eagerly=True` in `compile`, or
# `tf.config.run_functions_eagerly(True)`), then trace and compile once it runs.
#
# ## TensorFlow and memory
#
# On a GPU, TensorFlow by default **reserves nearly all of the GPU's memory** the moment
# it first touches the device, whether the model needs it or not: a second process (or
# PyTorch in the same notebook) then finds the GPU full. The fix is one call per GPU,
# `tf.config.experimental.set_memory_growth(gpu, True)`: allocate as needed, grow when
# needed. It must run **before** the GPU is initialised (the first TensorFlow operation),
# otherwise it raises `RuntimeError: Physical devices cannot be modified after being
# initialized`, which is why this notebook does it in its imports cell, right after
# importing TensorFlow. (`tf.config.set_logical_device_configuration` with a
# `memory_limit` sets a hard cap instead.) PyTorch grows on demand from the start, keeps
# freed blocks in its caching allocator, and reports them with
# `torch.cuda.max_memory_allocated()`; TensorFlow's figure is
# `tf.config.experimental.get_memory_info("GPU:0")["peak"]`.
#
# On a CPU none of this applies: both frameworks take memory from the operating system
# as they go, and the process's resident memory (RSS) is the figure that counts.

# %%
gpus = tf.config.list_physical_devices("GPU")
print("GPUs TensorFlow sees:", [g.name for g in gpus] or "none")
for gpu in gpus:
    tf_device = gpu.name.replace("physical_device:", "")  # not `device`: that is PyTorch's
    info = tf.config.experimental.get_memory_info(tf_device)
    print(f"{tf_device}: memory growth {tf.config.experimental.get_memory_growth(gpu)}, "
          f"{info['current'] / 2**20:.0f} MB in use, peak {info['peak'] / 2**20:.0f} MB")
if not gpus:
    print("CPU only: memory growth is a GPU setting, nothing to do here")
rss = psutil.Process().memory_info().rss / 2**20
print(f"this process: {rss:.0f} MB resident now, {peak_rss_mb():.0f} MB at its peak "
      "(PyTorch and TensorFlow together)")

# %% [markdown]
# ## Retracing
#
# A `tf.function` is traced once per **input signature**: for each new combination of
# tensor shapes and dtypes, and for each new *value* of a plain Python argument, it runs
# the Python body again to build a new graph. Tracing a GPT takes a good fraction of a
# second (XLA compilation, seconds), so a function that retraces every call is far slower
# than plain eager code. `experimental_get_tracing_count()` tells how many graphs it has
# built:

# %%
@tf.function
def scaled_sum(x, scale):
    return tf.reduce_sum(x) * scale


calls = [((2, 8), 1.0), ((2, 8), 1.0), ((3, 8), 1.0), ((3, 8), 2.0),
         ((3, 8), tf.constant(2.0)), ((3, 8), tf.constant(3.0))]
for shape, scale in calls:
    before = scaled_sum.experimental_get_tracing_count()
    scaled_sum(tf.ones(shape), scale)
    again = scaled_sum.experimental_get_tracing_count() > before
    kind = "tensor" if tf.is_tensor(scale) else "Python float"
    print(f"x {shape}, scale {float(scale)} ({kind:>12}): {'traced' if again else 'reused'}")

# %% [markdown]
# A new shape retraces; so does a new Python number (it is baked into the graph as a
# constant), while a tensor argument of the same shape and dtype reuses the graph. Now a
# GPT: greedy decoding without a cache calls the model on a sequence one token longer at
# every step, a new shape each time. Wrapped in a plain `tf.function`, it retraces every
# step (TensorFlow logs a warning about "excessive retracing"). A fixed
# `input_signature` with `None` for the length traces **once** a graph that accepts any
# length. `course.tf.generate` goes one step further: its KV cache has a fixed shape and
# the position of the new token is a tensor, not a Python int, so its decoding step is
# traced once and serves every position.

# %%
def greedy(forward, steps):
    """Greedy decoding without a cache; returns the tokens and the seconds it took."""
    out = prompt.astype("int32")
    start = time.perf_counter()
    for _ in range(steps):
        logits = forward(tf.constant(out))
        token = np.argmax(logits[:, -1, :], axis=-1)[:, None]  # (1, 1)
        out = np.concatenate([out, token], axis=1).astype("int32")  # the signature's dtype
    return out, time.perf_counter() - start


retracing = tf.function(lambda idx: keras_model(idx))
signed = tf.function(lambda idx: keras_model(idx),
                     input_signature=[tf.TensorSpec((1, None), tf.int32)])
results = {}
for name, forward in [("eager", keras_model), ("tf.function, no signature", retracing),
                      ("tf.function, input_signature", signed)]:
    out, seconds = greedy(forward, RETRACE_TOKENS)
    traces = forward.experimental_get_tracing_count() if name != "eager" else 0
    results[name] = out
    print(f"{name:<30} {seconds:6.2f} s for {RETRACE_TOKENS} tokens, {traces:2d} trace(s)")
assert all(np.array_equal(out, results["eager"]) for out in results.values()), "same tokens"

# %% [markdown]
# ## Exercise 7 · sampling in `keras.ops`
#
# `course.tf.generate` samples in numpy on the last position's logits. Write the same step
# with `keras.ops` and `keras.random`, so that it could run inside a traced function:
# `sample_next(logits, temperature=1.0, top_k=None, seed=None)`, logits (B, V) → the next
# token of each row, an int32 tensor (B, 1):
#
# - `temperature == 0`: the most likely token of each row (`ops.argmax`), no randomness;
# - otherwise divide the logits by the temperature; if `top_k` is given (1 ≤ top_k ≤ V),
#   set every logit **below** its row's k-th largest to `-inf` (`ops.top_k(logits, k)`
#   returns the k largest values of each row, largest first);
# - draw one token per row with `keras.random.categorical(logits, 1, seed=seed)`, which
#   takes **logits** (unnormalised log-probabilities), not probabilities.
#
# The test draws thousands of tokens from a few rows and compares how often each token
# came out with the probabilities `softmax(logits / temperature)` (restricted to the top k
# and renormalised): a wrong temperature, a wrong k-th value or probabilities passed as
# logits all shift those frequencies far more than chance does.

# %% nbgrader={"grade": false, "grade_id": "keras_sample_next", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sample_next(logits, temperature=1.0, top_k=None, seed=None):
    """The next token (B, 1), int32, from logits (B, V): greedy at temperature 0, else a
    draw from softmax(logits / temperature) over each row's top_k."""
    ### BEGIN SOLUTION
    if temperature == 0:
        return ops.cast(ops.argmax(logits, axis=-1), "int32")[:, None]
    logits = ops.convert_to_tensor(logits, "float32") / temperature
    if top_k is not None:
        kth = ops.top_k(logits, top_k)[0][:, -1:]  # (B, 1): each row's k-th largest
        logits = ops.where(logits < kth, float("-inf"), logits)
    return ops.cast(keras.random.categorical(logits, 1, seed=seed), "int32")
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "sampling_helpers", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Read-only: the graded test below uses this helper.
def check_frequencies(rows, temperature, top_k, draws, seed, name):
    """Draw `draws` tokens for each row of `rows` (R, V) at once; compare the frequencies
    with softmax(rows / temperature) over the top_k, within 0.03 (about 5 standard errors)."""
    rows = np.asarray(rows, dtype="float32")
    R, V = rows.shape
    tokens = sample_next(np.repeat(rows, draws, axis=0), temperature, top_k, seed=seed)
    checks.assert_shape(tokens, (R * draws, 1), name=f"{name}: sample_next's output")
    tokens = np.asarray(tokens).reshape(R, draws)
    assert tokens.dtype.kind in "iu", f"{name}: token ids must be integers, got {tokens.dtype}"
    assert tokens.min() >= 0 and tokens.max() < V, f"{name}: ids outside 0 .. {V - 1}"
    scaled = rows / temperature
    if top_k is not None:
        kth = np.sort(scaled, axis=-1)[:, -top_k][:, None]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    expected = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    expected /= expected.sum(axis=-1, keepdims=True)
    counts = np.stack([np.bincount(row, minlength=V) for row in tokens]) / draws
    never = (expected == 0) & (counts > 0)
    assert not never.any(), f"{name}: drew tokens outside the top {top_k}: {np.argwhere(never)}"
    gap = np.abs(counts - expected).max()
    assert gap < 0.03, (f"{name}: frequencies {counts.round(3).tolist()}, expected "
                        f"{expected.round(3).tolist()} (largest gap {gap:.3f})")


# %% nbgrader={"grade": true, "grade_id": "test_keras_sample_next", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""sample_next: argmax at temperature 0; frequencies of softmax(logits / T) over the top k."""
logits = np.array([[0.5, 2.0, -1.0, 1.5, 0.0, 1.0, -0.5],
                   [1.2, -0.3, 0.4, 2.2, 0.9, 0.1, 1.7],
                   [-2.0, 0.7, 3.1, 0.2, 2.9, -1.1, 0.0]], dtype="float32")  # B=3, V=7
greedy_ids = np.asarray(sample_next(logits, temperature=0))
checks.assert_shape(greedy_ids, (3, 1), name="sample_next(logits, temperature=0)")
assert greedy_ids[:, 0].tolist() == [1, 3, 2], f"temperature 0 is argmax, got {greedy_ids[:, 0]}"
assert np.asarray(sample_next(logits[::-1], temperature=0))[:, 0].tolist() == [2, 3, 1], (
    "temperature 0, rows in the other order")
check_frequencies(logits[:2], 1.0, None, 4000, seed=1, name="temperature 1")
check_frequencies(logits[1:], 0.6, None, 4000, seed=2, name="temperature 0.6")
check_frequencies(logits[:2], 1.0, 3, 4000, seed=3, name="top_k=3")
check_frequencies(logits[1:], 2.0, 2, 4000, seed=4, name="temperature 2, top_k=2")
### BEGIN HIDDEN TESTS
wide = np.random.default_rng(5).normal(0, 1.5, (2, 12)).astype("float32")
check_frequencies(wide, 1.5, None, 5000, seed=6, name="V=12, temperature 1.5")
check_frequencies(wide[::-1], 0.8, 5, 5000, seed=7, name="V=12, temperature 0.8, top_k=5")
check_frequencies(logits, 1.0, 7, 3000, seed=8, name="top_k = V keeps every token")
ones = np.asarray(sample_next(np.repeat(logits, 50, axis=0), 1.0, top_k=1, seed=9))
assert (ones[:, 0] == np.repeat([1, 3, 2], 50)).all(), "top_k=1 always draws the argmax"
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 8 · a KV cache with a fixed shape
#
# Chapter 05's `attend_with_cache` grew its caches with `torch.cat`: one token longer at
# every step, so a new shape at every step, and a `tf.function` would retrace each time.
# The TensorFlow way is the one `course.tf.generate` takes: give each cache room for
# `capacity` tokens from the start (zeros), write the new keys and values **in place** at
# positions `start .. start + T - 1`, and let the mask hide the slots not written yet.
# The shapes never change, `start` is a tensor, and one trace serves every step.
#
# Write `attend_with_cache(q, k, v, k_cache, v_cache, start)` with `keras.ops` alone:
#
# - `q, k` (B, nh, T, hs) and `v` (B, nh, T, hv): queries, keys and values of T new tokens
#   (the value width may differ from the key width);
# - `k_cache` (B, nh, capacity, hs) and `v_cache` (B, nh, capacity, hv): fixed-size caches
#   whose first `start` slots hold the earlier tokens; the slots after them hold anything
#   (zeros in a new cache, stale values in a reused one) and must not be looked at;
# - `start`: how many tokens are cached, a Python int or a scalar int32 tensor;
# - return `(y, k_cache, v_cache)`: the caches with `k`, `v` written at `start` (use
#   `ops.slice_update(cache, (0, 0, start, 0), new)`), and `y` (B, nh, T, hv), causal
#   attention scaled by 1/√hs: new query `t`, at position `start + t`, sees the cache slots
#   `0 .. start + t` and no others.
#
# Build the mask from positions (`ops.arange`) and `start`, without Python `if`s or `int()`
# on `start`: inside a `tf.function` it is a symbolic tensor with no value yet.

# %% nbgrader={"grade": false, "grade_id": "keras_attend_with_cache", "locked": false, "schema_version": 3, "solution": true, "task": false}
def attend_with_cache(q, k, v, k_cache, v_cache, start):
    """Causal attention of T new queries over a fixed-size cache, written in place.

    q, k (B, nh, T, hs), v (B, nh, T, hv); k_cache (B, nh, capacity, hs), v_cache
    (B, nh, capacity, hv) holding `start` tokens. Returns y (B, nh, T, hv) and both caches.
    """
    ### BEGIN SOLUTION
    T, capacity = ops.shape(q)[2], ops.shape(k_cache)[2]
    k_cache = ops.slice_update(k_cache, (0, 0, start, 0), k)  # (B, nh, capacity, hs)
    v_cache = ops.slice_update(v_cache, (0, 0, start, 0), v)  # (B, nh, capacity, hv)
    scores = ops.matmul(q, ops.swapaxes(k_cache, -1, -2)) / math.sqrt(q.shape[-1])
    visible = ops.arange(capacity)[None, :] <= start + ops.arange(T)[:, None]  # (T, capacity)
    y = ops.matmul(ops.softmax(ops.where(visible, scores, float("-inf")), axis=-1), v_cache)
    return y, k_cache, v_cache
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "kv_cache_helpers", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Read-only: the graded tests below use these helpers.
from course.tf.model import manual_attention


def random_qkv(B, nh, T, hs, hv, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype("float32") for s in
            [(B, nh, T, hs), (B, nh, T, hs), (B, nh, T, hv)]]


def stale_caches(B, nh, capacity, hs, hv, seed):
    """Caches full of large stale values: only the mask keeps attention off them."""
    rng = np.random.default_rng(seed)
    return [5 * rng.standard_normal(s).astype("float32") for s in
            [(B, nh, capacity, hs), (B, nh, capacity, hv)]]


def attend_in_chunks(attend, q, k, v, caches, chunks, as_tensor=False):
    """Feed q, k, v chunk by chunk through `attend`; (y of all chunks, final caches)."""
    kc, vc = caches
    outputs = []
    for lo, hi in chunks:
        start = tf.constant(lo, tf.int32) if as_tensor else lo
        y, kc, vc = attend(q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], kc, vc, start)
        outputs.append(np.asarray(y))
    return np.concatenate(outputs, axis=2), np.asarray(kc), np.asarray(vc)


# %% nbgrader={"grade": true, "grade_id": "test_keras_attend_with_cache", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""attend_with_cache (Keras): new tokens written at `start`, stale slots never seen, any
chunking equal to attention over the whole sequence; traced once for every start."""
B, nh, T, hs, hv, capacity = 2, 3, 9, 5, 7, 11
q, k, v = random_qkv(B, nh, T, hs, hv, seed=1)
expected = np.asarray(manual_attention(q, k, v))  # all 9 tokens at once
caches = stale_caches(B, nh, capacity, hs, hv, seed=2)
y, kc, vc = attend_with_cache(q[:, :, :4], k[:, :, :4], v[:, :, :4], *caches, 0)
checks.assert_shape(y, (B, nh, 4, hv), name="y for a prompt of 4 (value width hv)")
checks.assert_shape(kc, (B, nh, capacity, hs), name="k_cache keeps its shape")
checks.assert_close(y, expected[:, :, :4], atol=1e-5, name="a prompt of 4 into a stale cache")
y, kc, vc = attend_in_chunks(attend_with_cache, q, k, v, caches, [(0, 4), (4, 5), (5, 8), (8, 9)])
checks.assert_close(y, expected, atol=1e-5, name="chunks 4+1+3+1 vs all 9 at once")
checks.assert_close(kc[:, :, :T], k, atol=0, name="k_cache slots 0..8 hold the keys in order")
checks.assert_close(vc[:, :, :T], v, atol=0, name="v_cache slots 0..8 hold the values in order")
checks.assert_close(kc[:, :, T:], caches[0][:, :, T:], atol=0, name="k_cache slots past 8 untouched")
# Traced: `start` is a tensor. One trace for the prompt, one for every single-token step.
traced = tf.function(attend_with_cache)
y, kc, vc = attend_in_chunks(traced, q, k, v, caches, [(0, 3)] + [(t, t + 1) for t in range(3, 9)],
                             as_tensor=True)
checks.assert_close(y, expected, atol=1e-5, name="inside tf.function, start a tensor: 3 then 1 by 1")
traces = traced.experimental_get_tracing_count()
assert traces == 2, f"{traces} traces for a prompt and 6 single tokens: the shapes must not change"
### BEGIN HIDDEN TESTS
# Other sizes (hv < hs, one head, one row), the cache filled to the last slot.
for seed, (B, nh, T, hs, hv, capacity, chunks) in enumerate([
    (1, 1, 6, 8, 3, 6, [(0, 1), (1, 2), (2, 6)]),
    (3, 2, 10, 4, 6, 13, [(0, 5), (5, 10)]),
    (2, 4, 7, 6, 5, 7, [(0, 3), (3, 4), (4, 5), (5, 7)]),
]):
    q, k, v = random_qkv(B, nh, T, hs, hv, seed=10 + seed)
    expected = np.asarray(manual_attention(q, k, v))
    caches = stale_caches(B, nh, capacity, hs, hv, seed=20 + seed)
    for as_tensor in (False, True):
        y, kc, vc = attend_in_chunks(attend_with_cache, q, k, v, caches, chunks, as_tensor)
        checks.assert_close(y, expected, atol=1e-5, name=f"chunks {chunks} ({as_tensor=})")
        checks.assert_close(vc[:, :, :T], v, atol=0, name=f"v_cache after {chunks}")
        checks.assert_close(vc[:, :, T:], caches[1][:, :, T:], atol=0, name="stale v slots kept")
# A zero cache (as new_cache makes it): the empty slots must still be masked.
q, k, v = random_qkv(2, 2, 3, 5, 4, seed=30)
zeros = [np.zeros((2, 2, 8, 5), "float32"), np.zeros((2, 2, 8, 4), "float32")]
y, _, _ = attend_with_cache(q, k, v, *zeros, 0)
checks.assert_close(y, manual_attention(q, k, v), atol=1e-5, name="a new (zero) cache")
### END HIDDEN TESTS

# %% [markdown]
# With both, the library's Keras GPT can write with *your* cache and *your* sampler.
# `forward_with_cache` runs the model's own layers on the new tokens only, your
# `attend_with_cache` in place of each layer's attention, the caches stacked into one
# tensor as `model.new_cache` makes them; `generate_with_cache` traces it once for the
# prompt and once for every single-token step after it, then samples with your
# `sample_next`. The cache holds `block_size` tokens, so the prompt and the new tokens
# must fit in it (`course.tf.generate` goes on past that by re-running a sliding window).

# %%
def forward_with_cache(model, idx, cache, start):
    """Logits (B, T, V) of the new tokens idx (B, T) at positions start .. start + T - 1,
    and the updated cache (n_layer, 2, B, nh, block_size, hs)."""
    B, T = ops.shape(idx)[0], ops.shape(idx)[1]
    x = model.wte(idx) + model.wpe(start + ops.arange(T))  # (B, T, C)
    layers = []
    for i, block in enumerate(model.h):
        attn = block.attn
        q, k, v = ops.split(attn.c_attn(block.ln_1(x)), 3, axis=-1)  # 3 x (B, T, C)
        q, k, v = (ops.transpose(ops.reshape(t, (B, T, attn.n_head, -1)), (0, 2, 1, 3))
                   for t in (q, k, v))  # (B, nh, T, hs)
        y, k_cache, v_cache = attend_with_cache(q, k, v, cache[i, 0], cache[i, 1], start)
        layers.append(ops.stack([k_cache, v_cache]))
        x = x + attn.c_proj(ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (B, T, -1)))
        x = x + block.mlp(block.ln_2(x))
    logits = ops.matmul(model.ln_f(x), ops.transpose(model.wte.embeddings))  # tied head
    return logits, ops.stack(layers)


def generate_with_cache(model, prompt, max_new_tokens, temperature=0.0, top_k=None, seed=None):
    """prompt (B, T) followed by max_new_tokens tokens; also the number of traces made."""
    prompt = np.asarray(prompt, dtype="int32")
    B, T = prompt.shape
    if T + max_new_tokens > model.config.block_size:
        raise ValueError(f"{T} prompt + {max_new_tokens} new tokens do not fit in the cache "
                         f"(block_size {model.config.block_size})")
    step = tf.function(lambda idx, cache, start: forward_with_cache(model, idx, cache, start))
    logits, cache = step(tf.constant(prompt), model.new_cache(B), tf.constant(0))
    out = [prompt]
    for i in range(max_new_tokens):
        token = sample_next(logits[:, -1, :], temperature, top_k,
                            seed=None if seed is None else seed + i)  # (B, 1)
        out.append(np.asarray(token))
        if i + 1 < max_new_tokens:
            logits, cache = step(token, cache, tf.constant(T + i, tf.int32))
    return np.concatenate(out, axis=1), step.experimental_get_tracing_count()


# %% nbgrader={"grade": true, "grade_id": "test_keras_kv_decoding", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Your cache in a GPT: the logits of a whole sequence, and greedy text, traced twice."""
cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=24, vocab_size=13, bias=True)
small = twin_gpts(cfg, 40)[1]  # the library's Keras GPT, random weights
seq = np.random.default_rng(41).integers(0, cfg.vocab_size, (3, 10)).astype("int32")
pieces, cache = [], small.new_cache(3)
for lo, hi in [(0, 4), (4, 5), (5, 10)]:
    logits, cache = forward_with_cache(small, seq[:, lo:hi], cache, lo)
    pieces.append(np.asarray(logits))
checks.assert_close(np.concatenate(pieces, axis=1), small(seq), atol=1e-4, rtol=0,
                    name="logits of chunks 4+1+5 vs the whole sequence")
ours, traces = generate_with_cache(small, seq[:1, :3], 15)
reference = keras_generate(small, seq[:1, :3], 15, temperature=0, use_cache=False)
assert ours.tolist() == reference.tolist(), (
    f"greedy with your cache {ours[0, 3:].tolist()}, without a cache {reference[0, 3:].tolist()}")
assert traces == 2, f"{traces} traces for a prompt and 14 single tokens (expected 2)"
### BEGIN HIDDEN TESTS
cfg = GPTConfig(n_layer=3, n_head=3, n_embd=12, block_size=20, vocab_size=9, bias=False)
small = twin_gpts(cfg, 42)[1]
seq = np.random.default_rng(43).integers(0, cfg.vocab_size, (2, 20)).astype("int32")
pieces, cache = [], small.new_cache(2)
for lo, hi in [(0, 1), (1, 7), (7, 8), (8, 20)]:
    logits, cache = forward_with_cache(small, seq[:, lo:hi], cache, tf.constant(lo))
    pieces.append(np.asarray(logits))
checks.assert_close(np.concatenate(pieces, axis=1), small(seq), atol=1e-4, rtol=0,
                    name="logits of chunks 1+6+1+12, the cache filled to block_size")
ours, traces = generate_with_cache(small, seq[:, :5], 15)
reference = keras_generate(small, seq[:, :5], 15, temperature=0, use_cache=False)
assert ours.tolist() == reference.tolist(), "greedy text of two rows, bias=False"
assert traces == 2, f"{traces} traces"
### END HIDDEN TESTS

# %% [markdown]
# Now the trained model writes with your code: greedily (the same text as
# `course.tf.generate` above, up to near ties), then sampled at temperature 0.8 from the
# 10 most likely characters, and timed against decoding without a cache, where every step
# runs the whole text so far.

# %%
room = min(GREEDY_TOKENS, preset.model.block_size - prompt.shape[1])
for name, settings in [("greedy", {}), ("temperature 0.8, top 10",
                                        dict(temperature=0.8, top_k=10, seed=SEED))]:
    t0 = time.perf_counter()
    out, traces = generate_with_cache(keras_model, prompt, room, **settings)
    seconds = time.perf_counter() - t0
    print(f"--- {name}: {room} characters in {seconds:.2f} s, {traces} traces ---\n"
          f"{tokenizer.decode(out[0].tolist())}\n")
t0 = time.perf_counter()
no_cache = keras_generate(keras_model, prompt, room, temperature=0, use_cache=False)
print(f"without a cache (course.tf.generate, use_cache=False): {time.perf_counter() - t0:.2f} s")

# %% [markdown]
# ## Measured: one training step, five ways
#
# Same model shape (the preset's: batch 12 × 64 characters at full size), same batches,
# same optimizer settings, the time of one full training step (forward, backward,
# gradient clipping, AdamW update) in:
#
# - **PyTorch eager**: `course.torch.train.train_step`, the loop of chapter 05;
# - **`torch.compile`**: the same step with the model compiled by TorchInductor (the
#   first step compiles, 30-50 s on 2 CPU cores, a few seconds when run again: Inductor
#   keeps what it compiled in a cache on disk; skipped in smoke mode);
# - **Keras eager**: `model.train_step` called directly, what `compile(run_eagerly=True)`
#   makes `fit` do: every operation dispatched from Python, one by one;
# - **`tf.function`**: `tf.function(model.train_step)`, what `fit` does by default;
# - **XLA**: `tf.function(model.train_step, jit_compile=True)`, what
#   `compile(jit_compile=True)` makes `fit` do: the whole step fused and compiled.
#
# The first `WARMUP_STEPS` steps are not timed (tracing and compiling happen in the first
# one, shown separately), then `TIMED_STEPS` are. Reading the loss as a Python float waits
# for the step to finish. Memory: the process's resident memory after each variant, and
# its peak so far (both frameworks live in this one process, so it only goes up).

# %%
from course.tf.train import configure_optimizer as keras_optimizer

del runs, start_torch, start_keras, retracing, signed  # their compiled steps: memory
gc.collect()
mcfg, tcfg = preset.model, preset.train
rng = np.random.default_rng(SEED)
batches = [data.get_batch(train_tokens, tcfg.batch_size, mcfg.block_size, rng)
           for _ in range(WARMUP_STEPS + TIMED_STEPS)]


def torch_variant(compiled):
    torch.manual_seed(SEED)
    model = TorchGPT(mcfg).to(device)
    optimizer = torch_optimizer(model, tcfg)
    forward = torch.compile(model) if compiled else model

    def step(i, x, y):
        return torch_train_step(forward, optimizer, lambda: (x, y), lr_at(i, tcfg), tcfg)

    return step, lambda array: torch.from_numpy(array).to(device)


def keras_variant(mode):
    torch.manual_seed(SEED)
    model = torch_to_keras(TorchGPT(mcfg).state_dict(), KerasGPT(mcfg))
    optimizer = keras_optimizer(model, tcfg)
    optimizer.build(model.trainable_variables)  # its variables exist before any tracing
    model.compile(optimizer=optimizer)
    if mode == "eager":
        train_step = model.train_step
    else:
        train_step = tf.function(model.train_step, jit_compile=(mode == "xla"))
    return (lambda i, x, y: train_step((x, y))["loss"]), tf.constant


variants = {
    "PyTorch eager": lambda: torch_variant(compiled=False),
    "torch.compile": lambda: torch_variant(compiled=True),
    "Keras eager": lambda: keras_variant("eager"),
    "tf.function": lambda: keras_variant("graph"),
    "tf.function + XLA": lambda: keras_variant("xla"),
}
if not TIME_TORCH_COMPILE:
    del variants["torch.compile"]
    print("torch.compile skipped (smoke mode): its first step alone takes 30-50 s here")

measured = {}
for name, make in variants.items():
    step, as_tensor = make()
    seconds, losses = [], []
    for i, (x, y) in enumerate(batches):
        x, y = as_tensor(x), as_tensor(y)
        start = time.perf_counter()
        losses.append(float(step(i, x, y)))  # float() waits for the step to finish
        seconds.append(time.perf_counter() - start)
    timed_ms = 1e3 * np.array(seconds[WARMUP_STEPS:])
    measured[name] = {
        "first step s": seconds[0],
        "mean ms": timed_ms.mean(),
        "median ms": float(np.median(timed_ms)),
        "RSS MB": psutil.Process().memory_info().rss / 2**20,
        "peak MB": peak_rss_mb(),
        "last loss": losses[-1],
    }
    print(f"{name} done", flush=True)

load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")  # not on Windows
columns = ["first step s", "mean ms", "median ms", "RSS MB", "peak MB", "last loss"]
print(f"\n{PRESET}: batch {tcfg.batch_size} x {mcfg.block_size} tokens, "
      f"{TIMED_STEPS} timed steps after {WARMUP_STEPS} warm-up; machine load {load:.1f} "
      f"(1-minute average) on {os.cpu_count()} cores")
print(f"{'variant':<20}" + "".join(f"{c:>14}" for c in columns))
for name, row in measured.items():
    print(f"{name:<20}" + "".join(f"{row[c]:>14.{3 if c == 'last loss' else 1}f}"
                                  for c in columns))

names = list(measured)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
left.barh(names, [measured[n]["mean ms"] for n in names], color=[f"C{i}" for i in range(5)])
left.set_xlabel("ms per training step (lower is better)")
left.set_title(f"steady state, mean of {TIMED_STEPS} steps")
left.invert_yaxis()
right.barh(names, [measured[n]["first step s"] for n in names], color=[f"C{i}" for i in range(5)])
right.set_xlabel("seconds")
right.set_title("the first step (tracing, compiling)")
plt.tight_layout()
plt.show()

# %% [markdown]
# Every variant started from the same weights and saw the same batches, so the last
# column agrees: five ways of computing one thing. The other columns depend on your
# machine and on what else runs on it; rerun the cell before trusting a figure. What to
# look for:
#
# - **Keras eager** is slow: hundreds of small operations dispatched one at a time from
#   Python through Keras' layers, each paying TensorFlow's per-operation overhead (larger
#   than PyTorch's). It is a debugging mode, not a way to train.
# - **`tf.function`** removes that overhead: the step runs as one graph in C++. On the
#   course's 2-core machine it was 5 to 8 times faster than Keras eager (95-145 ms a step
#   against 730-790 ms), for 5-7 s of tracing.
# - **XLA** fuses the element-wise work (GELU, LayerNorm, softmax, the AdamW update) into
#   a few compiled kernels: here 10-30% faster than plain `tf.function`, for 11-12 s of
#   compiling.
# - **PyTorch eager** has a small per-operation overhead and nothing to trace: on a quiet
#   2-core CPU a step of this model takes a few tens of milliseconds (the preset is sized
#   for about 40 ms). **`torch.compile`** spends its first step compiling and gains
#   little on a CPU at this size. On a GPU both compilers gain much more, because there
#   every kernel launch and every round trip to memory is expensive.
#
# **A busy machine hits PyTorch hardest.** If the PyTorch rows show hundreds of
# milliseconds and the load printed above the table is near or above the number of
# cores, other processes were using the CPU. PyTorch splits every operation over its
# threads (`torch.get_num_threads()`, one per core) and each operation waits for the
# last of them; when one core is busy elsewhere, that wait can be a whole scheduler time
# slice, thousands of times per step. On the course's machine, with one of its two cores
# taken by another program, a step of this model took about 1.4 s with two threads and
# 0.09 s with `torch.set_num_threads(1)`. TensorFlow's thread pool suffered much less.
# Shared machines (Binder, a CI runner, a laptop compiling something) are exactly where
# this happens: when you run several jobs at once, give each one thread.
#
# The first-step column is the other half of the trade: tracing and compiling cost
# seconds, tens of seconds for a cold `torch.compile`, and are paid again on every
# retrace. For a 2000-step run that is noise; for a test suite that trains a model for 20
# steps, it is most of the time. As for memory, the frameworks themselves take most of
# it (PyTorch and TensorFlow loaded together: about 900 MB); each compiler adds its share
# (XLA the most here, about 200 MB), and a model of 800 K parameters almost nothing.
#
# ## What's next
#
# The same GPT now exists twice, and the two agree to the last bits that float32 allows.
# The next chapters make it fast and small: attention as a Triton kernel, LoRA
# fine-tuning, distributed training, and export to ONNX and TFLite, each measured on both
# sides.
#
# ## Your code, carried forward
#
# The last cell saves your Keras layers, your `GPT`, your `keras_train_step`, your
# `attend_with_cache` and your `sample_next` to
# `my_code/gpt_keras.py`, beside the chapter folders. Later chapters use your Keras model
# from there when it is present (they print whose model they took) and the library's
# `course.tf.GPT` when it is not: what you built here is what they build on. Run it again
# whenever you change your classes; no graded cell reads that file.

# %%
from course import learner

learner.save(
    "gpt_keras",
    ["MyCausalSelfAttention", "MyMLP", "MyBlock", "GPT", "keras_train_step",
     "attend_with_cache", "sample_next"],
    imports=["from course import runtime", "keras = runtime.import_keras()",
             "tf = runtime.import_tensorflow()", "from keras import ops",
             "import math", "from course.config import lr_at",
             "from course.tf.model import MLP, CausalSelfAttention, lm_loss"],
)

# %% [markdown]
# ## Check yourself
#
# <!-- written by `python -m autograde release` from solutions/chapters.toml -->
# Answer each in a few sentences, from what this chapter showed you; where you are not sure,
# change the code and see.
#
# 1. Your Keras block trains but never matches the PyTorch one with the same weights, off by
#    a little everywhere. Name the two Keras defaults from the chapter's table that cause
#    exactly this, and how each one shows.
# 2. Copying `linear.weight.reshape(in, out)` into a `Dense` kernel has the right shape. Why
#    is it the wrong matrix, and what check would catch it even for a square layer?
# 3. Greedy decoding without a cache wrapped in a plain `tf.function` retraces at every
#    token. Why, and what do `input_signature` and `course.tf.generate` each change to trace
#    once?
