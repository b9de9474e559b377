"""course.torch and course.tf side by side: the same public names, the same arguments with
the same defaults, and the same behaviour where it matters (the ignored target, attention
dropout, attention maps, the errors a learner meets). A difference is allowed only where
a framework's idiom asks for it, and the tables below say which and why."""

import inspect
import math

import numpy as np
import pytest
import torch

import course.tf as keras_side
import course.torch as torch_side
from course.config import GPTConfig
from course.tf import model as keras_model_module
from course.tf import sampling as keras_sampling_module
from course.tf.convert import torch_to_keras
from course.torch import model as torch_model_module
from course.torch import sampling as torch_sampling_module

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

SMALL = GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=41)

# --------------------------------------------------------------------------------------
# Names and signatures
# --------------------------------------------------------------------------------------

CLASSES = ("GPT", "Block", "MLP", "CausalSelfAttention")
FUNCTIONS = ("generate", "sample_next", "filter_logits", "causal_mask", "manual_attention")

TRAINING = "Keras passes the mode to call(training=...); PyTorch sets it with .train()/.eval()"
START = (
    "the Keras KV cache is one fixed-shape tensor plus the count of cached tokens (shapes "
    "that stay put keep tf.function from retracing); PyTorch's KVCache carries its length"
)
KWARGS = "Keras layers take name=, dtype=, ... through **kwargs"

# (callable, side, argument) -> why only that side has it
ONE_SIDED_ARGUMENTS = {
    ("GPT.__init__", "keras", "kwargs"): KWARGS,
    ("Block.__init__", "keras", "kwargs"): KWARGS,
    ("MLP.__init__", "keras", "kwargs"): KWARGS,
    ("CausalSelfAttention.__init__", "keras", "kwargs"): KWARGS,
    ("GPT.forward", "keras", "training"): TRAINING,
    ("Block.forward", "keras", "training"): TRAINING,
    ("MLP.forward", "keras", "training"): TRAINING,
    ("CausalSelfAttention.forward", "keras", "training"): TRAINING,
    ("GPT.forward", "keras", "start"): START,
    ("Block.forward", "keras", "start"): START,
    ("CausalSelfAttention.forward", "keras", "start"): START,
    ("GPT.forward", "torch", "targets"): (
        "a Keras model returns its predictions and the loss is a separate function, "
        "course.tf.model.lm_loss(targets, logits) (see test_the_loss_ignores_the_same_targets)"
    ),
    ("causal_mask", "torch", "device"): "a torch tensor is made on a device; Keras places ops",
    ("manual_attention", "keras", "mask"): (
        "the fixed-shape Keras cache holds unwritten slots, masked by cache_mask; PyTorch "
        "slices its cache to the filled keys, so the causal mask is always right"
    ),
    ("manual_attention", "keras", "seed"): (
        "Keras random ops draw from a SeedGenerator (or an int), which a traced function "
        "needs; PyTorch's dropout draws from its global generator"
    ),
}

# (callable, torch argument) -> (Keras argument, why the names differ)
RENAMED_ARGUMENTS = {
    ("sample_next", "generator"): (
        "rng",
        "Keras' sampling runs in numpy: a numpy Generator, called rng as numpy calls it, "
        "where PyTorch takes a torch.Generator",
    ),
}

# (class, side, method) -> why only that side has it
ONE_SIDED_METHODS = {
    ("GPT", "keras", "train_step"): "Keras' fit calls it; PyTorch's loop is course.torch.train",
    ("GPT", "keras", "test_step"): "Keras' evaluate calls it; PyTorch's is estimate_loss",
}
KERAS_BUILD = "Keras creates variables in build(input_shape); nn.Module creates them at once"

# module-level names only one side has
ONE_SIDED_NAMES = {
    ("model", "torch", "KVCache"): START,
    ("model", "torch", "config_from_hf"): "Hugging Face GPT-2 loads into the PyTorch GPT, "
    "and course.tf.convert moves it on",
    ("model", "torch", "load_hf_state_dict"): "as config_from_hf",
    ("model", "keras", "lm_loss"): "PyTorch's loss is inside GPT.forward(idx, targets)",
    ("model", "keras", "cache_mask"): START,
}


def _pair(qualified: str):
    """The torch and Keras objects for 'GPT.forward', 'GPT.__init__' or 'generate'."""
    if "." not in qualified:
        return getattr(torch_side, qualified), getattr(keras_side, qualified)
    cls, method = qualified.split(".")
    torch_cls, keras_cls = getattr(torch_side, cls), getattr(keras_side, cls)
    keras_method = "call" if method == "forward" else method
    return getattr(torch_cls, method), getattr(keras_cls, keras_method)


def _parameters(function, qualified: str, side: str) -> list[tuple]:
    """(name, kind, default) of each argument, without self and the allowed one-sided ones."""
    out = []
    for p in inspect.signature(function).parameters.values():
        if p.name == "self" or (qualified, side, p.name) in ONE_SIDED_ARGUMENTS:
            continue
        name = p.name
        if side == "keras":
            for (where, torch_name), (keras_name, _) in RENAMED_ARGUMENTS.items():
                if where == qualified and name == keras_name:
                    name = torch_name
        out.append((name, p.kind.name, p.default))
    return out


def _callables() -> list[str]:
    names = list(FUNCTIONS)
    for cls in CLASSES:
        names += [f"{cls}.__init__", f"{cls}.forward"] + [
            f"{cls}.{m}"
            for m in sorted(_public_methods(getattr(torch_side, cls)))
            if m != "forward"
        ]
    return names


def _public_methods(cls) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and name[0] != "_"}


@pytest.mark.parametrize("qualified", _callables())
def test_same_arguments_in_the_same_order_with_the_same_defaults(qualified):
    torch_fn, keras_fn = _pair(qualified)
    torch_args = _parameters(torch_fn, qualified, "torch")
    keras_args = _parameters(keras_fn, qualified, "keras")
    assert keras_args == torch_args, (
        f"{qualified}: PyTorch takes {torch_args}, Keras {keras_args}; give both the same "
        "arguments, or allow the difference in this file's tables with the reason"
    )
    if qualified.endswith(".forward"):
        return  # layers and models: past the input, Keras passes everything by keyword
    for function, side in ((torch_fn, "torch"), (keras_fn, "keras")):
        names = [n for n in inspect.signature(function).parameters if n != "self"]
        own = [n for n in names if (qualified, side, n) in ONE_SIDED_ARGUMENTS]
        assert names[len(names) - len(own) :] == own, (
            f"{qualified}: {side}'s own arguments {own} must come after the shared ones, "
            "so that a call with positional arguments means the same on both sides"
        )


def test_allowed_differences_are_real_and_explained():
    """No stale entry: every allowed difference exists, on the side it names, with a reason."""
    for (qualified, side, name), reason in ONE_SIDED_ARGUMENTS.items():
        torch_fn, keras_fn = _pair(qualified)
        here, there = (torch_fn, keras_fn) if side == "torch" else (keras_fn, torch_fn)
        assert name in inspect.signature(here).parameters, (qualified, side, name)
        assert name not in inspect.signature(there).parameters, (qualified, side, name)
        assert len(reason) > 20
    for (qualified, torch_name), (keras_name, reason) in RENAMED_ARGUMENTS.items():
        torch_fn, keras_fn = _pair(qualified)
        assert torch_name in inspect.signature(torch_fn).parameters
        assert keras_name in inspect.signature(keras_fn).parameters
        assert len(reason) > 20


@pytest.mark.parametrize("cls", CLASSES)
def test_same_public_methods(cls):
    torch_cls, keras_cls = getattr(torch_side, cls), getattr(keras_side, cls)
    torch_methods = _public_methods(torch_cls) - {"forward"}
    keras_methods = _public_methods(keras_cls) - {"call", "build"}  # build: KERAS_BUILD
    torch_methods -= {m for (c, s, m) in ONE_SIDED_METHODS if c == cls and s == "torch"}
    keras_methods -= {m for (c, s, m) in ONE_SIDED_METHODS if c == cls and s == "keras"}
    assert keras_methods == torch_methods
    assert "forward" in vars(torch_cls) and "call" in vars(keras_cls) and "build" in vars(keras_cls)


def _module_names(module) -> set[str]:
    """Public functions and classes defined in `module` itself."""
    return {
        name
        for name, value in vars(module).items()
        if name[0] != "_"
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    }


@pytest.mark.parametrize(
    "kind, torch_module, keras_module",
    [
        ("model", torch_model_module, keras_model_module),
        ("sampling", torch_sampling_module, keras_sampling_module),
    ],
)
def test_same_public_names(kind, torch_module, keras_module):
    torch_names, keras_names = _module_names(torch_module), _module_names(keras_module)
    torch_only = {n for (k, s, n) in ONE_SIDED_NAMES if k == kind and s == "torch"}
    keras_only = {n for (k, s, n) in ONE_SIDED_NAMES if k == kind and s == "keras"}
    assert torch_only <= torch_names and keras_only <= keras_names, "a stale allowance"
    assert torch_names - torch_only == keras_names - keras_only
    for name in (*CLASSES, *FUNCTIONS):  # and both packages export the shared ones
        assert name in torch_side.__all__ and name in keras_side.__all__, name


# --------------------------------------------------------------------------------------
# Behaviour, with the same weights on both sides
# --------------------------------------------------------------------------------------


def _twins(config: GPTConfig, seed: int = 0):
    """A PyTorch GPT with every weight perturbed (so nothing is trivially small), in eval
    mode, and the Keras GPT holding the same weights."""
    torch.manual_seed(seed)
    torch_model = torch_side.GPT(config).eval()
    with torch.no_grad():
        for p in torch_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return torch_model, torch_to_keras(torch_model.state_dict(), keras_side.GPT(config))


def _ids(B: int, T: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SMALL.vocab_size, size=(B, T))


@pytest.mark.parametrize("ignored", ["some", "all"])
def test_the_loss_ignores_the_same_targets(ignored):
    """lm_loss(targets, logits) is GPT.forward(idx, targets)'s loss: -1 targets count for
    nothing, the mean is over the others; all ignored gives nan and zero gradients."""
    torch_model, keras_model = _twins(SMALL)
    x, y = _ids(3, 12), _ids(3, 12, seed=1)
    if ignored == "some":
        y[0, :5], y[1, -1], y[2, 7] = -1, -1, -1
    else:
        y[:] = -1
    logits, loss = torch_model(torch.from_numpy(x), torch.from_numpy(y))
    logits.retain_grad()
    loss.backward()
    keras_logits = tf.constant(keras_model(x))
    with tf.GradientTape() as tape:
        tape.watch(keras_logits)
        keras_loss = keras_model_module.lm_loss(y, keras_logits)
    keras_grad = tape.gradient(keras_loss, keras_logits).numpy()
    torch_grad = logits.grad.numpy()
    if ignored == "all":
        assert math.isnan(loss.item()) and math.isnan(float(keras_loss))
        assert not torch_grad.any() and not keras_grad.any()
        return
    assert abs(float(keras_loss) - loss.item()) <= 1e-5
    assert np.abs(keras_grad - torch_grad).max() <= 1e-6
    assert not keras_grad[y == -1].any() and keras_grad[y != -1].any()


def _only_attention_dropout(torch_model, keras_model) -> None:
    """Every dropout layer off, the embeddings' and the residual branches': what still
    varies is the attention weights' dropout, which is no layer on either side."""
    modules = [m for m in torch_model.modules() if isinstance(m, torch.nn.Dropout)]
    layers = [la for la in keras_model._flatten_layers() if isinstance(la, keras.layers.Dropout)]
    n = 1 + 2 * keras_model.config.n_layer  # drop, then resid_dropout and mlp.dropout per block
    assert len(modules) == len(layers) == n
    for module in modules:
        module.p = 0.0
    for layer in layers:
        layer.rate = 0.0


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("side", ["torch", "keras"])
def test_attention_weights_drop_while_training_only(side, impl):
    """The shakespeare-char preset's dropout reaches the attention weights on both sides,
    with either attention; in inference mode the two agree with each other again."""
    torch_model, keras_model = _twins(SMALL.replace(dropout=0.3, attn_impl=impl))
    _only_attention_dropout(torch_model, keras_model)
    x = _ids(2, 12)
    if side == "torch":
        torch_model.train()
        with torch.no_grad():
            first, second = (torch_model(torch.from_numpy(x))[0].numpy() for _ in range(2))
        torch_model.eval()
    else:
        first, second = (np.asarray(keras_model(x, training=True)) for _ in range(2))
    assert np.abs(first - second).max() > 1e-3, "in training the attention weights must drop"
    inference = np.asarray(keras_model(x, training=False))
    assert np.array_equal(inference, np.asarray(keras_model(x)))
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x))[0].numpy()
    assert np.abs(inference - expected).max() <= 1e-4


@pytest.mark.parametrize("side", ["torch", "keras"])
def test_manual_attention_drops_weights_as_inverted_dropout(side):
    """v = the identity makes y the dropped weights themselves: each kept weight is scaled
    by 1 / (1 - p), about p of them are zero, and the returned weights are undropped."""
    p, T = 0.4, 32
    rng = np.random.default_rng(0)
    q, k = (rng.standard_normal((2, 3, T, 8)).astype("float32") for _ in range(2))
    v = np.broadcast_to(np.eye(T, dtype="float32"), (2, 3, T, T)).copy()
    if side == "torch":
        torch.manual_seed(0)
        y, weights = torch_side.manual_attention(
            *(torch.from_numpy(a) for a in (q, k, v)), return_weights=True, dropout=p
        )
        y, weights = y.numpy(), weights.numpy()
    else:
        y, weights = keras_side.manual_attention(q, k, v, return_weights=True, dropout=p, seed=0)
        y, weights = np.asarray(y), np.asarray(weights)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    visible = weights > 0
    kept = y != 0
    assert not (kept & ~visible).any(), "dropout never adds weight to a masked key"
    np.testing.assert_allclose(y[kept], weights[kept] / (1 - p), rtol=1e-5)
    dropped = 1 - kept[visible].mean()
    assert abs(dropped - p) < 0.05, f"{dropped:.3f} of the weights dropped, not about {p}"


def test_attention_maps_agree():
    torch_model, keras_model = _twins(SMALL.replace(attn_impl="sdpa"))
    x = _ids(1, 10, seed=4)
    expected = torch_model.attention_maps(torch.from_numpy(x)).numpy()
    got = np.asarray(keras_model.attention_maps(x))
    assert got.shape == (SMALL.n_layer, SMALL.n_head, 10, 10)
    assert np.abs(got - expected).max() <= 1e-5


def test_last_only_agrees():
    torch_model, keras_model = _twins(SMALL)
    x = _ids(2, 9, seed=5)
    expected = torch_model(torch.from_numpy(x), last_only=True)[0].detach().numpy()
    got = np.asarray(keras_model(x, last_only=True))
    assert got.shape == (2, 1, SMALL.vocab_size)
    assert np.abs(got - expected).max() <= 1e-4


def _torch_call(model, idx, **kwargs):
    idx = torch.from_numpy(idx) if isinstance(idx, np.ndarray) else idx
    if kwargs.pop("cached", 0):
        cache = model.new_cache(idx.shape[0])
        model(torch.zeros(idx.shape[0], 12, dtype=torch.long), cache=cache)  # 12 cached
        kwargs["cache"] = cache
    if "targets" in kwargs:
        kwargs["targets"] = torch.from_numpy(kwargs["targets"])
    return model(idx, **kwargs)


def _keras_call(model, idx, **kwargs):
    if kwargs.pop("cached", 0):
        kwargs.update(cache=model.new_cache(idx.shape[0]), start=12)
    if "targets" in kwargs:
        targets = kwargs.pop("targets")
        return keras_model_module.lm_loss(targets, model(idx, **kwargs))
    return model(idx, **kwargs)


@pytest.mark.parametrize("side", ["torch", "keras"])
@pytest.mark.parametrize(
    "idx, kwargs, error, words",
    [
        (_ids(1, 17), {}, ValueError, ["sequence length 17", "block_size 16"]),
        (np.array([[1, 2, 41]]), {}, ValueError, ["token id 41", "0..40"]),
        (np.array([[1, -3]]), {}, ValueError, ["token id -3"]),
        (np.random.rand(1, 4).astype("float32"), {}, TypeError, ["dtype", "float32"]),
        (np.array([1, 2, 3]), {}, ValueError, ["(B, T)", "idx[None]"]),
        (np.zeros((1, 0), dtype=np.int64), {}, ValueError, ["empty"]),
        (_ids(1, 5), {"cached": 12}, ValueError, ["12 cached + 5 new tokens", "block_size 16"]),
        (_ids(1, 4), {"targets": _ids(1, 3)}, ValueError, ["targets must have the shape"]),
        (_ids(1, 4), {"targets": np.zeros((1, 4), "float32")}, TypeError, ["targets"]),
    ],
)
def test_the_same_mistakes_get_the_same_errors(side, idx, kwargs, error, words):
    torch_model, keras_model = _twins(SMALL)
    call = _torch_call if side == "torch" else _keras_call
    with pytest.raises(error) as err:
        call(torch_model if side == "torch" else keras_model, idx, **dict(kwargs))
    for word in words:
        assert word in str(err.value)
