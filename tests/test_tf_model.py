"""course.tf: the Keras GPT mirrors the PyTorch one, and weights move both ways with the
same logits and the same gradients."""

import numpy as np
import pytest
import torch

from course.config import GPTConfig
from course.tf.convert import keras_to_torch, torch_to_keras, weight_pairs
from course.tf.model import GPT as KerasGPT
from course.tf.model import lm_loss
from course.torch.model import GPT as TorchGPT

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

SMALL = GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=41)


def _torch_model(config: GPTConfig, seed: int = 0) -> TorchGPT:
    """A PyTorch GPT with every weight perturbed (so biases and LayerNorms are not trivial)."""
    torch.manual_seed(seed)
    model = TorchGPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _ids(B: int, T: int, vocab: int = SMALL.vocab_size, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(B, T))


def _torch_grads(model: TorchGPT, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    model.zero_grad()
    _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
    loss.backward()
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def _keras_grads(model: KerasGPT, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy, keyed by the PyTorch parameter name."""
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        )
    variables = {}
    for name, path, attribute, transpose in weight_pairs(model.config):
        layer = model
        for part in path.split("/"):
            layer = layer.h[int(part[2:])] if part.startswith("h_") else getattr(layer, part)
        variables[name] = (getattr(layer, attribute), transpose)
    grads = tape.gradient(loss, [v for v, _ in variables.values()])
    out = {}
    for (name, (_, transpose)), grad in zip(variables.items(), grads, strict=True):
        grad = tf.convert_to_tensor(grad).numpy()  # the embeddings' grads are IndexedSlices
        out[name] = grad.T if transpose else grad
    return out


def _assert_grads_close(got: dict, expected: dict) -> None:
    for name, grad in got.items():
        ref = expected[name]
        scale = np.abs(ref).max()
        err = np.abs(grad - ref).max() / scale
        assert err <= 1e-4, f"{name}: gradient differs by {err:.2e} (relative to max {scale:.2e})"


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_torch_weights_in_keras_give_the_same_logits_and_gradients(bias, impl):
    config = SMALL.replace(bias=bias, attn_impl=impl)
    torch_model = _torch_model(config)
    keras_model = torch_to_keras(torch_model.state_dict(), KerasGPT(config))
    x, y = _ids(3, 16), _ids(3, 16, seed=1)
    expected = torch_model(torch.from_numpy(x))[0].detach().numpy()
    got = np.asarray(keras_model(x))
    assert np.abs(got - expected).max() <= 1e-4
    _assert_grads_close(_keras_grads(keras_model, x, y), _torch_grads(torch_model, x, y))


def test_keras_weights_in_torch_give_the_same_logits_and_gradients():
    config = SMALL.replace(bias=True)
    keras_model = KerasGPT(config)
    for variable in keras_model.weights:  # random, and not the torch init
        variable.assign(variable + np.random.default_rng(2).normal(0, 0.05, variable.shape))
    torch_model = TorchGPT(config).eval()
    torch_model.load_state_dict(keras_to_torch(keras_model, as_torch=True))
    assert torch_model.lm_head.weight is torch_model.transformer.wte.weight, "tying survives"
    x, y = _ids(2, 11, seed=3), _ids(2, 11, seed=4)
    expected = np.asarray(keras_model(x))
    got = torch_model(torch.from_numpy(x))[0].detach().numpy()
    assert np.abs(got - expected).max() <= 1e-4
    _assert_grads_close(_torch_grads(torch_model, x, y), _keras_grads(keras_model, x, y))


def test_round_trip_is_exact():
    torch_model = _torch_model(SMALL)
    back = keras_to_torch(torch_to_keras(torch_model.state_dict(), KerasGPT(SMALL)))
    for name, value in torch_model.state_dict().items():
        assert np.array_equal(back[name], value.numpy()), name


def test_same_parameter_count_and_layout():
    keras_model, torch_model = KerasGPT(SMALL), TorchGPT(SMALL)
    assert keras_model.num_params() == torch_model.num_params()
    assert keras_model.num_params(False) == torch_model.num_params(False)
    names = {name for name, *_ in weight_pairs(SMALL)} | {"lm_head.weight"}
    assert names == set(torch_model.state_dict())
    assert len(keras_model.weights) == len(names) - 1  # the head is the token embedding


def test_a_state_dict_that_does_not_fit_is_refused():
    state = _torch_model(SMALL.replace(bias=True)).state_dict()
    with pytest.raises(ValueError, match="bias"):
        torch_to_keras(state, KerasGPT(SMALL))
    wider = _torch_model(SMALL.replace(vocab_size=42)).state_dict()
    with pytest.raises(ValueError, match="wte"):
        torch_to_keras(wider, KerasGPT(SMALL))


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_keras_gpt_is_causal(impl):
    model = KerasGPT(SMALL.replace(attn_impl=impl))
    x = _ids(2, 12)
    logits = np.asarray(model(x))
    changed = x.copy()
    changed[:, 6] = (changed[:, 6] + 1) % SMALL.vocab_size
    new = np.asarray(model(changed))
    assert np.array_equal(new[:, :6], logits[:, :6])
    assert not np.allclose(new[:, 6:], logits[:, 6:])


def test_position_embeddings_train():
    model = KerasGPT(SMALL)
    x = _ids(2, 8)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(x, training=True))
    grad = tape.gradient(loss, model.wpe.embeddings)
    assert grad is not None and np.abs(tf.convert_to_tensor(grad).numpy()[:8]).sum() > 0


@pytest.mark.parametrize(
    "idx, error, words",
    [
        (_ids(1, 17), ValueError, ["sequence length 17", "block_size 16"]),
        (np.array([[1, 2, 41]]), ValueError, ["token id 41", "0..40"]),
        (np.array([[1, -3]]), ValueError, ["token id -3"]),
        (np.random.rand(1, 4).astype("float32"), TypeError, ["dtype", "float32"]),
        (np.array([1, 2, 3]), ValueError, ["(B, T)"]),
    ],
)
def test_bad_input_names_the_problem(idx, error, words):
    with pytest.raises(error) as err:
        KerasGPT(SMALL)(idx)
    for word in words:
        assert word in str(err.value)


def test_bad_input_inside_tf_function_is_caught_at_trace_time():
    model = KerasGPT(SMALL)
    step = tf.function(lambda x: model(x))
    with pytest.raises(ValueError, match="block_size 16"):
        step(tf.zeros((1, 20), tf.int32))


def test_keras_with_another_backend_is_a_clear_error(monkeypatch):
    from course import runtime

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(RuntimeError, match="KERAS_BACKEND is 'jax'"):
        runtime.import_keras()


def test_package_exports_load_lazily():
    import course.tf as package

    assert package.GPT is KerasGPT
    assert package.torch_to_keras is torch_to_keras
    with pytest.raises(AttributeError, match="Transformer"):
        package.Transformer  # noqa: B018


def _attention_dropout_only(model: KerasGPT) -> KerasGPT:
    """Every Dropout layer (embeddings, residual branches) off: only the attention weights'
    dropout, which is not a layer, is left to vary."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    return model


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_attention_dropout_also_drops_when_xla_compiled(impl):
    model = _attention_dropout_only(KerasGPT(SMALL.replace(dropout=0.3, attn_impl=impl)))
    x = tf.constant(_ids(2, 12))
    training = tf.function(lambda x: model(x, training=True), jit_compile=True)
    inference = tf.function(lambda x: model(x, training=False), jit_compile=True)
    assert np.abs(training(x).numpy() - training(x).numpy()).max() > 1e-4, "a new mask each call"
    assert np.abs(inference(x).numpy() - np.asarray(model(x))).max() <= 1e-5


def test_dropout_adds_no_weights_and_checkpoints_still_fit(tmp_path):
    plain, dropping = KerasGPT(SMALL), KerasGPT(SMALL.replace(dropout=0.2))

    def layout(model):  # each weight's path inside the model, and its shape
        return [(w.path.split("/", 1)[1], tuple(w.shape)) for w in model.weights]

    assert layout(plain) == layout(dropping)
    assert plain.h[0].attn.seed_generator is None  # no random state without dropout
    plain.save_weights(tmp_path / "plain.weights.h5")
    dropping.load_weights(tmp_path / "plain.weights.h5")
    x = _ids(2, 7)
    assert np.array_equal(np.asarray(dropping(x)), np.asarray(plain(x)))


def test_attention_maps_are_causal_distributions():
    model = KerasGPT(SMALL)
    maps = np.asarray(model.attention_maps(_ids(1, 12)))
    assert maps.shape == (SMALL.n_layer, SMALL.n_head, 12, 12)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert not np.triu(maps, k=1).any()
    assert all(b.attn.attention_weights is None and not b.attn.keep_weights for b in model.h)


def test_lm_loss_is_the_mean_over_counted_positions():
    logits = np.random.default_rng(5).standard_normal((2, 3, 7)).astype("float32")
    targets = np.array([[1, -1, 6], [-1, -1, 0]])
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([log_probs[0, 0, 1], log_probs[0, 2, 6], log_probs[1, 2, 0]])
    assert abs(float(lm_loss(targets, logits)) - expected) <= 1e-6
    assert abs(float(lm_loss(targets.astype("int32"), logits)) - expected) <= 1e-6
    other = np.array([[1, 6, 6], [6, 6, 0]])  # another ignored value
    expected = -np.mean([log_probs[0, 0, 1], log_probs[1, 2, 0]])
    assert abs(float(lm_loss(other, logits, ignore_index=6)) - expected) <= 1e-6


def test_train_on_batch_takes_the_step_fit_takes_and_refuses_sample_weights():
    x, y = _ids(3, 16), _ids(3, 16, seed=1)
    models = []
    for _ in range(2):
        model = KerasGPT(SMALL)
        model.set_weights(models[0].get_weights() if models else model.get_weights())
        model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
        models.append(model)
    before = models[0].get_weights()
    models[0].fit(x, y, batch_size=3, epochs=1, verbose=0, shuffle=False)
    models[1].train_on_batch(x, y)
    after_fit, after_batch = models[0].get_weights(), models[1].get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after_fit, strict=True))
    for a, b in zip(after_fit, after_batch, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="sample_weight"):
        models[1].train_on_batch(x, y, sample_weight=np.ones(3))
