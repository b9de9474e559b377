"""course.tf.sampling: the KV cache inside tf.function gives what the full forward gives,
and what the PyTorch GPT gives with the same weights."""

import numpy as np
import pytest
import torch

from course.config import GPTConfig
from course.tf.convert import torch_to_keras
from course.tf.model import GPT as KerasGPT
from course.tf.sampling import _compiled, filter_logits, generate, sample_next
from course.torch import generate as torch_generate
from course.torch.model import GPT as TorchGPT

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=24, vocab_size=50)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    torch_model = TorchGPT(CONFIG).eval()
    with torch.no_grad():  # spread the weights so that greedy output varies
        for p in torch_model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return torch_model, torch_to_keras(torch_model.state_dict(), KerasGPT(CONFIG))


PROMPT = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 4))


def test_greedy_with_cache_equals_without_and_equals_pytorch(models):
    torch_model, keras_model = models
    # 40 new tokens: past block_size 24, where the window starts to slide
    cached = generate(keras_model, PROMPT, 40, temperature=0)
    full = generate(keras_model, PROMPT, 40, temperature=0, use_cache=False)
    assert cached.shape == (2, 44)
    assert np.array_equal(cached, full)
    assert len(set(cached[0, 4:].tolist())) > 2, "the test needs a model whose output varies"
    expected = torch_generate(torch_model, torch.from_numpy(PROMPT), 40, temperature=0)
    assert np.array_equal(cached, expected.numpy())


def test_cached_logits_equal_the_full_forward(models):
    _, model = models
    idx = np.random.default_rng(1).integers(0, CONFIG.vocab_size, (2, 20)).astype("int32")
    full = np.asarray(model(idx))
    logits, cache = model(idx[:, :6], cache=model.new_cache(2), start=0)
    pieces = [np.asarray(logits)]
    for t in range(6, 20):
        logits, cache = model(idx[:, t : t + 1], cache=cache, start=t)
        pieces.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)


def test_decoding_is_traced_once(models):
    _, model = models
    generate(model, PROMPT, 12, temperature=0)
    generate(model, PROMPT[:, :3], 15, temperature=0.8, seed=1)
    prefill, decode, _ = _compiled(model, 2)
    assert decode.experimental_get_tracing_count() == 1, "decode retraced: a shape changed"
    assert prefill.experimental_get_tracing_count() == 1, "prefill retraced for a new length"


def test_seeded_sampling_is_repeatable_and_cache_independent(models):
    _, model = models
    a = generate(model, PROMPT, 12, temperature=0.9, top_k=8, seed=3)
    b = generate(model, PROMPT, 12, temperature=0.9, top_k=8, seed=3, use_cache=False)
    c = generate(model, PROMPT, 12, temperature=0.9, top_k=8, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stop_tokens_end_generation(models):
    _, model = models
    free = generate(model, PROMPT[:1], 20, temperature=0)
    stop = int(free[0, 9])
    first = 4 + free[0, 4:].tolist().index(stop)
    stopped = generate(model, PROMPT[:1], 20, temperature=0, stop_tokens=[stop])
    assert stopped.shape[1] == first + 1 and stopped[0, -1] == stop


def test_filters_match_the_pytorch_ones():
    from course.torch import filter_logits as torch_filter

    logits = np.random.default_rng(2).normal(size=(3, 30))
    for top_k, top_p in ((5, None), (None, 0.6), (7, 0.9), (None, 1.0)):
        ours = np.isfinite(filter_logits(logits, top_k, top_p))
        theirs = torch.isfinite(torch_filter(torch.from_numpy(logits), top_k, top_p)).numpy()
        assert np.array_equal(ours, theirs), (top_k, top_p)
    assert sample_next(logits, temperature=0)[:, 0].tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"temperature": -1}, ValueError, ["temperature"]),
        ({"top_p": 1.5}, ValueError, ["top_p"]),
        ({"top_k": 0}, ValueError, ["top_k"]),
        ({"max_new_tokens": -2}, ValueError, ["max_new_tokens"]),
    ],
)
def test_bad_arguments_name_the_problem(models, kwargs, error, words):
    _, model = models
    args = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(error) as err:
        generate(model, PROMPT, **args)
    for word in words:
        assert word in str(err.value)


def test_bad_prompts_name_the_problem(models):
    _, model = models
    with pytest.raises(ValueError, match="token id 50"):
        generate(model, np.array([[1, 50]]), 3)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        generate(model, np.array([1, 2]), 3)
