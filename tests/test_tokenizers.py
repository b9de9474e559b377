"""Tests for course/tokenizers.py: characters, the three BPE functions, training, files, tiktoken.

`check_count_pairs`, `check_merge_pair` and `check_apply_merges` take an implementation and
assert on hand-worked examples, so chapter 03's graded cells can run them on a learner's
function; the tests below prove each check passes the reference and fails plausible mistakes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import regex
from conftest import SHARED_DATA_DIR
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from course import tokenizers
from course.data import load_text
from course.tokenizers import (
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    apply_merges,
    count_pairs,
    merge_pair,
    tokenizer_from_state,
    tokenizer_state,
)

# --- The corpus -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shakespeare() -> str:
    if SHARED_DATA_DIR is None:
        pytest.skip("no tinyshakespeare.txt in $COURSE_DATA_DIR nor in ../shared/data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COURSE_DATA_DIR", str(SHARED_DATA_DIR))
        return load_text("tinyshakespeare", progress=False)


@pytest.fixture(scope="module")
def small_bpe(shakespeare) -> BPETokenizer:
    """Trained once on a slice of Shakespeare; shared by the encode/decode tests."""
    return BPETokenizer.train(shakespeare[:200_000], 400)


# --- CharTokenizer ----------------------------------------------------------------------------


def test_char_tokenizer_on_shakespeare_has_65_sorted_characters(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    assert tok.vocab_size == 65
    assert tok.chars == sorted(set(shakespeare))
    assert tok.chars[:2] == ["\n", " "]  # newline and space sort first
    assert tok.decode(tok.encode(shakespeare[:5000])) == shakespeare[:5000]


def test_char_tokenizer_ids_follow_sorted_order():
    tok = CharTokenizer.from_text("hello")
    assert tok.chars == ["e", "h", "l", "o"]
    assert tok.encode("hole") == [1, 3, 2, 0]
    assert tok.decode([1, 0, 2, 2, 3]) == "hello"
    assert tok.encode("") == [] and tok.decode([]) == ""


def test_char_tokenizer_errors_name_the_problem():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z'.*position 2"):
        tok.encode("abzc")
    with pytest.raises(ValueError, match=r"id 3 .*0 to 2"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match=r"id -1"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="sorted"):
        CharTokenizer(["b", "a"])


# --- The three BPE functions: reusable checks -------------------------------------------------


def check_count_pairs(impl) -> None:
    """Assert `impl` counts adjacent pairs like `count_pairs`, on hand-worked examples."""
    assert impl([]) == {}, "an empty list has no pairs"
    assert impl([7]) == {}, "a single id has no pairs"
    assert impl([1, 2, 1, 2]) == {(1, 2): 2, (2, 1): 1}, "[1, 2, 1, 2] has (1,2) twice, (2,1) once"
    assert impl([1, 1, 1]) == {(1, 1): 2}, "overlapping pairs all count: [1, 1, 1] has (1,1) twice"
    ids = [5, 6, 7]
    impl(ids)
    assert ids == [5, 6, 7], "count_pairs must not change its input"
    counts = {(5, 6): 10}
    result = impl([5, 6, 7], counts)
    assert result is counts, "with counts given, add into that dict and return it"
    assert counts == {(5, 6): 11, (6, 7): 1}, "counts must be added to, not replaced"
    impl([7, 5], counts)
    assert counts == {(5, 6): 11, (6, 7): 1, (7, 5): 1}, "a second chunk adds only its own pairs"


def check_merge_pair(impl) -> None:
    """Assert `impl` merges a pair left to right without overlap, like `merge_pair`."""
    assert impl([], (1, 2), 9) == [], "merging in an empty list gives an empty list"
    assert impl([1], (1, 2), 9) == [1], "a single id has nothing to merge"
    assert impl([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9], "every occurrence is merged"
    assert impl([2, 1], (1, 2), 9) == [2, 1], "(1, 2) is not (2, 1): order matters"
    assert impl([1, 1, 1], (1, 1), 9) == [9, 1], "left to right: [1,1,1] merging (1,1) is [9,1]"
    assert impl([1, 1, 1, 1], (1, 1), 9) == [9, 9], "[1,1,1,1] merging (1,1) is [9,9]"
    assert impl([3, 1, 2], (1, 2), 9) == [3, 9], "a pair at the very end is merged too"
    ids = [1, 2, 1, 2]
    impl(ids, (1, 2), 9)
    assert ids == [1, 2, 1, 2], "merge_pair must return a new list and leave its input alone"


def check_apply_merges(impl) -> None:
    """Assert `impl` applies merges lowest new id first, repeatedly, like `apply_merges`."""
    assert impl([], {(1, 2): 256}) == [], "an empty list stays empty"
    assert impl([1], {(1, 2): 256}) == [1], "a single id stays as it is"
    assert impl([1, 2, 3], {}) == [1, 2, 3], "without merges nothing changes"
    chained = {(1, 2): 256, (256, 3): 257}
    assert impl([1, 2, 3], chained) == [257], "merges build on earlier merges: apply repeatedly"
    ranked = {(2, 3): 256, (1, 2): 257}
    assert impl([1, 2, 3], ranked) == [1, 256], (
        "the pair learned first (lowest new id) wins, wherever it sits: [1, 2, 3] -> [1, 256]"
    )
    assert impl([1, 1, 1, 1], {(1, 1): 256, (256, 256): 257}) == [257]
    assert impl([1, 1, 1], {(1, 1): 256, (256, 1): 257}) == [257]
    ids = [1, 2, 3]
    impl(ids, chained)
    assert ids == [1, 2, 3], "apply_merges must not change its input"


def test_checks_pass_the_reference_functions():
    check_count_pairs(count_pairs)
    check_merge_pair(merge_pair)
    check_apply_merges(apply_merges)


def _count_distinct_pairs(ids, counts=None):  # counts each pair once per list
    counts = {} if counts is None else counts
    for pair in set(zip(ids, ids[1:], strict=False)):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _count_ignoring_counts(ids, counts=None):  # forgets the counts it was given
    return count_pairs(ids)


def _count_missing_last_pair(ids, counts=None):  # off by one at the end
    counts = {} if counts is None else counts
    for i in range(len(ids) - 2):
        counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


@pytest.mark.parametrize(
    "wrong", [_count_distinct_pairs, _count_ignoring_counts, _count_missing_last_pair]
)
def test_check_count_pairs_fails_wrong_implementations(wrong):
    with pytest.raises(AssertionError):
        check_count_pairs(wrong)


def _merge_right_to_left(ids, pair, new_id):
    return merge_pair(ids[::-1], pair[::-1], new_id)[::-1]


def _merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return [*ids[:i], new_id, *ids[i + 2 :]]
    return list(ids)


def _merge_in_place(ids, pair, new_id):
    ids[:] = merge_pair(ids, pair, new_id)
    return ids


def _merge_skipping_the_end(ids, pair, new_id):  # never looks at the last position
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@pytest.mark.parametrize(
    "wrong", [_merge_right_to_left, _merge_first_only, _merge_in_place, _merge_skipping_the_end]
)
def test_check_merge_pair_fails_wrong_implementations(wrong):
    with pytest.raises(AssertionError):
        check_merge_pair(wrong)


def _apply_in_order_found(ids, merges):  # merges the leftmost mergeable pair, ignoring rank
    ids = list(ids)
    while True:
        found = next((p for p in zip(ids, ids[1:], strict=False) if p in merges), None)
        if found is None:
            return ids
        ids = merge_pair(ids, found, merges[found])


def _apply_highest_rank_first(ids, merges):
    for pair, new_id in sorted(merges.items(), key=lambda item: -item[1]):
        ids = merge_pair(ids, pair, new_id)
    return list(ids)


def _apply_one_round(ids, merges):  # merges only the best pair, once
    pairs = [p for p in zip(ids, ids[1:], strict=False) if p in merges]
    if not pairs:
        return list(ids)
    best = min(pairs, key=merges.get)
    return merge_pair(ids, best, merges[best])


@pytest.mark.parametrize(
    "wrong", [_apply_in_order_found, _apply_highest_rank_first, _apply_one_round]
)
def test_check_apply_merges_fails_wrong_implementations(wrong):
    with pytest.raises(AssertionError):
        check_apply_merges(wrong)


# --- Training -----------------------------------------------------------------------------


def test_first_merges_on_a_tiny_corpus_are_the_hand_worked_ones():
    # Chunks: "ab", " ab", " ab", " cd". Pairs: (a,b) x3, (" ",a) x2, (" ",c), (c,d).
    # 1. (a, b) -> 256. Words: [256], [" ", 256] x2, [" ", c, d].
    # 2. (" ", 256) x2 -> 257. Left: (" ", c) and (c, d), once each: a tie.
    # 3. The tie goes to the smallest pair, (32, 99) -> 258; then (258, 100) -> 259.
    a, b, c, d, space = (ord(ch) for ch in "abc" + "d ")
    tok = BPETokenizer.train("ab ab ab cd", 256 + 4, special_tokens=())
    assert list(tok.merges.items()) == [
        ((a, b), 256),
        ((space, 256), 257),
        ((space, c), 258),
        ((258, d), 259),
    ]
    assert tok.vocab[257] == b" ab" and tok.vocab[259] == b" cd"
    assert tok.encode("ab ab cd") == [256, 257, 259]


def test_overlapping_pairs_merge_left_to_right_in_training():
    # "aaaa": (a,a) occurs 3 times (overlapping) -> 256 gives [256, 256] -> (256,256) -> 257.
    tok = BPETokenizer.train("aaaa", 256 + 2, special_tokens=())
    assert tok.merges == {(97, 97): 256, (256, 256): 257}
    assert tok.encode("aaaaa") == [257, 97]


def test_training_stops_early_when_no_pairs_are_left():
    tok = BPETokenizer.train("ab", 300, special_tokens=("<|endoftext|>",))
    assert tok.merges == {(97, 98): 256}
    assert tok.special_tokens == {"<|endoftext|>": 257}
    assert tok.vocab_size == 258


def test_special_tokens_are_not_merged_during_training():
    tok = BPETokenizer.train("<|endoftext|>" * 50 + "xy", 256 + 1 + 1)
    assert tok.merges == {(ord("x"), ord("y")): 256}


def test_vocab_size_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 257"):
        BPETokenizer.train("hello", 256)
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 258"):
        BPETokenizer.train("hello", 257, special_tokens=("<a>", "<b>"))


def naive_bpe_merges(text: str, n_merges: int, pattern: str = GPT2_SPLIT_PATTERN):
    """The obvious algorithm, written independently: recount every pair after every merge."""
    word_counts: dict[tuple[int, ...], int] = {}
    for chunk in regex.findall(pattern, text):
        key = tuple(chunk.encode("utf-8"))
        word_counts[key] = word_counts.get(key, 0) + 1
    words = [(list(word), freq) for word, freq in word_counts.items()]
    merges = []
    for new_id in range(256, 256 + n_merges):
        counts: dict[tuple[int, int], int] = {}
        for word, freq in words:
            for i in range(len(word) - 1):
                counts[(word[i], word[i + 1])] = counts.get((word[i], word[i + 1]), 0) + freq
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, then smallest
        merges.append(best)
        for k, (word, freq) in enumerate(words):
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            words[k] = (out, freq)
    return merges


def _synthetic_text(seed: int = 0, n_words: int = 4000) -> str:
    """Words from a 3-letter alphabet: long runs like "aaaa" stress overlapping pairs."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("aab") for _ in range(rng.randint(1, 9))) for _ in range(n_words)]
    return " ".join(words) + " ééé 日本日本 🙂🙂🙂"


def test_incremental_training_matches_full_recount_on_synthetic_text():
    text = _synthetic_text()
    n_merges = 150
    tok = BPETokenizer.train(text, 256 + n_merges, special_tokens=())
    expected = naive_bpe_merges(text, n_merges)
    assert len(expected) > 100  # the text is rich enough to exercise many merges
    assert list(tok.merges) == expected


def test_incremental_training_matches_full_recount_on_shakespeare(shakespeare):
    text = shakespeare[:150_000]
    n_merges = 120
    tok = BPETokenizer.train(text, 256 + n_merges, special_tokens=())
    assert list(tok.merges) == naive_bpe_merges(text, n_merges)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="aab c\n!é", max_size=300), st.integers(0, 40))
def test_incremental_training_matches_full_recount_on_random_text(text, n_merges):
    tok = BPETokenizer.train(text, 256 + n_merges, special_tokens=())
    assert list(tok.merges) == naive_bpe_merges(text, n_merges)


# --- Encoding and decoding ----------------------------------------------------------------

EMOJI = "🙂😀🎉👍🏽👨‍👩‍👧‍👦🇫🇷❤️"
unicode_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF)),
    # Pieces rather than characters, so that special tokens and emoji sequences show up often.
    st.lists(st.sampled_from([*"ab \n'.:,;?Tt", "the", *EMOJI, "<|endoftext|>", "<|endo"])).map(
        "".join
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unicode_text)
@example("")
@example(EMOJI)
@example("First Citizen:\n  <|endoftext|>  you're 123 \u00a0\t\r\n ")
def test_decode_inverts_encode_for_any_unicode_text(small_bpe, text):
    assert small_bpe.decode(small_bpe.encode(text)) == text
    assert small_bpe.decode(small_bpe.encode(text, allowed_special="none")) == text


def test_merges_compress_text(small_bpe, shakespeare):
    text = shakespeare[-5000:]
    ids = small_bpe.encode(text)
    assert len(ids) < 0.75 * len(text.encode())  # 143 merges: at least 4 bytes per 3 ids
    assert max(ids) >= 256


def test_special_tokens_encode_to_their_id_or_as_plain_text(small_bpe):
    eot = small_bpe.special_tokens["<|endoftext|>"]
    assert eot == small_bpe.vocab_size - 1 == 256 + len(small_bpe.merges)
    ids = small_bpe.encode("Hi<|endoftext|>Ho")
    assert ids.count(eot) == 1
    assert ids == small_bpe.encode("Hi") + [eot] + small_bpe.encode("Ho")
    plain = small_bpe.encode("Hi<|endoftext|>Ho", allowed_special="none")
    assert eot not in plain
    assert plain == small_bpe.encode("Hi<|endoftext|>Ho", allowed_special=set())
    assert small_bpe.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [eot]
    with pytest.raises(ValueError, match="unknown special tokens"):
        small_bpe.encode("x", allowed_special={"<|nope|>"})


def test_encode_batch_matches_encode(small_bpe):
    texts = ["To be, or not", "", "to be 🙂", "<|endoftext|>"]
    assert small_bpe.encode_batch(texts) == [small_bpe.encode(t) for t in texts]


def test_cache_does_not_change_results(small_bpe, shakespeare):
    text = shakespeare[:3000]
    small_bpe.clear_cache()
    cold = small_bpe.encode(text)
    warm = small_bpe.encode(text)
    assert cold == warm


def test_decode_rejects_ids_outside_the_vocabulary(small_bpe):
    n = small_bpe.vocab_size
    with pytest.raises(ValueError, match=rf"id {n} at position 1 .*0 to {n - 1}"):
        small_bpe.decode([65, n])
    with pytest.raises(ValueError, match=r"id -1"):
        small_bpe.decode([-1])


def test_decode_of_a_split_character_uses_replacement_characters(small_bpe):
    first_byte_of_e_acute = "é".encode()[0]
    assert small_bpe.decode([first_byte_of_e_acute]) == "\ufffd"


def test_lone_surrogates_are_a_clear_error(small_bpe):
    with pytest.raises(ValueError, match="surrogate at position 2"):
        small_bpe.encode("ab\ud800c")


# --- Files --------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_encodings(small_bpe, shakespeare, tmp_path):
    path = tmp_path / "bpe.json"
    small_bpe.save(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["format"] == "twin-gpt-bpe" and document["version"] == 1
    loaded = BPETokenizer.load(path)
    assert loaded.merges == small_bpe.merges
    assert loaded.special_tokens == small_bpe.special_tokens
    assert loaded.vocab == small_bpe.vocab
    assert loaded.pattern == small_bpe.pattern
    text = shakespeare[-20_000:] + "<|endoftext|> 🙂"
    assert loaded.encode(text) == small_bpe.encode(text)
    assert [p.name for p in tmp_path.iterdir()] == ["bpe.json"]  # no temporary file left


def test_save_replaces_a_file_whole_and_creates_its_folder(tmp_path):
    path = tmp_path / "new" / "bpe.json"
    BPETokenizer.train("ab ab ab cd", 256 + 4).save(path)  # the folder did not exist
    first = path.read_bytes()
    BPETokenizer([], ["<|endoftext|>"]).save(path)  # shorter: nothing of the first is left
    assert json.loads(path.read_text(encoding="utf-8"))["merges"] == []
    assert len(path.read_bytes()) < len(first)
    assert [p.name for p in path.parent.iterdir()] == ["bpe.json"]


def test_a_save_that_fails_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "bpe.json"
    BPETokenizer.train("ab ab ab cd", 256 + 4).save(path)
    before = path.read_bytes()

    def fails(document, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tokenizers.json, "dumps", fails)
    with pytest.raises(OSError, match="disk full"):
        BPETokenizer([], ["<|endoftext|>"]).save(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "tokenizer, text",
    [
        (CharTokenizer(["\n", " ", "a", "é"]), " a\na é"),
        (BPETokenizer([(97, 98), (256, 99)], ["<|endoftext|>"]), "abc ab<|endoftext|> t"),
        (BPETokenizer([(32, 116)], [], pattern=r"\S+|\s+"), "abc ab t t"),
    ],
    ids=["char", "bpe", "bpe-own-pattern"],
)
def test_tokenizer_state_is_plain_data_and_round_trips(tokenizer, text):
    state = tokenizer_state(tokenizer)
    assert json.loads(json.dumps(state)) == state  # lists, strings, numbers: checkpoint-safe
    back = tokenizer_from_state(json.loads(json.dumps(state)))
    assert type(back) is type(tokenizer) and back.vocab_size == tokenizer.vocab_size
    assert back.encode(text) == tokenizer.encode(text)
    assert back.decode(tokenizer.encode(text)) == text


def test_tokenizer_state_of_none_and_of_strangers():
    assert tokenizer_state(None) is None and tokenizer_from_state(None) is None
    with pytest.raises(TypeError, match="CharTokenizer or a BPETokenizer"):
        tokenizer_state(lambda text: [ord(c) for c in text])


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "bpe.json"
    BPETokenizer.train("ab ab ab cd", 256 + 4).save(path)
    return path


def _edit(path: Path, **changes) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    document.update(changes)
    path.write_text(json.dumps(document), encoding="utf-8")


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        BPETokenizer.load(tmp_path / "nothere.json")


def test_load_wrong_version_names_found_and_expected(saved):
    _edit(saved, version=2)
    with pytest.raises(ValueError, match=r"version 2, expected 1"):
        BPETokenizer.load(saved)


def test_load_wrong_format_names_found_and_expected(saved):
    _edit(saved, format="hf-tokenizers")
    with pytest.raises(ValueError, match=r"format 'hf-tokenizers', expected 'twin-gpt-bpe'"):
        BPETokenizer.load(saved)


def test_load_truncated_json_names_the_file(saved):
    saved.write_text(saved.read_text(encoding="utf-8")[:-10], encoding="utf-8")
    with pytest.raises(ValueError, match=r"bpe\.json is not valid JSON"):
        BPETokenizer.load(saved)


def test_load_merge_with_unknown_id_is_an_error(saved):
    _edit(saved, merges=[[97, 98], [256, 300]])
    with pytest.raises(ValueError, match=r"bpe\.json is inconsistent.*merge #1.*id 300"):
        BPETokenizer.load(saved)


def test_load_malformed_merges_and_specials_are_errors(saved):
    _edit(saved, merges=[[97, 98, 99]])
    with pytest.raises(ValueError, match=r"merge #0 must be a pair"):
        BPETokenizer.load(saved)
    _edit(saved, merges=[[97, 98]], special_tokens={"<|endoftext|>": 999})
    with pytest.raises(ValueError, match=r"special token ids must be \[257\]"):
        BPETokenizer.load(saved)


# --- tiktoken parity ----------------------------------------------------------------------


def test_tiktoken_with_our_merges_encodes_validation_text_identically(shakespeare):
    pytest.importorskip("tiktoken", reason="tiktoken comes with the dev extra")
    split = int(0.9 * len(shakespeare))
    train_text, val_text = shakespeare[:split], shakespeare[split:]
    ours = BPETokenizer.train(train_text, 512)
    enc = ours.to_tiktoken()
    expected = ours.encode(val_text, allowed_special="none")
    assert enc.encode_ordinary(val_text) == expected
    assert enc.n_vocab == ours.vocab_size
    assert enc.encode("<|endoftext|>", allowed_special="all") == [
        ours.special_tokens["<|endoftext|>"]
    ]


def test_module_imports_no_framework():
    source = Path(tokenizers.__file__).read_text(encoding="utf-8")
    import_lines = [line for line in source.splitlines() if line.startswith(("import", "from"))]
    assert not any("torch" in line or "tensorflow" in line for line in import_lines)
