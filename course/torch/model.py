"""The GPT in PyTorch, read top to bottom: attention, MLP, block, model.

GPT-2's architecture and parameter names (transformer.wte, transformer.h.0.attn.c_attn,
..., lm_head), so a Hugging Face GPT-2 state dict loads with `load_hf_state_dict` and the
Keras mirror in `course.tf` converts weight for weight. Shapes: B batch, T new tokens,
S tokens attended to (T, or cached + T while generating), C = n_embd, nh heads of hs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from course.config import GPTConfig

# --------------------------------------------------------------------------------------
# Attention as a function: the teaching version (chapter 04) and its mask
# --------------------------------------------------------------------------------------


def causal_mask(T: int, S: int, device=None) -> torch.Tensor:
    """(T, S) bool, True where query t may look at key s: the queries are the last T of S.

    Query t sits at absolute position S - T + t and sees keys 0 .. S - T + t. With S == T
    this is the usual lower triangle; with a KV cache (S > T) the cached keys are all seen.
    """
    rows = torch.arange(T, device=device)[:, None] + (S - T)
    return torch.arange(S, device=device)[None, :] <= rows


def manual_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    return_weights: bool = False,
    dropout: float = 0.0,
):
    """softmax(q kᵀ / √hs + causal mask) v, written out. q (..., T, hs), k and v (..., S, hs).

    Returns y (..., T, hs), and the attention weights (..., T, S) if `return_weights`.
    The mask sets the logits of future keys to -inf *before* the softmax, so each row of
    weights sums to 1 over the keys it may see. `dropout` drops weights (training only).
    """
    T, S, hs = q.size(-2), k.size(-2), q.size(-1)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (..., T, S)
    scores = scores.masked_fill(~causal_mask(T, S, q.device), float("-inf"))
    weights = F.softmax(scores, dim=-1)
    y = (F.dropout(weights, dropout) if dropout else weights) @ v  # (..., T, hs)
    return (y, weights) if return_weights else y


# --------------------------------------------------------------------------------------
# KV cache: the keys and values of every token already seen, one pair per layer
# --------------------------------------------------------------------------------------


@dataclass
class KVCache:
    """Keys and values of one layer, preallocated for the whole context: (B, nh, block, hs).

    `length` tokens are filled. `CausalSelfAttention` writes the new tokens' keys and values
    at length .. length + T and attends to everything up to there.
    """

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.k.size(2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) after the cached ones; return all keys and values so far."""
        start, end = self.length, self.length + k.size(2)
        if end > self.capacity:
            raise ValueError(
                f"KV cache full: {start} cached + {k.size(2)} new tokens > block_size "
                f"{self.capacity}; start a new cache"
            )
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


# --------------------------------------------------------------------------------------
# The modules, small to large
# --------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused q/k/v projection (GPT-2's c_attn)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.attn_impl, self.dropout = config.attn_impl, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.keep_weights = False  # set by GPT.attention_maps: store the (B, nh, T, S) map
        self.weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, nh, S, hs), S = cached + T
        y = self._attend(q, k, v)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side: (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _attend(self, q, k, v) -> torch.Tensor:
        dropout = self.dropout if self.training else 0.0
        if self.attn_impl == "manual" or self.keep_weights:
            y, weights = manual_attention(q, k, v, return_weights=True, dropout=dropout)
            if self.keep_weights:
                self.weights = weights.detach()
            return y
        if self.attn_impl == "triton":
            if dropout:  # the kernels have none: training would silently differ from sdpa's
                raise ValueError(
                    f"attn_impl='triton' has no attention dropout (this model trains with "
                    f"dropout={dropout}): set dropout=0.0, or train with attn_impl='sdpa'"
                )
            return _triton_attention(q, k, v)
        T, S = q.size(-2), k.size(-2)
        if T == S:  # training, or the first pass over a prompt
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        if T == 1:  # one new token sees every cached one: no mask needed
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        mask = causal_mask(T, S, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


def _triton_attention(q, k, v) -> torch.Tensor:
    from course import runtime  # Triton and kernels/ load only when attn_impl="triton" runs

    try:
        attention = runtime.import_kernels("attention")  # checks it is Twin GPT's kernels/
    except ModuleNotFoundError as err:
        if err.name != "kernels.attention":
            raise
        raise NotImplementedError(
            "attn_impl='triton' needs kernels.attention.flash_attention, which arrives with "
            "chapter 07 (it is not in kernels/ yet); use attn_impl='sdpa' or 'manual'"
        ) from None
    return attention.flash_attention(q, k, v, causal=True)  # with a cache: T queries, S keys


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU (tanh approximation, GPT-2's) -> C."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        eps = config.layer_norm_eps
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token + learned position embeddings, n_layer blocks, a final LayerNorm, and a head
    whose weight is the token embedding's (weight tying)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a course.config.GPTConfig, got {type(config)}")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # one matrix, two uses
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 n_layer), so the residual
        # stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, counted once (the tied head is wte). Without positions by default."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def new_cache(self, batch_size: int) -> list[KVCache]:
        """An empty KV cache (one per layer) for `generate` or a manual decoding loop."""
        c = self.config
        shape = (batch_size, c.n_head, c.block_size, c.head_size)
        weight = self.lm_head.weight
        return [KVCache(weight.new_zeros(shape), weight.new_zeros(shape)) for _ in range(c.n_layer)]

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: list[KVCache] | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, vocab), and the mean cross-entropy against
        `targets` (B, T) if given (-1 marks a position to ignore).

        With a `cache` (from `new_cache`), idx holds only the new tokens: their positions
        continue after the cached ones. `last_only` returns logits for the last position
        only, (B, 1, vocab): all that sampling needs.
        """
        start = cache[0].length if cache else 0
        B, T = self._check_input(idx, targets, start)
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache[i] if cache else None)
        x = self.transformer.ln_f(x)  # (B, T, C)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        logits = self.lm_head(x)  # (B, T, vocab)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
        )
        return logits, loss

    def _check_input(self, idx, targets, start: int) -> tuple[int, int]:
        """Clear errors for the usual mistakes, before they become an index error deep inside."""
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(
                f"idx must hold integer token ids (torch.long), got dtype {idx.dtype}; "
                "tokens are indices into the embedding table, not values"
            )
        if idx.dim() != 2:
            raise ValueError(
                f"idx must have shape (B, T), got {tuple(idx.shape)}; add a batch "
                "dimension with idx[None] for a single sequence"
            )
        _check_device("idx", idx, self.transformer.wte.weight.device)
        B, T = idx.shape
        if T == 0:
            raise ValueError("idx is empty (T = 0): give the model at least one token")
        if start + T > self.config.block_size:
            where = f"{start} cached + {T} new tokens" if start else f"sequence length {T}"
            raise ValueError(
                f"{where} exceeds block_size {self.config.block_size}; crop the context to "
                f"its last {self.config.block_size} tokens"
            )
        # The ids' range is data: torch.export (and the ONNX exporter built on it) cannot
        # branch on it, so the check is left out of an exported graph; the runtime's wrapper
        # (course.export.ExportedModel) checks the ids before they reach the exported file.
        if not torch.compiler.is_exporting():
            low, high = (int(v) for v in torch.aminmax(idx))  # one pass, one sync
            if low < 0 or high >= self.config.vocab_size:
                bad = low if low < 0 else high
                raise ValueError(
                    f"token id {bad} is outside the vocabulary 0..{self.config.vocab_size - 1} "
                    f"(vocab_size {self.config.vocab_size})"
                )
        if targets is not None:
            if not isinstance(targets, torch.Tensor) or targets.shape != idx.shape:
                shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else targets
                raise ValueError(f"targets must have the shape of idx {(B, T)}, got {shape}")
            if targets.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"targets must hold token ids (torch.long), got {targets.dtype}")
            _check_device("targets", targets, idx.device)
        return B, T

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> torch.Tensor:
        """Every layer's attention weights for idx (1, T): (n_layer, n_head, T, T)."""
        blocks = list(self.transformer.h)
        for block in blocks:
            block.attn.keep_weights = True
        try:
            self(idx)
            return torch.stack([block.attn.weights[0] for block in blocks])
        finally:
            for block in blocks:
                block.attn.keep_weights, block.attn.weights = False, None


def _check_device(name: str, tensor: torch.Tensor, device: torch.device) -> None:
    """A clear error for a tensor on another device than the model's (one comparison of two
    devices: cheap, and a constant to torch.compile)."""
    if tensor.device != device:
        raise ValueError(
            f"{name} is on {tensor.device} but the model is on {device}: create it there "
            f"(device=...) or move it with {name}.to({str(device)!r})"
        )


# --------------------------------------------------------------------------------------
# Hugging Face GPT-2 weights
# --------------------------------------------------------------------------------------

# HF's GPT-2 stores these as Conv1D weights (in, out): nn.Linear wants (out, in).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def config_from_hf(hf_config, **changes) -> GPTConfig:
    """The GPTConfig of a `transformers.GPT2Config` (biases on, as GPT-2 has them)."""
    values = dict(
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
        block_size=hf_config.n_positions,
        vocab_size=hf_config.vocab_size,
        bias=True,
        layer_norm_eps=hf_config.layer_norm_epsilon,
        dropout=0.0,
    )
    return GPTConfig(**{**values, **changes})


def load_hf_state_dict(model: GPT, state_dict: dict[str, torch.Tensor]) -> GPT:
    """Copy a `GPT2LMHeadModel` state dict into `model` (same names; Conv1D transposed)."""
    ours = model.state_dict()
    theirs = {
        k: v
        for k, v in state_dict.items()
        if not k.endswith((".attn.bias", ".attn.masked_bias"))  # old HF mask buffers
    }
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    if missing or extra:
        raise ValueError(
            f"state dict does not fit this GPT: missing {missing[:5]}, unexpected {extra[:5]} "
            "(is the config's bias=True, as GPT-2's is?)"
        )
    with torch.no_grad():
        for name, value in theirs.items():
            value = value.t() if name.endswith(_CONV1D) else value
            if value.shape != ours[name].shape:
                raise ValueError(
                    f"{name}: shape {tuple(value.shape)} does not fit {tuple(ours[name].shape)}"
                )
            ours[name].copy_(value)
    return model
