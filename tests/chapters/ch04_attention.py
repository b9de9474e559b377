"""Chapter 04: plausible wrong answers for the attention exercises, and the library's
reference of each exercise, which must pass the same graded test cells.

Each wrong answer replaces the whole solution cell, with one thing wrong. The notebook's
``multi_head_attention`` calls the notebook's ``causal_attention`` and ``block_forward``
calls ``multi_head_attention``, as the solutions do: by the time an exercise is probed the
earlier ones hold their solutions again. The references stand alone (no notebook code).
"""

from autograde.probe import ReferenceAnswer, WrongAnswer

REFERENCE_ANSWERS = [
    ReferenceAnswer(
        "bigram_loss",
        "torch.nn.functional.cross_entropy over the looked-up rows",
        """
import torch.nn.functional as F

def bigram_loss(logits_table, x, y):
    logits = logits_table[x]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
""",
    ),
    ReferenceAnswer(
        "scaled_attention",
        "torch.nn.functional.scaled_dot_product_attention without a mask",
        """
import torch.nn.functional as F

def scaled_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)
""",
    ),
    ReferenceAnswer(
        "causal_attention",
        "course.torch.model.manual_attention",
        "from course.torch.model import manual_attention as causal_attention",
    ),
    ReferenceAnswer(
        "multi_head_attention",
        "course.torch.model.CausalSelfAttention, called with the given weights",
        """
from torch.func import functional_call

from course.config import GPTConfig
from course.torch.model import CausalSelfAttention

def multi_head_attention(x, c_attn_weight, c_proj_weight, n_head):
    config = GPTConfig(n_embd=x.size(-1), n_head=n_head, attn_impl="manual")
    weights = {"c_attn.weight": c_attn_weight, "c_proj.weight": c_proj_weight}
    return functional_call(CausalSelfAttention(config).eval(), weights, (x,))
""",
    ),
    ReferenceAnswer(
        "block_forward",
        "course.torch.model.Block, called with the given state dict",
        """
from torch.func import functional_call

from course.config import GPTConfig
from course.torch.model import Block

def block_forward(x, params, n_head):
    config = GPTConfig(n_embd=x.size(-1), n_head=n_head, attn_impl="manual")
    return functional_call(Block(config).eval(), dict(params), (x,))
""",
    ),
]

# The multi-head exercise, with one step left for each wrong answer to change.
_SPLIT_HEADS = """
def multi_head_attention(x, c_attn_weight, c_proj_weight, n_head):
    B, T, C = x.shape
    hs = C // n_head
    q, k, v = (x @ c_attn_weight.T).split(C, dim=-1)
"""

# The block exercise, parametrised by its GELU.
_BLOCK = """
def block_forward(x, params, n_head):
    C = x.size(-1)
    h = F.layer_norm(x, (C,), params["ln_1.weight"], eps=1e-5)
    x = x + multi_head_attention(
        h, params["attn.c_attn.weight"], params["attn.c_proj.weight"], n_head
    )
    h = F.layer_norm(x, (C,), params["ln_2.weight"], eps=1e-5)
    h = F.gelu(h @ params["mlp.c_fc.weight"].T, approximate={approximate!r})
    return x + h @ params["mlp.c_proj.weight"].T
"""

# Every tensor that meets the model follows its device (tests/test_chapters.py).
CHECK_DEVICES = True

WRONG_ANSWERS = [
    # bigram_loss -------------------------------------------------------------------------
    WrongAnswer(
        "bigram_loss",
        "scores the current token x instead of the next one y",
        """
def bigram_loss(logits_table, x, y):
    log_probs = F.log_softmax(logits_table[x], dim=-1)
    return -log_probs.gather(-1, x.unsqueeze(-1)).squeeze(-1).mean()
""",
    ),
    WrongAnswer(
        "bigram_loss",
        "normalises the table's columns (softmax over dim 0) instead of its rows",
        """
def bigram_loss(logits_table, x, y):
    log_probs = F.log_softmax(logits_table, dim=0)
    return -log_probs[x, y].mean()
""",
    ),
    WrongAnswer(
        "bigram_loss",
        "missing log: averages the probabilities themselves",
        """
def bigram_loss(logits_table, x, y):
    probs = F.softmax(logits_table[x], dim=-1)
    return -probs.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean()
""",
    ),
    WrongAnswer(
        "bigram_loss",
        "sums over the positions instead of averaging",
        """
def bigram_loss(logits_table, x, y):
    log_probs = F.log_softmax(logits_table[x], dim=-1)
    return -log_probs.gather(-1, y.unsqueeze(-1)).squeeze(-1).sum()
""",
    ),
    WrongAnswer(
        "bigram_loss",
        "log of softmax: underflows to log(0) = -inf for large logits",
        """
def bigram_loss(logits_table, x, y):
    log_probs = torch.log(F.softmax(logits_table[x], dim=-1))
    return -log_probs.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean()
""",
    ),
    WrongAnswer(
        "bigram_loss",
        "returns a Python float (.item()): no gradient reaches the table",
        """
def bigram_loss(logits_table, x, y):
    log_probs = F.log_softmax(logits_table[x], dim=-1)
    return torch.tensor(-log_probs.gather(-1, y.unsqueeze(-1)).mean().item())
""",
    ),
    # scaled_attention --------------------------------------------------------------------
    WrongAnswer(
        "scaled_attention",
        "no 1/sqrt(d) scale",
        """
def scaled_attention(q, k, v):
    return F.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
""",
    ),
    WrongAnswer(
        "scaled_attention",
        "softmax over the queries (dim=-2) instead of the keys",
        """
def scaled_attention(q, k, v):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    return F.softmax(scores, dim=-2) @ v
""",
    ),
    WrongAnswer(
        "scaled_attention",
        "scales by 1/d instead of 1/sqrt(d)",
        """
def scaled_attention(q, k, v):
    scores = (q @ k.transpose(-2, -1)) / q.size(-1)
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    WrongAnswer(
        "scaled_attention",
        "scales by sqrt(d_v), the values' width, instead of sqrt(d)",
        """
def scaled_attention(q, k, v):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(v.size(-1))
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    WrongAnswer(
        "scaled_attention",
        "softmax over dim=2: the keys for 3-D inputs only",
        """
def scaled_attention(q, k, v):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    return F.softmax(scores, dim=2) @ v
""",
    ),
    WrongAnswer(
        "scaled_attention",
        "k.transpose(1, 2): the last two dimensions for 3-D inputs only",
        """
def scaled_attention(q, k, v):
    scores = (q @ k.transpose(1, 2)) / math.sqrt(q.size(-1))
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    # causal_attention --------------------------------------------------------------------
    WrongAnswer(
        "causal_attention",
        "no mask: every query sees the future",
        """
def causal_attention(q, k, v):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    WrongAnswer(
        "causal_attention",
        "mask applied after the softmax: weights zeroed, rows not renormalised",
        """
def causal_attention(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    weights = F.softmax(scores, dim=-1)
    return weights.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), 0.0) @ v
""",
    ),
    WrongAnswer(
        "causal_attention",
        "off by one: the diagonal is masked too (a token cannot see itself)",
        """
def causal_attention(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(0), float("-inf"))
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    WrongAnswer(
        "causal_attention",
        "off by one the other way: each query also sees the next token",
        """
def causal_attention(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(2), float("-inf"))
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    WrongAnswer(
        "causal_attention",
        "no 1/sqrt(d) scale",
        """
def causal_attention(q, k, v):
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    WrongAnswer(
        "causal_attention",
        "masks with 0 instead of -inf (a score of 0 still gets weight)",
        """
def causal_attention(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), 0.0)
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    WrongAnswer(
        "causal_attention",
        "scales by sqrt(d_v), the values' width, instead of sqrt(d)",
        """
def causal_attention(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(v.size(-1))
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    WrongAnswer(
        "causal_attention",
        "scales by sqrt(T), q.size(-2), instead of sqrt(d)",
        """
def causal_attention(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(T)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    WrongAnswer(
        "causal_attention",
        "scores k qᵀ instead of q kᵀ: each key scores the queries",
        """
def causal_attention(q, k, v):
    T = q.size(-2)
    scores = (k @ q.transpose(-2, -1)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    WrongAnswer(
        "causal_attention",
        "masks the past instead of the future (tril(-1))",
        """
def causal_attention(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).tril(-1), float("-inf"))
    return F.softmax(scores, dim=-1) @ v
""",
    ),
    # multi_head_attention ----------------------------------------------------------------
    WrongAnswer(
        "multi_head_attention",
        "reshapes to (B, nh, T, hs) without transposing: heads mix tokens and features",
        _SPLIT_HEADS
        + """
    q, k, v = (t.reshape(B, n_head, T, hs) for t in (q, k, v))
    y = causal_attention(q, k, v).reshape(B, T, C)
    return y @ c_proj_weight.T
""",
    ),
    WrongAnswer(
        "multi_head_attention",
        "splits the heads correctly but merges them without transposing back",
        _SPLIT_HEADS
        + """
    q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))
    y = causal_attention(q, k, v).reshape(B, T, C)
    return y @ c_proj_weight.T
""",
    ),
    WrongAnswer(
        "multi_head_attention",
        "forgets the output projection c_proj",
        _SPLIT_HEADS
        + """
    q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))
    return causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
""",
    ),
    WrongAnswer(
        "multi_head_attention",
        "ignores n_head: one head of size C",
        _SPLIT_HEADS
        + """
    return causal_attention(q, k, v) @ c_proj_weight.T
""",
    ),
    WrongAnswer(
        "multi_head_attention",
        "views (B, T, hs, nh): head size and head count swapped",
        _SPLIT_HEADS
        + """
    q, k, v = (t.view(B, T, hs, n_head).transpose(1, 2) for t in (q, k, v))
    y = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
    return y @ c_proj_weight.T
""",
    ),
    WrongAnswer(
        "multi_head_attention",
        "takes c_attn's output in the order k, q, v",
        """
def multi_head_attention(x, c_attn_weight, c_proj_weight, n_head):
    B, T, C = x.shape
    hs = C // n_head
    k, q, v = (x @ c_attn_weight.T).split(C, dim=-1)
    q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))
    y = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
    return y @ c_proj_weight.T
""",
    ),
    # block_forward -----------------------------------------------------------------------
    WrongAnswer(
        "block_forward",
        "post-LN: LayerNorm after each residual add (the original Transformer)",
        """
def block_forward(x, params, n_head):
    C = x.size(-1)
    attn = multi_head_attention(
        x, params["attn.c_attn.weight"], params["attn.c_proj.weight"], n_head
    )
    x = F.layer_norm(x + attn, (C,), params["ln_1.weight"], eps=1e-5)
    h = F.gelu(x @ params["mlp.c_fc.weight"].T, approximate="tanh")
    return F.layer_norm(x + h @ params["mlp.c_proj.weight"].T, (C,), params["ln_2.weight"],
                        eps=1e-5)
""",
    ),
    WrongAnswer(
        "block_forward",
        "no residual around attention",
        """
def block_forward(x, params, n_head):
    C = x.size(-1)
    h = F.layer_norm(x, (C,), params["ln_1.weight"], eps=1e-5)
    x = multi_head_attention(
        h, params["attn.c_attn.weight"], params["attn.c_proj.weight"], n_head
    )
    h = F.layer_norm(x, (C,), params["ln_2.weight"], eps=1e-5)
    h = F.gelu(h @ params["mlp.c_fc.weight"].T, approximate="tanh")
    return x + h @ params["mlp.c_proj.weight"].T
""",
    ),
    WrongAnswer(
        "block_forward",
        "no residual around the MLP",
        """
def block_forward(x, params, n_head):
    C = x.size(-1)
    h = F.layer_norm(x, (C,), params["ln_1.weight"], eps=1e-5)
    x = x + multi_head_attention(
        h, params["attn.c_attn.weight"], params["attn.c_proj.weight"], n_head
    )
    h = F.layer_norm(x, (C,), params["ln_2.weight"], eps=1e-5)
    h = F.gelu(h @ params["mlp.c_fc.weight"].T, approximate="tanh")
    return h @ params["mlp.c_proj.weight"].T
""",
    ),
    WrongAnswer(
        "block_forward",
        "exact (erf) GELU instead of GPT-2's tanh approximation",
        _BLOCK.format(approximate="none"),
    ),
    WrongAnswer(
        "block_forward",
        "ReLU instead of GELU in the MLP",
        _BLOCK.format(approximate="tanh").replace(
            "F.gelu(h @ params[\"mlp.c_fc.weight\"].T, approximate='tanh')",
            'F.relu(h @ params["mlp.c_fc.weight"].T)',
        ),
    ),
    WrongAnswer(
        "block_forward",
        "parallel block: the MLP reads a LayerNorm of x from before attention, not of x + attn",
        """
def block_forward(x, params, n_head):
    C = x.size(-1)
    h = F.layer_norm(x, (C,), params["ln_1.weight"], eps=1e-5)
    attn = multi_head_attention(
        h, params["attn.c_attn.weight"], params["attn.c_proj.weight"], n_head
    )
    h = F.layer_norm(x, (C,), params["ln_2.weight"], eps=1e-5)
    h = F.gelu(h @ params["mlp.c_fc.weight"].T, approximate="tanh")
    return x + attn + h @ params["mlp.c_proj.weight"].T
""",
    ),
    WrongAnswer(
        "block_forward",
        "ln_1's weight for both LayerNorms",
        _BLOCK.format(approximate="tanh").replace('params["ln_2.weight"]', 'params["ln_1.weight"]'),
    ),
    WrongAnswer(
        "block_forward",
        "adds the residuals in place (x += ...), changing the caller's tensor",
        """
def block_forward(x, params, n_head):
    C = x.size(-1)
    h = F.layer_norm(x, (C,), params["ln_1.weight"], eps=1e-5)
    x += multi_head_attention(
        h, params["attn.c_attn.weight"], params["attn.c_proj.weight"], n_head
    )
    h = F.layer_norm(x, (C,), params["ln_2.weight"], eps=1e-5)
    h = F.gelu(h @ params["mlp.c_fc.weight"].T, approximate="tanh")
    x += h @ params["mlp.c_proj.weight"].T
    return x
""",
    ),
]
