# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Twin GPT · 08 LoRA
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
PRESET = "shakespeare-char-cpu"  # chapter 05's model: 4 layers, 4 heads, 128 wide
BASE_RUN = None  # a folder of `python -m course.train --preset shakespeare-char-cpu --out DIR`
# (chapter 05's model); None trains it here first (~75 s on 2 cores at full size)
BASE_OVERRIDES = {"max_iters": 40, "eval_interval": 40, "eval_iters": 2} if SMOKE else {}
FT_ITERS = 20 if SMOKE else 300  # fine-tuning steps of each run
FULL_LR = 1e-3  # full fine-tuning's peak learning rate (best of 3e-4, 1e-3, 2e-3 here)
LORA_LR = 1e-2  # LoRA's: adapters start at zero and are few, so they take a larger one
LORA_R, LORA_ALPHA = 8, 16
EVAL_ITERS = 4 if SMOKE else 100  # batches of 32 windows per split in the final evaluation
DOC_CHARS = 30_000 if SMOKE else 400_000  # characters of docstrings for the exploration
SAMPLE_CHARS = 80 if SMOKE else 300
SEED = 1337

# %% [markdown]
# # 08 · LoRA
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/twin-gpt/twin-gpt/blob/v0.1.0/notebooks/08_lora/08_lora.ipynb)
#
# <!-- chapter card: written by `python -m autograde release` from solutions/chapters.toml -->
# **Time:** about 55 min to work through; the code runs in at most 7 min on 2 CPU cores.
#
# **You will be able to**
#
# - write a LoRA layer (A kaiming-uniform, B zero, scale alpha / r, dropout on the LoRA
#   path) around a frozen Linear, and say why the adapted model starts as the base model
# - adapt a whole GPT: freeze every weight, the tied head included, wrap the chosen layers,
#   and predict the number of trained parameters from the config
# - merge an adapter into its weights for inference, and keep it apart as a small file tied
#   to its base model
# - write the same layer in Keras 3 and compare it with `Dense.enable_lora`: layout, scale,
#   initialisation, what stays trainable
# - fine-tune on a new domain with LoRA and with every weight, and weigh trained share,
#   storage, optimizer memory, step time and forgetting
#
# **Before you start:** chapters 05 (The GPT) and 06 (The same GPT in Keras 3). From outside
# the course: matrix rank; what an optimizer keeps per parameter (AdamW's moments).
# <!-- end of the chapter card -->
#
# Fine-tuning a model on new text usually means training every weight again, and keeping
# a full copy of the model for each new domain, with an optimizer that holds two more
# copies while it trains. **LoRA** (low-rank adaptation, Hu et al., 2021) freezes the
# model and learns, beside each chosen weight matrix W (out × in), a low-rank update:
#
#     y = W x + b + (α / r) · B A x        A: r × in,  B: out × r,  r ≪ in, out
#
# Only A and B train: r · (in + out) numbers per layer instead of in · out. B starts at
# zero, so the adapted model starts exactly as the base model; A starts random, so B's
# gradient is not zero. After training, B A can be folded into W (**merged**): the model
# runs at the speed of the original, or kept apart as a small **adapter** file, one per
# domain, on top of one base model.
#
# This chapter builds LoRA in PyTorch and in Keras 3, fine-tunes chapter 05's
# Shakespeare model on a new domain with it and with full fine-tuning, and measures what
# each costs and gives. Articles often call parameter-efficient fine-tuning "almost
# entirely a PyTorch story" (Hugging Face's `peft`). The library's LoRA is tested against
# `peft` logit for logit, and against Keras' own `enable_lora`: at the end you can say
# what is true of that claim.

# %%
tf = runtime.import_tensorflow()  # never `import tensorflow` first (chapter 00 says why)
keras = runtime.import_keras()
import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
from keras import ops

from course import finetune
from course.config import GPTConfig, get_preset
from course.data import load_text
from course.tf import GPT as KerasGPT
from course.tf import lora as keras_lora
from course.tf import torch_to_keras
from course.tf import train as keras_train
from course.tokenizers import CharTokenizer
from course.torch import GPT, generate
from course.torch import lora as torch_lora
from course.torch import train as torch_train

runtime.seed_everything(SEED)
run_dir = tempfile.TemporaryDirectory(prefix="twin-gpt-08-")  # never inside the repository
runs = Path(run_dir.name)
preset = get_preset(PRESET)
config = preset.model
print(f"preset {PRESET!r}: {config}")

# %% [markdown]
# ## The base model
#
# Chapter 05 trained a character model on Tiny Shakespeare. If you kept a run
# (`python -m course.train --preset shakespeare-char-cpu --out DIR`), set `BASE_RUN` to its
# folder; otherwise the next cell trains the same recipe here with the library's trainer.

# %%
text = load_text("tinyshakespeare")
tokenizer = CharTokenizer.from_text(text)
shakespeare = finetune.domain_tokens(text, tokenizer)  # (train, val): the last 10% is val
if BASE_RUN is None:
    BASE_RUN = runs / "base"
    torch_train.train(get_preset(PRESET, BASE_OVERRIDES), BASE_RUN, data=shakespeare,
                      tokenizer=tokenizer)
base, base_tokenizer = torch_train.load_model(BASE_RUN)
assert base_tokenizer.chars == tokenizer.chars, "the base run used another vocabulary"
print(f"base model: {base.num_params(non_embedding=False):,} parameters, from {BASE_RUN}")

# %% [markdown]
# ## A new domain, in the same vocabulary
#
# The graded domain is deterministic: **the same plays in capitals**. The structure (words,
# verse, speakers) is the one the model knows; the characters are other ones. A character
# model can only read and write its own vocabulary, so first check that every capital
# exists in it. `str.upper()` can surprise you: `"straße".upper()` is `"STRASSE"`, and a
# letter whose capital never occurs in the corpus would have no id at all.
# `course.finetune.upper_case` checks and names the characters at fault. Tiny Shakespeare
# has every capital (speakers' names are written in them), so nothing is lost here.

# %%
print("straße".upper(), "| ﬁ".upper())
upper = finetune.upper_case(text, tokenizer)
upper_tokens = finetune.domain_tokens(upper, tokenizer)
print(upper[:200])


def val_losses(model, estimate_loss, eval_iters=EVAL_ITERS):
    """Loss on both domains' validation text, on the same windows every time (seed 0)."""
    splits = {"new": upper_tokens[1], "old": shakespeare[1]}
    return estimate_loss(model, splits, 32, config.block_size, eval_iters, seed=0)


base_loss = val_losses(base, torch_train.estimate_loss)
print(f"base model: val loss {base_loss['old']:.4f} on Shakespeare, "
      f"{base_loss['new']:.4f} on the capitals (ln 65 = {math.log(65):.2f} is a blind guess)")

# %% [markdown]
# ## Exercise 1 · `LoRALinear`
#
# Wrap an `nn.Linear` (kept as `self.base`, its weight and bias frozen with
# `requires_grad_(False)`) and add the low-rank path:
#
# - `lora_A`, an `nn.Parameter` of shape (r, in), initialised as `peft` does:
#   `nn.init.kaiming_uniform_(A, a=math.sqrt(5))`, uniform in ±1/√in;
# - `lora_B`, shape (out, r), zeros;
# - `scale = alpha / r`, so that changing r does not change the size of the update much
#   (alpha is *not* the scale);
# - dropout (`nn.Dropout(dropout)`) on the input of the LoRA path only: the frozen path
#   sees x itself;
# - `merged = False`; once `merge_lora` (exercise 3) has folded the update into
#   `base.weight`, `forward` returns `base(x)` alone.
#
# Create A and B on the base weight's device and in its dtype. In `forward`, `x` is
# (..., in): `x @ A.T` is (..., r), then `@ B.T` is (..., out).

# %% nbgrader={"grade": false, "grade_id": "lora_linear", "locked": false, "schema_version": 3, "solution": true, "task": false}
class LoRALinear(nn.Module):
    """base(x) + scale * B A dropout(x), base frozen, scale = alpha / r; merged: base(x)."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0):
        super().__init__()
        ### BEGIN SOLUTION
        self.base = base
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        for p in base.parameters():
            p.requires_grad_(False)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout)
        self.merged = False
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        y = self.base(x)  # (..., out)
        if self.merged:
            return y
        return y + (self.lora_dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scale
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_lora_linear", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""LoRALinear: shapes, the base model at the start, only A and B train, the scale alpha / r."""
torch.manual_seed(0)
linear = nn.Linear(32, 48)
layer = LoRALinear(linear, r=4, alpha=8)
x = torch.randn(3, 5, 32)
assert layer.base is linear, "keep the Linear you were given as self.base"
assert tuple(layer.lora_A.shape) == (4, 32) and tuple(layer.lora_B.shape) == (48, 4), (
    f"A must be (r, in) = (4, 32) and B (out, r) = (48, 4), got {tuple(layer.lora_A.shape)} "
    f"and {tuple(layer.lora_B.shape)}"
)
assert torch.equal(layer(x), linear(x)), "at the start (B = 0) the layer must be the base layer"
trainable = sorted(n for n, p in layer.named_parameters() if p.requires_grad)
assert trainable == ["lora_A", "lora_B"], f"only lora_A and lora_B should train, not {trainable}"
with torch.no_grad():
    layer.lora_B.normal_()
expected = x @ linear.weight.T + linear.bias + 2.0 * (x @ layer.lora_A.T) @ layer.lora_B.T
assert torch.allclose(layer(x), expected, atol=1e-5), "output != W x + b + (alpha / r) B A x"
### BEGIN HIDDEN TESTS
torch.manual_seed(1)
wide = LoRALinear(nn.Linear(400, 7), r=16, alpha=4)
bound = 1 / math.sqrt(400)
a = wide.lora_A.detach()
assert a.abs().max() <= bound and a.std() > 0.8 * bound / math.sqrt(3), "A: kaiming-uniform"
assert torch.count_nonzero(wide.lora_B) == 0, "B starts at zero"
y = wide(torch.randn(2, 400))
y.sum().backward()
assert wide.lora_B.grad is not None and wide.lora_B.grad.abs().sum() > 0, "B must get a gradient"
assert wide.base.weight.grad is None and wide.base.bias.grad is None, "the base stays frozen"
with torch.no_grad():
    wide.lora_B.normal_()
x = torch.randn(6, 400)
want = wide.base(x) + 0.25 * x @ wide.lora_A.T @ wide.lora_B.T
assert torch.allclose(wide(x), want, atol=1e-5), "scale = alpha / r = 4 / 16"
dropped = LoRALinear(nn.Linear(8, 8), r=2, alpha=2, dropout=0.5)
x = torch.randn(4, 8)
dropped.train()  # B = 0: whatever dropout does to the LoRA path, the output is base(x)
assert torch.equal(dropped(x), dropped.base(x)), "dropout acts on the LoRA path only"
with torch.no_grad():
    dropped.lora_B.normal_()
dropped.eval()
want = dropped.base(x) + x @ dropped.lora_A.T @ dropped.lora_B.T
assert torch.allclose(dropped(x), want, atol=1e-5), "no dropout in eval mode"
dropped.train()
assert not torch.allclose(dropped(x), want, atol=1e-5), "dropout in training mode"
dropped.merged = True
assert torch.equal(dropped(x), dropped.base(x)), "a merged layer is its base layer"
no_bias = LoRALinear(nn.Linear(5, 9, bias=False), r=3, alpha=3)  # GPT's default: no biases
with torch.no_grad():
    no_bias.lora_B.normal_()
x = torch.randn(2, 5)
want = x @ no_bias.base.weight.T + x @ no_bias.lora_A.T @ no_bias.lora_B.T
assert torch.allclose(no_bias(x), want, atol=1e-5), "a Linear without bias"
double = LoRALinear(nn.Linear(8, 3).double(), r=2)
assert double.lora_A.dtype == torch.float64 and double.lora_B.dtype == torch.float64
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 2 · `apply_lora`
#
# Adapt a whole GPT: freeze **every** parameter first (the embeddings, the LayerNorms, and
# so the tied `lm_head`, which *is* `wte`), then replace every `nn.Linear` whose attribute
# name is in `targets` with a `LoRALinear` around it, in place (`setattr(parent, name,
# ...)`), and return the model. In chapter 05's GPT, `c_proj` names two layers per block
# (the attention's output and the MLP's), so the default targets adapt four Linear
# layers per block. Walk a list of the modules made *before* you change anything
# (`list(model.modules())`).
#
# How many numbers will train? Work it out from the config before you run the test: per
# block, c_attn (C → 3C), attn.c_proj (C → C), c_fc (C → 4C), mlp.c_proj (4C → C).

# %% nbgrader={"grade": false, "grade_id": "apply_lora", "locked": false, "schema_version": 3, "solution": true, "task": false}
def apply_lora(model, targets=("c_attn", "c_proj", "c_fc"), r=8, alpha=16, dropout=0.0):
    """Freeze every parameter of `model`, wrap each Linear named in `targets` in a
    LoRALinear, and return the model."""
    ### BEGIN SOLUTION
    for p in model.parameters():
        p.requires_grad_(False)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, r, alpha, dropout))
    return model
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_apply_lora", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""apply_lora: exactly the LoRA weights train; the model starts as the base model."""
torch.manual_seed(0)
cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65)
plain = GPT(cfg)
adapted = GPT(cfg)
adapted.load_state_dict(plain.state_dict())
adapted = apply_lora(adapted, r=4, alpha=8)
C = cfg.n_embd
per_block = 4 * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))  # r * (in + out), 4 layers
n_trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
assert n_trainable == cfg.n_layer * per_block, (
    f"{n_trainable} numbers train; r * (in + out) summed over the 4 Linear layers of each of "
    f"the {cfg.n_layer} blocks is {cfg.n_layer * per_block}"
)
idx = torch.randint(0, 65, (2, 16))
assert torch.equal(adapted(idx)[0], plain(idx)[0]), "the adapted model starts as the base"
def lora_modules(model):  # the LoRA layers of a model: the modules with a lora_A
    return [m for m in model.modules() if hasattr(m, "lora_A")]


block = adapted.transformer.h[1]
assert all(hasattr(layer, "lora_A") for layer in (block.attn.c_attn, block.attn.c_proj,
                                                  block.mlp.c_fc, block.mlp.c_proj))
assert not adapted.transformer.wte.weight.requires_grad, "wte (and the tied lm_head) stays frozen"
### BEGIN HIDDEN TESTS
frozen = [n for n, p in adapted.named_parameters() if p.requires_grad and "lora_" not in n]
assert frozen == [], f"these still train: {frozen}"
assert len(lora_modules(adapted)) == 4 * cfg.n_layer, "4 adapted layers per block"
assert all(type(m.base) is nn.Linear for m in lora_modules(adapted)), "each wraps its Linear"
only_qkv = apply_lora(GPT(cfg), targets=("c_attn",), r=2, alpha=2)
n_qkv = sum(p.numel() for p in only_qkv.parameters() if p.requires_grad)
assert n_qkv == cfg.n_layer * 2 * (C + 3 * C), "targets says which layers are adapted"
assert not hasattr(only_qkv.transformer.h[0].mlp.c_fc, "lora_A")
step_model = apply_lora(GPT(cfg), r=2, alpha=4)
before = {n: p.detach().clone() for n, p in step_model.named_parameters() if "lora_" not in n}
optimizer = torch.optim.AdamW([p for p in step_model.parameters() if p.requires_grad], lr=0.1)
step_model(idx, targets=idx)[1].backward()
optimizer.step()
changed = [n for n, p in step_model.named_parameters() if n in before and not
           torch.equal(p, before[n])]  # fmt: skip
assert changed == [], f"a training step changed frozen weights: {changed}"
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 3 · `merge_lora`
#
# At inference, the extra path costs two more matrix products per layer. Fold it into the
# weight instead: W ← W + (α / r) · B A, with `torch.no_grad()`, then set `merged = True`
# so that `forward` stops adding the update a second time. B A is (out, r) @ (r, in) =
# (out, in), the shape of `base.weight`. Merging a layer that is already merged must
# change nothing. Return the model.

# %% nbgrader={"grade": false, "grade_id": "merge_lora", "locked": false, "schema_version": 3, "solution": true, "task": false}
def merge_lora(model):
    """Fold scale * B A into the weight of every LoRALinear of `model` not yet merged."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, LoRALinear) and not layer.merged:
                layer.base.weight += (layer.lora_B @ layer.lora_A) * layer.scale
                layer.merged = True
    return model
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_merge_lora", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""merge_lora: the merged model computes what the adapted one did, once, with the scale."""
torch.manual_seed(0)
cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65)
model = apply_lora(GPT(cfg), r=4, alpha=16)
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.lora_B.normal_(std=0.05)
idx = torch.randint(0, 65, (2, 16))
adapted_logits = model(idx)[0]
merge_lora(model)
assert all(m.merged for m in model.modules() if isinstance(m, LoRALinear)), "set merged = True"
merged_logits = model(idx)[0]
worst = (merged_logits - adapted_logits).abs().max().item()
assert worst < 1e-4, f"merged logits differ from the adapted model's by {worst:.2e}"
### BEGIN HIDDEN TESTS
square = LoRALinear(nn.Linear(6, 6), r=2, alpha=6)
with torch.no_grad():
    square.lora_B.normal_()
holder = nn.Sequential(square)
w0 = square.base.weight.detach().clone()
want = w0 + 3.0 * square.lora_B.detach() @ square.lora_A.detach()
merge_lora(holder)
assert torch.allclose(square.base.weight, want, atol=1e-6), "W + (alpha / r) B A, not (B A)ᵀ"
merge_lora(holder)
assert torch.allclose(square.base.weight, want, atol=1e-6), "merging twice adds the update twice"
assert (model(idx)[0] - adapted_logits).abs().max().item() < 1e-4
### END HIDDEN TESTS

# %% [markdown]
# Your three pieces, against the library's `course.torch.lora` on the real model: the same
# trainable count, and a model that starts as the base model.

# %%
mine = apply_lora(torch_train.load_model(BASE_RUN)[0], r=LORA_R, alpha=LORA_ALPHA)
library = torch_lora.apply_lora(torch_train.load_model(BASE_RUN)[0], r=LORA_R, alpha=LORA_ALPHA)
n_mine, n_library = (sum(p.numel() for p in m.parameters() if p.requires_grad)
                     for m in (mine, library))
n_all = base.num_params(non_embedding=False) + n_library
print(f"trainable: yours {n_mine:,}, the library's {n_library:,} "
      f"({n_library / n_all:.1%} of {n_all:,} numbers)")
idx = torch.from_numpy(upper_tokens[1][:64].astype(np.int64))[None]
assert n_mine == n_library and torch.equal(mine(idx)[0], base(idx)[0])

# %% [markdown]
# ## Fine-tuning, twice: every weight, or LoRA
#
# Both runs start from the base model and see the same batches of capitals for
# `FT_ITERS` steps, with the trainer of chapter 05: `init_from=BASE_RUN` loads the base,
# and `lora_r > 0` makes it call `apply_lora` and train the adapters only (it also writes
# `adapter.safetensors` beside its checkpoint). Full fine-tuning uses its best learning
# rate from a small sweep; LoRA's is ten times larger, as is usual: its B starts at zero
# and its updates are scaled by α / r.

# %%
def fine_tune_preset(lr, **changes):
    return get_preset(PRESET, dict(max_iters=FT_ITERS, lr_decay_iters=FT_ITERS,
                                   warmup_iters=FT_ITERS // 10, learning_rate=lr,
                                   min_lr=lr / 10, eval_interval=max(FT_ITERS // 6, 1),
                                   eval_iters=max(EVAL_ITERS // 10, 2), **changes))


torch_runs = {}
for name, run_preset in (("full", fine_tune_preset(FULL_LR)),
                         ("lora", fine_tune_preset(LORA_LR, lora_r=LORA_R,
                                                   lora_alpha=LORA_ALPHA))):
    torch_runs[name] = torch_train.train(run_preset, runs / f"torch-{name}", data=upper_tokens,
                                         tokenizer=tokenizer, init_from=BASE_RUN)

fig, ax = plt.subplots(figsize=(7, 3.5))
for name, result in torch_runs.items():
    evals = [e for e in result.history if e["event"] == "eval"]
    ax.plot([e["iter"] for e in evals], [e["val_loss"] for e in evals], "o-", label=name)
ax.set(xlabel="step", ylabel="val loss (capitals)", title="Fine-tuning on the capitals")
ax.legend()
plt.show()

# %% [markdown]
# ## What each run cost and gave
#
# - **trained params**: what the optimizer updates; **share** of all the numbers in the
#   adapted model;
# - **saved**: what a run must keep to be used again: the whole checkpoint for full
#   fine-tuning (weights and the optimizer's state), the adapter file for LoRA;
# - **optimizer state**: AdamW keeps two numbers (the moments) for every trained one;
# - **ms/step**: training steps only, from the trainer's metrics;
# - **val loss** on the new domain, and on Shakespeare: what the model *forgot*.

# %%
rows = [finetune.comparison_row(
    "base model", trainable=0, total=base.num_params(non_embedding=False),
    saved_bytes=sum(t.numel() * t.element_size() for t in base.state_dict().values()),
    optimizer_state_bytes=0, ms_per_iter=float("nan"),
    new_val_loss=base_loss["new"], old_val_loss=base_loss["old"])]
losses = {}
for name, result in torch_runs.items():
    model, folder = result.model, runs / f"torch-{name}"
    losses[name] = val_losses(model, torch_train.estimate_loss)
    saved = folder / ("adapter.safetensors" if name == "lora" else "ckpt.pt")
    rows.append(finetune.comparison_row(
        f"PyTorch, {name}", trainable=result.metrics["trainable_params"],
        total=sum(p.numel() for p in model.parameters()),
        saved_bytes=finetune.file_bytes(saved),
        optimizer_state_bytes=torch_lora.optimizer_state_bytes(result.optimizer),
        ms_per_iter=result.metrics["ms_per_iter"],
        new_val_loss=losses[name]["new"], old_val_loss=losses[name]["old"]))
print(finetune.format_table(rows))

# %% [markdown]
# Full fine-tuning rewrote the model for capitals and forgot lower case: its loss on
# Shakespeare is far above the base model's. LoRA forgot too, because the adapted model
# is one model: what helps capitals hurts lower case. But LoRA's base is still there,
# untouched. Switch the adapters off (`disable_lora`) and the model *is* the base model:
# the same weights, bit for bit, so the same loss on the same windows, not just a close one.

# %%
lora_model = torch_runs["lora"].model
lora_model.eval()
with torch_lora.disable_lora(lora_model):
    off = val_losses(lora_model, torch_train.estimate_loss)
base_state = base.state_dict()
same_weights = all(torch.equal(value.cpu(), base_state[name.replace(".base.", ".")])
                   for name, value in lora_model.state_dict().items() if "lora_" not in name)
print(f"adapters off: Shakespeare val loss {off['old']!r} (base {base_loss['old']!r}); "
      f"base weights unchanged: {same_weights}")
assert off == base_loss and same_weights

# %% [markdown]
# LoRA's step is not faster here, though it updates 7.5% of the numbers: the backward
# pass must still go through every frozen layer to reach the adapters below it, and the
# low-rank path adds two thin matrix products per layer. What LoRA saves is memory (no
# gradients and no optimizer state for the frozen weights) and storage (one small file per
# domain), which is what matters for a 7B model on one GPU.
#
# ## The Keras twin
#
# ## Exercise 4 · `KerasLoRALinear`
#
# The same layer in Keras 3. A `Dense` keeps its kernel as (in, out), the transpose of an
# `nn.Linear` weight, so here A is (in, r) and B (r, out), and the update is x A B. Create
# them with `self.add_weight(shape=..., initializer=..., name="lora_A")`: A uniform in
# ±1/√in (`keras.initializers.RandomUniform(-bound, bound)`), B zeros. Freeze the base
# layer's **kernel and bias** (`variable.trainable = False`, or the layer's `trainable`):
# `layer.trainable_weights` must then be A and B alone. `merged` as in PyTorch.

# %% nbgrader={"grade": false, "grade_id": "keras_lora_linear", "locked": false, "schema_version": 3, "solution": true, "task": false}
class KerasLoRALinear(keras.layers.Layer):
    """base(x) + scale * x A B with a built keras Dense `base` frozen; merged: base(x)."""

    def __init__(self, base, r=8, alpha=16, **kwargs):
        super().__init__(**kwargs)
        ### BEGIN SOLUTION
        self.base = base
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        for variable in base.weights:  # the kernel, and the bias if it has one
            variable.trainable = False
        n_in, n_out = base.kernel.shape
        bound = 1 / math.sqrt(n_in)
        self.lora_A = self.add_weight(
            shape=(n_in, r), initializer=keras.initializers.RandomUniform(-bound, bound),
            name="lora_A")  # (in, r)
        self.lora_B = self.add_weight(shape=(r, n_out), initializer="zeros", name="lora_B")
        self.merged = False
        ### END SOLUTION

    def call(self, x):
        ### BEGIN SOLUTION
        y = self.base(x)  # (..., out)
        if self.merged:
            return y
        return y + ops.matmul(ops.matmul(x, self.lora_A), self.lora_B) * self.scale
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_keras_lora_linear", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""KerasLoRALinear: A (in, r), B (r, out), the base at the start, kernel AND bias frozen."""
keras.utils.set_random_seed(0)
dense = keras.layers.Dense(48)
dense.build((None, 32))
dense.bias.assign(np.linspace(-1, 1, 48).astype("float32"))
layer = KerasLoRALinear(dense, r=4, alpha=8)
x = np.random.default_rng(0).normal(size=(3, 5, 32)).astype("float32")
assert tuple(layer.lora_A.shape) == (32, 4) and tuple(layer.lora_B.shape) == (4, 48), (
    f"A must be (in, r) = (32, 4) and B (r, out) = (4, 48), got {tuple(layer.lora_A.shape)} "
    f"and {tuple(layer.lora_B.shape)}"
)
assert np.array_equal(layer(x), dense(x)), "at the start (B = 0) the layer must be the base"
names = sorted(v.path.split("/")[-1] for v in layer.trainable_weights)
assert names == ["lora_A", "lora_B"], f"only lora_A and lora_B should train, not {names}"
layer.lora_B.assign(np.random.default_rng(1).normal(size=(4, 48)).astype("float32"))
A, B = np.asarray(layer.lora_A), np.asarray(layer.lora_B)
want = x @ np.asarray(dense.kernel) + np.asarray(dense.bias) + 2.0 * x @ A @ B
assert np.allclose(layer(x), want, atol=1e-4), "output != x W + b + (alpha / r) x A B"
### BEGIN HIDDEN TESTS
wide_dense = keras.layers.Dense(7)
wide_dense.build((None, 400))
wide = KerasLoRALinear(wide_dense, r=16, alpha=4)
a = np.asarray(wide.lora_A)
bound = 1 / math.sqrt(400)
assert np.abs(a).max() <= bound and a.std() > 0.8 * bound / math.sqrt(3), "A: uniform ±1/√in"
assert not np.any(np.asarray(wide.lora_B)), "B starts at zero"
wide.lora_B.assign(np.random.default_rng(2).normal(size=(16, 7)).astype("float32"))
x = np.random.default_rng(3).normal(size=(6, 400)).astype("float32")
want = wide_dense(x) + 0.25 * x @ np.asarray(wide.lora_A) @ np.asarray(wide.lora_B)
assert np.allclose(wide(x), want, atol=1e-4), "scale = alpha / r = 4 / 16"
twin = keras.layers.Dense(7)  # Keras' own LoRA, same A, B and scale: the same output
twin.build((None, 400))
twin.kernel.assign(wide_dense.kernel)
twin.bias.assign(wide_dense.bias)
twin.enable_lora(16, lora_alpha=4)
twin.lora_kernel_a.assign(wide.lora_A)
twin.lora_kernel_b.assign(wide.lora_B)
assert np.allclose(wide(x), twin(x), atol=1e-4), "differs from Dense.enable_lora"
wide.merged = True
assert np.array_equal(wide(x), wide_dense(x)), "a merged layer is its base layer"
plain = keras.layers.Dense(9, use_bias=False)  # the course GPT's Dense layers have no bias
plain.build((None, 5))
no_bias = KerasLoRALinear(plain, r=3, alpha=3)
names = sorted(v.path.split("/")[-1] for v in no_bias.trainable_weights)
assert names == ["lora_A", "lora_B"], f"a Dense without bias: {names} train"
### END HIDDEN TESTS

# %% [markdown]
# Keras 3 has LoRA built in: `Dense.enable_lora(rank, lora_alpha=...)`. It computes the same
# update with the same layout as your layer (the hidden test compares them), with traps a
# PyTorch reader falls into:
#
# - the scale is `lora_alpha / rank`, and `lora_alpha` defaults to the **rank**: scale 1,
#   where `peft`'s usual α = 2r gives 2;
# - A is drawn `he_uniform` (√6 times wider than `peft`'s), and there is no dropout;
# - only the **kernel** is frozen: the bias still trains, and so does every layer it was
#   not called on (embeddings, LayerNorms) unless you freeze it;
# - `save_weights` stores the *merged* kernel and no A or B, and `load_weights` into a layer
#   with LoRA enabled zeroes A and B: the adapter cannot be kept apart that way.

# %%
demo = keras.layers.Dense(48)
demo.build((None, 32))
demo.enable_lora(4)
print("trainable after enable_lora(4):", [v.path for v in demo.trainable_weights])
print("scale:", demo.lora_alpha / demo.lora_rank, "| A's largest entry:",
      f"{np.abs(np.asarray(demo.lora_kernel_a)).max():.3f} (peft's bound 1/√32 = "
      f"{1 / math.sqrt(32):.3f})")

# %% [markdown]
# ### Fine-tuning in Keras, and one adapter for both frameworks
#
# The base model moves into a Keras GPT with chapter 06's `torch_to_keras`; the Keras
# trainer then fine-tunes it both ways, as PyTorch's did (its `apply_lora` is the
# library's, `course.tf.lora`). The adapter files have one format for both frameworks
# (PyTorch's names and layout, with the base model's config and a fingerprint of its
# weights): the adapter PyTorch trained loads into the Keras model and gives PyTorch's
# logits.

# %%
def keras_base():
    model = KerasGPT(config)
    return torch_to_keras(base.state_dict(), model)


# One run per cell: each traces and compiles its own training step.
keras_runs = {"full": keras_train.train(fine_tune_preset(FULL_LR), runs / "keras-full",
                                        data=upper_tokens, tokenizer=tokenizer,
                                        model=keras_base())}

# %%
keras_runs["lora"] = keras_train.train(
    fine_tune_preset(LORA_LR, lora_r=LORA_R, lora_alpha=LORA_ALPHA), runs / "keras-lora",
    data=upper_tokens, tokenizer=tokenizer, model=keras_base())

# %%
keras_base_loss = val_losses(keras_base(), keras_train.estimate_loss)
for name, result in keras_runs.items():
    model = result.model
    losses[f"keras-{name}"] = val_losses(model, keras_train.estimate_loss)
    folder = runs / f"keras-{name}"  # full: the checkpoint folder (weights, optimizer)
    saved = (folder / "adapter.safetensors" if name == "lora"
             else keras_train.load_checkpoint(folder)[1])
    rows.append(finetune.comparison_row(
        f"Keras, {name}", trainable=keras_lora.count_trainable(model),
        total=sum(math.prod(v.shape) for v in model.weights),
        saved_bytes=finetune.file_bytes(saved),
        optimizer_state_bytes=keras_lora.optimizer_state_bytes(result.optimizer),
        ms_per_iter=result.metrics["ms_per_iter"],
        new_val_loss=losses[f"keras-{name}"]["new"], old_val_loss=losses[f"keras-{name}"]["old"]))
print(finetune.format_table(rows))

# %%
keras_lora_model = keras_runs["lora"].model
with keras_lora.disable_lora(keras_lora_model):
    keras_off = val_losses(keras_lora_model, keras_train.estimate_loss)
print(f"Keras, adapters off: {keras_off['old']!r} (its base {keras_base_loss['old']!r})")
assert keras_off == keras_base_loss

moved = keras_lora.load_adapter(keras_base(), runs / "torch-lora" / "adapter.safetensors")
window = upper_tokens[1][: config.block_size].astype(np.int64)[None]
window_on_device = torch.from_numpy(window).to(lora_model.lm_head.weight.device)
torch_logits = lora_model(window_on_device)[0].detach().cpu().numpy()
keras_logits = np.asarray(moved(window, training=False))
print(f"PyTorch's adapter in Keras: logits within {np.abs(torch_logits - keras_logits).max():.1e}")
assert np.abs(torch_logits - keras_logits).max() < 1e-4

# %% [markdown]
# ## Exploration: a domain further away
#
# Capitals are the same text in new symbols. Python's documentation is new text: other
# words, code, brackets. The standard library's docstrings, gathered with `inspect`
# (offline), make a small corpus; characters the vocabulary lacks (digits, `_`, `=`,
# brackets...) become spaces. Fine-tune LoRA on it and compare samples with adapters on and
# off. Try it with `full` fine-tuning too, or another r, and watch the table.

# %%
docs, replaced = finetune.onto_vocabulary(finetune.stdlib_docstrings(max_chars=DOC_CHARS),
                                          tokenizer)
print(f"{len(docs):,} characters; {sum(replaced.values()):,} replaced "
      f"({sum(replaced.values()) / len(docs):.1%}), most often: {replaced.most_common(8)}")
doc_tokens = finetune.domain_tokens(docs, tokenizer)
doc_run = torch_train.train(fine_tune_preset(LORA_LR, lora_r=LORA_R, lora_alpha=LORA_ALPHA),
                            runs / "torch-docs", data=doc_tokens, tokenizer=tokenizer,
                            init_from=BASE_RUN)
doc_model = doc_run.model.eval()
prompt = torch.tensor([tokenizer.encode("Return the ")])
samples = {"adapters on": generate(doc_model, prompt, SAMPLE_CHARS, 0.8, top_k=20, seed=SEED)}
with torch_lora.disable_lora(doc_model):
    samples["adapters off"] = generate(doc_model, prompt, SAMPLE_CHARS, 0.8, top_k=20, seed=SEED)
for label, ids in samples.items():
    print(f"--- {label} ---\n{tokenizer.decode(ids[0].tolist())}\n")

# %% [markdown]
# ## What the measurements say
#
# - LoRA trained 7.5% of the numbers, kept an optimizer state as small, and saved a file a
#   few percent the size of a full checkpoint; on the capitals it got close to full
#   fine-tuning. At full size (`benchmarks/lora.py`, 300 steps) its val loss there was
#   1.04 times full fine-tuning's in both frameworks, its adapter 2.7% of the PyTorch
#   checkpoint.
# - It was not faster per step on a CPU, and with its adapters on it forgot lower case too,
#   if less than full fine-tuning did: LoRA is not a cure for forgetting, but the base model
#   is always one switch away.
# - "PEFT is a PyTorch story": the *library* story is (`peft` has adapters, quantized
#   bases, many methods; Keras has one built-in LoRA on Dense, Embedding and EinsumDense).
#   The *method* is thirty lines in either framework, with the same numbers, and one
#   adapter file serves both.

# %%
run_dir.cleanup()  # this chapter's runs lived in a temporary folder

# %% [markdown]
# ## What's next
#
# Chapter 09 trains the GPT on more than one process: data parallelism, sharding, and
# TensorFlow's strategies, each proven equal to one process.

# %% [markdown]
# ## Check yourself
#
# <!-- written by `python -m autograde release` from solutions/chapters.toml -->
# Answer each in a few sentences, from what this chapter showed you; where you are not sure,
# change the code and see.
#
# 1. B starts at zero and A at random. What would go wrong with both at zero, and with A at
#    zero and B random?
# 2. Your GPT has 4 layers of width 128 and LoRA r = 8 on c_attn, both c_proj and c_fc.
#    Count the trained numbers by hand, then say how the count grows if you double r, and if
#    you double the width.
# 3. LoRA trained under a tenth of the weights, yet its step was not faster on the CPU.
#    Where does the time of a LoRA step go, and what does LoRA save instead?
