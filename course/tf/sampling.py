"""Text from the Keras GPT, with a KV cache that runs inside `tf.function`.

The mirror of `course.torch.sampling`, with one TensorFlow twist: a traced function is
retraced for every new input shape, so the cache has a fixed shape (n_layer, 2, B, nh,
block_size, hs) and the position of the next token is a tensor, not a Python int. Then
one trace of `decode` serves every step. The prompt is read by `prefill`, traced once per
batch size (its length is a dynamic dimension). Past block_size the window slides, every
position changes, and `generate` re-runs the whole window (exact, as slow as no cache).

Sampling (temperature, top-k, top-p) happens in numpy on the last position's logits: it
is cheap, and the same seed gives the same text whether the cache is used or not.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from course import runtime
from course.sampling import check_sampling_args

tf = runtime.import_tensorflow()


def filter_logits(logits: np.ndarray, top_k: int | None = None, top_p: float | None = None):
    """logits (B, V) with every token outside the top-k / top-p (nucleus) set to -inf."""
    logits = np.array(logits, dtype=np.float64)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits[logits < kth] = -np.inf
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        ranked = np.take_along_axis(logits, order, axis=-1)
        probs = np.exp(ranked - ranked[:, :1])
        probs /= probs.sum(axis=-1, keepdims=True)
        before = np.cumsum(probs, axis=-1) - probs  # mass ranked above each token
        drop = np.zeros_like(logits, dtype=bool)
        np.put_along_axis(drop, order, before >= top_p, axis=-1)
        logits[drop] = -np.inf
    return logits


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None) -> np.ndarray:
    """The next token (B, 1) from logits (B, V); temperature 0 = argmax."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return logits.argmax(axis=-1)[:, None]
    rng = rng if rng is not None else np.random.default_rng()
    filtered = filter_logits(logits / temperature, top_k, top_p)
    probs = np.exp(filtered - filtered.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.array([[rng.choice(len(p), p=p)] for p in probs])


def _compiled(model, batch_size: int):
    """prefill / decode / window tf.functions for this model and batch size (made once)."""
    store = model.__dict__.setdefault("_sampling_functions", {})
    if batch_size in store:
        return store[batch_size]
    c = model.config
    cache_spec = tf.TensorSpec(
        (c.n_layer, 2, batch_size, c.n_head, c.block_size, c.head_size), tf.float32
    )

    @tf.function(input_signature=[tf.TensorSpec((batch_size, None), tf.int32)])
    def prefill(idx):  # (B, T) prompt -> last logits (B, V), cache
        logits, cache = model(idx, cache=model.new_cache(batch_size), start=0)
        return logits[:, -1, :], cache

    @tf.function(
        input_signature=[
            tf.TensorSpec((batch_size, 1), tf.int32),
            cache_spec,
            tf.TensorSpec((), tf.int32),
        ]
    )
    def decode(token, cache, start):  # one token at position `start`
        logits, cache = model(token, cache=cache, start=start)
        return logits[:, -1, :], cache

    @tf.function(input_signature=[tf.TensorSpec((batch_size, c.block_size), tf.int32)])
    def window(idx):  # the full window, no cache (past block_size)
        return model(idx)[:, -1, :]

    store[batch_size] = (prefill, decode, window)
    return store[batch_size]


def generate(
    model,
    idx,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Iterable[int] = (),
    use_cache: bool = True,
    seed: int | None = None,
) -> np.ndarray:
    """idx (B, T) followed by up to `max_new_tokens` sampled tokens: int array (B, T + n).

    The same arguments as `course.torch.generate`. Stops early once every row has produced
    one of `stop_tokens` (rows that stopped are padded with their stop token).
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    out = np.asarray(idx)
    if out.ndim != 2 or out.dtype.kind not in "iu":
        raise ValueError(f"idx must be a (B, T) array of token ids, got {out.shape} {out.dtype}")
    model._check_input(out)  # clear errors for ids outside the vocabulary
    out = out.astype(np.int32)
    B, block = out.shape[0], model.config.block_size
    prefill, decode, window = _compiled(model, B)
    rng = np.random.default_rng(seed)
    stops = np.array(sorted({int(t) for t in stop_tokens}), dtype=np.int32)
    finished = np.zeros(B, dtype=bool)
    cache, start = None, 0
    for step in range(max_new_tokens):
        if use_cache and step == 0:
            context = out[:, -block:]
            logits, cache = prefill(tf.constant(context))
            start = context.shape[1]
        elif use_cache and cache is not None and start < block:
            logits, cache = decode(tf.constant(out[:, -1:]), cache, tf.constant(start))
            start += 1
        elif out.shape[1] >= block:
            cache = None  # the window slides from here on: nothing cached stays valid
            logits = window(tf.constant(out[:, -block:]))
        else:
            logits = model(out)[:, -1, :]  # shorter than the block: shapes vary, run eagerly
        token = sample_next(np.asarray(logits), temperature, top_k, top_p, rng).astype(np.int32)
        if len(stops):
            token = np.where(finished[:, None], stops[0], token)
            finished |= np.isin(token[:, 0], stops)
        out = np.concatenate([out, token], axis=1)
        if len(stops) and finished.all():
            break
    return out
