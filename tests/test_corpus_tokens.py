"""One path from a corpus to token ids: `course.data.corpus_tokens`.

The trainers read what `prepare_tokens` writes (split before encoding, cached under
COURSE_CACHE_DIR), a second run encodes nothing, and a tokenizer's fingerprint changes
whenever its ids would. The cache points at tmp_path in every test: a token file left in
a real cache by an earlier run would hide a path that never writes one.
"""

from __future__ import annotations

import hashlib
import importlib
import re

import numpy as np
import pytest
from conftest import SHARED_DATA_DIR, needs_shared_corpus

from course import data
from course.config import get_preset
from course.data import Corpus, corpus_tokens, prepare_tokens
from course.tokenizers import BPETokenizer, CharTokenizer, tokenizer_fingerprint

TOY_TEXT = "".join(f"line {i}: hark, the lark at heaven's gate sings\n" for i in range(200))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("COURSE_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def toy(tmp_path, monkeypatch) -> Corpus:
    """A small corpus served from COURSE_DATA_DIR (its URL is never fetched)."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "toy.txt").write_text(TOY_TEXT, encoding="utf-8")
    monkeypatch.setenv("COURSE_DATA_DIR", str(folder))
    sha256 = hashlib.sha256(TOY_TEXT.encode()).hexdigest()
    return Corpus("toy", "toy.txt", "http://127.0.0.1:9/never-fetched", sha256)


@pytest.fixture
def count_encodes(monkeypatch):
    """Counts the calls of CharTokenizer.encode and BPETokenizer.encode (and still encodes)."""
    calls: list[str] = []
    for cls in (CharTokenizer, BPETokenizer):
        real = cls.encode

        def counting(self, text, *args, _real=real, **kwargs):
            calls.append(type(self).__name__)
            return _real(self, text, *args, **kwargs)

        monkeypatch.setattr(cls, "encode", counting)
    return calls


# --- corpus_tokens -------------------------------------------------------------------------


def test_char_tokens_are_the_text_split_before_encoding(toy, cache, count_encodes):
    train, val, tokenizer = corpus_tokens(toy, val_fraction=0.25, progress=False)
    assert isinstance(tokenizer, CharTokenizer) and tokenizer.chars == sorted(set(TOY_TEXT))
    cut = int(len(TOY_TEXT) * 0.75)
    assert tokenizer.decode(train.tolist()) == TOY_TEXT[:cut]
    assert tokenizer.decode(val.tolist()) == TOY_TEXT[cut:]
    assert isinstance(train, np.memmap) and train.dtype == np.uint16  # read from the cache
    fingerprint = tokenizer_fingerprint(tokenizer)
    files = sorted(p.name for p in (cache / "tokens").iterdir())
    assert files == [f"toy-{fingerprint}-{part}.{ext}" for part in ("train", "val")
                     for ext in ("bin", "json")]  # fmt: skip
    assert count_encodes == ["CharTokenizer", "CharTokenizer"]  # each part once


def test_a_second_call_reads_the_files_back_without_encoding(toy, count_encodes):
    first = corpus_tokens(toy, progress=False)
    count_encodes.clear()
    again = corpus_tokens(toy, progress=False)
    assert count_encodes == [], "the cached token files must be reused"
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1])
    # a given tokenizer (a resumed run's) finds the same files
    given = corpus_tokens(toy, CharTokenizer(first[2].chars), progress=False)
    assert count_encodes == [] and given[2].chars == first[2].chars


def test_another_tokenizer_gets_its_own_files(toy, cache, count_encodes):
    train, _, _ = corpus_tokens(toy, progress=False)
    wider = CharTokenizer(sorted(set(TOY_TEXT) | {"\t"}))  # sorts first: every id moves
    other, _, _ = corpus_tokens(toy, wider, progress=False)
    assert len(count_encodes) == 4, "a different tokenizer must not reuse the first one's ids"
    assert not np.array_equal(other, train)
    assert wider.decode(other.tolist()) == TOY_TEXT[: len(other)]
    assert len(list((cache / "tokens").glob("*.bin"))) == 4


def test_bpe_is_trained_when_no_tokenizer_is_given(toy, cache):
    train, val, tokenizer = corpus_tokens(toy, kind="bpe", vocab_size=270, progress=False)
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == 270
    assert len(train) < int(len(TOY_TEXT) * 0.9)  # merges: fewer tokens than characters
    assert tokenizer.decode(train.tolist()) + tokenizer.decode(val.tolist()) == TOY_TEXT
    assert tokenizer.decode(val.tolist()) == TOY_TEXT[int(len(TOY_TEXT) * 0.9) :]
    assert (cache / "tokens" / f"toy-{tokenizer_fingerprint(tokenizer)}-train.bin").is_file()
    with pytest.raises(TypeError, match="vocab_size"):
        corpus_tokens(toy, kind="bpe", progress=False)
    with pytest.raises(ValueError, match="kind"):
        corpus_tokens(toy, kind="words", progress=False)


def test_wide_vocabularies_are_stored_in_uint32(toy):
    wide = CharTokenizer(chr(i) for i in range(0x11000) if not 0xD800 <= i < 0xE000)  # 67,584
    train, _, _ = corpus_tokens(toy, wide, progress=False)
    assert train.dtype == np.uint32
    assert wide.decode(train.tolist()) == TOY_TEXT[: len(train)]
    narrow, _, _ = corpus_tokens(toy, progress=False)
    assert narrow.dtype == np.uint16  # 2 bytes a token where the ids fit


# --- tokenizer fingerprints ----------------------------------------------------------------


def test_fingerprints_change_with_the_ids_and_only_then():
    abc = tokenizer_fingerprint(CharTokenizer(["a", "b", "c"]))
    assert re.fullmatch(r"char3-[0-9a-f]{12}", abc)
    assert tokenizer_fingerprint(CharTokenizer(["a", "b", "c"])) == abc
    assert tokenizer_fingerprint(CharTokenizer(["a", "b", "d"])) != abc
    bpe = BPETokenizer([(97, 98)], ["<|endoftext|>"])
    assert re.fullmatch(r"bpe258-[0-9a-f]{12}", tokenizer_fingerprint(bpe))
    variants = [
        BPETokenizer([(98, 97)], ["<|endoftext|>"]),  # another merge
        BPETokenizer([(97, 98)], ["<|end|>"]),  # another special token
        BPETokenizer([(97, 98)], ["<|endoftext|>"], pattern=r"\S+|\s+"),  # another split
    ]
    assert len({tokenizer_fingerprint(t) for t in [bpe, *variants]}) == 4
    with pytest.raises(TypeError, match="CharTokenizer or a BPETokenizer"):
        tokenizer_fingerprint(lambda text: [ord(c) for c in text])


# --- the trainers take this path -------------------------------------------------------------


class _Checked(Exception):
    """Stops a trainer once it has checked its tokens: nothing is built or trained."""


def tokens_read_by(module_name: str, monkeypatch, preset) -> dict[str, np.ndarray]:
    module = importlib.import_module(module_name)
    seen: dict[str, np.ndarray] = {}

    def spy(name, tokens, vocab_size, block_size):
        seen[name] = data.check_tokens(name, tokens, vocab_size, block_size)
        if len(seen) == 2:
            raise _Checked

    monkeypatch.setattr(module, "check_tokens", spy)
    with pytest.raises(_Checked):
        module.train(preset, progress=False)
    return seen


def shakespeare_by_prepare_tokens(folder) -> tuple[np.ndarray, np.ndarray, CharTokenizer]:
    tokenizer = CharTokenizer.from_text(data.load_text("tinyshakespeare", progress=False))
    fingerprint = tokenizer_fingerprint(tokenizer)
    train, val = prepare_tokens(tokenizer=tokenizer, fingerprint=fingerprint, folder=folder)
    return np.asarray(train), np.asarray(val), tokenizer


@needs_shared_corpus
@pytest.mark.parametrize("module_name", ["course.torch.train", "course.tf.train"])
def test_trainers_read_what_prepare_tokens_writes(module_name, monkeypatch, tmp_path, cache):
    if module_name == "course.tf.train":
        pytest.importorskip("tensorflow")
    monkeypatch.setenv("COURSE_DATA_DIR", str(SHARED_DATA_DIR))
    preset = get_preset("nano", {"threads": 1})
    seen = tokens_read_by(module_name, monkeypatch, preset)
    train, val, tokenizer = shakespeare_by_prepare_tokens(tmp_path / "elsewhere")
    np.testing.assert_array_equal(seen["train"], train)
    np.testing.assert_array_equal(seen["val"], val)
    # the split is the text's, made before encoding: the classic 1,003,854 / 111,540
    assert (len(seen["train"]), len(seen["val"])) == (1_003_854, 111_540)
    text = data.load_text("tinyshakespeare", progress=False)
    assert tokenizer.decode(seen["val"][-300:].tolist()) == text[-300:]
    assert isinstance(seen["train"], np.memmap), "the trainer should read the cached file"
    assert sorted(p.name for p in (cache / "tokens").glob("*.bin")) == [
        f"tinyshakespeare-{tokenizer_fingerprint(tokenizer)}-{part}.bin"
        for part in ("train", "val")
    ]


@needs_shared_corpus
def test_a_second_training_run_encodes_nothing(monkeypatch, count_encodes):
    monkeypatch.setenv("COURSE_DATA_DIR", str(SHARED_DATA_DIR))
    preset = get_preset("nano", {"threads": 1})
    first = tokens_read_by("course.torch.train", monkeypatch, preset)
    assert count_encodes == ["CharTokenizer", "CharTokenizer"]
    count_encodes.clear()
    second = tokens_read_by("course.torch.train", monkeypatch, preset)
    assert count_encodes == [], "the second run must read the token files of the first"
    np.testing.assert_array_equal(second["train"], first["train"])
