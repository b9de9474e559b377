"""Chapter 06: plausible wrong answers for the Keras exercises (attention layer, MLP,
pre-LayerNorm block, moving an nn.Linear into a Dense, the whole GPT, one training
step, a fixed-size KV cache, sampling), and the library's reference of each, which must
pass the same graded test cells.

Each wrong answer replaces the whole solution cell: the class (or function) written out
again with one thing wrong, the rest as in the solution.
"""

from autograde.probe import ReferenceAnswer, WrongAnswer

REFERENCE_ANSWERS = [
    ReferenceAnswer(
        "keras_attention",
        "course.tf.model.CausalSelfAttention",
        "from course.tf.model import CausalSelfAttention as MyCausalSelfAttention",
    ),
    ReferenceAnswer("keras_mlp", "course.tf.model.MLP", "from course.tf.model import MLP as MyMLP"),
    ReferenceAnswer(
        "keras_block", "course.tf.model.Block", "from course.tf.model import Block as MyBlock"
    ),
    ReferenceAnswer("keras_gpt", "course.tf.model.GPT", "from course.tf.model import GPT"),
    ReferenceAnswer(
        "keras_train_step",
        "the library's recipe: course.tf.train's AdamW settings, GPT.train_step's body",
        """
def keras_train_step(model, optimizer, x, y, step, train_cfg):
    optimizer.learning_rate.assign(lr_at(step, train_cfg))
    optimizer.global_clipnorm = train_cfg.grad_clip if train_cfg.grad_clip > 0 else None
    model.compile(optimizer=optimizer)  # train_step reads model.optimizer
    return model.train_step((x, y))["loss"]
""",
    ),
    ReferenceAnswer(
        "linear_to_dense",
        "Keras' set_weights([kernel, bias]), the weight transposed",
        """
def linear_to_dense(linear, dense):
    weights = [p.detach().numpy() for p in linear.parameters()]
    weights[0] = weights[0].T
    dense.set_weights(weights)
    return dense
""",
    ),
    ReferenceAnswer(
        "keras_attend_with_cache",
        "the library's layer: slice_update, then manual_attention with cache_mask",
        """
from course.tf.model import cache_mask, manual_attention

def attend_with_cache(q, k, v, k_cache, v_cache, start):
    k_cache = ops.slice_update(k_cache, (0, 0, start, 0), k)
    v_cache = ops.slice_update(v_cache, (0, 0, start, 0), v)
    mask = cache_mask(ops.shape(q)[2], ops.shape(k_cache)[2], start)
    return manual_attention(q, k_cache, v_cache, mask=mask), k_cache, v_cache
""",
    ),
    ReferenceAnswer(
        "keras_sample_next",
        "course.tf.sampling.sample_next: numpy, its own random generator",
        """
import course.tf.sampling

def sample_next(logits, temperature=1.0, top_k=None, seed=None):
    return course.tf.sampling.sample_next(
        np.asarray(logits), temperature, top_k, rng=np.random.default_rng(seed)
    )
""",
    ),
    ReferenceAnswer(
        "keras_sample_next",
        "course.tf.sampling.filter_logits, then keras.random.categorical",
        """
from course.tf.sampling import filter_logits

def sample_next(logits, temperature=1.0, top_k=None, seed=None):
    if temperature == 0:
        return ops.cast(ops.argmax(logits, axis=-1), "int32")[:, None]
    kept = filter_logits(np.asarray(logits) / temperature, top_k).astype("float32")
    return ops.cast(keras.random.categorical(kept, 1, seed=seed), "int32")
""",
    ),
]

# --------------------------------------------------------------------------------------
# Exercise 1: the attention layer. One template, one line changed per wrong answer.
# --------------------------------------------------------------------------------------

_ATTENTION = """
class MyCausalSelfAttention(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = keras.layers.Dense(3 * config.n_embd, use_bias=config.bias)
        self.c_proj = keras.layers.Dense(config.n_embd, use_bias=config.bias)

    def build(self, input_shape):
        self.c_attn.build(input_shape)
        self.c_proj.build(input_shape)

    def call(self, x):
        B, T = ops.shape(x)[0], ops.shape(x)[1]
        hs = self.n_embd // self.n_head
        q, k, v = ops.split(self.c_attn(x), 3, axis=-1)
        q, k, v = HEADS
        scores = SCORES
        visible = ops.arange(T)[None, :] <= ops.arange(T)[:, None]
        ATTEND
        y = MERGE
        return self.c_proj(y)
"""

_HEADS = "[ops.transpose(ops.reshape(t, (B, T, self.n_head, hs)), (0, 2, 1, 3)) for t in (q, k, v)]"
_SCORES = "ops.matmul(q, ops.swapaxes(k, -1, -2)) / math.sqrt(hs)"
_ATTEND = "y = ops.matmul(ops.softmax(ops.where(visible, scores, float('-inf')), axis=-1), v)"
_MERGE = "ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (B, T, self.n_embd))"


def _attention(heads=_HEADS, scores=_SCORES, attend=_ATTEND, merge=_MERGE) -> str:
    return (
        _ATTENTION.replace("HEADS", heads)
        .replace("SCORES", scores)
        .replace("ATTEND", attend)
        .replace("MERGE", merge)
    )


_ATTENTION_WRONG = [
    WrongAnswer(
        "keras_attention",
        "no causal mask: every token sees the future",
        _attention(attend="y = ops.matmul(ops.softmax(scores, axis=-1), v)"),
    ),
    WrongAnswer(
        "keras_attention",
        "no 1/sqrt(hs) scale",
        _attention(scores="ops.matmul(q, ops.swapaxes(k, -1, -2))"),
    ),
    WrongAnswer(
        "keras_attention",
        "scaled by 1/sqrt(n_embd) instead of 1/sqrt(head size)",
        _attention(scores="ops.matmul(q, ops.swapaxes(k, -1, -2)) / math.sqrt(self.n_embd)"),
    ),
    WrongAnswer(
        "keras_attention",
        "mask applied after the softmax (rows no longer sum to 1)",
        _attention(
            attend="y = ops.matmul(ops.where(visible, ops.softmax(scores, axis=-1), 0.0), v)"
        ),
    ),
    WrongAnswer(
        "keras_attention",
        "heads reshaped straight to (B, nh, T, hs), without the transpose",
        _attention(heads="[ops.reshape(t, (B, self.n_head, T, hs)) for t in (q, k, v)]"),
    ),
    WrongAnswer(
        "keras_attention",
        "heads merged back by reshape alone, without transposing (B, nh, T, hs) first",
        _attention(merge="ops.reshape(y, (B, T, self.n_embd))"),
    ),
    WrongAnswer(
        "keras_attention",
        "mask flipped: each token sees itself and the future, not the past",
        _attention(
            attend="y = ops.matmul(ops.softmax(ops.where(ops.transpose(visible), scores, "
            "float('-inf')), axis=-1), v)"
        ),
    ),
    WrongAnswer(
        "keras_attention",
        "config.bias ignored: Dense layers never have a bias",
        _attention().replace("use_bias=config.bias", "use_bias=False"),
    ),
    WrongAnswer(
        "keras_attention",
        "config.bias ignored: Dense layers always have a bias (Keras' default)",
        _attention().replace(", use_bias=config.bias", ""),
    ),
]

# --------------------------------------------------------------------------------------
# Exercise 2: the MLP.
# --------------------------------------------------------------------------------------

_MLP = """
class MyMLP(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.c_fc = keras.layers.Dense(WIDTH * config.n_embd, use_bias=config.bias)
        self.c_proj = keras.layers.Dense(config.n_embd, use_bias=config.bias)

    def build(self, input_shape):
        self.c_fc.build(input_shape)
        self.c_proj.build((*input_shape[:-1], WIDTH * input_shape[-1]))

    def call(self, x):
        return self.c_proj(ACTIVATION(self.c_fc(x)))
"""


def _mlp(activation: str, width: str = "4") -> str:
    return _MLP.replace("WIDTH", width).replace("ACTIVATION", activation)


_MLP_WRONG = [
    WrongAnswer(
        "keras_mlp",
        "keras.activations.gelu with its default: the exact (erf) GELU",
        _mlp("keras.activations.gelu"),
    ),
    WrongAnswer(
        "keras_mlp",
        "ops.gelu(approximate=False): the exact GELU, asked for explicitly",
        _mlp("(lambda h: ops.gelu(h, approximate=False))"),
    ),
    WrongAnswer("keras_mlp", "ReLU instead of GELU", _mlp("ops.relu")),
    WrongAnswer(
        "keras_mlp",
        "tanh GELU without the 0.044715 x^3 term",
        _mlp("(lambda h: 0.5 * h * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * h)))"),
    ),
    WrongAnswer("keras_mlp", "no activation at all", _mlp("(lambda h: h)")),
    WrongAnswer(
        "keras_mlp",
        "config.bias ignored: Dense layers never have a bias",
        _mlp("ops.gelu").replace("use_bias=config.bias", "use_bias=False"),
    ),
]

# --------------------------------------------------------------------------------------
# Exercise 3: the block.
# --------------------------------------------------------------------------------------

_BLOCK = """
class MyBlock(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.ln_1 = keras.layers.LayerNormalization(LN_ARGS)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = keras.layers.LayerNormalization(LN_ARGS)
        self.mlp = MLP(config)

    def build(self, input_shape):
        for layer in (self.ln_1, self.attn, self.ln_2, self.mlp):
            layer.build(input_shape)

    def call(self, x):
BODY
"""

_PRE_LN = """\
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))"""


def _block(body: str = _PRE_LN, ln_args: str = "epsilon=config.layer_norm_eps, "
           "center=config.bias") -> str:  # fmt: skip
    return _BLOCK.replace("LN_ARGS", ln_args).replace("BODY", body)


_BLOCK_WRONG = [
    WrongAnswer(
        "keras_block",
        "post-LN: normalise after adding (the original Transformer)",
        _block(
            """\
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp(x))"""
        ),
    ),
    WrongAnswer(
        "keras_block",
        "no residual around the attention",
        _block(
            """\
        x = self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))"""
        ),
    ),
    WrongAnswer(
        "keras_block",
        "no residual around the MLP",
        _block(
            """\
        x = x + self.attn(self.ln_1(x))
        return self.mlp(self.ln_2(x))"""
        ),
    ),
    WrongAnswer(
        "keras_block",
        "both sub-layers read the block's input (parallel, not sequential)",
        _block(
            """\
        return x + self.attn(self.ln_1(x)) + self.mlp(self.ln_2(x))"""
        ),
    ),
    WrongAnswer(
        "keras_block",
        "ln_1 used twice (ln_2 never used)",
        _block(
            """\
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_1(x))"""
        ),
    ),
    WrongAnswer(
        "keras_block",
        "LayerNormalization with Keras' default epsilon (1e-3, not 1e-5)",
        _block(ln_args="center=config.bias"),
    ),
    WrongAnswer(
        "keras_block",
        "LayerNormalization always with a beta (center=True), even without biases",
        _block(ln_args="epsilon=config.layer_norm_eps"),
    ),
    WrongAnswer(
        "keras_block",
        "config.bias ignored: LayerNormalization never has a beta (center=False)",
        _block(ln_args="epsilon=config.layer_norm_eps, center=False"),
    ),
]

# --------------------------------------------------------------------------------------
# Exercise 4: one nn.Linear into a Dense.
# --------------------------------------------------------------------------------------

_LINEAR_WRONG = [
    WrongAnswer(
        "linear_to_dense",
        "no transpose: the (out, in) weight used as the (in, out) kernel",
        """
def linear_to_dense(linear, dense):
    dense.kernel.assign(linear.weight.detach().numpy())
    if linear.bias is not None:
        dense.bias.assign(linear.bias.detach().numpy())
    return dense
""",
    ),
    WrongAnswer(
        "linear_to_dense",
        "reshape instead of transpose: the right shape, the wrong matrix",
        """
def linear_to_dense(linear, dense):
    weight = linear.weight.detach().numpy()
    dense.kernel.assign(weight.reshape(weight.shape[1], weight.shape[0]))
    if linear.bias is not None:
        dense.bias.assign(linear.bias.detach().numpy())
    return dense
""",
    ),
    WrongAnswer(
        "linear_to_dense",
        "the bias is left behind",
        """
def linear_to_dense(linear, dense):
    dense.kernel.assign(linear.weight.detach().numpy().T)
    return dense
""",
    ),
    WrongAnswer(
        "linear_to_dense",
        "assumes a bias: fails on an nn.Linear(bias=False)",
        """
def linear_to_dense(linear, dense):
    dense.kernel.assign(linear.weight.detach().numpy().T)
    dense.bias.assign(linear.bias.detach().numpy())
    return dense
""",
    ),
    WrongAnswer(
        "linear_to_dense",
        "copies the weights but returns nothing",
        """
def linear_to_dense(linear, dense):
    dense.kernel.assign(linear.weight.detach().numpy().T)
    if linear.bias is not None:
        dense.bias.assign(linear.bias.detach().numpy())
""",
    ),
]

# --------------------------------------------------------------------------------------
# Exercise 5: the whole Keras GPT, checked against PyTorch's logits.
# --------------------------------------------------------------------------------------

_GPT = """
class GPT(keras.Model):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.wte = keras.layers.Embedding(config.vocab_size, config.n_embd)
        self.wpe = keras.layers.Embedding(config.block_size, config.n_embd)
        self.h = [MyBlock(config) for _ in range(config.n_layer)]
        self.ln_f = keras.layers.LayerNormalization(LN_ARGS)
INIT
    def call(self, idx, training=False):
        T = ops.shape(idx)[1]
        x = EMBED
        for block in self.h:
            x = block(x)
        x = FINAL
        return HEAD
"""


def _gpt(
    embed: str = "self.wte(idx) + self.wpe(ops.arange(T))",
    final: str = "self.ln_f(x)",
    head: str = "ops.matmul(x, ops.transpose(self.wte.embeddings))",
    init: str = "",
    ln_args: str = "epsilon=config.layer_norm_eps, center=config.bias",
) -> str:
    return (
        _GPT.replace("LN_ARGS", ln_args)
        .replace("INIT", init)
        .replace("EMBED", embed)
        .replace("FINAL", final)
        .replace("HEAD", head)
    )


_GPT_WRONG = [
    WrongAnswer(
        "keras_gpt",
        "untied head: a separate Dense output layer instead of wte's matrix",
        _gpt(
            init="        self.lm_head = keras.layers.Dense(config.vocab_size, use_bias=False)\n",
            head="self.lm_head(x)",
        ),
    ),
    WrongAnswer("keras_gpt", "positions never added", _gpt(embed="self.wte(idx)")),
    WrongAnswer(
        "keras_gpt",
        "frozen positions: the position table computed once in __init__, a constant",
        _gpt(
            init="        self.positions = self.wpe(ops.arange(config.block_size))\n",
            embed="self.wte(idx) + self.positions[:T]",
        ),
    ),
    WrongAnswer(
        "keras_gpt",
        "positions counted from 1, not 0",
        _gpt(embed="self.wte(idx) + self.wpe(ops.arange(T) + 1)"),
    ),
    WrongAnswer("keras_gpt", "no final LayerNorm (ln_f made, never used)", _gpt(final="x")),
    WrongAnswer(
        "keras_gpt",
        "ln_f ignores config.bias: always a beta (center=True)",
        _gpt(ln_args="epsilon=config.layer_norm_eps"),
    ),
    WrongAnswer(
        "keras_gpt",
        "ln_f with Keras' default epsilon (1e-3)",
        _gpt(ln_args="center=config.bias"),
    ),
]

# --------------------------------------------------------------------------------------
# Exercise 6: one training step, checked against course.torch's train_step.
# --------------------------------------------------------------------------------------

_TRAIN_STEP = """
def keras_train_step(model, optimizer, x, y, step, train_cfg):
    FORWARD
    variables = VARIABLES
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
    CLIP
    LR
    optimizer.apply(grads, variables)
    AFTER
    return loss
"""

_FORWARD = """with tf.GradientTape() as tape:
        loss = lm_loss(y, model(x, training=True))"""
_CLIP = """if train_cfg.grad_clip > 0:
        grads, _ = tf.clip_by_global_norm(grads, train_cfg.grad_clip)"""
_LR = "optimizer.learning_rate.assign(lr_at(step, train_cfg))"


def _train_step(
    forward: str = _FORWARD,
    variables: str = "model.trainable_variables",
    clip: str = _CLIP,
    lr: str = _LR,
    after: str = "",
) -> str:
    return (
        _TRAIN_STEP.replace("FORWARD", forward)
        .replace("VARIABLES", variables)
        .replace("CLIP", clip)
        .replace("LR", lr)
        .replace("AFTER", after)
    )


_TRAIN_STEP_WRONG = [
    WrongAnswer("keras_train_step", "no gradient clipping", _train_step(clip="")),
    WrongAnswer(
        "keras_train_step",
        "each gradient clipped on its own (tf.clip_by_norm), not their global norm",
        _train_step(
            clip="grads = [tf.clip_by_norm(g, train_cfg.grad_clip) if train_cfg.grad_clip > 0 "
            "else g for g in grads]"
        ),
    ),
    WrongAnswer(
        "keras_train_step",
        "clips even when grad_clip = 0 (clipping is off then)",
        _train_step(clip="grads, _ = tf.clip_by_global_norm(grads, train_cfg.grad_clip)"),
    ),
    WrongAnswer(
        "keras_train_step",
        "lr not scheduled: the peak learning_rate at every step",
        _train_step(lr="optimizer.learning_rate.assign(train_cfg.learning_rate)"),
    ),
    WrongAnswer(
        "keras_train_step",
        "the scheduled lr set after the update (each step uses the previous step's lr)",
        _train_step(lr="", after=_LR),
    ),
    WrongAnswer(
        "keras_train_step",
        "lr of the next step: lr_at(step + 1)",
        _train_step(lr="optimizer.learning_rate.assign(lr_at(step + 1, train_cfg))"),
    ),
    WrongAnswer(
        "keras_train_step",
        "gradients of the wrong variables: the blocks' only (wte, wpe, ln_f never move)",
        _train_step(variables="[v for block in model.h for v in block.trainable_variables]"),
    ),
    WrongAnswer(
        "keras_train_step",
        "the forward pass outside the GradientTape (no gradients recorded)",
        _train_step(
            forward="""loss = lm_loss(y, model(x, training=True))
    with tf.GradientTape() as tape:
        pass"""
        ),
    ),
]

# --------------------------------------------------------------------------------------
# Exercise 7: sampling the next token with keras.ops.
# --------------------------------------------------------------------------------------

_SAMPLE = """
def sample_next(logits, temperature=1.0, top_k=None, seed=None):
    if temperature == 0:
        return GREEDY
    logits = ops.convert_to_tensor(logits, "float32") TEMPERATURE
    if top_k is not None:
        kth = KTH
        logits = ops.where(logits KEEP kth, float("-inf"), logits)
    return ops.cast(keras.random.categorical(DRAWN, 1, seed=seed), "int32")
"""


def _sample(
    greedy: str = 'ops.cast(ops.argmax(logits, axis=-1), "int32")[:, None]',
    temperature: str = "/ temperature",
    kth: str = "ops.top_k(logits, top_k)[0][:, -1:]",
    keep: str = "<",
    drawn: str = "logits",
) -> str:
    return (
        _SAMPLE.replace("GREEDY", greedy)
        .replace("TEMPERATURE", temperature)
        .replace("KTH", kth)
        .replace("KEEP", keep)
        .replace("DRAWN", drawn)
    )


_SAMPLE_WRONG = [
    WrongAnswer(
        "keras_sample_next",
        "probabilities passed to categorical, which expects logits",
        _sample(drawn="ops.softmax(logits, axis=-1)"),
    ),
    WrongAnswer("keras_sample_next", "temperature ignored", _sample(temperature="")),
    WrongAnswer(
        "keras_sample_next",
        "logits multiplied by the temperature",
        _sample(temperature="* temperature"),
    ),
    WrongAnswer(
        "keras_sample_next",
        "the k-th value dropped too (<= instead of <): k - 1 tokens kept",
        _sample(keep="<="),
    ),
    WrongAnswer(
        "keras_sample_next",
        "the largest value taken as the threshold: only the top token kept",
        _sample(kth="ops.top_k(logits, top_k)[0][:, :1]"),
    ),
    WrongAnswer(
        "keras_sample_next",
        "one threshold for the whole batch, not one per row",
        _sample(kth="ops.top_k(ops.reshape(logits, (-1,)), top_k)[0][-1]"),
    ),
    WrongAnswer(
        "keras_sample_next",
        "greedy returns shape (B,), not (B, 1)",
        _sample(greedy='ops.cast(ops.argmax(logits, axis=-1), "int32")'),
    ),
    WrongAnswer(
        "keras_sample_next",
        "greedy takes the smallest logit (argmin)",
        _sample(greedy='ops.cast(ops.argmin(logits, axis=-1), "int32")[:, None]'),
    ),
]

# --------------------------------------------------------------------------------------
# Exercise 8: attention over a fixed-size KV cache (its tests: the cell after it and the
# GPT decoding with it, where the value width is the key width).
# --------------------------------------------------------------------------------------

_CACHE = """
def attend_with_cache(q, k, v, k_cache, v_cache, start):
    T, capacity = ops.shape(q)[2], ops.shape(k_cache)[2]
    k_cache = WRITE_K
    v_cache = WRITE_V
    scores = ops.matmul(q, ops.swapaxes(k_cache, -1, -2)) / math.sqrt(SCALE)
    visible = VISIBLE
    y = ops.matmul(ops.softmax(ops.where(visible, scores, float("-inf")), axis=-1), v_cache)
    return y, k_cache, v_cache
"""


def _cache(
    write_k: str = "ops.slice_update(k_cache, (0, 0, start, 0), k)",
    write_v: str = "ops.slice_update(v_cache, (0, 0, start, 0), v)",
    scale: str = "q.shape[-1]",
    visible: str = "ops.arange(capacity)[None, :] <= start + ops.arange(T)[:, None]",
) -> str:
    return (
        _CACHE.replace("WRITE_K", write_k)
        .replace("WRITE_V", write_v)
        .replace("SCALE", scale)
        .replace("VISIBLE", visible)
    )


_CACHE_WRONG = [
    WrongAnswer(
        "keras_attend_with_cache",
        "the mask not shifted by start: the usual triangle from slot 0",
        _cache(visible="ops.arange(capacity)[None, :] <= ops.arange(T)[:, None]"),
    ),
    WrongAnswer(
        "keras_attend_with_cache",
        "only the unwritten slots masked: new tokens see each other's future",
        _cache(
            visible="ops.broadcast_to(ops.arange(capacity)[None, :] < start + T, (T, capacity))"
        ),
    ),
    WrongAnswer(
        "keras_attend_with_cache",
        "no mask: the stale slots past the written ones are attended to",
        _cache(visible="ops.ones((T, capacity), dtype='bool')"),
    ),
    WrongAnswer(
        "keras_attend_with_cache",
        "strictly before: a new token does not see its own key",
        _cache(visible="ops.arange(capacity)[None, :] < start + ops.arange(T)[:, None]"),
    ),
    WrongAnswer(
        "keras_attend_with_cache",
        "new keys and values always written at slot 0",
        _cache(
            write_k="ops.slice_update(k_cache, (0, 0, 0, 0), k)",
            write_v="ops.slice_update(v_cache, (0, 0, 0, 0), v)",
        ),
    ),
    WrongAnswer(
        "keras_attend_with_cache",
        "the caches grown by concatenation (chapter 05's way) instead of written in place",
        _cache(
            write_k="ops.concatenate([k_cache[:, :, :start], k], axis=2)",
            write_v="ops.concatenate([v_cache[:, :, :start], v], axis=2)",
            visible="ops.arange(start + T)[None, :] <= start + ops.arange(T)[:, None]",
        ),
    ),
]

# Every tensor that meets the model follows its device (tests/test_chapters.py).
CHECK_DEVICES = True

WRONG_ANSWERS = [
    *_ATTENTION_WRONG,
    *_MLP_WRONG,
    *_BLOCK_WRONG,
    *_LINEAR_WRONG,
    *_GPT_WRONG,
    *_TRAIN_STEP_WRONG,
    *_SAMPLE_WRONG,
    *_CACHE_WRONG,
]
