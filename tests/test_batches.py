"""Token files and random batches: get_batch, the PyTorch DataLoader and tf.data agree.

Expected batches are rebuilt here from the documented rule, not from the code under test:
offsets = rng.integers(0, len(data) - block_size, size=batch_size) with one
np.random.default_rng(seed) per stream, x = data[i : i + T], y = data[i + 1 : i + 1 + T].
"""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest
from conftest import SHARED_DATA_DIR, needs_shared_corpus

from course import data
from course.data import (
    batch_offsets,
    get_batch,
    prepare_tokens,
    split_windows,
    token_file,
    train_val_split,
)

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)
needs_tf = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="tensorflow is not installed"
)

B, T, STEPS = 4, 8, 20


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    """A small token array whose values are not their positions (catches index mix-ups)."""
    return np.random.default_rng(12345).integers(0, 65536, size=500).astype(np.uint16)


def expected_batches(tokens, batch_size, block_size, seed, steps):
    """The documented sequence, built with plain slicing: a list of (x, y, offsets)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        offsets = rng.integers(0, len(tokens) - block_size, size=batch_size)
        x = np.stack([np.asarray(tokens[i : i + block_size], dtype=np.int64) for i in offsets])
        y = np.stack(
            [np.asarray(tokens[i + 1 : i + 1 + block_size], dtype=np.int64) for i in offsets]
        )
        out.append((x, y, offsets))
    return out


def assert_same_stream(batches, expected):
    batches = list(batches)
    assert len(batches) == len(expected), f"{len(batches)} batches, expected {len(expected)}"
    for k, ((x, y), (ex, ey, _)) in enumerate(zip(batches, expected, strict=True)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == ex.shape and y.shape == ey.shape, f"batch {k}: shape {x.shape}"
        assert x.dtype == np.int64 and y.dtype == np.int64, f"batch {k}: dtype {x.dtype}"
        np.testing.assert_array_equal(x, ex, err_msg=f"batch {k}: x differs")
        np.testing.assert_array_equal(y, ey, err_msg=f"batch {k}: y differs")


# --- get_batch -----------------------------------------------------------------------


def test_get_batch_matches_documented_offsets_and_shift(tokens):
    rng = np.random.default_rng(7)
    batches = [get_batch(tokens, B, T, rng) for _ in range(STEPS)]
    assert_same_stream(batches, expected_batches(tokens, B, T, 7, STEPS))
    x, y = batches[0]
    assert isinstance(x, np.ndarray) and x.shape == (B, T) and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one


def test_batch_offsets_are_the_documented_draw(tokens):
    got = batch_offsets(len(tokens), B, T, np.random.default_rng(3))
    want = np.random.default_rng(3).integers(0, len(tokens) - T, size=B)
    np.testing.assert_array_equal(got, want)
    assert got.shape == (B,)


def test_same_seed_same_batches_different_seed_different(tokens):
    a = [get_batch(tokens, B, T, rng) for rng in [np.random.default_rng(1)] for _ in range(5)]
    b = [get_batch(tokens, B, T, rng) for rng in [np.random.default_rng(1)] for _ in range(5)]
    c = [get_batch(tokens, B, T, rng) for rng in [np.random.default_rng(2)] for _ in range(5)]
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))
    # one generator keeps drawing: consecutive batches differ
    assert not np.array_equal(a[0][0], a[1][0])


def test_every_block_is_a_contiguous_in_range_slice_and_both_ends_are_reached():
    tiny = np.arange(10, dtype=np.uint16)  # value == position, so x[:, 0] is the offset
    block = 3
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        x, y = get_batch(tiny, 4, block, rng)
        for row_x, row_y in zip(x, y, strict=True):
            start = int(row_x[0])
            np.testing.assert_array_equal(row_x, np.arange(start, start + block))
            np.testing.assert_array_equal(row_y, np.arange(start + 1, start + 1 + block))
            seen.add(start)
    assert seen == set(range(len(tiny) - block)), f"offsets seen: {sorted(seen)}"


def test_longest_possible_block_starts_at_zero():
    tiny = np.arange(6, dtype=np.int64)
    x, y = get_batch(tiny, 3, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(x, np.tile(np.arange(0, 5), (3, 1)))
    np.testing.assert_array_equal(y, np.tile(np.arange(1, 6), (3, 1)))


def test_get_batch_errors(tokens):
    with pytest.raises(TypeError, match="default_rng"):
        get_batch(tokens, B, T, 1337)
    with pytest.raises(TypeError, match="default_rng"):
        get_batch(tokens, B, T, np.random.RandomState(0))
    with pytest.raises(ValueError, match=r"block_size \(500\).*\(500\)"):
        get_batch(tokens, B, len(tokens), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"block_size \(600\).*\(500\)"):
        get_batch(tokens, B, 600, np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_size"):
        get_batch(tokens, 0, T, np.random.default_rng(0))
    with pytest.raises(TypeError, match="block_size"):
        get_batch(tokens, B, 2.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="1-D"):
        get_batch(tokens.reshape(20, 25), B, T, np.random.default_rng(0))
    with pytest.raises(TypeError, match="integer"):
        get_batch(tokens.astype(np.float32), B, T, np.random.default_rng(0))


# --- train_val_split -----------------------------------------------------------------


def test_train_val_split_first_ninety_percent_then_the_rest():
    seq = np.arange(1000)
    train, val = train_val_split(seq)
    np.testing.assert_array_equal(train, np.arange(900))
    np.testing.assert_array_equal(val, np.arange(900, 1000))
    train, val = train_val_split(seq, val_fraction=0.25)
    assert (len(train), len(val)) == (750, 250)
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            train_val_split(seq, val_fraction=bad)
    with pytest.raises(ValueError, match="at least 2"):
        train_val_split(np.arange(10), val_fraction=0.1)  # 9 train, 1 val


# --- the DataLoader and tf.data ------------------------------------------------------


@needs_torch
@pytest.mark.parametrize(("num_workers", "steps"), [(0, STEPS), (2, STEPS + 1)])
def test_dataloader_yields_the_get_batch_stream(tokens, num_workers, steps):
    import torch

    from course.torch.data import make_loader

    loader = make_loader(tokens, B, T, seed=11, num_workers=num_workers, steps=steps)
    assert len(loader) == steps
    batches = list(loader)
    assert all(isinstance(x, torch.Tensor) and x.dtype == torch.int64 for x, _ in batches)
    expected = expected_batches(tokens, B, T, 11, steps)
    assert_same_stream([(x.numpy(), y.numpy()) for x, y in batches], expected)
    # a second pass starts again from the seed
    assert_same_stream([(x.numpy(), y.numpy()) for x, y in loader], expected)


@needs_torch
def test_endless_dataloader_and_different_seeds(tokens):
    from course.torch.data import make_loader

    endless = make_loader(tokens, B, T, seed=5)
    first = [(x.numpy(), y.numpy()) for _, (x, y) in zip(range(STEPS), endless, strict=False)]
    assert_same_stream(first, expected_batches(tokens, B, T, 5, STEPS))
    other = [(x.numpy(), y.numpy()) for x, y in make_loader(tokens, B, T, seed=6, steps=STEPS)]
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    with pytest.raises(ValueError, match="block_size"):
        make_loader(tokens, B, len(tokens), seed=0)
    with pytest.raises(ValueError, match="steps"):
        make_loader(tokens, B, T, seed=0, steps=0)


@needs_tf
@pytest.mark.parametrize("steps", [STEPS, None])
def test_tf_dataset_yields_the_get_batch_stream(tokens, steps):
    from course.tf.data import make_dataset

    dataset = make_dataset(tokens, B, T, seed=11, steps=steps)
    if steps is None:
        dataset = dataset.take(STEPS)
    x_spec, y_spec = dataset.element_spec
    assert tuple(x_spec.shape) == (B, T) and x_spec.dtype.name == "int64"
    expected = expected_batches(tokens, B, T, 11, STEPS)
    assert_same_stream([(x.numpy(), y.numpy()) for x, y in dataset], expected)
    assert_same_stream([(x.numpy(), y.numpy()) for x, y in dataset], expected)  # again


@needs_tf
def test_tf_dataset_different_seeds_differ(tokens):
    from course.tf.data import make_dataset

    a = [x.numpy() for x, _ in make_dataset(tokens, B, T, seed=5, steps=5)]
    b = [x.numpy() for x, _ in make_dataset(tokens, B, T, seed=6, steps=5)]
    assert not all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="block_size"):
        make_dataset(tokens, B, len(tokens), seed=0)


@needs_torch
@needs_tf
def test_all_three_agree_on_a_memmap(tmp_path, tokens):
    from course.tf.data import make_dataset
    from course.torch.data import make_loader

    ids = tokens.tolist()
    mm = token_file("x" * len(ids), lambda text: ids, tmp_path / "t.bin", fingerprint="fake")
    assert isinstance(mm, np.memmap)
    rng = np.random.default_rng(99)
    reference = [get_batch(mm, B, T, rng) for _ in range(STEPS)]
    expected = expected_batches(tokens, B, T, 99, STEPS)
    assert_same_stream(reference, expected)
    loader = make_loader(mm, B, T, seed=99, num_workers=2, steps=STEPS)
    assert_same_stream([(x.numpy(), y.numpy()) for x, y in loader], expected)
    dataset = make_dataset(mm, B, T, seed=99, steps=STEPS)
    assert_same_stream([(x.numpy(), y.numpy()) for x, y in dataset], expected)


# --- token files ---------------------------------------------------------------------


class CountingEncoder:
    """A char-level encoder (ord) that counts its calls; `offset` shifts every id."""

    def __init__(self, offset: int = 0) -> None:
        self.calls = 0
        self.offset = offset

    def encode(self, text: str) -> list[int]:
        self.calls += 1
        return [ord(ch) + self.offset for ch in text]


TEXT = "To be, or not to be: that is the question.\n" * 50


def test_token_file_written_once_then_reused(tmp_path):
    path = tmp_path / "sub" / "tokens.bin"
    encoder = CountingEncoder()
    first = token_file(TEXT, encoder, path, fingerprint="ord-v1")
    assert encoder.calls == 1
    assert isinstance(first, np.memmap) and first.dtype == np.uint16 and first.mode == "r"
    np.testing.assert_array_equal(first, [ord(ch) for ch in TEXT])
    assert path.stat().st_size == 2 * len(TEXT)
    np.testing.assert_array_equal(np.fromfile(path, dtype="<u2"), [ord(ch) for ch in TEXT])

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy reuse says nothing
        again = token_file(TEXT, encoder, path, fingerprint="ord-v1")
    assert encoder.calls == 1, "the second call must reuse the file, not encode again"
    np.testing.assert_array_equal(again, first)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokens.bin", "tokens.json"]


def test_token_file_sidecar_fields(tmp_path):
    import hashlib

    path = tmp_path / "tokens.bin"
    token_file(TEXT, CountingEncoder(), path, fingerprint="ord-v1")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["format"] == "twin-gpt-tokens"
    assert meta["version"] == 1
    assert meta["dtype"] == "uint16"
    assert meta["length"] == len(TEXT)
    assert meta["text_sha256"] == hashlib.sha256(TEXT.encode()).hexdigest()
    assert meta["tokenizer"] == "ord-v1"


def test_token_file_changed_text_or_fingerprint_encodes_again(tmp_path):
    path = tmp_path / "tokens.bin"
    encoder = CountingEncoder()
    token_file(TEXT, encoder, path, fingerprint="ord-v1")
    changed = token_file(TEXT + "!", encoder, path, fingerprint="ord-v1")
    assert encoder.calls == 2 and len(changed) == len(TEXT) + 1
    shifted = CountingEncoder(offset=1)
    other = token_file(TEXT + "!", shifted, path, fingerprint="ord-plus-one")
    assert shifted.calls == 1
    np.testing.assert_array_equal(other, [ord(ch) + 1 for ch in TEXT + "!"])
    assert json.loads(path.with_suffix(".json").read_text())["tokenizer"] == "ord-plus-one"


def test_token_file_accepts_a_plain_function(tmp_path):
    calls = []

    def encode(text):
        calls.append(text)
        return [ord(ch) for ch in text]

    a = token_file(TEXT, encode, tmp_path / "f.bin", fingerprint="fn")
    b = token_file(TEXT, encode, tmp_path / "f.bin", fingerprint="fn")
    assert len(calls) == 1
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar", "no-sidecar"])
def test_token_file_damage_is_detected_and_rebuilt(tmp_path, damage):
    path = tmp_path / "tokens.bin"
    sidecar = path.with_suffix(".json")
    encoder = CountingEncoder()
    token_file(TEXT, encoder, path, fingerprint="ord-v1")
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # same size, one bit wrong
    elif damage == "sidecar":
        sidecar.write_text('{"format": "twin-gpt-tok')
    else:
        sidecar.unlink()
    with pytest.warns(UserWarning, match="encoding the text again"):
        rebuilt = token_file(TEXT, encoder, path, fingerprint="ord-v1")
    assert encoder.calls == 2
    np.testing.assert_array_equal(rebuilt, [ord(ch) for ch in TEXT])
    assert path.read_bytes() == raw


def test_token_file_ids_too_large_for_uint16(tmp_path):
    path = tmp_path / "big.bin"
    with pytest.raises(ValueError, match=r"70000.*uint32"):
        token_file("abc", lambda text: [1, 70000, 65536], path, fingerprint="big")
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"65536.*uint32"):
        token_file("abc", lambda text: [65535, 65536], path, fingerprint="big")
    ok = token_file("ab", lambda text: [0, 65535], path, fingerprint="big")
    np.testing.assert_array_equal(ok, [0, 65535])
    wide = token_file(
        "abc", lambda text: [1, 70000, 65536], path, fingerprint="big", dtype=np.uint32
    )
    assert wide.dtype == np.uint32
    np.testing.assert_array_equal(wide, [1, 70000, 65536])


def test_token_file_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="fingerprint"):
        token_file(TEXT, CountingEncoder(), tmp_path / "a.bin", fingerprint="no/slash")
    with pytest.raises(ValueError, match=">= 0"):
        token_file("ab", lambda text: [1, -1], tmp_path / "a.bin", fingerprint="neg")
    with pytest.raises(ValueError, match="no tokens"):
        token_file("", CountingEncoder(), tmp_path / "a.bin", fingerprint="empty")
    with pytest.raises(TypeError, match="encode"):
        token_file(TEXT, 42, tmp_path / "a.bin", fingerprint="x")


def _char_encoder(text: str):
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    return lambda part: [stoi[ch] for ch in part]


@needs_shared_corpus
def test_prepare_tokens_tiny_shakespeare_classic_split(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(SHARED_DATA_DIR))
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))  # never the real cache
    text = data.load_text("tinyshakespeare", progress=False)
    encode = _char_encoder(text)
    calls = []

    def counting(part):
        calls.append(len(part))
        return encode(part)

    train, val = prepare_tokens("tinyshakespeare", counting, fingerprint="char65", folder=tmp_path)
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert (tmp_path / "tinyshakespeare-char65-train.bin").is_file()
    assert (tmp_path / "tinyshakespeare-char65-val.bin").is_file()
    itos = sorted(set(text))
    assert "".join(itos[i] for i in train[:200]) == text[:200]
    assert "".join(itos[i] for i in val[-200:]) == text[-200:]
    assert calls == [1_003_854, 111_540]
    train2, val2 = prepare_tokens(
        "tinyshakespeare", counting, fingerprint="char65", folder=tmp_path
    )
    assert len(calls) == 2, "a second run must reuse the token files"
    assert np.array_equal(train2, train) and np.array_equal(val2, val)


def test_prepare_tokens_default_folder_is_the_cache(tmp_path, monkeypatch):
    import hashlib

    text = "".join(f"line {i}: hark\n" for i in range(100))
    corpus = data.Corpus(
        name="toy",
        filename="toy.txt",
        url="http://127.0.0.1:9/unused",  # never fetched: the file is in COURSE_DATA_DIR
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "toy.txt").write_text(text)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    train, val = prepare_tokens(corpus, CountingEncoder(), fingerprint="ord", val_fraction=0.2)
    assert len(train) == int(len(text) * 0.8) and len(train) + len(val) == len(text)
    assert (tmp_path / "cache" / "tokens" / "toy-ord-train.bin").is_file()
    assert (tmp_path / "cache" / "tokens" / "toy-ord-val.bin").is_file()
    with pytest.raises(TypeError, match="tokenizer"):
        prepare_tokens(corpus, fingerprint="ord")


# --- What a model accepts, and the evaluation batches' seed --------------------------------


def test_check_tokens_refuses_what_does_not_fit_the_model():
    ok = np.array([0, 5, 64, 3, 2], dtype=np.uint16)
    assert data.check_tokens("train", ok, vocab_size=65, block_size=4) is ok  # not copied
    with pytest.raises(ValueError, match=r"val data has 5 tokens; .*block_size \(5\)"):
        data.check_tokens("val", ok, vocab_size=65, block_size=5)
    with pytest.raises(ValueError, match=r"token id 64, .*0\.\.63; set vocab_size to at least 65"):
        data.check_tokens("train", ok, vocab_size=64, block_size=2)
    with pytest.raises(ValueError, match="token id -1"):
        data.check_tokens("train", np.array([1, -1, 2, 3]), vocab_size=65, block_size=2)
    with pytest.raises(ValueError, match="1-D"):
        data.check_tokens("train", np.zeros((2, 3), dtype=np.int64), vocab_size=65, block_size=2)


def test_eval_seed_is_fixed_per_run_seed_and_step():
    assert data.eval_seed(1337, 250) == data.eval_seed(1337, 250)
    seeds = {data.eval_seed(seed, step) for seed in (0, 1, 1337) for step in (0, 1, 250, 500)}
    assert len(seeds) == 12  # another step or another run: other evaluation batches
    assert all(0 <= seed < 2**32 for seed in seeds)


@pytest.mark.parametrize(("n", "block"), [(11, 5), (10, 3), (2, 4), (9, 8), (9, 1)])
def test_split_windows_hold_every_target_once_in_order(n, block):
    data = np.arange(100, 100 + n, dtype=np.uint16)
    x, y = split_windows(data, block)
    assert x.shape == y.shape and x.shape[1] == block and x.dtype == y.dtype == np.int64
    kept = y != -1
    assert list(y[kept]) == list(range(101, 100 + n)), "data[1:], each once, in order"
    assert list(x[kept]) == list(range(100, 99 + n)), "each target's x is the token before it"
    assert len(x) == -(-(n - 1) // block), "no window more than needed"
    assert (y[:-1] != -1).all(), "only the last window may be short"
    # within a window, the context is the tokens before it in that window: x[i, 0] starts it
    assert list(x[:, 0][: (n - 1) // block]) == [100 + i * block for i in range((n - 1) // block)]


def test_split_windows_refuse_a_split_without_a_target():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        split_windows(np.array([5], dtype=np.uint16), 4)
    with pytest.raises(ValueError, match="block_size"):
        split_windows(np.arange(10), 0)
