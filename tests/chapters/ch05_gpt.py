"""Chapter 05: plausible wrong answers for the GPT exercises (the model itself, parameter
count, the language-model loss, one training step, top-k filtering, attention with a KV
cache), and the library's reference of each, which must pass the same graded test cells.

Each wrong answer replaces the whole solution cell. The KV-cache exercise has two graded
cells (the attention itself, and a GPT decoding with it): every wrong answer must fail both.
"""

from autograde.probe import ReferenceAnswer, WrongAnswer

# The chapter's GPT with one part changed: the other parts as in the solution.
_GPT = """
import math
import torch
import torch.nn as nn
import torch.nn.functional as F
from course.torch.model import Block

class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        C = config.n_embd
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, C),
            wpe=nn.Embedding(config.block_size, C),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(C, eps=config.layer_norm_eps, bias=config.bias),
        ))
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        {tie}
        for name, param in self.named_parameters():
            {init}

    def forward(self, idx, targets=None):
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        {forward}
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head({final})
        if targets is None:
            return logits, None
        V = logits.size(-1)
        return logits, F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), {ignore})

    def num_params(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n
"""
_GPT_RIGHT = dict(
    tie="self.lm_head.weight = self.transformer.wte.weight",
    init="""if name.endswith("c_proj.weight"):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * config.n_layer))
            elif param.dim() == 2:
                nn.init.normal_(param, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(param)""",
    forward="x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))",
    final="self.transformer.ln_f(x)",
    ignore="ignore_index=-1",
)


def _gpt(**wrong):
    return _GPT.format(**{**_GPT_RIGHT, **wrong})


# One training step with one part changed: the other parts as in the solution.
_STEP = """
import torch
from course.config import lr_at

def train_step(model, optimizer, x, y, step, train_cfg):
    {lr}
    _, loss = model(x, targets=y)
    loss.backward()
    {clip}
    optimizer.step()
    {after}
    return loss.item()
"""
_CLIP = """if train_cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)"""
_STEP_RIGHT = dict(
    lr="""for group in optimizer.param_groups:
        group["lr"] = lr_at(step, train_cfg)""",
    clip=_CLIP,
    after="optimizer.zero_grad(set_to_none=True)",
)


def _step(**wrong):
    return _STEP.format(**{**_STEP_RIGHT, **wrong})


_KV_CACHE_REFERENCE = """
from course.torch.model import KVCache, manual_attention

def attend_with_cache(q, k, v, k_cache, v_cache):
    B, nh, L, hs = k_cache.shape
    T = k.size(2)
    cache = KVCache(k.new_zeros(B, nh, L + T, hs), v.new_zeros(B, nh, L + T, hs))
    cache.append(k_cache, v_cache)
    k_all, v_all = cache.append(k, v)
    return manual_attention(q, k_all, v_all), k_all, v_all
"""

REFERENCE_ANSWERS = [
    ReferenceAnswer(
        "gpt_model",
        "course.torch.model.GPT itself",
        """
import course.torch.model

GPT = course.torch.model.GPT
""",
    ),
    ReferenceAnswer(
        "train_step",
        "course.torch.train.train_step, with one micro-batch and lr_at's rate",
        """
from course.config import lr_at
from course.torch.train import train_step as _library_step

def train_step(model, optimizer, x, y, step, train_cfg):
    return _library_step(model, optimizer, lambda: (x, y), lr_at(step, train_cfg), train_cfg)
""",
    ),
    ReferenceAnswer(
        "count_gpt_params",
        "course.torch.GPT.num_params, built on the meta device (no memory)",
        """
import torch
import course.torch

def count_gpt_params(config):
    with torch.device("meta"):
        return course.torch.GPT(config).num_params(non_embedding=False)
""",
    ),
    ReferenceAnswer(
        "lm_loss",
        "GPT.forward's convention: targets shifted by one, -1 where there is none",
        """
import torch
import torch.nn.functional as F

def lm_loss(logits, idx):
    targets = torch.cat([idx[:, 1:], torch.full_like(idx[:, :1], -1)], dim=1)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
""",
    ),
    ReferenceAnswer(
        "top_k_filter",
        "course.torch.sampling.filter_logits",
        """
from course.torch.sampling import filter_logits

def top_k_filter(logits, k):
    return filter_logits(logits, top_k=k)
""",
    ),
    ReferenceAnswer(
        "attend_with_cache",
        "course.torch.manual_attention over the concatenated keys and values",
        """
import torch
from course.torch import manual_attention

def attend_with_cache(q, k, v, k_cache, v_cache):
    k_all, v_all = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
    return manual_attention(q, k_all, v_all), k_all, v_all
""",
    ),
    ReferenceAnswer(
        "attend_with_cache",
        "course.torch.KVCache.append, then manual_attention",
        _KV_CACHE_REFERENCE,
    ),
]

# A parameter count with one part changed: the other parts as in the solution.
_COUNT = """
def count_gpt_params(config):
    C, b, L = config.n_embd, int(config.bias), config.n_layer
    embeddings = {embeddings}
    layer_norm = {layer_norm}
    attention = (C * 3 * C + b * 3 * C) + (C * C + b * C)
    mlp = {mlp}
    return embeddings + L * (2 * layer_norm + attention + mlp) + layer_norm {head}
"""
_RIGHT = dict(
    embeddings="config.vocab_size * C + config.block_size * C",
    layer_norm="C + b * C",
    mlp="(C * 4 * C + b * 4 * C) + (4 * C * C + b * C)",
    head="",
)


def _count(**wrong):
    return _COUNT.format(**{**_RIGHT, **wrong})


# Attention over keys and values, with a chosen mask: shared by the KV-cache wrong answers.
_ATTEND = """
import math
import torch

def _attend(q, k, v, visible):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v

def _shifted(T, S):
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
"""

# Every tensor that meets the model follows its device (tests/test_chapters.py).
CHECK_DEVICES = True

WRONG_ANSWERS = [
    # gpt_model ---------------------------------------------------------------------------
    WrongAnswer(
        "gpt_model",
        "head not tied: lm_head keeps a weight of its own",
        _gpt(tie="pass"),
    ),
    WrongAnswer(
        "gpt_model",
        "head tied to a copy of wte's weight, not to wte's weight itself",
        _gpt(tie="self.lm_head.weight = nn.Parameter(self.transformer.wte.weight.clone())"),
    ),
    WrongAnswer(
        "gpt_model",
        "no residual scaling: c_proj weights with std 0.02 like the others",
        _gpt(
            init="""if param.dim() == 2:
                nn.init.normal_(param, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(param)"""
        ),
    ),
    WrongAnswer(
        "gpt_model",
        "residual scaling by 1/sqrt(n_layer) instead of 1/sqrt(2 n_layer)",
        _gpt(init=_GPT_RIGHT["init"].replace("2 * config.n_layer", "config.n_layer")),
    ),
    WrongAnswer(
        "gpt_model",
        "PyTorch's default initialisation (no GPT-2 init at all)",
        _gpt(init="pass"),
    ),
    WrongAnswer(
        "gpt_model",
        "biases left at PyTorch's default (not zeroed)",
        _gpt(init=_GPT_RIGHT["init"].replace("nn.init.zeros_(param)", "pass")),
    ),
    WrongAnswer(
        "gpt_model",
        "final LayerNorm built but not applied before the head",
        _gpt(final="x"),
    ),
    WrongAnswer(
        "gpt_model",
        "position embeddings not added",
        _gpt(forward="x = self.transformer.drop(self.transformer.wte(idx))"),
    ),
    WrongAnswer(
        "gpt_model",
        "no dropout after the embeddings",
        _gpt(forward="x = self.transformer.wte(idx) + self.transformer.wpe(pos)"),
    ),
    WrongAnswer(
        "gpt_model",
        "loss without ignore_index=-1: positions marked -1 are not skipped",
        _gpt(ignore="ignore_index=-100"),
    ),
    # train_step --------------------------------------------------------------------------
    WrongAnswer(
        "train_step",
        "no gradient clipping",
        _step(clip="pass"),
    ),
    WrongAnswer(
        "train_step",
        "clips after optimizer.step(): the step used the unclipped gradients",
        _step(clip="pass", after=_CLIP + "\n    optimizer.zero_grad(set_to_none=True)"),
    ),
    WrongAnswer(
        "train_step",
        "learning rate not scheduled: the optimizer's constant learning_rate",
        _step(lr="pass"),
    ),
    WrongAnswer(
        "train_step",
        "learning rate set on the first parameter group only (the matrices)",
        _step(lr='optimizer.param_groups[0]["lr"] = lr_at(step, train_cfg)'),
    ),
    WrongAnswer(
        "train_step",
        "learning rate of the next step: lr_at(step + 1)",
        _step(lr=_STEP_RIGHT["lr"].replace("lr_at(step,", "lr_at(step + 1,")),
    ),
    WrongAnswer(
        "train_step",
        "zero_grad missing: gradients accumulate from one step to the next",
        _step(after="pass"),
    ),
    WrongAnswer(
        "train_step",
        "clips even when grad_clip is 0 (which means no clipping), zeroing every gradient",
        _step(clip="torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)"),
    ),
    # count_gpt_params --------------------------------------------------------------------
    WrongAnswer(
        "count_gpt_params",
        "counts lm_head separately (as if it were not tied to wte)",
        _count(head="+ config.vocab_size * C"),
    ),
    WrongAnswer(
        "count_gpt_params",
        "forgets the position embedding",
        _count(embeddings="config.vocab_size * C"),
    ),
    WrongAnswer(
        "count_gpt_params",
        "MLP 2x wide instead of 4x",
        _count(mlp="(C * 2 * C + b * 2 * C) + (2 * C * C + b * C)"),
    ),
    WrongAnswer(
        "count_gpt_params",
        "forgets the LayerNorms",
        _count(layer_norm="0"),
    ),
    WrongAnswer(
        "count_gpt_params",
        "LayerNorm always has a bias (ignores config.bias)",
        _count(layer_norm="2 * C"),
    ),
    WrongAnswer(
        "count_gpt_params",
        "ignores biases in the Linear layers",
        """
def count_gpt_params(config):
    C, b = config.n_embd, int(config.bias)
    embeddings = config.vocab_size * C + config.block_size * C
    layer_norm = C + b * C
    block = 2 * layer_norm + 3 * C * C + C * C + 4 * C * C + 4 * C * C
    return embeddings + config.n_layer * block + layer_norm
""",
    ),
    # lm_loss -----------------------------------------------------------------------------
    WrongAnswer(
        "lm_loss",
        "no shift: position t scored against idx[:, t]",
        """
import torch.nn.functional as F

def lm_loss(logits, idx):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), idx.reshape(-1))
""",
    ),
    WrongAnswer(
        "lm_loss",
        "shifted the wrong way: logits[:, 1:] against idx[:, :-1]",
        """
import torch.nn.functional as F

def lm_loss(logits, idx):
    V = logits.size(-1)
    return F.cross_entropy(logits[:, 1:].reshape(-1, V), idx[:, :-1].reshape(-1))
""",
    ),
    WrongAnswer(
        "lm_loss",
        "sums the losses instead of averaging them",
        """
import torch.nn.functional as F

def lm_loss(logits, idx):
    V = logits.size(-1)
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1),
                           reduction="sum")
""",
    ),
    WrongAnswer(
        "lm_loss",
        "averages per sequence, then sums over the batch",
        """
import torch.nn.functional as F

def lm_loss(logits, idx):
    per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2), idx[:, 1:], reduction="none")
    return per_token.mean(dim=1).sum()
""",
    ),
    WrongAnswer(
        "lm_loss",
        "drops the first position instead of the last: logits[:, 1:] against idx[:, 1:]",
        """
import torch.nn.functional as F

def lm_loss(logits, idx):
    V = logits.size(-1)
    return F.cross_entropy(logits[:, 1:].reshape(-1, V), idx[:, 1:].reshape(-1))
""",
    ),
    WrongAnswer(
        "lm_loss",
        "negative log of the softmax's largest probability, not of the target's",
        """
def lm_loss(logits, idx):
    return -logits[:, :-1].log_softmax(-1).max(dim=-1).values.mean()
""",
    ),
    # top_k_filter ------------------------------------------------------------------------
    WrongAnswer(
        "top_k_filter",
        "sets the removed entries to 0 instead of -inf",
        """
import torch

def top_k_filter(logits, k):
    if k >= logits.size(-1):
        return logits.clone()
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)
""",
    ),
    WrongAnswer(
        "top_k_filter",
        "off by one: keeps k + 1 entries",
        """
import torch

def top_k_filter(logits, k):
    if k >= logits.size(-1):
        return logits.clone()
    kth = torch.topk(logits, k + 1, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))
""",
    ),
    WrongAnswer(
        "top_k_filter",
        "one threshold for the whole batch, not one per row",
        """
import torch

def top_k_filter(logits, k):
    if k >= logits.size(-1):
        return logits.clone()
    kth = torch.topk(logits.flatten(), k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))
""",
    ),
    WrongAnswer(
        "top_k_filter",
        "returns the k largest values themselves (sorted, shape (..., k))",
        """
import torch

def top_k_filter(logits, k):
    return torch.topk(logits, min(k, logits.size(-1)), dim=-1).values
""",
    ),
    WrongAnswer(
        "top_k_filter",
        "filters in place, changing the caller's logits",
        """
import torch

def top_k_filter(logits, k):
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill_(logits < kth, float("-inf"))
""",
    ),
    # attend_with_cache -------------------------------------------------------------------
    WrongAnswer(
        "attend_with_cache",
        "attends before appending: the new tokens see only the old cache",
        _ATTEND
        + """
def attend_with_cache(q, k, v, k_cache, v_cache):
    y = _attend(q, k_cache, v_cache, None)
    return y, torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
""",
    ),
    WrongAnswer(
        "attend_with_cache",
        "the usual top-left triangle: a single new query only sees key 0",
        _ATTEND
        + """
def attend_with_cache(q, k, v, k_cache, v_cache):
    k_all, v_all = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
    T, S = q.size(2), k_all.size(2)
    visible = torch.ones(T, S, dtype=torch.bool).tril()
    return _attend(q, k_all, v_all, visible), k_all, v_all
""",
    ),
    WrongAnswer(
        "attend_with_cache",
        "no mask at all: several new tokens see each other's future",
        _ATTEND
        + """
def attend_with_cache(q, k, v, k_cache, v_cache):
    k_all, v_all = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
    return _attend(q, k_all, v_all, None), k_all, v_all
""",
    ),
    WrongAnswer(
        "attend_with_cache",
        "masks the prompt only: no mask for several new tokens once something is cached",
        _ATTEND
        + """
def attend_with_cache(q, k, v, k_cache, v_cache):
    k_all, v_all = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
    T, S = q.size(2), k_all.size(2)
    visible = _shifted(T, S) if k_cache.size(2) == 0 else None
    return _attend(q, k_all, v_all, visible), k_all, v_all
""",
    ),
    WrongAnswer(
        "attend_with_cache",
        "overwrites the cache: returns only the new keys and values",
        _ATTEND
        + """
def attend_with_cache(q, k, v, k_cache, v_cache):
    k_all, v_all = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
    T, S = q.size(2), k_all.size(2)
    return _attend(q, k_all, v_all, _shifted(T, S)), k, v
""",
    ),
    WrongAnswer(
        "attend_with_cache",
        "shifts the mask by the cache length for one new token only: a chunk after a cache "
        "gets the top-left triangle",
        _ATTEND
        + """
def attend_with_cache(q, k, v, k_cache, v_cache):
    k_all, v_all = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
    T, S, L = q.size(2), k_all.size(2), k_cache.size(2)
    visible = torch.ones(T, S, dtype=torch.bool).tril(diagonal=L if T == 1 else 0)
    return _attend(q, k_all, v_all, visible), k_all, v_all
""",
    ),
    WrongAnswer(
        "attend_with_cache",
        "mask offset one short (diagonal S - T - 1): a new query does not see its own key",
        _ATTEND
        + """
def attend_with_cache(q, k, v, k_cache, v_cache):
    k_all, v_all = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
    T, S = q.size(2), k_all.size(2)
    visible = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T - 1)
    return _attend(q, k_all, v_all, visible), k_all, v_all
""",
    ),
    WrongAnswer(
        "attend_with_cache",
        "cache not updated: attends over everything but returns the cache it was given",
        _ATTEND
        + """
def attend_with_cache(q, k, v, k_cache, v_cache):
    k_all, v_all = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
    T, S = q.size(2), k_all.size(2)
    return _attend(q, k_all, v_all, _shifted(T, S)), k_cache, v_cache
""",
    ),
    WrongAnswer(
        "attend_with_cache",
        "cache length off by one: drops the oldest cached key and value when appending",
        _ATTEND
        + """
def attend_with_cache(q, k, v, k_cache, v_cache):
    k_all = torch.cat([k_cache[:, :, 1:], k], dim=2)
    v_all = torch.cat([v_cache[:, :, 1:], v], dim=2)
    T, S = q.size(2), k_all.size(2)
    return _attend(q, k_all, v_all, _shifted(T, S)), k_all, v_all
""",
    ),
    WrongAnswer(
        "attend_with_cache",
        "puts the new keys and values in front of the cached ones",
        _ATTEND
        + """
def attend_with_cache(q, k, v, k_cache, v_cache):
    k_all, v_all = torch.cat([k, k_cache], dim=2), torch.cat([v, v_cache], dim=2)
    T, S = q.size(2), k_all.size(2)
    return _attend(q, k_all, v_all, _shifted(T, S)), k_all, v_all
""",
    ),
]
