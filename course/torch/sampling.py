"""Text from a trained GPT: temperature, top-k, top-p, stop tokens, and a KV cache.

Without the cache every new token re-runs the model over the whole context: O(T) work per
token, O(T²) for T tokens. With it, the keys and values of earlier tokens are kept, and
each step runs the model over one token. Both give the same logits, so greedy decoding
(temperature 0) gives the same text with or without it.

Past block_size the context window slides, so every token's position changes each step
and nothing cached stays valid: `generate` then re-runs the window (exact, and as slow as
no cache). Give the model a block_size above prompt + new tokens to keep the speed-up.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from course.sampling import check_sampling_args
from course.torch.devices import model_device


def filter_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """logits (B, V) with every token outside the top-k / top-p (nucleus) set to -inf.

    top-k keeps the k most likely tokens. top-p keeps the smallest set of most likely
    tokens whose probabilities add up to at least p (always at least one token).
    """
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = before >= top_p  # the first token always stays (before = 0)
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token (B, 1) from the last position's logits (B, V); temperature 0 = argmax."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = F.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Iterable[int] = (),
    use_cache: bool = True,
    seed: int | None = None,
) -> torch.Tensor:
    """idx (B, T) followed by up to `max_new_tokens` sampled tokens: (B, T + n).

    Stops early once every row has produced one of `stop_tokens` (rows that stopped are
    padded with their stop token). `seed` makes sampling repeatable. The model is put in
    eval mode for the call and restored afterwards. A prompt on another device is moved to
    the model's, where the result is too.
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must be a (B, T) tensor of token ids, got {shape}")
    idx = idx.to(model_device(model))
    stops = torch.tensor(sorted({int(t) for t in stop_tokens}), dtype=idx.dtype, device=idx.device)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=idx.device).manual_seed(seed)
    block = model.config.block_size
    was_training = model.training
    model.eval()
    try:
        out = idx
        cache = model.new_cache(idx.size(0)) if use_cache else None
        fresh = idx[:, -block:]  # the tokens the model has not seen yet
        finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            if cache is not None and cache[0].length + fresh.size(1) <= block:
                logits, _ = model(fresh, cache=cache, last_only=True)
            else:
                cache = None  # the window slides from here on: nothing cached stays valid
                logits, _ = model(out[:, -block:], last_only=True)
            token = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
            if len(stops):
                token = torch.where(finished[:, None], stops[0], token)
                finished |= torch.isin(token[:, 0], stops)
            out = torch.cat([out, token], dim=1)
            fresh = token
            if len(stops) and bool(finished.all()):
                break
        return out
    finally:
        model.train(was_training)
