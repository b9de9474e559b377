# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Twin GPT · 05 The GPT
# Run this cell first. On Colab it installs the course library with this chapter's extras,
# keeping Colab's own PyTorch and TensorFlow; on your machine or on Binder the library is
# already there and nothing is installed.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("course") is None:
    extras = {"torch": "torch"}  # extra: the module it installs
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
PRESET = "shakespeare-char-cpu"  # 4 layers, 4 heads, 128 wide, 64 characters of context
# Changes to the preset's training recipe. Full size: none, the real recipe (2000 steps,
# ~2 min on 2 cores). Smoke: a few steps, to check that every cell runs.
TRAIN_OVERRIDES = (
    {"max_iters": 30, "eval_interval": 15, "eval_iters": 2, "log_interval": 5} if SMOKE else {}
)
SAMPLE_CHARS = 120 if SMOKE else 600  # characters per generated sample
KV_BLOCK_SIZE = 512  # context of the model timed with and without a KV cache
KV_NEW_TOKENS = 32 if SMOKE else 256  # tokens generated per timing
KV_REPEATS = 1 if SMOKE else 3  # timings per variant; the best one counts
RESUME_ITERS = 10 if SMOKE else 100  # steps before the checkpoint, and again after it
ATTN_STEPS = 2 if SMOKE else 15  # timed forward+backward steps per attention implementation
SEED = 1337

# %% [markdown]
# # 05 · The GPT
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/twin-gpt/twin-gpt/blob/v0.1.0/notebooks/05_gpt/05_gpt.ipynb)
#
# <!-- chapter card: written by `python -m autograde release` from solutions/chapters.toml -->
# **Time:** about 85 min to work through; the code runs in at most 13 min on 2 CPU cores.
#
# **You will be able to**
#
# - assemble a GPT from embeddings, blocks and a tied head with GPT-2's initialisation, and
#   count its parameters from its config
# - shift logits and targets for the language-model loss, write one training step (schedule,
#   backward, clipping, AdamW), and check a fresh model's loss against log(vocab_size)
# - sample with temperature, top-k and top-p, and predict how each changes the text
# - write attention with a KV cache, including the shifted causal mask, and measure what the
#   cache saves
# - checkpoint and resume a run exactly, and load checkpoints safely with
#   `weights_only=True`
#
# **Before you start:** chapters 03 (Tokenizers and data pipelines) and 04 (Attention). From
# outside the course: a training loop (loss, backward, optimizer step); AdamW in outline.
# <!-- end of the chapter card -->
#
# Chapter 04 built attention and the Transformer block. This chapter puts blocks together
# into a whole GPT and makes it write Shakespeare:
#
# 1. **assemble** the model yourself (exercise 1) and **count** its parameters, by
#    formula (exercise 2);
# 2. the **language-model loss**: every position predicts the *next* token (exercise 3);
# 3. one **training step** (exercise 4), then **train** your model on Tiny Shakespeare
#    with the course's training loop, watching the loss fall live;
# 4. **sample** from it: temperature, top-k (exercise 5) and top-p;
# 5. the **KV cache**, the trick every inference server relies on: keep the keys and
#    values of past tokens instead of recomputing them (exercise 6), and measure what it
#    buys;
# 6. **checkpoints**: stop, resume, get the same run; and the two attention
#    implementations, `"manual"` and `"sdpa"`, timed against each other.
#
# The blocks come from the library, as you built them in chapter 04; the library's own
# GPT (`course.torch.GPT`) is the yardstick your model is tested against, and the
# training loop is `course.torch.train.train`.

# %%
import math
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display

from course import checks, data
from course.config import GPTConfig, get_preset
from course.torch import GPT as LibraryGPT  # the library's GPT, beside yours below
from course.torch import generate, manual_attention  # built in chapter 04

torch.manual_seed(SEED)
preset = get_preset(PRESET, TRAIN_OVERRIDES)
print(f"preset {preset.name!r}: {preset.about}")
print(preset.model)
print(preset.train)
device = runtime.pick_device()  # "cuda", "mps" or "cpu" (COURSE_DEVICE=cpu forces the CPU)
print(f"the model runs on {device!r}: every tensor it meets is created or moved there")

# %% [markdown]
# ## The whole model
#
# A GPT is four things stacked up:
#
# - a **token embedding** `wte` (vocab_size × n_embd): one learned vector per token id;
# - a **position embedding** `wpe` (block_size × n_embd): one learned vector per position,
#   added to the token's, so that the model knows where each token sits;
# - `n_layer` **blocks**, each `x + attn(ln_1(x))` then `x + mlp(ln_2(x))`;
# - a final LayerNorm `ln_f` and the **head** `lm_head`, a linear map from n_embd back to
#   one score (logit) per vocabulary entry.
#
# The head's weight *is* the token embedding's (**weight tying**, as in GPT-2): the same
# matrix turns ids into vectors on the way in and vectors into scores on the way out.
# PyTorch counts a shared parameter once in `model.parameters()`.

# %%
model = LibraryGPT(preset.model).to(device)
by_part = {}
for name, param in model.named_parameters():  # a tied weight is listed once, as wte
    part = name.split(".")
    if part[0] == "transformer" and part[1] == "h":
        key = f"blocks · {part[3]}"  # ln_1, attn, ln_2 or mlp, summed over the layers
    else:
        key = ".".join(part[1:2] if part[0] == "transformer" else part[:1])
    by_part[key] = by_part.get(key, 0) + param.numel()
total = sum(p.numel() for p in model.parameters())
print(f"{'part':<16} {'parameters':>11} {'share':>7}")
for key, n in by_part.items():
    print(f"{key:<16} {n:>11,} {n / total:>7.1%}")
print(f"{'total':<16} {total:>11,}")
print(f"lm_head.weight is wte.weight: {model.lm_head.weight is model.transformer.wte.weight}")
print(f"model.num_params() = {model.num_params():,} (without the position embedding, "
      "the figure papers usually quote)")

# %% [markdown]
# With 65 characters for a vocabulary, the embeddings are a rounding error here: the
# blocks hold almost everything, two thirds of it in the MLPs. Each block has about
# `12 · n_embd²` parameters, whatever the vocabulary. GPT-2's 50,257-token vocabulary
# changes the picture: its embedding alone is nearly a third of its 124 M parameters.
#
# ## Exercise 1 · your GPT
#
# Now write that model yourself, as `class GPT(nn.Module)`, from chapter 04's `Block`
# (imported from the library). Use GPT-2's names, so that a state dict moves between
# your model, the library's and GPT-2's own checkpoints unchanged:
#
# - `self.transformer = nn.ModuleDict(...)` holding `wte`, `wpe` (`nn.Embedding`),
#   `drop` (`nn.Dropout(config.dropout)`), `h` (an `nn.ModuleList` of `n_layer` blocks)
#   and `ln_f` (`nn.LayerNorm(n_embd, eps=config.layer_norm_eps, bias=config.bias)`);
# - `self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)`, its weight **tied**:
#   `self.lm_head.weight = self.transformer.wte.weight` (one tensor, not a copy);
# - GPT-2's initialisation: every `Linear` and `Embedding` weight from a normal
#   distribution of std 0.02 (`nn.init.normal_`), every bias 0, LayerNorms as they come
#   (weight 1, bias 0); then the two **residual projections** of each block
#   (`attn.c_proj.weight` and `mlp.c_proj.weight`) with std `0.02 / sqrt(2 · n_layer)`:
#   each block adds two of them to the residual stream, and this keeps the stream's
#   variance from growing with depth;
# - `forward(idx, targets=None)` returns `(logits, loss)`: token embeddings plus position
#   embeddings (positions `0 .. T-1`, created on `idx.device`), dropout, the blocks,
#   `ln_f`, the head; `loss` is `None` without targets, else the mean cross-entropy of
#   `logits` against `targets` of the same shape (B, T), where `-1` marks a position to
#   skip (`ignore_index=-1`).
#
# `num_params` is given: the training loop reports it. The test loads the library model's
# weights into yours and asks for the same logits, loss and gradients, for several sizes
# and both `bias` settings; then it checks your initialisation's statistics.

# %% nbgrader={"grade": false, "grade_id": "gpt_model", "locked": false, "schema_version": 3, "solution": true, "task": false}
import torch.nn as nn

from course.torch.model import Block  # built in chapter 04


class GPT(nn.Module):
    """Token and position embeddings, n_layer blocks, a final LayerNorm, a head tied to wte."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        ### BEGIN SOLUTION
        C = config.n_embd
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, C),
                wpe=nn.Embedding(config.block_size, C),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(C, eps=config.layer_norm_eps, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # one matrix, two uses
        for name, param in self.named_parameters():  # the tied weight comes once, as wte
            if name.endswith("c_proj.weight"):  # residual projections: smaller with depth
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
            elif param.dim() == 2:  # Linear and Embedding weights
                nn.init.normal_(param, mean=0.0, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        ### END SOLUTION

    def forward(self, idx, targets=None):
        """idx (B, T) -> logits (B, T, vocab_size), and the loss against targets (B, T)."""
        ### BEGIN SOLUTION
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        if targets is None:
            return logits, None
        V = logits.size(-1)
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)
        return logits, loss
        ### END SOLUTION

    def num_params(self, non_embedding=True):
        """Parameters, counted once (the tied head is wte); without positions by default."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n


# %% nbgrader={"grade": true, "grade_id": "test_gpt_model", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false}
"""GPT: GPT-2's names, a tied head; with the library's weights the same logits, loss and
gradients (both bias settings, dropout on, targets with -1); GPT-2's initialisation."""


def check_against_library(cfg, B, T, seed):
    torch.manual_seed(seed)
    library, yours = LibraryGPT(cfg), GPT(cfg)
    names, expected = set(yours.state_dict()), set(library.state_dict())
    assert names == expected, (
        f"parameter names differ from GPT-2's: missing {sorted(expected - names)}, "
        f"unexpected {sorted(names - expected)}"
    )
    assert yours.lm_head.weight is yours.transformer.wte.weight, (
        "lm_head.weight must be the very tensor wte.weight (tied), not a copy"
    )
    yours.load_state_dict(library.state_dict())
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    targets = torch.randint(0, cfg.vocab_size, (B, T))
    targets[0, :2] = -1  # positions to skip
    results = []
    for net in (library, yours):
        net.train()
        torch.manual_seed(seed + 1)  # the same dropout masks for both
        results.append(net(idx, targets=targets))
    (expected_logits, expected_loss), (logits, loss) = results
    label = f"{cfg}, B={B}, T={T}"
    checks.assert_close(logits, expected_logits, atol=1e-5, name=f"logits ({label})")
    checks.assert_close(loss, expected_loss, atol=1e-5, name=f"loss ({label})")
    expected_loss.backward()
    loss.backward()
    grads = {name: p.grad for name, p in yours.named_parameters()}
    for name, param in library.named_parameters():
        checks.assert_close(grads[name], param.grad, atol=1e-5, name=f"gradient of {name}")
    yours.eval()
    logits, loss = yours(idx)
    assert loss is None, "without targets, forward returns (logits, None)"
    checks.assert_shape(logits, (B, T, cfg.vocab_size), name="logits")


def check_init(cfg, seed):
    torch.manual_seed(seed)
    params = {name: p.detach() for name, p in GPT(cfg).named_parameters()}
    residual_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    for name, param in params.items():
        if param.dim() == 2:
            want = residual_std if name.endswith("c_proj.weight") else 0.02
            got = float(param.std())
            assert abs(got - want) < 0.1 * want, f"{name}: std {got:.5f}, expected {want:.5f}"
            assert abs(float(param.mean())) < 0.1 * want, f"{name}: mean should be 0"
        elif name.endswith("bias"):
            assert not param.any(), f"{name} must start at 0"
        else:
            assert bool((param == 1).all()), f"{name} (a LayerNorm weight) must start at 1"


check_against_library(GPTConfig(n_layer=2, n_head=3, n_embd=12, block_size=9, vocab_size=19),
                      B=3, T=7, seed=0)
check_against_library(GPTConfig(n_layer=3, n_head=2, n_embd=24, block_size=11, vocab_size=29,
                                bias=True, dropout=0.1), B=2, T=11, seed=1)
check_init(GPTConfig(n_layer=4, n_head=2, n_embd=64, block_size=32, vocab_size=101, bias=True),
           seed=2)
### BEGIN HIDDEN TESTS
check_against_library(GPTConfig(n_layer=4, n_head=8, n_embd=32, block_size=16, vocab_size=13,
                                bias=True), B=5, T=6, seed=3)
check_against_library(GPTConfig(n_layer=1, n_head=2, n_embd=20, block_size=8, vocab_size=41,
                                dropout=0.2, attn_impl="manual"), B=4, T=8, seed=4)
check_init(GPTConfig(n_layer=2, n_head=3, n_embd=48, block_size=40, vocab_size=150), seed=5)
check_init(GPTConfig(n_layer=8, n_head=2, n_embd=64, block_size=24, vocab_size=90), seed=6)
### END HIDDEN TESTS

# %% [markdown]
# Your class and the library's are the same model: same names, same numbers. From here
# on the chapter uses the library's (`LibraryGPT`) wherever a cell must not depend on
# your code, and trains yours further down.
#
# ## Exercise 2 · counting parameters by formula
#
# Write `count_gpt_params(config)`: the number of parameters of `GPT(config)`, computed
# from the config alone (`n_layer`, `n_embd`, `vocab_size`, `block_size`, `bias`), without
# building a model. Go through the parts one by one, with `C = n_embd`:
#
# - `wte` and `wpe`: one vector of `C` per token and per position;
# - per block: `ln_1` and `ln_2` (a LayerNorm has a weight of `C`, and a bias of `C`
#   only when `config.bias`), `attn.c_attn` (C → 3C), `attn.c_proj` (C → C), `mlp.c_fc`
#   (C → 4C), `mlp.c_proj` (4C → C); a `Linear(a, b)` has `a · b` weights, and `b` biases
#   when `config.bias`;
# - `ln_f`, and the head, which is tied to `wte`.
#
# GPT-2 small (`get_preset("gpt2").model`) has exactly 124,439,808.

# %% nbgrader={"grade": false, "grade_id": "count_gpt_params", "locked": false, "schema_version": 3, "solution": true, "task": false}
def count_gpt_params(config):
    """The number of parameters of ``GPT(config)``, from the config alone."""
    ### BEGIN SOLUTION
    C, b = config.n_embd, int(config.bias)
    embeddings = config.vocab_size * C + config.block_size * C
    layer_norm = C + b * C
    attention = (C * 3 * C + b * 3 * C) + (C * C + b * C)
    mlp = (C * 4 * C + b * 4 * C) + (4 * C * C + b * C)
    block = 2 * layer_norm + attention + mlp
    return embeddings + config.n_layer * block + layer_norm  # the head is wte: no extra
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_count_gpt_params", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""count_gpt_params: equals the model's own count, with and without biases, head tied."""
for cfg in (get_preset("nano").model, get_preset("shakespeare-char-cpu").model):
    expected = sum(p.numel() for p in LibraryGPT(cfg).parameters())
    got = count_gpt_params(cfg)
    assert got == expected, (
        f"count_gpt_params gave {got:,} for {cfg}, the model has {expected:,} "
        f"(off by {got - expected:+,})"
    )
got = count_gpt_params(get_preset("gpt2").model)
assert got == 124_439_808, f"GPT-2 small has 124,439,808 parameters, got {got:,}"
### BEGIN HIDDEN TESTS
shapes = [
    dict(n_layer=1, n_head=1, n_embd=8, block_size=4, vocab_size=3),
    dict(n_layer=3, n_head=2, n_embd=24, block_size=17, vocab_size=101),
    dict(n_layer=2, n_head=4, n_embd=64, block_size=100, vocab_size=7),
    dict(n_layer=5, n_head=3, n_embd=48, block_size=33, vocab_size=300),
]
for shape in shapes:
    for bias in (False, True):
        cfg = GPTConfig(**shape, bias=bias)
        expected = sum(p.numel() for p in LibraryGPT(cfg).parameters())
        assert count_gpt_params(cfg) == expected, f"{cfg}: expected {expected:,}"
cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11)
assert count_gpt_params(cfg.replace(n_head=8)) == count_gpt_params(cfg), "heads add nothing"
assert count_gpt_params(cfg.replace(dropout=0.5)) == count_gpt_params(cfg)
### END HIDDEN TESTS

# %% [markdown]
# With the formula you can size a model before building it:

# %%
print(f"{'preset':<22} {'parameters':>13} {'non-embedding':>14}")
for name in ("nano", "shakespeare-char-cpu", "shakespeare-char", "gpt2"):
    cfg = get_preset(name).model
    n = count_gpt_params(cfg)
    non_embedding = n - cfg.vocab_size * cfg.n_embd - cfg.block_size * cfg.n_embd
    print(f"{name:<22} {n:>13,} {non_embedding:>14,}")

# %% [markdown]
# ## Exercise 3 · the language-model loss
#
# Given a sequence of ids `idx` (B, T), the model returns logits (B, T, V): row `t` is its
# guess for the token that comes **after** position `t`, having seen positions `0..t` only
# (the causal mask). So position `t` is scored against `idx[:, t + 1]`, and the last
# position has nothing to be scored against (its prediction is what we sample from when
# generating).
#
# Write `lm_loss(logits, idx)`: the mean cross-entropy over every position that has a
# target, a scalar tensor. Chapter 04's `bigram_loss` was handed its targets `y` already
# shifted; here the shift is yours. You wrote cross-entropy out by hand there, so use
# `F.cross_entropy` now: it wants the classes in the second dimension, so flatten
# (B, T', V) to (B·T', V) and the targets to (B·T',).
#
# During training the shift happens when the batch is cut instead (chapter 03's
# `get_batch` returns `y = x` moved by one), and the model computes the loss itself:
# `logits, loss = model(x, targets=y)`.

# %% nbgrader={"grade": false, "grade_id": "lm_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def lm_loss(logits, idx):
    """Mean cross-entropy of logits[:, t] (B, T, V) against the next token idx[:, t + 1]."""
    ### BEGIN SOLUTION
    predictions = logits[:, :-1, :]  # (B, T-1, V): the last position has no target
    targets = idx[:, 1:]  # (B, T-1)
    return F.cross_entropy(predictions.reshape(-1, logits.size(-1)), targets.reshape(-1))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_lm_loss", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""lm_loss: position t against token t + 1, the last position unscored, a mean."""
idx = torch.tensor([[0, 2, 1, 3]])
confident = torch.full((1, 4, 4), -10.0)
for t, nxt in enumerate([2, 1, 3, 0]):  # row t puts its weight on the token after t
    confident[0, t, nxt] = 10.0
loss = lm_loss(confident, idx)
assert torch.is_tensor(loss) and loss.dim() == 0, f"expected a scalar tensor, got {loss!r}"
assert float(loss) < 1e-3, (
    f"logits that predict each next token well should give a loss near 0, got {float(loss):.3f}:"
    " compare logits[:, t] with idx[:, t + 1]"
)
torch.manual_seed(0)
tiny = LibraryGPT(get_preset("nano").model)
x = torch.randint(0, tiny.config.vocab_size, (3, 12))
logits, _ = tiny(x)
_, expected = tiny(x[:, :-1], targets=x[:, 1:])  # the model's own loss, shifted at the input
checks.assert_close(lm_loss(logits, x), expected, atol=1e-5, name="lm_loss on a GPT's logits")
for V in (7, 13):  # uniform logits: every token equally likely, a loss of log V exactly
    uniform = lm_loss(torch.zeros(3, 5, V), torch.randint(0, V, (3, 5)))
    checks.assert_close(uniform, math.log(V), atol=1e-5, name=f"uniform logits over V={V}")
gen = torch.Generator().manual_seed(6)
for B, T, V in [(2, 6, 9), (5, 3, 4)]:  # F.cross_entropy on targets shifted by one
    logits, idx = torch.randn(B, T, V, generator=gen), torch.randint(0, V, (B, T), generator=gen)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1))
    checks.assert_close(lm_loss(logits, idx), expected, atol=1e-5, name=f"lm_loss {B, T, V}")
### BEGIN HIDDEN TESTS
rng = torch.Generator().manual_seed(1)
for B, T, V in [(1, 2, 5), (2, 7, 3), (4, 16, 65)]:
    logits = torch.randn(B, T, V, generator=rng)
    idx = torch.randint(0, V, (B, T), generator=rng)
    log_probs = logits.log_softmax(-1)
    picked = [-log_probs[b, t, idx[b, t + 1]] for b in range(B) for t in range(T - 1)]
    expected = torch.stack(picked).mean()
    checks.assert_close(lm_loss(logits, idx), expected, atol=1e-5, name=f"lm_loss {B, T, V}")
uniform = lm_loss(torch.zeros(2, 5, 10), torch.zeros(2, 5, dtype=torch.long))
checks.assert_close(uniform, math.log(10), atol=1e-5, name="uniform logits: log(V)")
### END HIDDEN TESTS

# %% [markdown]
# Before training, the model knows nothing: its loss should be that of a uniform guess,
# `log(vocab_size)` = log 65 ≈ 4.17. A value far above that would mean the initial
# logits are too large (a bad init); this is the first check to make on any new model.

# %%
# The course's one path from the corpus to token ids (the trainer and the command line
# take it too): a character tokenizer, the text split before encoding, the ids cached.
train_tokens, val_tokens, tokenizer = data.corpus_tokens(
    "tinyshakespeare", kind="char", val_fraction=preset.train.val_fraction
)
print(f"{len(train_tokens):,} train and {len(val_tokens):,} val tokens, "
      f"vocabulary of {tokenizer.vocab_size}")
x, y = data.get_batch(train_tokens, 8, preset.model.block_size, np.random.default_rng(SEED))
x = torch.from_numpy(x).to(device)
with torch.no_grad():
    logits, _ = model(x)
print(f"loss before training: {float(lm_loss(logits, x)):.3f} "
      f"(uniform guess: log {tokenizer.vocab_size} = {math.log(tokenizer.vocab_size):.3f})")

# %% [markdown]
# ## Exercise 4 · one training step
#
# Write `train_step(model, optimizer, x, y, step, train_cfg)`: one optimizer step on the
# batch `x, y` (B, T), returning its loss as a Python float. In order:
#
# 1. set the learning rate of step `step` (0-based), `lr_at(step, train_cfg)` (warm-up,
#    then cosine), on **every** parameter group: `group["lr"] = lr` for each of
#    `optimizer.param_groups` (AdamW here has two: matrices, which decay, and vectors,
#    which do not);
# 2. forward with the targets, `_, loss = model(x, targets=y)`, and `loss.backward()`;
# 3. clip the gradients' global norm to `train_cfg.grad_clip` with
#    `torch.nn.utils.clip_grad_norm_(model.parameters(), ...)`, before the step it is
#    meant to tame (a `grad_clip` of 0 means no clipping);
# 4. `optimizer.step()`, then `optimizer.zero_grad(set_to_none=True)`: `backward` *adds*
#    to `.grad`, so gradients left there would leak into the next step.
#
# The test runs a few steps of yours and of the library's loop (`course.torch.train`)
# from the same weights and batches: the losses and the weights must agree.

# %% nbgrader={"grade": false, "grade_id": "train_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
from course.config import lr_at


def train_step(model, optimizer, x, y, step, train_cfg):
    """One AdamW step on (x, y) at the scheduled learning rate; the loss as a float."""
    ### BEGIN SOLUTION
    lr = lr_at(step, train_cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    _, loss = model(x, targets=y)
    loss.backward()
    if train_cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_train_step", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""train_step: from the same seed, weights and batches, the library's losses and weights."""
from course.config import TrainConfig
from course.torch.train import configure_optimizer
from course.torch.train import train_step as library_step


def library_train_step(model, optimizer, x, y, step, train_cfg):
    return library_step(model, optimizer, lambda: (x, y), lr_at(step, train_cfg), train_cfg)


def check_steps(cfg, train_cfg, B, T, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, cfg.vocab_size, (2, B, T), generator=gen) for _ in range(steps)]
    runs = []
    for step_fn in (library_train_step, train_step):
        torch.manual_seed(seed)
        net = LibraryGPT(cfg)
        optimizer = configure_optimizer(net, train_cfg)
        losses = [float(step_fn(net, optimizer, x, y, i, train_cfg))
                  for i, (x, y) in enumerate(batches)]
        runs.append((losses, net))
    (expected_losses, expected), (losses, net) = runs
    label = f"{steps} steps, grad_clip={train_cfg.grad_clip}, bias={cfg.bias}"
    checks.assert_close(losses, expected_losses, atol=1e-6, name=f"losses ({label})")
    weights = dict(net.named_parameters())
    for name, param in expected.named_parameters():
        got, want = weights[name], param
        if name.endswith("attn.c_attn.bias"):  # the keys' bias has a gradient of 0 but for
            C = cfg.n_embd  # rounding (softmax ignores a shift), which AdamW scales up
            got, want = torch.cat([got[:C], got[2 * C:]]), torch.cat([want[:C], want[2 * C:]])
        checks.assert_close(got, want, atol=1e-6, name=f"{name} after {label}")


recipe = TrainConfig(learning_rate=1e-2, min_lr=1e-3, warmup_iters=2, lr_decay_iters=5,
                     grad_clip=0.05)
check_steps(GPTConfig(n_layer=2, n_head=4, n_embd=16, block_size=8, vocab_size=11),
            recipe, B=3, T=6, steps=5, seed=0)
check_steps(GPTConfig(n_layer=1, n_head=3, n_embd=12, block_size=7, vocab_size=17, bias=True),
            recipe.replace(grad_clip=0.0), B=4, T=7, steps=3, seed=1)
### BEGIN HIDDEN TESTS
check_steps(GPTConfig(n_layer=3, n_head=2, n_embd=20, block_size=9, vocab_size=14, bias=True),
            recipe.replace(warmup_iters=3, lr_decay_iters=6, grad_clip=0.2), B=2, T=9,
            steps=8, seed=2)
check_steps(GPTConfig(n_layer=2, n_head=4, n_embd=24, block_size=6, vocab_size=31),
            recipe.replace(learning_rate=3e-3, min_lr=3e-4, grad_clip=0.0), B=5, T=4,
            steps=4, seed=3)
### END HIDDEN TESTS

# %% [markdown]
# ## Training, with a live loss plot
#
# `course.torch.train.train` is the course's training loop, written out step by step in
# its source (read it: about 150 lines). Its step is the one you just wrote (plus gradient
# accumulation over micro-batches); around it come an evaluation on both splits every
# `eval_interval` steps and a checkpoint in `out_dir`. Given `model=`, it trains that
# model: below, your GPT, once it matches the library's. It calls `callback(event)` with a dict each time it logs a step (`"train"`)
# or evaluates (`"eval"`): enough to draw the curves while it runs. Redrawing a figure
# costs tens of milliseconds, so the plot below redraws at most every two seconds.
#
# Outside a notebook, the same run is one command (and `--resume` continues it):
#
# ```bash
# python -m course.train --framework torch --preset shakespeare-char-cpu --out runs/char
# python -m course.train --framework torch --preset shakespeare-char-cpu --max_iters 4000 \
#     --out runs/char --resume
# python -m course.sample --out runs/char
# ```

# %%
def same_as_library(cls):
    """Does `cls` (your GPT) hold the library's weights under its names, tied, and give
    the library's logits? A quick check, so that a GPT that fails exercise 1 is not trained."""
    try:
        cfg = preset.model.replace(n_layer=1)
        torch.manual_seed(0)
        library, yours = LibraryGPT(cfg), cls(cfg)
        yours.load_state_dict(library.state_dict())
        idx = torch.randint(0, cfg.vocab_size, (2, 9))
        same = torch.allclose(yours(idx)[0], library(idx)[0], atol=1e-5)
        return same and yours.lm_head.weight is yours.transformer.wte.weight
    except Exception:  # NotImplementedError, a wrong name, a wrong shape...
        return False


yours_works = same_as_library(GPT)
torch.manual_seed(preset.train.seed)  # the initial weights of the model trained below
if yours_works:
    whose, to_train = "your GPT", GPT(preset.model).to(device)
else:
    whose, to_train = "the library's GPT", LibraryGPT(preset.model).to(device)
print(f"training {whose}")

# %%
from course.torch.train import load_checkpoint, load_model, train


class LiveLossPlot:
    """A training callback that redraws the loss curves in place, at most every `every_s`."""

    def __init__(self, title, every_s=2.0):
        self.fig, self.ax = plt.subplots(figsize=(8, 3.5))
        plt.close(self.fig)  # drawn through the display handle only, not again at the end
        self.handle = display(self.fig, display_id=True)
        self.title, self.every_s, self.last_draw = title, every_s, 0.0
        self.steps, self.losses, self.evals = [], [], []

    def __call__(self, event):
        if event["event"] == "train":
            self.steps.append(event["iter"])
            self.losses.append(event["loss"])
        elif event["event"] == "eval":
            self.evals.append((event["iter"], event["train_loss"], event["val_loss"]))
        if event["event"] == "eval" or time.perf_counter() - self.last_draw > self.every_s:
            self.draw()

    def draw(self):
        ax = self.ax
        ax.clear()
        ax.plot(self.steps, self.losses, lw=1, alpha=0.6, label="train (one batch)")
        if self.evals:
            it, tr, va = zip(*self.evals)
            ax.plot(it, tr, "o-", label="train (evaluated)")
            ax.plot(it, va, "s-", label="val (evaluated)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(self.title)
        ax.legend(loc="upper right")
        self.handle.update(self.fig)
        self.last_draw = time.perf_counter()


run_dir = tempfile.TemporaryDirectory(prefix="twin-gpt-05-")  # never inside the repository
out_dir = Path(run_dir.name) / "char"
plot = LiveLossPlot(f"{whose}, {preset.name}: {preset.train.max_iters} steps")
start = time.perf_counter()
result = train(preset, out_dir, data=(train_tokens, val_tokens), tokenizer=tokenizer,
               callback=plot, model=to_train)
plot.draw()
train_seconds = time.perf_counter() - start
print(f"{preset.train.max_iters} steps in {train_seconds:.0f} s; final metrics: {result.metrics}")
print("files in out_dir:", sorted(p.name for p in out_dir.iterdir()))
# The trained weights, moved into the library's GPT: same names, so the state dict loads
# as it is, and the library's class adds what sampling uses (a KV cache, input checks).
model = LibraryGPT(preset.model).to(device)
model.load_state_dict(result.model.state_dict())
model.eval()

# %% [markdown]
# If the cell says "training the library's GPT", your class does not yet give the
# library's logits (exercise 1): the chapter goes on with the library's model, and
# trains yours once it does.
#
# The loss starts at log 65 and drops fast while the model learns which characters are
# common, then more slowly as it learns spelling, words and the layout of a play. With the
# full recipe the validation loss ends near 1.9 nats per character. Train and val stay
# close: 800 K parameters cannot memorise a million characters in 2000 steps of 768
# characters each (1.5 passes over the data).
#
# ## Sampling
#
# To generate, feed a prompt, take the logits of the last position, turn them into
# probabilities and draw the next token; append it and repeat. Three knobs shape the
# draw:
#
# - **temperature** divides the logits before the softmax: below 1 it sharpens the
#   distribution (safer, more repetitive text), above 1 it flattens it (more surprising,
#   more misspelt); 0 means always the most likely token (greedy);
# - **top-k** keeps only the k most likely tokens;
# - **top-p** (nucleus) keeps the smallest set of most likely tokens whose probabilities
#   add up to p, so the number kept adapts: few when the model is sure, many when not.
#
# ## Exercise 5 · top-k filtering
#
# Write `top_k_filter(logits, k)`: a copy of `logits` (..., V) in which, along the last
# dimension, every entry except the `k` largest is set to `-inf` (so the softmax gives it
# probability 0); the kept entries keep their values and their places. If `k >= V`, nothing
# is removed. `torch.topk(logits, k, dim=-1)` gives the k largest values of each row,
# sorted, so `values[..., -1:]` is each row's k-th largest. Don't change `logits` itself.

# %% nbgrader={"grade": false, "grade_id": "top_k_filter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def top_k_filter(logits, k):
    """``logits`` (..., V) with all but the ``k`` largest of each row set to -inf."""
    ### BEGIN SOLUTION
    if k >= logits.size(-1):
        return logits.clone()
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1): each row's k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_top_k_filter", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""top_k_filter: per row, the k largest kept in place, the rest -inf, input unchanged."""
inf = float("inf")
logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.5, -1.0, 4.0, 2.5]])
before = logits.clone()
got = top_k_filter(logits, 2)
expected = torch.tensor([[-inf, 3.0, 2.0, -inf], [-inf, -inf, 4.0, 2.5]])
checks.assert_close(got, expected, atol=0, name="top_k_filter(logits, 2)")
assert torch.equal(logits, before), "top_k_filter must not change its input"
checks.assert_close(top_k_filter(logits, 4), logits, atol=0, name="k = V keeps everything")
### BEGIN HIDDEN TESTS
gen = torch.Generator().manual_seed(2)
for shape, k in [((3, 10), 1), ((5, 65), 7), ((2, 3, 20), 19), ((4, 8), 8), ((2, 6), 100)]:
    logits = torch.randn(shape, generator=gen) * 3
    got = top_k_filter(logits, k)
    checks.assert_shape(got, shape, name=f"top_k_filter{shape}")
    flat, got_flat = logits.reshape(-1, shape[-1]), got.reshape(-1, shape[-1])
    for row, out in zip(flat, got_flat):
        keep = min(k, shape[-1])
        order = np.argsort(-row.numpy())  # an independent ranking: numpy's sort
        kept = np.zeros(shape[-1], dtype=bool)
        kept[order[:keep]] = True
        assert int(torch.isfinite(out).sum()) == keep, f"{shape}, k={k}: keep {keep} per row"
        assert np.array_equal(torch.isfinite(out).numpy(), kept), "keep the largest ones"
        assert torch.equal(out[torch.from_numpy(kept)], row[torch.from_numpy(kept)])
        assert bool((out[~torch.from_numpy(kept)] == -inf).all()), "the rest must be -inf"
probs = torch.softmax(top_k_filter(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 1), dim=-1)
checks.assert_close(probs, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), name="k = 1 is greedy")
### END HIDDEN TESTS

# %% [markdown]
# The library's `course.torch.sampling.filter_logits(logits, top_k, top_p)` does the same
# plus top-p, and `generate` uses it. Here are samples of the trained model, all from the
# same prompt and seed, with different settings. Look for real words, the `NAME:` lines
# that open each speech, and what happens at a high temperature.

# %%
prompt = torch.tensor([tokenizer.encode("ROMEO:\n")], device=device)
settings = [
    ("greedy (temperature 0)", dict(temperature=0.0)),
    ("temperature 0.8, top-k 20", dict(temperature=0.8, top_k=20)),
    ("temperature 1.0, top-p 0.9", dict(temperature=1.0, top_p=0.9)),
    ("temperature 1.5", dict(temperature=1.5)),
]
for label, kwargs in settings:
    out = generate(model, prompt, SAMPLE_CHARS // 2, seed=SEED, **kwargs)
    print(f"--- {label} ---\n{tokenizer.decode(out[0].tolist())}\n")

# %% [markdown]
# Greedy decoding soon loops: the single most likely continuation of a common phrase
# leads back to the same phrase. A little randomness breaks the loop; too much and the
# spelling goes. Try the knobs yourself (the text is generated when you press the button):

# %%
import ipywidgets as widgets


def write(prompt_text="JULIET:\n", temperature=0.8, top_k=40, top_p=1.0, seed=0):
    known = "".join(ch for ch in prompt_text if ch in tokenizer.chars) or "\n"
    start_ids = torch.tensor([tokenizer.encode(known)], device=device)[:, -model.config.block_size:]
    out = generate(model, start_ids, SAMPLE_CHARS, temperature=temperature, top_k=top_k or None,
                   top_p=top_p, seed=seed)
    print(tokenizer.decode(out[0].tolist()))


widgets.interact_manual(
    write,
    prompt_text=widgets.Textarea(value="JULIET:\n", description="prompt"),
    temperature=widgets.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.05),
    top_k=widgets.IntSlider(value=40, min=0, max=65, description="top_k (0 = off)"),
    top_p=widgets.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05),
    seed=widgets.IntText(value=0),
);

# %% [markdown]
# ## The KV cache
#
# Generating one token needs the logits of the last position only. But attention at the
# last position reads the **keys and values of every earlier position**, in every layer,
# so a plain loop re-runs the whole model over the whole context for every new token:
# the work per token grows with the context, and n tokens cost O(n²) token passes.
#
# Yet the keys and values of earlier tokens never change: with a causal mask, position s
# depends on positions 0..s only, so adding a token at the end changes nothing before it.
# So keep them. A **KV cache** stores, per layer, the keys and values `(B, nh, L, hs)` of
# the L tokens seen so far. A step then runs the model over the **new** token(s) only:
# each layer computes their q, k, v, **appends** k and v to its cache, and attends from the
# new queries to all L + T keys.
#
# One subtlety: the mask. The T new queries sit at absolute positions L .. L + T − 1, so
# new query t may see the keys 0 .. L + t: all the cached ones, and the new ones up to
# itself. For a single new token (T = 1) that is every key, no mask needed; for a chunk of
# several new tokens (a prompt, or a model that drafts several tokens at once) it is the
# lower triangle **shifted right by L**, not the usual one:
#
# ```
#          keys: cached (L=3) | new (T=2)
# new query 0:    1  1  1     |  1  0
# new query 1:    1  1  1     |  1  1
# ```
#
# ## Exercise 6 · attention with a KV cache
#
# Write `attend_with_cache(q, k, v, k_cache, v_cache)`:
#
# - `q, k, v` (B, nh, T, hs): queries, keys and values of the T new tokens;
# - `k_cache, v_cache` (B, nh, L, hs): the keys and values of the L earlier tokens (L may be
#   0: an empty cache, `torch.zeros(B, nh, 0, hs)`);
# - return `(y, k_all, v_all)`: `y` (B, nh, T, hs) is causal attention of the new queries
#   over all L + T keys (scaled by 1/√hs, the mask above, softmax, times the values), and
#   `k_all, v_all` (B, nh, L + T, hs) are the caches with the new keys and values
#   **appended** at the end (`torch.cat` along the time dimension).
#
# `torch.ones(T, S, dtype=torch.bool).tril(diagonal=d)` keeps the entries with
# `column - row <= d`. Create the mask with `device=q.device`: it must sit with the
# queries, on the GPU when the model runs there.

# %% nbgrader={"grade": false, "grade_id": "attend_with_cache", "locked": false, "schema_version": 3, "solution": true, "task": false}
def attend_with_cache(q, k, v, k_cache, v_cache):
    """Causal attention of T new queries over L cached + T new keys; the grown caches.

    q, k, v (B, nh, T, hs); k_cache, v_cache (B, nh, L, hs).
    Returns y (B, nh, T, hs), k_all and v_all (B, nh, L + T, hs).
    """
    ### BEGIN SOLUTION
    k_all = torch.cat([k_cache, k], dim=2)  # (B, nh, S, hs), S = L + T
    v_all = torch.cat([v_cache, v], dim=2)  # (B, nh, S, hs)
    T, S = q.size(2), k_all.size(2)
    scores = q @ k_all.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, S)
    visible = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    scores = scores.masked_fill(~visible, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v_all  # (B, nh, T, hs)
    return y, k_all, v_all
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_attend_with_cache", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""attend_with_cache: appends, then attends with the mask shifted by the cache length."""
gen = torch.Generator().manual_seed(3)
B, nh, hs = 2, 3, 8


def qkv(T):
    return [torch.randn(B, nh, T, hs, generator=gen) for _ in range(3)]


empty = torch.zeros(B, nh, 0, hs)
q, k, v = qkv(4)  # a prompt of 4 tokens, nothing cached: ordinary causal attention
y, k_all, v_all = attend_with_cache(q, k, v, empty, empty)
checks.assert_shape(y, (B, nh, 4, hs), name="y")
checks.assert_close(y, manual_attention(q, k, v), atol=1e-5, name="y for 4 tokens, empty cache")
checks.assert_close(k_all, k, atol=0, name="k_all after an empty cache")
q1, k1, v1 = qkv(1)  # one more token: it sees the 4 cached keys and its own
y1, k_all, v_all = attend_with_cache(q1, k1, v1, k_all, v_all)
checks.assert_shape(k_all, (B, nh, 5, hs), name="k_all after one step (append, don't replace)")
checks.assert_close(k_all, torch.cat([k, k1], dim=2), atol=0, name="k_all: cached keys, then new")
checks.assert_close(v_all, torch.cat([v, v1], dim=2), atol=0, name="v_all: cached values, then new")
expected = manual_attention(q1, k_all, v_all)  # one query sees every key
checks.assert_close(y1, expected, atol=1e-5, name="y for 1 new token after 4 cached")
q, k, v = qkv(10)  # 5 tokens, then chunks of 3 and 2: the same as all 10 at once
kc, vc, outputs = empty, empty, []
for lo, hi in [(0, 5), (5, 8), (8, 10)]:
    y, kc, vc = attend_with_cache(q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], kc, vc)
    checks.assert_shape(kc, (B, nh, hi, hs), name=f"k_all after {hi} tokens")
    outputs.append(y)
checks.assert_close(torch.cat(outputs, dim=2), manual_attention(q, k, v), atol=1e-5,
                    name="chunks 5+3+2 vs all 10 at once (new query t sees keys 0 .. L + t)")
checks.assert_close(vc, v, atol=0, name="the cache after 10 tokens holds all 10 values in order")
### BEGIN HIDDEN TESTS
# Several new tokens after a cache: the mask must be shifted by the cache length.
q, k, v = qkv(3)
kc, vc = [torch.randn(B, nh, 5, hs, generator=gen) for _ in range(2)]
y, k_all, v_all = attend_with_cache(q, k, v, kc, vc)
checks.assert_shape(y, (B, nh, 3, hs), name="y for 3 new tokens after 5 cached")
checks.assert_close(k_all, torch.cat([kc, k], dim=2), atol=0, name="k_all after 5 + 3")
checks.assert_close(v_all, torch.cat([vc, v], dim=2), atol=0, name="v_all after 5 + 3")
checks.assert_close(y, manual_attention(q, k_all, v_all), atol=1e-5, name="y, 3 after 5 cached")
# Chunk by chunk equals the whole sequence at once.
q, k, v = qkv(9)
kc, vc, outputs = empty, empty, []
for lo, hi in [(0, 2), (2, 3), (3, 7), (7, 8), (8, 9)]:
    y, kc, vc = attend_with_cache(q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], kc, vc)
    outputs.append(y)
checks.assert_close(torch.cat(outputs, dim=2), manual_attention(q, k, v), atol=1e-5,
                    name="chunks 2+1+4+1+1 vs all 9 at once")
checks.assert_close(kc, k, atol=0, name="the cache after 9 tokens holds all 9 keys in order")
# The scale is 1/sqrt(hs) of this call, whatever the head size.
q, k, v = [torch.randn(1, 2, 3, 32, generator=gen) for _ in range(3)]
y, _, _ = attend_with_cache(q, k, v, torch.zeros(1, 2, 0, 32), torch.zeros(1, 2, 0, 32))
checks.assert_close(y, manual_attention(q, k, v), atol=1e-5, name="hs = 32")
### END HIDDEN TESTS

# %% [markdown]
# Now plug it into the model. `forward_with_cache` runs the GPT's own layers on the new
# tokens only, with your function in place of each layer's attention. It also spells out,
# in one place, what the whole model does: embed (positions continue after the cached
# ones), n_layer blocks, final LayerNorm, head.

# %%
def empty_caches(model, batch_size=1):
    c = model.config
    device = next(model.parameters()).device  # the cache lives with the model
    empty = torch.zeros(batch_size, c.n_head, 0, c.head_size, device=device)
    return [(empty, empty) for _ in range(c.n_layer)]


@torch.no_grad()
def forward_with_cache(model, idx, caches):
    """Logits (B, T, V) of the new tokens idx (B, T); `caches` (per layer) grows in place."""
    B, T = idx.shape
    start = caches[0][0].size(2)  # tokens already cached
    pos = torch.arange(start, start + T, device=idx.device)
    x = model.transformer.wte(idx) + model.transformer.wpe(pos)  # (B, T, C)
    for layer, block in enumerate(model.transformer.h):
        attn = block.attn
        q, k, v = attn.c_attn(block.ln_1(x)).split(attn.n_embd, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, attn.n_head, -1).transpose(1, 2) for t in (q, k, v))
        y, k_all, v_all = attend_with_cache(q, k, v, *caches[layer])  # (B, nh, T, hs)
        caches[layer] = (k_all, v_all)
        x = x + attn.c_proj(y.transpose(1, 2).reshape(B, T, -1))
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.transformer.ln_f(x))  # (B, T, V)


def greedy_with_cache(model, prompt, max_new_tokens):
    """Greedy decoding: the prompt in one pass, then one token per step."""
    caches = empty_caches(model, prompt.size(0))
    logits = forward_with_cache(model, prompt, caches)
    out = prompt
    for _ in range(max_new_tokens):
        token = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1)
        out = torch.cat([out, token], dim=1)
        logits = forward_with_cache(model, token, caches)
    return out


# %% nbgrader={"grade": true, "grade_id": "test_kv_cache_decoding", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""A GPT run with attend_with_cache: same logits and same greedy text as without a cache."""
torch.manual_seed(4)
small = LibraryGPT(get_preset("nano").model).eval()  # 2 layers, 32 context
start_ids = torch.randint(0, small.config.vocab_size, (1, 5))
ours = greedy_with_cache(small, start_ids, 20)
reference = generate(small, start_ids, 20, temperature=0, use_cache=False)
assert ours.tolist() == reference.tolist(), (
    f"greedy decoding with your cache gave {ours[0, 5:].tolist()}, without a cache "
    f"{reference[0, 5:].tolist()}"
)
seq = torch.randint(0, small.config.vocab_size, (3, 12))
with torch.no_grad():
    full, _ = small(seq)
caches = empty_caches(small, 3)
pieces = [forward_with_cache(small, seq[:, lo:hi], caches) for lo, hi in [(0, 5), (5, 9), (9, 12)]]
checks.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, name="logits, chunks 5+4+3")
### BEGIN HIDDEN TESTS
# Logits of chunks fed one after the other equal one pass over the whole sequence.
for bias, batch in [(False, 2), (True, 3)]:
    torch.manual_seed(5)
    cfg = get_preset("nano").model.replace(bias=bias)
    small = LibraryGPT(cfg).eval()
    seq = torch.randint(0, cfg.vocab_size, (batch, 30))
    with torch.no_grad():
        full, _ = small(seq)
    caches, pieces = empty_caches(small, batch), []
    for lo, hi in [(0, 6), (6, 7), (7, 12), (12, 13), (13, 30)]:
        pieces.append(forward_with_cache(small, seq[:, lo:hi], caches))
    checks.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4,
                        name=f"logits, chunks 6+1+5+1+17 (bias={bias})")
    assert caches[0][0].shape == (batch, cfg.n_head, 30, cfg.head_size), "30 cached keys"
    ours = greedy_with_cache(small, seq[:, :4], 25)
    reference = generate(small, seq[:, :4], 25, temperature=0, use_cache=False)
    assert ours.tolist() == reference.tolist(), f"greedy text, bias={bias}, batch={batch}"
### END HIDDEN TESTS

# %% [markdown]
# ## Measured: what the cache buys
#
# Timing needs room: the trained model's context is only 64 characters, and once the
# window is full and starts to slide, every token's position changes and nothing cached
# stays valid. So we time a model of the same shape with `block_size=512` (random weights:
# the speed does not depend on their values), generating `KV_NEW_TOKENS` tokens
# greedily, three ways: re-running the whole context every step; the library's cache
# (`model.new_cache`, preallocated tensors written in place); and your
# `attend_with_cache` loop (which grows its tensors with `torch.cat`). All three must
# write the same text. We also record the time of every single step. (Outside a notebook,
# `python benchmarks/kv_cache.py` measures the same speed-up.)

# %%
torch.manual_seed(SEED)
wide = LibraryGPT(preset.model.replace(block_size=KV_BLOCK_SIZE)).to(device).eval()
start_ids = torch.tensor([tokenizer.encode("\n")], device=device)


@torch.no_grad()
def timed_decode(step, n):
    """Greedy decoding with `step(out, fresh) -> last logits`; (tokens, ms of every step)."""
    out, fresh, ms = start_ids, start_ids, []
    for _ in range(n):
        t0 = time.perf_counter()
        logits = step(out, fresh)
        ms.append((time.perf_counter() - t0) * 1e3)
        fresh = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        out = torch.cat([out, fresh], dim=1)
    return out, ms


def no_cache():
    return lambda out, fresh: wide(out, last_only=True)[0]


def library_cache():
    cache = wide.new_cache(1)
    return lambda out, fresh: wide(fresh, cache=cache, last_only=True)[0]


def your_cache():
    caches = empty_caches(wide)
    return lambda out, fresh: forward_with_cache(wide, fresh, caches)


variants = {"no cache": no_cache, "library KVCache": library_cache, "your cache": your_cache}
texts, per_step, tokens_per_s = {}, {}, {}
for name, make_step in variants.items():
    best = None
    for _ in range(KV_REPEATS):
        out, ms = timed_decode(make_step(), KV_NEW_TOKENS)
        if best is None or sum(ms) < sum(best):
            best = ms
    texts[name], per_step[name] = out[0].tolist(), best
    tokens_per_s[name] = KV_NEW_TOKENS / (sum(best) / 1e3)
reference = generate(wide, start_ids, KV_NEW_TOKENS, temperature=0, use_cache=False)
assert all(t == reference[0].tolist() for t in texts.values()), "the three must agree"
speedup = tokens_per_s["library KVCache"] / tokens_per_s["no cache"]
for name, rate in tokens_per_s.items():
    print(f"{name:<16} {rate:8.0f} tokens/s")
print(f"the cache is {speedup:.1f}x faster over {KV_NEW_TOKENS} tokens")

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
left.barh(list(tokens_per_s), list(tokens_per_s.values()), color=["C0", "C1", "C2"])
left.invert_yaxis()
left.set_xlabel("tokens/s (higher is better)")
left.set_title(f"greedy decoding, {KV_NEW_TOKENS} tokens")
for name, ms in per_step.items():
    right.plot(range(1, len(ms) + 1), ms, lw=1, label=name)
right.set_xlabel("context length (tokens)")
right.set_ylabel("ms per step")
right.set_title("time of each step")
right.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Without the cache a step's time grows with the context (the whole sequence goes through
# every layer); with it, it stays nearly flat: one token's worth of matrix products, plus
# an attention over L keys that costs little at these sizes. The gap widens with longer
# outputs, which is why every serving system keeps a KV cache, and why its memory
# (2 · n_layer · n_head · head_size numbers per token, per sequence) is what limits how
# many users a GPU can serve at once.
#
# Your cache and the library's differ in how they grow. `torch.cat` allocates a new tensor
# and copies the whole cache into it at every step: the bytes copied over a generation
# grow with the square of its length. The library allocates `block_size` slots once and
# writes each new key in place, at the price of slicing views of a bigger buffer (and it
# checks its inputs at every call). At a few hundred tokens of a small model, neither cost
# is large, and which one wins on your machine is whatever your plot says; at thousands of
# tokens and real model widths, in-place writes are what serving systems use.
#
# ## Checkpoints: stop and resume
#
# A long run will be interrupted (a closed laptop, a preempted machine, a Colab session
# that times out). `train` writes `out_dir/ckpt.pt` at every evaluation and at the end:
# the model's weights, the optimizer's state (AdamW's running averages: without them, a
# resumed run starts with a jolt), the step number, the configs, and the random state
# of the batch sampler, so that `resume=True` continues the *same* run.
#
# Two details make checkpoints safe:
#
# - **atomic writes**: the checkpoint is written to a temporary file in the same folder,
#   then renamed over `ckpt.pt` (`os.replace`). A rename is all or nothing, so a crash
#   mid-write leaves the previous checkpoint intact instead of a half-written one;
# - **`torch.load(..., weights_only=True)`**: a `.pt` file is a pickle, and unpickling
#   can run arbitrary code. `weights_only=True` (the default since PyTorch 2.6) only
#   rebuilds tensors and plain containers, so a checkpoint from someone else cannot run
#   anything on your machine. That is why the configs are stored as plain dicts.
#
# The experiment: train `RESUME_ITERS` steps and stop; start again with `resume=True` and a
# target of twice as many steps; and, for comparison, one uninterrupted run of the full
# length. The learning-rate schedule is fixed in advance (`lr_decay_iters`), so that the
# first half is the same in both.

# %%
total_iters = 2 * RESUME_ITERS
short = {"max_iters": RESUME_ITERS, "lr_decay_iters": total_iters, "eval_interval": RESUME_ITERS,
         "eval_iters": 2, "log_interval": 1, "warmup_iters": 5}
long = {**short, "max_iters": total_iters}


def losses_of(result):
    return {h["iter"]: h["loss"] for h in result.history if h["event"] == "train"}


resume_dir = Path(run_dir.name) / "resume"
first = train(get_preset(PRESET, short), resume_dir, data=(train_tokens, val_tokens),
              tokenizer=tokenizer, progress=False)
print("after the first half:", sorted(p.name for p in resume_dir.iterdir()))
second = train(get_preset(PRESET, long), resume_dir, data=(train_tokens, val_tokens),
               tokenizer=tokenizer, progress=False, resume=True)
straight = train(get_preset(PRESET, long), Path(run_dir.name) / "straight",
                 data=(train_tokens, val_tokens), tokenizer=tokenizer, progress=False)

resumed = {**losses_of(first), **losses_of(second)}
uninterrupted = losses_of(straight)
steps = sorted(uninterrupted)
gap = max(abs(resumed[s] - uninterrupted[s]) for s in steps)
print(f"largest difference between resumed and uninterrupted losses: {gap:.2e}")

fig, ax = plt.subplots(figsize=(8, 3.5))
ax.plot(steps, [uninterrupted[s] for s in steps], lw=3, alpha=0.4, label="uninterrupted")
first_steps, second_steps = sorted(losses_of(first)), sorted(losses_of(second))
ax.plot(first_steps, [resumed[s] for s in first_steps], ".-", label="first run")
ax.plot(second_steps, [resumed[s] for s in second_steps], ".-", label="resumed from ckpt.pt")
ax.axvline(RESUME_ITERS - 0.5, color="grey", ls=":")
ax.set_xlabel("step")
ax.set_ylabel("training loss (one batch)")
ax.legend()
plt.show()

# %% [markdown]
# The resumed curve lies on the uninterrupted one (the wide pale line, hidden underneath
# where they agree): same batches, same learning rates,
# same optimizer state, so the same losses (bit for bit on one machine with the same
# number of threads). Here is what the checkpoint holds:

# %%
state = load_checkpoint(resume_dir / "ckpt.pt")
weights = {t.data_ptr(): t.numel() for t in state["model"].values()}  # tied: one storage
print(f"{'model':<14} {len(state['model'])} tensors, {sum(weights.values()):,} numbers "
      "(the tied head and wte share one storage, saved once)")
print(f"{'optimizer':<14} AdamW's two running averages per parameter, and its settings")
for key, value in state.items():
    if key not in ("model", "optimizer"):
        print(f"{key:<14} {str(value)[:72]}")
print("files:", sorted(p.name for p in resume_dir.iterdir()), "(no half-written .part left)")

# %% [markdown]
# And here is what `weights_only=True` protects you from. Pickle lets an object say how to
# rebuild itself, as "call this function with these arguments", so a `.pt` file can make
# `torch.load` call anything: here a harmless `print`, in a real attack a shell command.
# `load_checkpoint` refuses the file without calling anything:

# %%
class Surprise:
    def __reduce__(self):  # "to rebuild me, call print(...)": pickle obeys when loading
        return (print, ("this line was printed by loading a file!",))


untrusted = Path(run_dir.name) / "untrusted.pt"
torch.save({"model": {}, "surprise": Surprise()}, untrusted)
try:
    load_checkpoint(untrusted)
except ValueError as err:
    print(f"refused: {err}")

# %% [markdown]
# To use a trained model elsewhere, `load_model(out_dir)` rebuilds it and its tokenizer
# from the checkpoint alone:

# %%
restored, restored_tokenizer = load_model(out_dir)
restored = restored.to(device)  # load_model builds it on the CPU
same = all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(),
                                             model.state_dict().values()))
print(f"restored {type(restored).__name__} ({restored.num_params():,} parameters), "
      f"same weights as the trained model: {same}")
out = generate(restored, prompt, SAMPLE_CHARS // 4, temperature=0.8, top_k=20, seed=SEED)
print(restored_tokenizer.decode(out[0].tolist()))

# %% [markdown]
# ## "manual" vs "sdpa" attention
#
# `GPTConfig.attn_impl` chooses how attention is computed. `"manual"` is chapter 04's
# formula written out: it materialises the (B, nh, T, T) score matrix, masks, softmaxes,
# and multiplies by the values, each a separate operation reading and writing memory.
# `"sdpa"` calls `torch.nn.functional.scaled_dot_product_attention`, one fused kernel that
# picks the best algorithm for the device (on a GPU, FlashAttention, which never stores
# the T × T matrix at all). Both compute the same function. We time one training step
# (forward and backward) of the same weights, at this chapter's shape and at a longer
# context where attention's T² starts to matter.

# %%
shapes = [("B=12, T=64 (this chapter)", 12, 64), ("B=4, T=256", 4, 256)]
timings = {}
for label, batch, T in shapes:
    cfg = preset.model.replace(block_size=T)
    torch.manual_seed(SEED)
    nets = {impl: LibraryGPT(cfg.replace(attn_impl=impl)) for impl in ("manual", "sdpa")}
    nets["sdpa"].load_state_dict(nets["manual"].state_dict())  # the same weights
    x = torch.randint(0, cfg.vocab_size, (batch, T))
    grads = {}
    for impl, net in nets.items():
        ms = []
        for _ in range(ATTN_STEPS + 1):  # the first step warms up, untimed
            net.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            _, loss = net(x, targets=x)
            loss.backward()
            ms.append((time.perf_counter() - t0) * 1e3)
        timings[(label, impl)] = float(np.median(ms[1:]))
        grads[impl] = net.transformer.h[0].attn.c_attn.weight.grad
    checks.assert_close(grads["manual"], grads["sdpa"], atol=1e-5, name="same gradients")

print(f"{'shape':<28} {'manual ms':>10} {'sdpa ms':>9} {'speed-up':>9}")
for label, _, _ in shapes:
    manual_ms, sdpa_ms = timings[(label, "manual")], timings[(label, "sdpa")]
    print(f"{label:<28} {manual_ms:10.1f} {sdpa_ms:9.1f} {manual_ms / sdpa_ms:8.2f}x")

fig, ax = plt.subplots(figsize=(7, 3))
positions = np.arange(len(shapes))
for offset, impl in [(-0.2, "manual"), (0.2, "sdpa")]:
    ax.bar(positions + offset, [timings[(s[0], impl)] for s in shapes], width=0.4, label=impl)
ax.set_xticks(positions, [s[0] for s in shapes])
ax.set_ylabel("ms per forward+backward")
ax.set_title("one training step, median")
ax.legend()
plt.show()

# %% [markdown]
# Same gradients, different speed (rerun the cell if your machine is busy: timings on a
# shared CPU move). At T=64 the attention is a small part of the step (the MLP and the
# projections dominate), so the fused kernel can only gain a little; at T=256 the T²
# score matrices grow, and with them what fusing saves. On a GPU the
# gap is much larger, and memory is the bigger win: the manual version stores every
# (T × T) attention matrix for the backward pass. The course trains with `"sdpa"` and
# keeps `"manual"` for teaching and for looking at attention maps.
#
# ## What's next
#
# You have a GPT that writes (almost) Shakespeare, a KV cache that makes it write fast,
# and checkpoints that survive interruptions. The next chapter builds the same model in
# Keras 3, with the same names and the same training recipe, and compares the two idioms
# step for step.
#
# ## Your code, carried forward
#
# The last cell saves your `GPT` and `train_step` to `my_code/gpt_torch.py`, beside the
# chapter folders. Later chapters use your model from there when it is present (they
# print whose model they took) and the library's when it is not: what you built here is
# what they build on. It saves your GPT only once it gives the library's logits, and your
# `train_step` only once it gives the library's losses; run it again whenever you change
# them. No graded cell reads that file.

# %%
from course import learner
from course.torch import train as library_trainer


def same_step_as_library(step_fn):
    """Does `step_fn` (your train_step) give the library's losses for three steps of a small
    model, through warm-up and decay? A quick check, so a step that fails is not handed on."""
    try:
        cfg = preset.model.replace(n_layer=1)
        tcfg = preset.train.replace(warmup_iters=1, lr_decay_iters=3, grad_clip=0.1)
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randint(0, cfg.vocab_size, (2, 3, 9), generator=gen)

        def library(net, optimizer, x, y, step, tcfg):
            batch = lambda: (x, y)  # noqa: E731
            return library_trainer.train_step(net, optimizer, batch, lr_at(step, tcfg), tcfg)

        runs = []
        for fn in (library, step_fn):
            torch.manual_seed(0)
            net = LibraryGPT(cfg)
            optimizer = library_trainer.configure_optimizer(net, tcfg)
            runs.append([float(fn(net, optimizer, x, y, i, tcfg)) for i in range(3)])
        return all(abs(a - b) < 1e-5 for a, b in zip(*runs))
    except Exception:  # NotImplementedError, a wrong signature...
        return False


if same_as_library(GPT):  # a GPT (or a step) that does not work yet is not handed on
    steps_ok = same_step_as_library(train_step)
    learner.save(
        "gpt_torch",
        ["GPT", "train_step"] if steps_ok else ["GPT"],
        imports=["import torch", "import torch.nn as nn", "import torch.nn.functional as F",
                 "from course.torch.model import Block", "from course.config import lr_at"],
    )
    if not steps_ok:
        print("train_step not saved: it does not give the library's losses yet (exercise 4)")
else:
    print("not saved: finish exercise 1 first (later chapters use the library's GPT meanwhile)")
run_dir.cleanup()  # the checkpoints of this chapter lived in a temporary folder

# %% [markdown]
# ## Check yourself
#
# <!-- written by `python -m autograde release` from solutions/chapters.toml -->
# Answer each in a few sentences, from what this chapter showed you; where you are not sure,
# change the code and see.
#
# 1. A freshly initialised model starts at a loss of 9.3 on a 65-character vocabulary. What
#    did you expect instead, and what does the difference tell you about its initial logits?
# 2. With a cache of L tokens and a chunk of T new tokens, why is the mask the lower
#    triangle shifted right by L? What goes wrong if you use the ordinary T × T causal mask
#    on the new keys only?
# 3. A resumed run matches the uninterrupted one only if the checkpoint holds more than the
#    weights. Name what else it must hold and what would differ in the loss curve if each
#    were missing.
