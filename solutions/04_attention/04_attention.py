# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Twin GPT · 04 Attention
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
BIGRAM_STEPS = 40 if SMOKE else 300  # AdamW steps for the bigram table
GPT_STEPS = 30 if SMOKE else 1000  # AdamW steps for the small GPT at the end
BATCH_SIZE = 8 if SMOKE else 32  # sequences per training step
BLOCK_SIZE = 64  # tokens per sequence: the GPT's context length
N_LAYER, N_HEAD, N_EMBD = 2, 4, 64  # the small GPT: the nano preset's depth, twice its width
LEARNING_RATE = 3e-3  # constant; a short run of a small model tolerates a large one
EVAL_BATCHES = 4 if SMOKE else 40  # validation batches per loss estimate
TIMING_REPEATS = 3 if SMOKE else 20  # repeats when timing manual attention against the fused one
SAMPLE_CHARS = 80 if SMOKE else 400  # characters sampled from each model
MAP_CHARS = 32  # characters shown in the attention-map widget (at most BLOCK_SIZE)
SEED = 0

# %% [markdown]
# # 04 · Attention
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/twin-gpt/twin-gpt/blob/v0.1.0/notebooks/04_attention/04_attention.ipynb)
#
# <!-- chapter card: written by `python -m autograde release` from solutions/chapters.toml -->
# **Time:** about 70 min to work through; the code runs in at most 1 min on 2 CPU cores.
#
# **You will be able to**
#
# - compute a cross-entropy loss stably with `log_softmax`, and use a bigram model as the
#   baseline to beat
# - write scaled dot-product attention and explain the 1/√d scale
# - apply a causal mask to the scores before the softmax, and say why it must come before
# - split and merge heads with GPT-2's fused projections, and assemble a pre-LayerNorm
#   Transformer block
# - train a small GPT and read its attention maps
#
# **Before you start:** chapters 01 (Tensors, side by side) and 03 (Tokenizers and data
# pipelines). From outside the course: softmax and cross-entropy; PyTorch tensors and
# `nn.Module` basics.
# <!-- end of the chapter card -->
#
# Chapter 03 turned Shakespeare into a stream of token ids. This chapter builds the part of
# a GPT that reads them in context, one step at a time:
#
# 1. **a bigram model**, the baseline: it predicts the next character from the current one
#    alone, and sets the bar attention has to beat;
# 2. **one attention head**: every token mixes in information from the others, weighted
#    by how well its *query* matches their *keys*;
# 3. **the causal mask**: a language model must not peek at the tokens it is predicting;
# 4. **multi-head attention**: several heads side by side, GPT-2's fused projections;
# 5. **the Transformer block**: attention and an MLP, each behind a LayerNorm and a
#    residual connection.
#
# Each step is a graded exercise, a short function checked against PyTorch and against
# the course library (`course.torch.model`), which holds the reference of all five. At the
# end you train a small GPT built from those blocks and look inside it with an
# attention-map widget: pick a layer, a head and a position, and see where it looks.

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from course import checks, data, viz
from course.config import GPTConfig
from course.torch.model import GPT, Block, CausalSelfAttention, manual_attention
from course.torch.sampling import generate

runtime.seed_everything(SEED)
# The course's one path from the corpus to token ids: chapter 03's character tokenizer, the
# text split 90/10 before encoding, the ids cached in token files for the next run.
train_ids, val_ids, tok = data.corpus_tokens("tinyshakespeare", kind="char", val_fraction=0.1)
V = tok.vocab_size
print(f"{len(train_ids) + len(val_ids):,} tokens, vocabulary of {V}: "
      f"{len(train_ids):,} train, {len(val_ids):,} val")

# %% [markdown]
# ## The baseline: a bigram model
#
# The simplest language model predicts the next token from the current one and nothing
# else. It is a table of $V \times V$ numbers: row $i$ holds the *logits* (unnormalised
# log-probabilities) of every token that may follow token $i$. Looking a token up is
# indexing: `logits_table[x]` turns ids `x` of shape (B, T) into logits (B, T, V).
#
# Training minimises the **cross-entropy**: the average, over every position, of
# $-\log p(y \mid x)$, the negative log-probability the model gives the token that really
# came next. A table of zeros predicts every token with probability $1/V$, a loss of
# $\ln V = \ln 65 \approx 4.17$: that is where training starts.
#
# ## Exercise 1 · the bigram loss
#
# Write `bigram_loss(logits_table, x, y)`: `logits_table` is (V, V), `x` and `y` are
# (B, T) token ids with `y[b, t]` the token after `x[b, t]`. Return the mean of
# $-\log \operatorname{softmax}(\text{logits\_table}[x_{bt}])[y_{bt}]$ over all B·T
# positions, as a 0-dimensional tensor that gradients flow through.
#
# Write it out rather than calling `F.cross_entropy` (the test compares with that).
# Use `F.log_softmax`, not `torch.log(F.softmax(...))`: a probability of $10^{-50}$
# rounds to 0 in float32 and its log is $-\infty$, while `log_softmax` computes
# $z - \log\sum e^{z}$ directly and stays finite. `tensor.gather(-1, index)` picks one
# entry per row.

# %% nbgrader={"grade": false, "grade_id": "bigram_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def bigram_loss(logits_table, x, y):
    """Mean negative log-likelihood of the tokens ``y`` under the rows ``logits_table[x]``."""
    ### BEGIN SOLUTION
    log_probs = F.log_softmax(logits_table[x], dim=-1)  # (B, T, V)
    picked = log_probs.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return -picked.mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_bigram_loss", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""bigram_loss: the mean of -log p(y | x) over every position, a scalar tensor."""
torch.manual_seed(1)
table_t = torch.randn(7, 7, requires_grad=True)
x_t, y_t = torch.randint(0, 7, (3, 5)), torch.randint(0, 7, (3, 5))
loss_t = bigram_loss(table_t, x_t, y_t)
assert isinstance(loss_t, torch.Tensor) and loss_t.requires_grad, (
    "bigram_loss must return a tensor that gradients flow through (no .item(), no numpy)"
)
checks.assert_shape(loss_t, (), "bigram_loss(...) (a single number, 0-dimensional)")
assert loss_t.item() >= 0.0, f"a mean of -log p with p <= 1 is never negative; got {loss_t.item()}"
checks.assert_close(
    loss_t, F.cross_entropy(table_t[x_t].reshape(-1, 7), y_t.reshape(-1)), atol=1e-5,
    name="bigram_loss (compared with F.cross_entropy of the logits of x against y)",
)
loss_t = bigram_loss(torch.zeros(65, 65), torch.zeros(2, 3, dtype=torch.long), y_t[:2, :3])
assert abs(float(loss_t) - math.log(65)) < 1e-5, (
    f"an all-zero table gives every token p = 1/65, so the loss is ln 65 = 4.1744; got {loss_t}"
)
# Every row bets on token 3 by a margin of 200: any other token costs 200 nats, a finite loss
# (its probability, e^-200, is 0 in float32: take the log inside the softmax, not after it).
table_t = torch.zeros(4, 4)
table_t[:, 3] = 200.0
loss_t = bigram_loss(table_t, torch.tensor([[0, 1, 2]]), torch.tensor([[3, 0, 3]]))
checks.assert_close(loss_t, 200.0 / 3, atol=1e-3,
                    name="the loss of [3, 0, 3] when every row predicts 3 by a margin of 200")
### BEGIN HIDDEN TESTS
# By hand: after token 0 the logits [0, 0, ln 2] give p = [1/4, 1/4, 1/2].
table_t = torch.tensor([[0.0, 0.0, math.log(2.0)], [5.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
one = torch.tensor([[0]])
checks.assert_close(bigram_loss(table_t, one, torch.tensor([[2]])), math.log(2.0), atol=1e-6,
                    name="loss of token 2 after token 0 (p = 1/2)")
checks.assert_close(bigram_loss(table_t, one, torch.tensor([[1]])), math.log(4.0), atol=1e-6,
                    name="loss of token 1 after token 0 (p = 1/4)")
checks.assert_close(
    bigram_loss(table_t, torch.tensor([[0, 0]]), torch.tensor([[2, 1]])),
    (math.log(2.0) + math.log(4.0)) / 2, atol=1e-6, name="the mean of two positions",
)
# Large logits: a probability far below float32's range must not become log(0) = -inf.
torch.manual_seed(11)
table_t = (200 * torch.randn(11, 11)).requires_grad_()
x_t, y_t = torch.randint(0, 11, (4, 9)), torch.randint(0, 11, (4, 9))
loss_t = bigram_loss(table_t, x_t, y_t)
checks.assert_finite(loss_t, "bigram_loss with logits of size 200")
expected_t = F.cross_entropy(table_t[x_t].reshape(-1, 11), y_t.reshape(-1))
checks.assert_close(loss_t, expected_t, rtol=1e-4, name="bigram_loss with large logits")
# Gradients flow back into the table, the same as cross_entropy's.
loss_t.backward()
grad_t = table_t.grad.clone()
table_t.grad = None
expected_t.backward()
checks.assert_close(grad_t, table_t.grad, atol=1e-6, name="the gradient of the table")
# One sequence of one token, and a long batch.
checks.assert_shape(bigram_loss(torch.randn(5, 5), torch.tensor([[3]]), torch.tensor([[3]])), (),
                    "bigram_loss for B = T = 1")
torch.manual_seed(12)
table_t = torch.randn(65, 65)
x_t, y_t = torch.randint(0, 65, (8, 64)), torch.randint(0, 65, (8, 64))
checks.assert_close(bigram_loss(table_t, x_t, y_t),
                    F.cross_entropy(table_t[x_t].reshape(-1, 65), y_t.reshape(-1)), atol=1e-5)
### END HIDDEN TESTS

# %% [markdown]
# ### Training the table
#
# Your loss trains the table: random (B, T) batches from chapter 03's `get_batch`, AdamW,
# and nothing else. A bigram model also has an exact answer: counting which character
# follows which in the training text gives the best possible table (its log-frequencies,
# with one extra count everywhere so that no pair has probability 0). Training should get
# close to it.

# %%
table = torch.zeros(V, V, requires_grad=True)  # uniform: the loss starts at ln V
optimizer = torch.optim.AdamW([table], lr=0.1, weight_decay=0.0)
batch_rng = np.random.default_rng(SEED)
bigram_losses = []
for _ in tqdm(range(BIGRAM_STEPS), desc="bigram"):
    xb, yb = data.get_batch(train_ids, BATCH_SIZE, BLOCK_SIZE, batch_rng)
    loss = bigram_loss(table, torch.from_numpy(xb), torch.from_numpy(yb))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    bigram_losses.append(loss.item())

# The counted optimum, and both tables' loss on the whole validation text.
counts = np.ones((V, V))  # one extra count for every pair
np.add.at(counts, (train_ids[:-1].astype(np.int64), train_ids[1:].astype(np.int64)), 1)
counted_table = torch.from_numpy(np.log(counts / counts.sum(axis=1, keepdims=True))).float()
val_x = torch.from_numpy(val_ids[None, :-1].astype(np.int64))  # the whole val text: (1, N)
val_y = torch.from_numpy(val_ids[None, 1:].astype(np.int64))
with torch.no_grad():
    bigram_val = bigram_loss(table, val_x, val_y).item()
    counted_val = bigram_loss(counted_table, val_x, val_y).item()
print(f"start: ln {V} = {math.log(V):.3f}; after {BIGRAM_STEPS} steps: train "
      f"{bigram_losses[-1]:.3f}, val {bigram_val:.3f}; counted table: val {counted_val:.3f}")

ax = viz.plot_losses({"bigram (train batches)": bigram_losses}, title="the bigram baseline")
ax.axhline(math.log(V), color="gray", linestyle=":", label=f"uniform, ln {V}")
ax.axhline(counted_val, color="black", linestyle="--", label="counted table (val)")
ax.legend()
plt.show()

# %% [markdown]
# A bigram model writes text that has the right letters in roughly the right places and
# nothing more: it sees one character, so it cannot know which word it is in. To sample,
# start from a newline and repeatedly draw the next character from the softmax of the
# current character's row.

# %%
sample_gen = torch.Generator().manual_seed(SEED)
current, sampled = tok.encode("\n")[0], []
with torch.no_grad():
    for _ in range(SAMPLE_CHARS):
        probs = F.softmax(table[current], dim=-1)  # the row of the current character
        current = torch.multinomial(probs, 1, generator=sample_gen).item()
        sampled.append(current)
print(tok.decode(sampled))

# %% [markdown]
# ## One head of attention
#
# To predict well, a token needs information from the tokens before it: which word it is
# in, who is speaking. **Attention** lets every token gather that information as a weighted
# average of the others. Each token's vector $x_t$ is mapped, by three learned matrices,
# to three vectors of size $d$:
#
# - a **query** $q_t = x_t W_Q$: what this token is looking for;
# - a **key** $k_s = x_s W_K$: what token $s$ offers to be found by;
# - a **value** $v_s = x_s W_V$: what token $s$ hands over when it is chosen.
#
# Query $t$ scores every key with a dot product, the scores become weights with a
# softmax, and the output is the weighted average of the values:
#
# $$\text{attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}}\right) V$$
#
# where the softmax runs over the **keys** (each query's weights sum to 1). Why divide by
# $\sqrt{d}$? If the entries of $q$ and $k$ are independent with variance 1, their dot
# product is a sum of $d$ such products: variance $d$. Large scores push the softmax
# towards a one-hot vector, and a one-hot softmax passes almost no gradient. Scaling by
# $1/\sqrt{d}$ brings the variance back to 1, whatever the head size:

# %%
demo_gen = torch.Generator().manual_seed(SEED)
print(f"{'d':>4} {'std of q.k':>11} {'scaled':>7} {'top weight':>11} {'scaled':>7}   (16 keys)")
for d in (4, 16, 64, 256):
    q_demo = torch.randn(1000, 1, d, generator=demo_gen)
    k_demo = torch.randn(1000, 16, d, generator=demo_gen)
    scores = (q_demo @ k_demo.transpose(-2, -1)).squeeze(1)  # (1000, 16)
    top = F.softmax(scores, dim=-1).max(dim=-1).values.mean()
    top_scaled = F.softmax(scores / math.sqrt(d), dim=-1).max(dim=-1).values.mean()
    print(f"{d:4d} {scores.std():11.2f} {(scores / math.sqrt(d)).std():7.2f} {top:11.2f} "
          f"{top_scaled:7.2f}")

# %% [markdown]
# Unscaled, a head of size 256 gives nearly all of its weight to one key before it has
# learned anything; scaled, the weights start spread out, whatever $d$ is.
#
# ## Exercise 2 · scaled dot-product attention
#
# Write `scaled_attention(q, k, v)`: `q` is (..., T, d), `k` is (..., S, d) and `v` is
# (..., S, d_v), with any number of leading batch dimensions. Return
# $\operatorname{softmax}(q k^\top / \sqrt{d})\, v$, shape (..., T, d_v). Every query sees
# every key here (no mask yet). `k.transpose(-2, -1)` swaps the last two dimensions
# whatever comes before them.

# %% nbgrader={"grade": false, "grade_id": "scaled_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def scaled_attention(q, k, v):
    """softmax(q kᵀ / √d) v: q (..., T, d), k (..., S, d), v (..., S, d_v) -> (..., T, d_v)."""
    ### BEGIN SOLUTION
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (..., T, S)
    weights = F.softmax(scores, dim=-1)  # each query's weights sum to 1 over the keys
    return weights @ v  # (..., T, d_v)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_scaled_attention", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""scaled_attention: scaled by 1/√d, softmax over the keys, every key visible."""
torch.manual_seed(2)
q_t, k_t, v_t = torch.randn(2, 5, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 3)
out_t = scaled_attention(q_t, k_t, v_t)
checks.assert_shape(out_t, (2, 5, 3), "scaled_attention of q (2, 5, 8), k (2, 6, 8), v (2, 6, 3)")
checks.assert_close(out_t, F.scaled_dot_product_attention(q_t, k_t, v_t), atol=1e-5,
                    name="scaled_attention (compared with F.scaled_dot_product_attention)")
out_t = scaled_attention(q_t, torch.ones(2, 6, 8), v_t)
checks.assert_close(out_t, v_t.mean(dim=1, keepdim=True).expand(2, 5, 3), atol=1e-5,
                    name="with identical keys every query averages the values")
# Two leading dimensions (batch, heads): q (3, 2, 4, 5), k (3, 2, 7, 5), v (3, 2, 7, 6).
q_t, k_t, v_t = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 7, 5), torch.randn(3, 2, 7, 6)
out_t = scaled_attention(q_t, k_t, v_t)
checks.assert_shape(out_t, (3, 2, 4, 6), "scaled_attention with two leading dimensions")
checks.assert_close(out_t, F.scaled_dot_product_attention(q_t, k_t, v_t), atol=1e-5,
                    name="scaled_attention of q (3, 2, 4, 5), k (3, 2, 7, 5), v (3, 2, 7, 6)")
### BEGIN HIDDEN TESTS
# With the identity as values, the output is the weight matrix itself.
torch.manual_seed(21)
q_t, k_t = torch.randn(3, 4, 16, dtype=torch.float64), torch.randn(3, 7, 16, dtype=torch.float64)
w_t = scaled_attention(q_t, k_t, torch.eye(7, dtype=torch.float64).expand(3, 7, 7))
s_np = q_t.numpy() @ k_t.numpy().transpose(0, 2, 1) / 4.0
w_np = np.exp(s_np - s_np.max(-1, keepdims=True))
w_np /= w_np.sum(-1, keepdims=True)
checks.assert_close(w_t.sum(-1), np.ones((3, 4)), atol=1e-9, name="each query's weights sum")
checks.assert_close(w_t, w_np, atol=1e-9, name="the weights (numpy reference)")
# Four dimensions, one query, awkward sizes; a head of size 1 and one of size 64.
for shape_q, shape_k, d_v in [((2, 3, 1, 5), (2, 3, 9, 5), 4), ((1, 6, 1), (1, 6, 1), 2),
                              ((2, 4, 64), (2, 11, 64), 64)]:
    q_t, k_t = torch.randn(shape_q), torch.randn(shape_k)
    v_t = torch.randn(*shape_k[:-1], d_v)
    checks.assert_close(scaled_attention(q_t, k_t, v_t),
                        F.scaled_dot_product_attention(q_t, k_t, v_t), atol=1e-5,
                        name=f"scaled_attention with q {shape_q}, k {shape_k}")
### END HIDDEN TESTS

# %% [markdown]
# ## The causal mask
#
# A language model is trained to predict token $t+1$ at every position $t$ at once, in one
# pass over the sequence. If position $t$ could attend to the tokens after it, it would
# simply read the answer, learn nothing useful, and have nothing to read when it generates
# text one token at a time. So query $t$ may only see keys $0 \dots t$.
#
# The mask is applied to the **scores, before the softmax**: the scores of future keys are
# set to $-\infty$, and since $e^{-\infty} = 0$ the softmax gives them weight 0 and spreads
# each row's weight over the visible keys only, still summing to 1. (Zeroing weights
# *after* the softmax would leave rows that sum to less than 1.) Position 0 sees only
# itself, so its output is its own value.
#
# ## Exercise 3 · causal self-attention
#
# Write `causal_attention(q, k, v)` for q and k of shape (..., T, d) and v of shape
# (..., T, d_v) (the same T: every token is both a query and a key), returning
# (..., T, d_v): `scaled_attention` with the future masked out.
# `torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)` is True strictly above the
# diagonal (made on q's device, so that it works on a GPU too);
# `scores.masked_fill(mask, float("-inf"))` writes $-\infty$ where the mask is True.

# %% nbgrader={"grade": false, "grade_id": "causal_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_attention(q, k, v):
    """softmax(q kᵀ / √d, future masked) v: q, k (..., T, d), v (..., T, d_v) -> (..., T, d_v)."""
    ### BEGIN SOLUTION
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (..., T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)  # key s > query t
    scores = scores.masked_fill(future, float("-inf"))
    return F.softmax(scores, dim=-1) @ v  # (..., T, d_v)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_causal_attention", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""causal_attention: masked before the softmax, scaled, and no output depends on a later token."""
torch.manual_seed(3)
q_t, k_t, v_t = torch.randn(2, 6, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 3)
out_t = causal_attention(q_t, k_t, v_t)
checks.assert_shape(out_t, (2, 6, 3), "causal_attention of q, k (2, 6, 8) and v (2, 6, 3)")
checks.assert_close(out_t[:, 0], v_t[:, 0], atol=1e-6,
                    name="the output at position 0, which can only see itself,")
checks.assert_close(out_t, F.scaled_dot_product_attention(q_t, k_t, v_t, is_causal=True),
                    atol=1e-5,
                    name="causal_attention (compared with F.scaled_dot_product_attention)")
# Changing token j (its query, key and value) must not change any output before j.
for j in range(1, 6):
    changed_t = [t.clone() for t in (q_t, k_t, v_t)]
    for t in changed_t:
        t[:, j] = torch.randn_like(t[:, j])
    checks.assert_close(causal_attention(*changed_t)[:, :j], out_t[:, :j], atol=1e-6,
                        name=f"outputs before position {j} once token {j} changed")
# The identity as values reads the weights out: nothing above the diagonal, rows sum to 1.
w_t = causal_attention(q_t, k_t, torch.eye(6).expand(2, 6, 6))
assert float(w_t.triu(1).abs().max()) == 0.0, "a query gives weight to a future key"
checks.assert_close(w_t.sum(-1), torch.ones(2, 6), atol=1e-5,
                    name="each query's weights sum (mask before the softmax, not after)")
# Heads as a batch dimension: q, k (3, 2, 5, 4) and v (3, 2, 5, 7).
q_t, k_t, v_t = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 7)
checks.assert_close(causal_attention(q_t, k_t, v_t),
                    F.scaled_dot_product_attention(q_t, k_t, v_t, is_causal=True), atol=1e-5,
                    name="causal_attention of q, k (3, 2, 5, 4) and v (3, 2, 5, 7)")
### BEGIN HIDDEN TESTS
# The identity as values reads the weights out: lower-triangular rows that sum to 1.
torch.manual_seed(31)
q_t, k_t = torch.randn(3, 9, 5, dtype=torch.float64), torch.randn(3, 9, 5, dtype=torch.float64)
w_t = causal_attention(q_t, k_t, torch.eye(9, dtype=torch.float64).expand(3, 9, 9))
checks.assert_close(w_t.sum(-1), np.ones((3, 9)), atol=1e-9,
                    name="each query's weights sum (mask before the softmax, not after)")
assert float(w_t.triu(1).abs().max()) == 0.0, "a query gives weight to a future key"
s_np = q_t.numpy() @ k_t.numpy().transpose(0, 2, 1) / math.sqrt(5)
s_np = np.where(np.tril(np.ones((9, 9), dtype=bool)), s_np, -np.inf)
w_np = np.exp(s_np - s_np.max(-1, keepdims=True))
w_np /= w_np.sum(-1, keepdims=True)
checks.assert_close(w_t, w_np, atol=1e-9, name="the weights (numpy reference)")
# One token: its output is its value.
v_t = torch.randn(2, 1, 3)
checks.assert_close(causal_attention(torch.randn(2, 1, 4), torch.randn(2, 1, 4), v_t), v_t,
                    atol=1e-6, name="T = 1")
# Heads as a batch dimension, awkward sizes, a value size of its own; a long sequence.
for shape, d_v in [((2, 3, 7, 5), 4), ((1, 1, 13, 1), 2), ((4, 50, 64), 64)]:
    q_t, k_t = torch.randn(shape), torch.randn(shape)
    v_t = torch.randn(*shape[:-1], d_v)
    checks.assert_close(causal_attention(q_t, k_t, v_t),
                        F.scaled_dot_product_attention(q_t, k_t, v_t, is_causal=True),
                        atol=1e-5, name=f"causal_attention with q, k {shape}, d_v {d_v}")
### END HIDDEN TESTS

# %% [markdown]
# ### What the mask does, in pictures
#
# A trick to see the weights: with the identity matrix as values, the output of attention
# *is* its weight matrix (row $t$ of the output is $\sum_s w_{ts} e_s$). Here for random
# queries and keys over the characters of "To be, or not": without the mask, every row
# spreads over all keys; with it, the upper triangle is 0 and each row is renormalised
# over what it may see.

# %%
chars = list("To be, or not")
T_demo = len(chars)
q_demo, k_demo = torch.randn(2, T_demo, 8, generator=demo_gen).unbind(0)
identity = torch.eye(T_demo)
maps_demo = np.stack([
    scaled_attention(q_demo, k_demo, identity).numpy(),
    np.triu(np.ones((T_demo, T_demo)), 1) == 0,  # the mask: True where a query may look
    causal_attention(q_demo, k_demo, identity).numpy(),
])[:, None]  # (3, 1, T, T): three "layers" of one head each, for viz.plot_attention
fig, axes = plt.subplots(1, 3, figsize=(15, 5))
titles = ["weights, no mask", "mask (1 = may look)", "weights, causal"]
for i, (ax, title) in enumerate(zip(axes, titles)):
    viz.plot_attention(maps_demo, chars, layer=i, head=0, ax=ax)
    ax.set_title(title)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Manual attention and the fused kernel agree
#
# PyTorch has attention built in: `F.scaled_dot_product_attention(q, k, v, is_causal=True)`
# computes the same thing with fused kernels that never store the (T, T) weights in full,
# which saves memory and time on long sequences (a chapter that writes such a kernel in
# Triton is planned). The course's model uses it by default (`attn_impl="sdpa"`) and keeps
# the written-out version as `course.torch.model.manual_attention` (`attn_impl="manual"`),
# the reference of your exercise 3. All three agree to float32 rounding:

# %%
torch.manual_seed(SEED)
q_big, k_big, v_big = (torch.randn(8, N_HEAD, 256, 16) for _ in range(3))  # (B, nh, T, hs)
fused = F.scaled_dot_product_attention(q_big, k_big, v_big, is_causal=True)
for name, attend in [("your causal_attention", causal_attention),
                     ("course manual_attention", manual_attention)]:
    difference = (attend(q_big, k_big, v_big) - fused).abs().max().item()
    print(f"{name:<24} vs F.scaled_dot_product_attention: max |difference| {difference:.1e}")
    assert difference < 1e-5, f"{name} disagrees with the fused kernel"


def best_ms(fn, repeats=TIMING_REPEATS):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


manual_ms = best_ms(lambda: manual_attention(q_big, k_big, v_big))
fused_ms = best_ms(lambda: F.scaled_dot_product_attention(q_big, k_big, v_big, is_causal=True))
print(f"B=8, {N_HEAD} heads, T=256: manual {manual_ms:.2f} ms, fused {fused_ms:.2f} ms "
      f"(weights in full: {8 * N_HEAD * 256 * 256 * 4 / 2**20:.0f} MB of float32)")

# %% [markdown]
# ## Many heads
#
# One head computes one weighted average per token, so it can look for one thing at a
# time. **Multi-head attention** runs several heads side by side, each in a slice of the
# features: with `n_embd` $= C$ features and `n_head` heads, each head has
# $hs = C / n_{head}$. GPT-2 computes all queries, keys and values with one matrix
# multiplication and keeps the heads apart with reshapes:
#
# 1. `c_attn`, a (3C, C) weight: `x @ c_attn_weight.T` is (B, T, 3C); split it into q, k
#    and v, each (B, T, C) (`tensor.split(C, dim=-1)`);
# 2. view each as (B, T, nh, hs) and **transpose** to (B, nh, T, hs): the heads become a
#    batch dimension, and every head attends over its own T × T weights;
# 3. causal attention, (B, nh, T, hs);
# 4. transpose back to (B, T, nh, hs) and reshape to (B, T, C): the heads' outputs side
#    by side (`reshape` copies if it has to, `view` would refuse after a transpose);
# 5. `c_proj`, a (C, C) weight: `y @ c_proj_weight.T` mixes what the heads found.
#
# The weights are stored the way `nn.Linear` stores them, (out, in), so a linear layer is
# `x @ weight.T`. Step 2 is where it is easy to go wrong: `q.view(B, nh, T, hs)` has the
# right shape too, but it cuts the (T, C) features in the wrong places, so each "head"
# gets pieces of several tokens.
#
# ## Exercise 4 · multi-head attention
#
# Write `multi_head_attention(x, c_attn_weight, c_proj_weight, n_head)` for x of shape
# (B, T, C), returning (B, T, C). Use your `causal_attention`. The test copies the weights
# of the library's `CausalSelfAttention` (no biases, as in the course's GPT) and compares.

# %% nbgrader={"grade": false, "grade_id": "multi_head_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def multi_head_attention(x, c_attn_weight, c_proj_weight, n_head):
    """Causal multi-head self-attention of x (B, T, C) with GPT-2's fused weights."""
    ### BEGIN SOLUTION
    B, T, C = x.shape
    hs = C // n_head
    q, k, v = (x @ c_attn_weight.T).split(C, dim=-1)  # 3 x (B, T, C)
    q = q.view(B, T, n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T, n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
    v = v.view(B, T, n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
    y = causal_attention(q, k, v)  # (B, nh, T, hs)
    y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side: (B, T, C)
    return y @ c_proj_weight.T
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_multi_head_attention", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""multi_head_attention: the same output as course.torch's CausalSelfAttention."""
torch.manual_seed(4)
# B = 2, T = 5, C = 24, 4 heads of size 6: every size different, so no two can be confused.
attn_t = CausalSelfAttention(GPTConfig(n_embd=24, n_head=4, attn_impl="manual")).eval()
x_t = torch.randn(2, 5, 24)
with torch.no_grad():
    out_t = multi_head_attention(x_t, attn_t.c_attn.weight, attn_t.c_proj.weight, 4)
    expected_t = attn_t(x_t)
    checks.assert_shape(out_t, (2, 5, 24), "multi_head_attention of x (2, 5, 24)")
    checks.assert_close(out_t, expected_t, atol=1e-5,
                        name="multi_head_attention (compared with CausalSelfAttention, 4 heads)")
    # Causal: changing the last token changes no output before it.
    changed_t = x_t.clone()
    changed_t[:, 4] = torch.randn(2, 24)
    later_t = multi_head_attention(changed_t, attn_t.c_attn.weight, attn_t.c_proj.weight, 4)
    checks.assert_close(later_t[:, :4], out_t[:, :4], atol=1e-6,
                        name="outputs before position 4 once token 4 changed")
### BEGIN HIDDEN TESTS
torch.manual_seed(41)
for n_embd, n_head, B, T in [(12, 3, 3, 5), (8, 1, 2, 6), (6, 6, 1, 9), (20, 5, 2, 1),
                             (32, 4, 1, 17)]:
    for impl in ("manual", "sdpa"):
        attn_t = CausalSelfAttention(GPTConfig(n_embd=n_embd, n_head=n_head, attn_impl=impl))
        x_t = torch.randn(B, T, n_embd)
        with torch.no_grad():
            out_t = multi_head_attention(x_t, attn_t.c_attn.weight, attn_t.c_proj.weight,
                                         n_head)
            expected_t = attn_t.eval()(x_t)
        checks.assert_close(out_t, expected_t, atol=1e-5,
                            name=f"C={n_embd}, {n_head} head(s), B={B}, T={T} ({impl})")
# Causal: changing token j changes no output before it.
attn_t = CausalSelfAttention(GPTConfig(n_embd=12, n_head=3, attn_impl="manual"))
x_t = torch.randn(2, 7, 12)
with torch.no_grad():
    out_t = multi_head_attention(x_t, attn_t.c_attn.weight, attn_t.c_proj.weight, 3)
    for j in range(1, 7):
        changed_t = x_t.clone()
        changed_t[:, j] = torch.randn(2, 12)
        later_t = multi_head_attention(changed_t, attn_t.c_attn.weight, attn_t.c_proj.weight, 3)
        checks.assert_close(later_t[:, :j], out_t[:, :j], atol=1e-6,
                            name=f"outputs before position {j} once token {j} changed")
### END HIDDEN TESTS

# %% [markdown]
# ## The Transformer block
#
# Attention moves information *between* positions. Each block follows it with an **MLP**
# that works on every position on its own: C → 4C, a GELU, 4C → C (GPT-2 uses the tanh
# approximation of GELU, `F.gelu(h, approximate="tanh")`, which the course keeps: the exact
# one does not survive every export to ONNX).
#
# The block wraps both in GPT-2's **pre-LayerNorm residual** pattern:
#
# $$x \leftarrow x + \operatorname{attn}(\operatorname{LN}_1(x)), \qquad x \leftarrow x + \operatorname{mlp}(\operatorname{LN}_2(x))$$
#
# The sequence of vectors $x$ is the *residual stream*: each sublayer reads a normalised
# copy of it and *adds* its result back. The stream itself is never normalised, so the
# identity path runs from the embeddings to the output untouched and gradients flow
# straight through every addition: deep stacks train without tricks. The original
# Transformer normalised *after* the addition, $x \leftarrow \operatorname{LN}(x +
# \operatorname{attn}(x))$ ("post-LN"), which needs a careful warm-up to train deep.
#
# ## Exercise 5 · one block
#
# Write `block_forward(x, params, n_head)`: x is (B, T, C) and `params` is a `Block`'s
# `state_dict()`, a dict of tensors with GPT-2's names (the course's model has no biases):
#
# | key | shape | |
# |---|---|---|
# | `ln_1.weight` | (C,) | the LayerNorm before attention |
# | `attn.c_attn.weight`, `attn.c_proj.weight` | (3C, C), (C, C) | for your `multi_head_attention` |
# | `ln_2.weight` | (C,) | the LayerNorm before the MLP |
# | `mlp.c_fc.weight`, `mlp.c_proj.weight` | (4C, C), (C, 4C) | the MLP's two layers |
#
# `F.layer_norm(x, (C,), weight, eps=1e-5)` normalises the last dimension. Return a new
# tensor; don't change `x` in place (`x = x + ...`, not `x += ...`).

# %% nbgrader={"grade": false, "grade_id": "block_forward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def block_forward(x, params, n_head):
    """A pre-LayerNorm Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""
    ### BEGIN SOLUTION
    C = x.size(-1)
    h = F.layer_norm(x, (C,), params["ln_1.weight"], eps=1e-5)
    x = x + multi_head_attention(
        h, params["attn.c_attn.weight"], params["attn.c_proj.weight"], n_head
    )
    h = F.layer_norm(x, (C,), params["ln_2.weight"], eps=1e-5)
    h = F.gelu(h @ params["mlp.c_fc.weight"].T, approximate="tanh")  # (B, T, 4C)
    return x + h @ params["mlp.c_proj.weight"].T
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_block_forward", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""block_forward: the same output as course.torch's Block (pre-LN, residuals, tanh GELU)."""


def random_block(n_embd, n_head, seed, attn_impl="manual"):
    """A Block whose weights are large enough that every mistake shows (GELU's too)."""
    torch.manual_seed(seed)
    block = Block(GPTConfig(n_embd=n_embd, n_head=n_head, attn_impl=attn_impl)).eval()
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.startswith("ln_"):
                p.copy_(1 + 0.5 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (2 if "c_fc" in name else 1) / math.sqrt(p.size(1)))
    return block


block_t = random_block(24, 4, seed=5)  # C = 24, 4 heads of size 6; B = 2, T = 7 below
x_t = torch.randn(2, 7, 24)
before_t = x_t.clone()
with torch.no_grad():
    expected_t = block_t(x_t)
    out_t = block_forward(x_t, block_t.state_dict(), 4)
assert torch.equal(x_t, before_t), "block_forward changed its input x: use x = x + ..., not x += ..."
checks.assert_shape(out_t, (2, 7, 24), "block_forward of x (2, 7, 24)")
checks.assert_close(out_t, expected_t, atol=1e-5, name="block_forward (compared with Block)")
with torch.no_grad():  # causal: changing the last token changes no output before it
    changed_t = x_t.clone()
    changed_t[:, 6] = torch.randn(2, 24)
    checks.assert_close(block_forward(changed_t, block_t.state_dict(), 4)[:, :6], out_t[:, :6],
                        atol=1e-6, name="outputs before position 6 once token 6 changed")
### BEGIN HIDDEN TESTS
for n_embd, n_head, B, T, impl in [(24, 3, 3, 5, "manual"), (8, 1, 1, 6, "sdpa"),
                                   (16, 4, 2, 1, "manual"), (40, 8, 1, 13, "sdpa")]:
    block_t = random_block(n_embd, n_head, seed=n_embd, attn_impl=impl)
    x_t = 3 * torch.randn(B, T, n_embd)
    before_t = x_t.clone()
    with torch.no_grad():
        out_t = block_forward(x_t, block_t.state_dict(), n_head)
        expected_t = block_t(x_t)
    assert torch.equal(x_t, before_t), "block_forward changed its input x in place"
    checks.assert_close(out_t, expected_t, atol=1e-5,
                        name=f"block_forward with C={n_embd}, {n_head} head(s), T={T}")
# Causal: changing token j changes no output before it.
block_t = random_block(12, 3, seed=6)
x_t = torch.randn(1, 6, 12)
with torch.no_grad():
    out_t = block_forward(x_t, block_t.state_dict(), 3)
    for j in range(1, 6):
        changed_t = x_t.clone()
        changed_t[:, j] = torch.randn(12)
        checks.assert_close(block_forward(changed_t, block_t.state_dict(), 3)[:, :j],
                            out_t[:, :j], atol=1e-6, name=f"outputs before position {j}")
### END HIDDEN TESTS

# %% [markdown]
# ## A small GPT
#
# A GPT is this block stacked: token embeddings plus learned position embeddings (attention
# itself has no idea of order: without positions, "dog bites man" and "man bites dog"
# look alike), `n_layer` blocks, a final LayerNorm, and a linear layer back to the
# vocabulary whose weight is the token embedding's. `course.torch.GPT` is exactly that,
# and chapter 05 takes it apart. It runs on `runtime.pick_device()`'s device (a GPU when
# there is one), and every tensor it meets goes there too: `.to(device)`, or `device=` when
# a tensor is created. First, a check that your block *is* its block: run a GPT's layers
# through your `block_forward` and compare the logits.

# %%
config = GPTConfig(n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD, block_size=BLOCK_SIZE,
                   vocab_size=V)
device = runtime.pick_device()  # "cuda", "mps" or "cpu" (COURSE_DEVICE=cpu forces the CPU)
torch.manual_seed(SEED)
model = GPT(config).to(device)
print(f"GPT with {model.num_params():,} parameters (without position embeddings): {config}")


def logits_with_your_blocks(model, idx):
    """model(idx)'s logits, with every Block replaced by your block_forward."""
    wte, wpe = model.transformer.wte, model.transformer.wpe
    x = wte(idx) + wpe(torch.arange(idx.size(1), device=idx.device))  # (B, T, C)
    for block in model.transformer.h:
        x = block_forward(x, block.state_dict(), model.config.n_head)
    return model.lm_head(model.transformer.ln_f(x))  # (B, T, vocab)


probe_idx = torch.from_numpy(data.get_batch(val_ids, 2, BLOCK_SIZE, batch_rng)[0]).to(device)
with torch.no_grad():
    ours, (theirs, _) = logits_with_your_blocks(model, probe_idx), model(probe_idx)
checks.assert_close(ours, theirs, atol=1e-4, name="logits through your blocks")
print(f"your blocks give the GPT's logits: max |difference| {(ours - theirs).abs().max():.1e}")

# %% [markdown]
# ### Training it
#
# A plain training loop: a batch, the loss (the model computes the same cross-entropy as
# your `bigram_loss`, over its own logits), gradients, an AdamW step. No learning-rate
# schedule, no evaluation during training, no checkpoints: chapter 05 adds those. The
# dashed line is the best any bigram can do.

# %%
torch.manual_seed(SEED)
model = GPT(config).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
batch_rng = np.random.default_rng(SEED)
gpt_losses = []
start = time.perf_counter()
model.train()
for _step in (bar := tqdm(range(GPT_STEPS), desc="GPT")):
    xb, yb = data.get_batch(train_ids, BATCH_SIZE, BLOCK_SIZE, batch_rng)
    _, loss = model(torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    gpt_losses.append(loss.item())
    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
train_seconds = time.perf_counter() - start
model.eval()  # no dropout in this model, but evaluation and sampling belong in eval mode


@torch.no_grad()
def estimate_loss(model, tokens, batches=EVAL_BATCHES, seed=SEED):
    """Mean loss over `batches` random batches of `tokens`, in eval mode."""
    model.eval()
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(batches):
        xb, yb = data.get_batch(tokens, BATCH_SIZE, BLOCK_SIZE, rng)
        xb, yb = torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device)
        losses.append(model(xb, yb)[1].item())
    return float(np.mean(losses))


gpt_val = estimate_loss(model, val_ids)
print(f"{GPT_STEPS} steps in {train_seconds:.1f} s "
      f"({1e3 * train_seconds / GPT_STEPS:.0f} ms/step); val loss: GPT {gpt_val:.3f}, bigram {bigram_val:.3f}, counted bigram {counted_val:.3f}")
ax = viz.plot_losses({"GPT (train batches)": gpt_losses, "bigram (train batches)": bigram_losses},
                     title="a small GPT against the bigram baseline")
ax.axhline(counted_val, color="black", linestyle="--", label="best bigram (val)")
ax.legend()
plt.show()

# %%
prompt = torch.tensor([tok.encode("\n")], device=device)
out = generate(model, prompt, max_new_tokens=SAMPLE_CHARS, temperature=0.8, seed=SEED)
print(tok.decode(out[0, 1:].tolist()))

# %% [markdown]
# Still far from Shakespeare after a minute on a CPU, but compare it with the bigram's
# text: words of plausible length, capitals after newlines, speakers' names followed by a
# colon. None of that fits in one character of context.
#
# ## Inside the model: attention maps
#
# `model.attention_maps(idx)` runs one sequence through the model and returns every
# head's weights, shape (n_layer, n_head, T, T): row $t$ of a map is where query $t$
# looked. First all heads at once, on a line of the validation text:

# %%
start_at = int(np.flatnonzero(val_ids[:-MAP_CHARS] == tok.encode("\n")[0])[3]) + 1  # a line start
map_ids = val_ids[start_at : start_at + MAP_CHARS].astype(np.int64)
map_tokens = [tok.decode([int(i)]) for i in map_ids]
map_idx = torch.from_numpy(map_ids)[None].to(device)
maps = model.attention_maps(map_idx).cpu().numpy()  # (n_layer, n_head, T, T), back on the CPU
print(f"maps {maps.shape} for {''.join(map_tokens)!r}")

fig, axes = plt.subplots(N_LAYER, N_HEAD, figsize=(3 * N_HEAD, 3 * N_LAYER), squeeze=False)
for layer in range(N_LAYER):
    for head in range(N_HEAD):
        ax = viz.plot_attention(maps, map_tokens, layer, head, ax=axes[layer, head])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("")
        ax.set_ylabel("")
plt.tight_layout()
plt.show()

# %% [markdown]
# After a full-size run, heads of the first layer put a good share of their weight just
# below the diagonal, on the character before the query: a *previous-token* head tells each
# position what came just before it, which the next layer can build on. Other heads look
# at the query itself, or spread over the start of the line. (In smoke mode the model has
# barely trained and the maps are close to uniform.) The numbers behind the pictures:

# %%
T_map = maps.shape[-1]
print(f"{'layer':>5} {'head':>4} {'on itself':>10} {'on the previous':>16} {'on token 0':>11}")
for layer in range(N_LAYER):
    for head in range(N_HEAD):
        m = maps[layer, head]
        print(f"{layer:5d} {head:4d} {np.diag(m)[1:].mean():10.2f} "
              f"{np.diag(m, -1).mean():16.2f} {m[1:, 0].mean():11.2f}")
print(f"(averages over the queries 1..{T_map - 1}; a uniform head would give 1/(t+1) each)")

# %% [markdown]
# ### The widget
#
# Pick a layer, a head and a query position: the left panel is the head's whole map (the
# chosen query's row outlined in red), the right one that row as bars. Which characters
# does the last letter of a word look at? The first letter after a space? (The plotting
# functions are `viz.plot_attention` and `viz.plot_attention_row`, if you want a figure
# of your own.)

# %%
viz.attention_widget(maps, map_tokens)

# %% [markdown]
# ## What's next
#
# You have written every part of a GPT but the embeddings: the loss, attention, the mask,
# the heads, the block. Chapter 05 takes the whole model in hand: its parameters counted by
# formula, a proper training run, temperature, top-k and top-p sampling, and a KV cache
# that makes generation fast. Chapter 06 builds the same model again in Keras 3.

# %% [markdown]
# ## Check yourself
#
# <!-- written by `python -m autograde release` from solutions/chapters.toml -->
# Answer each in a few sentences, from what this chapter showed you; where you are not sure,
# change the code and see.
#
# 1. Masking after the softmax (zeroing future weights) instead of before it gives rows that
#    no longer sum to 1. What would the model then be computing, and why does setting scores
#    to -inf avoid it?
# 2. `q.view(B, nh, T, hs)` has the same shape as `q.view(B, T, nh, hs).transpose(1, 2)`.
#    With the first, which tokens' features end up in one row of a head, and why does that
#    break what the causal mask promises?
# 3. Without position embeddings, what would a GPT output for "dog bites man" compared with
#    "man bites dog", at the last position? Answer from how attention combines keys and
#    values.
