"""The GPT in Keras 3 (TensorFlow backend): the mirror of `course.torch.model`.

Same classes (CausalSelfAttention, MLP, Block, GPT), same config, same sub-layer names
(wte, wpe, h_N/attn/c_attn, c_proj, ln_1, ln_2, mlp/c_fc, ln_f), same dropout in the same
three places (embeddings, attention weights, residual branches), same ignored target (-1),
and the same argument names, so `course.tf.convert` moves weights between the two one to
one and the two compute the same numbers. Idiomatic Keras: sub-layers are created in
`__init__`, variables appear when a layer is built, and `call` takes `training`.

Where Keras differs, and how:

- a Dense kernel is (in, out) where an nn.Linear weight is (out, in); LayerNormalization's
  weight is `gamma` and its bias `beta`;
- training mode is the `training` argument of `call`, not `module.train()`;
- the model returns logits only; the loss is `lm_loss(targets, logits)`, a separate
  function as Keras losses are (PyTorch's forward takes `targets` and returns the loss);
- the KV cache is one tensor of fixed shape plus `start`, the number of cached tokens, so
  one trace of `tf.function` serves every decoding step (PyTorch keeps a list of
  `KVCache` objects that know their length);
- random numbers come from a `keras.random.SeedGenerator` held by the layer, where
  PyTorch draws from its global generator: the same rate, not the same dropout masks;
- `keras.ops.dot_product_attention` has no dropout, so with attn_impl="sdpa" a training
  call with dropout > 0 runs the manual attention (PyTorch's sdpa drops inside the kernel).

Shapes: B batch, T tokens, S keys, C = n_embd, nh heads of hs.
"""

from __future__ import annotations

import math
import warnings

from course import runtime
from course.config import GPTConfig

keras = runtime.import_keras()  # TensorFlow backend, loaded safely beside Triton
tf = runtime.import_tensorflow()
ops = keras.ops

# One query over one key (T = S = 1, e.g. a one-token prompt) is a softmax over an axis of
# size 1: correct here (the weight is 1), but Keras warns about it on every call.
warnings.filterwarnings("ignore", message="You are using a softmax over axis", category=UserWarning)


def lm_loss(targets, logits, ignore_index: int = -1):
    """Mean cross-entropy of logits (B, T, V) against targets (B, T) token ids, over the
    positions whose target is not `ignore_index`.

    The loss of `course.torch.GPT(idx, targets)`, which is F.cross_entropy with
    ignore_index=-1: an ignored position adds nothing, the mean is over the counted ones,
    and if every position is ignored the loss is nan (0 / 0) with zero gradients, as
    PyTorch's is. The order (targets, logits) is Keras' (y_true, y_pred).
    """
    targets = ops.convert_to_tensor(targets)
    dtype = keras.backend.standardize_dtype(targets.dtype)
    if "int" not in dtype:
        raise TypeError(f"targets must hold integer token ids, got dtype {dtype}")
    if not tf.TensorShape(targets.shape).is_compatible_with(logits.shape[:-1]):
        raise ValueError(
            f"targets must have the shape of the logits without the vocabulary axis "
            f"{tuple(logits.shape[:-1])}, got {tuple(targets.shape)}"
        )
    targets = tf.cast(targets, tf.int32)
    counted = tf.not_equal(targets, ignore_index)  # (B, T)
    labels = tf.where(counted, targets, tf.zeros_like(targets))  # any valid id: masked below
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    weights = tf.cast(counted, losses.dtype)
    count = tf.reduce_sum(weights)
    mean = tf.math.divide_no_nan(tf.reduce_sum(losses * weights), count)
    nan = tf.constant(float("nan"), losses.dtype)
    return mean + tf.where(count > 0, tf.zeros_like(nan), nan)


def causal_mask(T: int, S: int):
    """(T, S) bool, True where query t may look at key s: the queries are the last T of S.

    Query t sits at absolute position S - T + t and sees keys 0 .. S - T + t. With S == T
    this is the usual lower triangle; with cached keys (S > T) the cached keys are all seen.
    """
    rows = ops.arange(T)[:, None] + (S - T)
    return ops.arange(S)[None, :] <= rows


def manual_attention(q, k, v, return_weights=False, dropout=0.0, mask=None, seed=None):
    """softmax(q kᵀ / √hs + causal mask) v, written out. q (..., T, hs), k and v (..., S, hs).

    Returns y (..., T, hs), and the attention weights (..., T, S) if `return_weights`.
    `dropout` drops weights (pass it when training), as PyTorch's does. Two arguments are
    Keras' own: `mask` (T, S) bool, True where a query may look, replaces the causal mask
    (the fixed-shape KV cache needs `cache_mask`), and `seed`, an int or a
    `keras.random.SeedGenerator`, draws the dropout mask (PyTorch's global generator has
    no counterpart inside a traced function).
    """
    T, S, hs = ops.shape(q)[-2], ops.shape(k)[-2], q.shape[-1]
    mask = causal_mask(T, S) if mask is None else mask
    scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(hs))  # (..., T, S)
    scores = ops.where(mask, scores, float("-inf"))
    weights = ops.softmax(scores, axis=-1)
    dropped = keras.random.dropout(weights, dropout, seed=seed) if dropout else weights
    y = ops.matmul(dropped, v)  # (..., T, hs)
    return (y, weights) if return_weights else y


def cache_mask(T: int, capacity: int, start):
    """(T, capacity) bool for T new queries at positions start .. start + T - 1 of a cache
    with room for `capacity` tokens: each sees the keys up to its own position. Slots past
    it (not yet written) are masked, so the shapes stay static inside tf.function."""
    rows = ops.arange(T)[:, None] + start
    return ops.arange(capacity)[None, :] <= rows


def _x_and_y(data) -> tuple:
    """(x, y) of a batch as `fit` (x, y) or `train_on_batch` (x, y, None) hands it over;
    the loss weighs every counted target alike, so a sample weight is an error."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError("the GPT's loss takes no sample_weight: leave it out (ignore a "
                         "target by setting it to -1)")  # fmt: skip
    return x, y


def _dense(units: int, bias: bool, std: float, name: str):
    return keras.layers.Dense(
        units,
        use_bias=bias,
        kernel_initializer=keras.initializers.RandomNormal(stddev=std),
        bias_initializer="zeros",
        name=name,
    )


def _layer_norm(config: GPTConfig, name: str):
    return keras.layers.LayerNormalization(
        epsilon=config.layer_norm_eps, center=config.bias, name=name
    )


class CausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention with one fused q/k/v projection (GPT-2's c_attn)."""

    def __init__(self, config: GPTConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        if config.attn_impl == "triton":
            raise NotImplementedError("attn_impl='triton' is PyTorch only; use 'manual' or 'sdpa'")
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.attn_impl, self.dropout = config.attn_impl, config.dropout
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        self.c_attn = _dense(3 * config.n_embd, config.bias, 0.02, "c_attn")
        self.c_proj = _dense(config.n_embd, config.bias, residual_std, "c_proj")
        self.resid_dropout = keras.layers.Dropout(config.dropout)
        # The attention weights' dropout masks (as keras.layers.Dropout keeps its own).
        self.seed_generator = keras.random.SeedGenerator() if config.dropout > 0 else None
        self.keep_weights = False  # set by GPT.attention_maps: store the (B, nh, T, S) map
        self.attention_weights = None  # PyTorch's `weights`: a Keras layer's are its variables

    def build(self, input_shape) -> None:
        self.c_attn.build(input_shape)
        self.c_proj.build(input_shape)
        self.built = True

    def call(self, x, training=False, cache=None, start=None):
        """x (B, T, C) -> (B, T, C). With `cache` = (k, v), each (B, nh, block, hs), and
        `start` (tokens already cached), returns (y, (k, v)) with the new tokens written
        at start .. start + T - 1."""
        B, T = ops.shape(x)[0], ops.shape(x)[1]
        hs = self.n_embd // self.n_head
        q, k, v = ops.split(self.c_attn(x), 3, axis=-1)  # 3 x (B, T, C)

        def heads(t):  # (B, T, C) -> (B, nh, T, hs)
            return ops.transpose(ops.reshape(t, (B, T, self.n_head, hs)), (0, 2, 1, 3))

        q, k, v = heads(q), heads(k), heads(v)
        mask = None
        if cache is not None:
            k = ops.slice_update(cache[0], (0, 0, start, 0), k)  # (B, nh, block, hs)
            v = ops.slice_update(cache[1], (0, 0, start, 0), v)
            mask = cache_mask(T, ops.shape(k)[2], start)  # (T, block)
        y = self._attend(q, k, v, mask, training)  # (B, nh, T, hs)
        y = ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (B, T, self.n_embd))  # (B, T, C)
        y = self.resid_dropout(self.c_proj(y), training=training)
        return y if cache is None else (y, (k, v))

    def _attend(self, q, k, v, mask, training):
        dropout = self.dropout if training else 0.0
        if self.attn_impl == "manual" or self.keep_weights or mask is not None or dropout:
            y, weights = manual_attention(
                q, k, v, return_weights=True, dropout=dropout, mask=mask, seed=self.seed_generator
            )
            if self.keep_weights:
                self.attention_weights = weights
            return y
        y = ops.dot_product_attention(  # takes (B, T, nh, hs); has no dropout
            ops.transpose(q, (0, 2, 1, 3)),
            ops.transpose(k, (0, 2, 1, 3)),
            ops.transpose(v, (0, 2, 1, 3)),
            is_causal=True,
        )  # (B, T, nh, hs)
        return ops.transpose(y, (0, 2, 1, 3))  # (B, nh, T, hs)


class MLP(keras.layers.Layer):
    """Position-wise feed-forward: C -> 4C -> GELU (tanh approximation) -> C."""

    def __init__(self, config: GPTConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        self.c_fc = _dense(4 * config.n_embd, config.bias, 0.02, "c_fc")
        self.c_proj = _dense(config.n_embd, config.bias, residual_std, "c_proj")
        self.dropout = keras.layers.Dropout(config.dropout)

    def build(self, input_shape) -> None:
        self.c_fc.build(input_shape)
        self.c_proj.build((*input_shape[:-1], 4 * input_shape[-1]))
        self.built = True

    def call(self, x, training=False):
        h = keras.activations.gelu(self.c_fc(x), approximate=True)
        return self.dropout(self.c_proj(h), training=training)


class Block(keras.layers.Layer):
    """Pre-LayerNorm Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ln_1 = _layer_norm(config, "ln_1")
        self.attn = CausalSelfAttention(config, name="attn")
        self.ln_2 = _layer_norm(config, "ln_2")
        self.mlp = MLP(config, name="mlp")

    def build(self, input_shape) -> None:
        for layer in (self.ln_1, self.attn, self.ln_2, self.mlp):
            layer.build(input_shape)
        self.built = True

    def call(self, x, training=False, cache=None, start=None):
        if cache is None:
            x = x + self.attn(self.ln_1(x), training=training)
            return x + self.mlp(self.ln_2(x), training=training)
        a, cache = self.attn(self.ln_1(x), training=training, cache=cache, start=start)
        x = x + a
        return x + self.mlp(self.ln_2(x), training=training), cache


class GPT(keras.Model):
    """Token + learned position embeddings (inside `call`, so they train), n_layer blocks, a
    final LayerNorm, and logits from the token embedding matrix itself (weight tying)."""

    def __init__(self, config: GPTConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a course.config.GPTConfig, got {type(config)}")
        self.config = config
        normal = keras.initializers.RandomNormal(stddev=0.02)
        self.wte = keras.layers.Embedding(
            config.vocab_size, config.n_embd, embeddings_initializer=normal, name="wte"
        )
        self.wpe = keras.layers.Embedding(
            config.block_size, config.n_embd, embeddings_initializer=normal, name="wpe"
        )
        self.drop = keras.layers.Dropout(config.dropout)
        self.h = [Block(config, name=f"h_{i}") for i in range(config.n_layer)]
        self.ln_f = _layer_norm(config, "ln_f")
        self.build((None, config.block_size))

    def build(self, input_shape) -> None:
        self.wte.build(input_shape)
        self.wpe.build((None,))
        hidden = (*input_shape, self.config.n_embd)
        for block in self.h:
            block.build(hidden)
        self.ln_f.build(hidden)
        self.built = True

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, counted once (the head is wte), frozen ones too (LoRA freezes the
        base: chapter 08), as PyTorch's count does. Without positions by default. Keras'
        other variables (dropout's seed state: integers) are not parameters."""
        weights = [w for w in self.weights if "float" in keras.backend.standardize_dtype(w.dtype)]
        n = sum(math.prod(w.shape) for w in weights)
        return n - math.prod(self.wpe.embeddings.shape) if non_embedding else n

    def new_cache(self, batch_size: int):
        """Zeros for every layer's keys and values: (n_layer, 2, B, nh, block_size, hs)."""
        c = self.config
        return ops.zeros((c.n_layer, 2, batch_size, c.n_head, c.block_size, c.head_size))

    def call(self, idx, training=False, cache=None, start=None, last_only=False):
        """idx (B, T) int token ids -> logits (B, T, vocab_size); the loss is `lm_loss`.

        With `cache` (from `new_cache`) and `start` (how many tokens it holds), idx holds
        only the new tokens; returns (logits, updated cache). Shapes never depend on
        `start`, so one traced tf.function serves every decoding step. `last_only` returns
        logits for the last position only, (B, 1, vocab): all that sampling needs.
        """
        self._check_input(idx, start)
        T = ops.shape(idx)[1]
        first = 0 if cache is None else start
        x = self.wte(idx) + self.wpe(ops.arange(T) + first)  # (B, T, C)
        x = self.drop(x, training=training)
        new_cache = []
        for i, block in enumerate(self.h):
            if cache is None:
                x = block(x, training=training)
            else:
                layer_cache = (cache[i, 0], cache[i, 1])
                x, layer_cache = block(x, training=training, cache=layer_cache, start=start)
                new_cache.append(ops.stack(layer_cache))
        x = self.ln_f(x)  # (B, T, C)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        logits = ops.matmul(x, ops.transpose(self.wte.embeddings))  # (B, T, vocab)
        return logits if cache is None else (logits, ops.stack(new_cache))

    def _check_input(self, idx, start=None) -> None:
        """Clear errors for the usual mistakes. Shape and dtype are checked when traced too;
        token values and the cache's fill only when running eagerly (a traced graph has no
        values to look at)."""
        dtype = keras.backend.standardize_dtype(getattr(idx, "dtype", None) or "float32")
        if "int" not in dtype:
            raise TypeError(
                f"idx must hold integer token ids, got dtype {dtype}; tokens are indices "
                "into the embedding table, not values"
            )
        if len(idx.shape) != 2:
            raise ValueError(
                f"idx must have shape (B, T), got {tuple(idx.shape)}; add a batch "
                "dimension with idx[None] for a single sequence"
            )
        T = idx.shape[1]
        if T == 0:
            raise ValueError("idx is empty (T = 0): give the model at least one token")
        eager = tf.executing_eagerly()
        cached = int(start) if start is not None and eager else 0
        if T is not None and cached + T > self.config.block_size:
            where = f"{cached} cached + {T} new tokens" if cached else f"sequence length {T}"
            raise ValueError(
                f"{where} exceeds block_size {self.config.block_size}; crop the context to "
                f"its last {self.config.block_size} tokens"
            )
        if eager and T:
            low, high = int(ops.min(idx)), int(ops.max(idx))
            if low < 0 or high >= self.config.vocab_size:
                bad = low if low < 0 else high
                raise ValueError(
                    f"token id {bad} is outside the vocabulary 0..{self.config.vocab_size - 1} "
                    f"(vocab_size {self.config.vocab_size})"
                )

    def attention_maps(self, idx):
        """Every layer's attention weights for idx (1, T): (n_layer, n_head, T, T)."""
        attentions = [block.attn for block in self.h]
        for attention in attentions:
            attention.keep_weights = True
        try:
            self(idx, training=False)
            return ops.stack([attention.attention_weights[0] for attention in attentions])
        finally:
            for attention in attentions:
                attention.keep_weights, attention.attention_weights = False, None

    # Keras' training idiom: `fit` calls train_step on each batch (inside a tf.function,
    # XLA-compiled with compile(jit_compile=True)); `evaluate` calls test_step.

    def train_step(self, data):
        """One optimizer step. x, y are (B, T), or (accum, B, T) to accumulate gradients
        over `accum` micro-batches: the mean of their losses, as the PyTorch trainer takes
        it (one batch of accum x B gives the same unless some targets are ignored).
        `train_on_batch(x, y)` works too (Keras hands it (x, y, None))."""
        x, y = _x_and_y(data)
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            return self._replica_step(x, y)
        if len(x.shape) == 2:
            x, y = x[None], y[None]
        n = x.shape[0]
        total, gradients = 0.0, None
        for i in range(n):  # unrolled when traced: n is a static shape
            with tf.GradientTape() as tape:
                loss = lm_loss(y[i], self(x[i], training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            grads = [tf.convert_to_tensor(g) for g in grads]  # embeddings give IndexedSlices
            gradients = (
                grads
                if gradients is None
                else [a + b for a, b in zip(gradients, grads, strict=True)]
            )
            total += loss
        gradients = [g / n for g in gradients] if n > 1 else gradients
        self.optimizer.apply(gradients, self.trainable_variables)  # clips, decays, steps
        return {"loss": total / n}

    def _replica_step(self, x, y):
        """One replica's share of a step under a strategy with several replicas (`fit`
        inside `MirroredStrategy.scope()`, chapter 09). The optimizer *sums* the replicas'
        gradients, so each replica's loss is the sum of its counted tokens' losses over the
        count of all replicas' counted tokens: together, `lm_loss` of the global batch,
        whatever the split and wherever targets are -1. x, y are (B, T)."""
        if len(x.shape) != 2:
            raise ValueError(
                f"under a strategy with several replicas, train_step takes x (B, T), not "
                f"micro-batches: got {tuple(x.shape)}"
            )
        y = tf.cast(y, tf.int32)
        counted = tf.not_equal(y, -1)  # (B, T)
        context = tf.distribute.get_replica_context()
        count = tf.reduce_sum(tf.cast(counted, tf.float32))  # this replica's counted tokens
        global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
        with tf.GradientTape() as tape:
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.where(counted, y, tf.zeros_like(y)), logits=self(x, training=True)
            )  # (B, T)
            kept = tf.reduce_sum(losses * tf.cast(counted, losses.dtype))
            loss = tf.math.divide_no_nan(kept, global_count)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, self.trainable_variables)]
        self.optimizer.apply(grads, self.trainable_variables)  # all-reduce SUM, then update
        return {"loss": context.all_reduce(tf.distribute.ReduceOp.SUM, loss)}

    def test_step(self, data):
        x, y = _x_and_y(data)
        return {"loss": lm_loss(y, self(x, training=False))}
