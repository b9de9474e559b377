# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Twin GPT · 03 Tokenizers
# Run this cell first. On Colab it installs the course library with this chapter's extras,
# keeping Colab's own PyTorch and TensorFlow; on your machine or on Binder the library is
# already there and nothing is installed.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("course") is None:
    extras = {"torch": "torch", "tf": "tensorflow"}  # extra: the module it installs
    missing = ",".join(e for e, module in extras.items() if not importlib.util.find_spec(module))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         f"twin-gpt[{missing}] @ git+https://github.com/twin-gpt/twin-gpt@v0.1.0"],
        check=True,
    )
from course import runtime

print(runtime.versions_line())

# %% tags=["parameters"] nbgrader={"grade": false, "grade_id": "parameters", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Parameters (this cell is tagged `parameters`). COURSE_SMOKE=1 runs everything small and fast.
SMOKE = runtime.smoke_mode()
CORPUS_CHARS = 100_000 if SMOKE else None  # None: the whole of Tiny Shakespeare (1.1 M chars)
# Vocabulary sizes for the compression plot; the BPE is trained once, at the largest.
VOCAB_SIZES = (256, 270, 300) if SMOKE else (256, 320, 512, 768, 1024, 1536, 2048)
BATCH_SIZE = 8 if SMOKE else 32  # sequences per batch in the pipeline race
BLOCK_SIZE = 64 if SMOKE else 256  # tokens per sequence
PIPELINE_BATCHES = 20 if SMOKE else 400  # batches timed per pipeline
STEP_MS = 2.0  # a pretend training step, to show what prefetching hides
SEED = 0

# %% [markdown]
# # 03 · Tokenizers and data pipelines
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/twin-gpt/twin-gpt/blob/v0.1.0/notebooks/03_tokenizers/03_tokenizers.ipynb)
#
# <!-- chapter card: written by `python -m autograde release` from solutions/chapters.toml -->
# **Time:** about 65 min to work through; the code runs in at most 1 min on 2 CPU cores.
#
# **You will be able to**
#
# - build a character tokenizer and explain why byte-level tokens never meet an unknown
#   symbol
# - train a byte-pair encoding by counting and merging pairs, and encode new text by merge
#   rank
# - weigh vocabulary size against sequence length with a measured compression curve
# - cut (input, target) windows for next-token prediction and serve the same batches from
#   numpy, a PyTorch `DataLoader` and `tf.data`
#
# **Before you start:** chapters 00 (Setup: one GPT, built twice) and 01 (Tensors, side by
# side). From outside the course: Python dicts and lists; what UTF-8 is, roughly.
# <!-- end of the chapter card -->
#
# A GPT reads integers, not text. This chapter is about the step in between, and about
# getting those integers to the model fast enough:
#
# 1. **characters**: the simplest tokenizer, one id per distinct character;
# 2. **bytes**: UTF-8 turns any text into numbers from 0 to 255, with no unknown symbols;
# 3. **byte-pair encoding (BPE)**: start from bytes and repeatedly merge the most frequent
#    neighbouring pair into a new token, the scheme GPT-2 uses;
# 4. **batches**: random windows of the token stream, served by a PyTorch `DataLoader` and
#    by a `tf.data` pipeline that produce *identical* batches, timed side by side.
#
# You write the core of each (five graded exercises); the course library
# (`course.tokenizers`, `course.data`) holds the tested reference, which the later
# chapters import.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from course import checks, data, tokenizers

text = data.load_text("tinyshakespeare")
if CORPUS_CHARS is not None:
    text = text[:CORPUS_CHARS]
print(f"{len(text):,} characters, {len(text.encode('utf-8')):,} UTF-8 bytes")
print(text[:250])

# %% [markdown]
# ## Exercise 1 · a character tokenizer
#
# The vocabulary is the set of distinct characters, **sorted** (by code point, Python's
# ordinary string order), so that the same text always gives the same ids on every machine.
# `stoi` ("string to integer") maps each character to its position in that sorted list;
# `itos` maps back (a dict from id to character, or a list indexed by id).
#
# Write `build_char_vocab(text) -> (stoi, itos)`, `encode_chars(text, stoi)` (a list of
# ints) and `decode_chars(ids, itos)` (a string). `"hello"` has the vocabulary
# `e h l o`, so it encodes to `[1, 0, 2, 2, 3]`.

# %% nbgrader={"grade": false, "grade_id": "char_tokenizer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def build_char_vocab(text):
    """``(stoi, itos)`` for the sorted set of characters in ``text``."""
    ### BEGIN SOLUTION
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = dict(enumerate(chars))
    return stoi, itos
    ### END SOLUTION


def encode_chars(text, stoi):
    """The list of ids of the characters of ``text``."""
    ### BEGIN SOLUTION
    return [stoi[ch] for ch in text]
    ### END SOLUTION


def decode_chars(ids, itos):
    """The string whose characters have the ids ``ids``."""
    ### BEGIN SOLUTION
    return "".join(itos[int(i)] for i in ids)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_char_tokenizer", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""char_tokenizer: sorted vocabulary, ids 0..V-1, encode/decode round trip."""
stoi, itos = build_char_vocab("hello")
assert sorted(stoi.values()) == [0, 1, 2, 3], f"4 characters need the ids 0..3, got {stoi}"
assert stoi == {"e": 0, "h": 1, "l": 2, "o": 3}, f"stoi for 'hello' is {stoi}: sort the characters"
assert [itos[i] for i in range(4)] == ["e", "h", "l", "o"], "itos[i] must undo stoi"
ids = encode_chars("hello", stoi)
assert [int(i) for i in ids] == [1, 0, 2, 2, 3], f"encode_chars('hello') gave {ids}"
assert decode_chars([1, 0, 2, 2, 3], itos) == "hello", "decode_chars must invert encode_chars"
stoi, itos = build_char_vocab("Zebra!")
assert stoi == {"!": 0, "Z": 1, "a": 2, "b": 3, "e": 4, "r": 5}, (
    f"stoi for 'Zebra!' is {stoi}: code-point order puts '!' before 'Z' before 'a'"
)
assert decode_chars(encode_chars("bear!", stoi), itos) == "bear!", "round trip on 'bear!'"
### BEGIN HIDDEN TESTS
full_text = data.load_text("tinyshakespeare")
stoi, itos = build_char_vocab(full_text)
assert len(stoi) == 65, f"Tiny Shakespeare has 65 distinct characters, got {len(stoi)}"
assert stoi["\n"] == 0 and stoi[" "] == 1 and stoi["z"] == 64, "ids follow code-point order"
assert sorted(stoi.values()) == list(range(65)), "ids must be 0..64"
assert all(itos[stoi[ch]] == ch for ch in stoi), "itos[stoi[ch]] must be ch"
piece = full_text[1000:3000]
assert decode_chars(encode_chars(piece, stoi), itos) == piece, "round trip on Shakespeare"
stoi, itos = build_char_vocab("héllo wörld 🙂!")
assert sorted(stoi.values()) == list(range(len(stoi))), "ids must be 0..V-1"
assert all(stoi[a] < stoi[b] for a in stoi for b in stoi if a < b), "sorted by code point"
assert stoi["!"] == 1 and stoi["🙂"] == len(stoi) - 1, "sorted by code point: ' ' '!' ... '🙂'"
assert decode_chars(encode_chars("wörld 🙂", stoi), itos) == "wörld 🙂"
### END HIDDEN TESTS

# %% [markdown]
# The character tokenizer of the whole corpus, from the library (`tokenizers.CharTokenizer`
# does the same as your functions). A text with a character the corpus never had cannot
# be encoded at all:

# %%
char_tok = tokenizers.CharTokenizer.from_text(text)
print(f"vocabulary ({char_tok.vocab_size}): {''.join(char_tok.chars)!r}")
print("'To be' ->", char_tok.encode("To be"))
try:
    char_tok.encode("naïve café 🙂")
except (KeyError, ValueError) as err:
    print(f"'naïve café 🙂' cannot be encoded: {type(err).__name__}: {err}")

# %% [markdown]
# ## Bytes instead of characters
#
# Unicode has about 150,000 characters; a vocabulary with all of them would be huge and
# mostly unused. UTF-8 writes every character as 1 to 4 **bytes**: ASCII in one, accented
# Latin letters in two, most CJK in three, emoji in four (and some emoji are several code
# points glued together). A byte vocabulary has exactly 256 entries and can encode any
# text, at the price of longer sequences.

# %%
samples = ["hello", "naïve café", "日本語", "🙂", "👩‍👩‍👧", "Ελληνικά"]
print(f"{'text':<12} {'chars':>5} {'bytes':>5}  UTF-8 bytes")
for s in samples:
    raw = s.encode("utf-8")
    print(f"{s:<12} {len(s):>5} {len(raw):>5}  {list(raw)}")
n_ascii = sum(ch.isascii() for ch in text)
print(f"\nTiny Shakespeare: {len(text):,} chars -> {len(text.encode('utf-8')):,} bytes "
      f"({n_ascii / len(text):.0%} of the characters are ASCII)")

# %% [markdown]
# Longer sequences cost attention compute (quadratic in length) and context room. BPE wins
# the length back: it adds tokens for byte sequences that occur often. Training does:
#
# 1. split the text into chunks (words with their leading space, numbers, punctuation;
#    GPT-2's regular expression `tokenizers.GPT2_SPLIT_PATTERN`), so no token spans two
#    words; turn each chunk into its bytes;
# 2. **count** every pair of neighbouring ids (exercise 2);
# 3. give the most frequent pair a new id (256, 257, ...) and **merge** it everywhere
#    (exercise 3); repeat until the vocabulary has the size you asked for.
#
# Encoding new text then replays the merges in the order they were learned (exercise 4).
#
# ## Exercise 2 · counting pairs
#
# `count_pairs(ids, counts=None)` returns a dict mapping each pair of *neighbouring* ids
# `(ids[i], ids[i + 1])` to the number of times it occurs. Every position counts, so
# windows overlap: `[1, 1, 1]` holds the pair `(1, 1)` twice. If `counts` is given (even
# an empty dict), add into that very dict and return it: that is how training counts over
# many chunks, one dict for all of them, never pairing the end of one chunk with the start
# of the next.

# %% nbgrader={"grade": false, "grade_id": "count_pairs", "locked": false, "schema_version": 3, "solution": true, "task": false}
def count_pairs(ids, counts=None):
    """Occurrences of each pair of neighbouring ids, added to ``counts`` if given."""
    ### BEGIN SOLUTION
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_count_pairs", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""count_pairs: every neighbouring pair, overlapping windows, the last pair included."""
got = count_pairs([1, 2, 3, 1, 2])
assert dict(got) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}, f"count_pairs([1, 2, 3, 1, 2]) = {got}"
got = count_pairs([1, 1, 1])
assert dict(got) == {(1, 1): 2}, f"[1, 1, 1] holds (1, 1) at positions 0 and 1, got {got}"
assert dict(count_pairs([5])) == {} and dict(count_pairs([])) == {}, "no pairs in 0 or 1 ids"
# Given a dict, count_pairs adds into that very dict and returns it (even an empty one).
tally = {}
got = count_pairs([9, 9, 4], tally)
assert got is tally, "count_pairs(ids, counts) must add into counts and return that same dict"
assert dict(tally) == {(9, 9): 1, (9, 4): 1}, f"after [9, 9, 4] the dict passed in holds {tally}"
count_pairs([4, 9, 9], tally)
assert dict(tally) == {(9, 9): 2, (9, 4): 1, (4, 9): 1}, f"counts must add up, got {tally}"
# Two chunks counted into one dict: the sum of their counts, and no pair across the boundary.
both = count_pairs([1, 3, 3, 1], count_pairs([3, 1, 3]))
assert dict(both) == {(3, 1): 2, (1, 3): 2, (3, 3): 1}, (
    f"[3, 1, 3] then [1, 3, 3, 1] into one dict: expected the sum of the two counts, got {both}"
)
### BEGIN HIDDEN TESTS
assert dict(count_pairs([4, 2])) == {(4, 2): 1}, "the one and last pair must be counted"
assert dict(count_pairs([2, 1, 1, 2])) == {(2, 1): 1, (1, 1): 1, (1, 2): 1}, "order matters"
running = count_pairs([7, 8, 7])
running = count_pairs([8, 7, 8], running)
assert dict(running) == {(7, 8): 2, (8, 7): 2}, f"counts must accumulate, got {running}"
from collections import Counter

rng = np.random.default_rng(3)
for n in (2, 3, 50, 1000):
    ids = [int(i) for i in rng.integers(0, 4, size=n)]
    expected = Counter((ids[i], ids[i + 1]) for i in range(n - 1))
    assert dict(count_pairs(ids)) == dict(expected), f"random ids of length {n}"
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 3 · one merge step
#
# `merge_pair(ids, pair, new_id)` returns a **new** list where each occurrence of `pair`
# is replaced by `new_id`, scanning left to right and never reusing an id that was already
# merged: `[1, 1, 1]` with the pair `(1, 1)` becomes `[new_id, 1]`, not `[new_id, new_id]`
# (only three ids went in; each may end up in one token only). Leave `ids` unchanged.

# %% nbgrader={"grade": false, "grade_id": "merge_pair", "locked": false, "schema_version": 3, "solution": true, "task": false}
def merge_pair(ids, pair, new_id):
    """``ids`` with every (non-overlapping, left-to-right) ``pair`` replaced by ``new_id``."""
    ### BEGIN SOLUTION
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_merge_pair", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""merge_pair: left to right, non-overlapping, the last id kept, input untouched."""
ids = [1, 2, 3, 1, 2]
assert list(merge_pair(ids, (1, 2), 9)) == [9, 3, 9], "[1, 2, 3, 1, 2] with (1, 2) -> 9"
assert ids == [1, 2, 3, 1, 2], "merge_pair must not change its input"
got = list(merge_pair([1, 1, 1], (1, 1), 9))
assert got == [9, 1], f"[1, 1, 1] with (1, 1): merge the first two only, got {got}"
got = list(merge_pair([1, 2, 1], (1, 2), 9))
assert got == [9, 1], f"the last id, unmatched, must stay: got {got}"
assert list(merge_pair([4], (4, 5), 9)) == [4], "a single id has no pair: it stays"
### BEGIN HIDDEN TESTS
assert list(merge_pair([1, 1, 1, 1], (1, 1), 9)) == [9, 9]
assert list(merge_pair([3, 1, 2], (1, 2), 9)) == [3, 9], "a pair at the very end"
assert list(merge_pair([2, 1, 3], (1, 2), 9)) == [2, 1, 3], "(1, 2) is not (2, 1)"
assert list(merge_pair([], (1, 2), 9)) == [] and list(merge_pair([1], (1, 2), 9)) == [1]
# Python's str.replace also scans left to right without overlaps: an independent reference.
rng = np.random.default_rng(4)
for n in (5, 30, 200):
    ids = [int(i) for i in rng.integers(0, 3, size=n)]
    for pair in [(0, 0), (0, 1), (2, 1)]:
        as_text = "".join(map(chr, ids)).replace(chr(pair[0]) + chr(pair[1]), chr(100))
        assert list(merge_pair(ids, pair, 100)) == [ord(c) for c in as_text], f"{n=}, {pair=}"
### END HIDDEN TESTS

# %% [markdown]
# ## Training a BPE, one merge at a time
#
# With your two functions, a (slow but complete) BPE trainer fits in a few lines. Here on
# the first 2,000 characters, without the chunking step, to watch the first merges happen:

# %%
ids = list(text[:2000].encode("utf-8"))
spelled = {i: bytes([i]) for i in range(256)}  # id -> the bytes it stands for
for new_id in range(256, 264):
    counts = count_pairs(ids)
    pair = max(counts, key=counts.get)
    ids = merge_pair(ids, pair, new_id)
    spelled[new_id] = spelled[pair[0]] + spelled[pair[1]]
    print(f"merge {pair} seen {counts[pair]:2d}x -> {new_id} = {spelled[new_id]!r:8} "
          f"{len(ids)} ids left")

# %% [markdown]
# ## Exercise 4 · encoding with a merge table
#
# A trained BPE is a **merge table**: a dict `{(a, b): new_id}`. New ids were handed out
# in training order, so a smaller `new_id` means an earlier merge: its **rank**. To encode,
# start from the bytes and repeat: among the neighbouring pairs present, take the one with
# the **lowest rank** and merge it (with `merge_pair`); stop when no pair left is in the
# table. Taking the pairs left to right instead, or in the dict's order, gives other
# tokens than training did.
#
# Example, with `a b c d = 97 98 99 100` and the table `{(97, 97): 256, (97, 98): 257,
# (256, 257): 258}`: `aaabdaaabac` → `[256 a b d 256 a b a c]` → `[256 257 d 256 257 a c]`
# → `[258 d 258 a c]`.

# %% nbgrader={"grade": false, "grade_id": "apply_merges", "locked": false, "schema_version": 3, "solution": true, "task": false}
def apply_merges(ids, merges):
    """Encode ``ids`` with the merge table ``merges`` ({pair: new_id}), lowest rank first."""
    ### BEGIN SOLUTION
    ids = list(ids)
    while len(ids) >= 2:
        present = set(zip(ids, ids[1:]))
        pair = min(present, key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = merge_pair(ids, pair, merges[pair])
    return ids
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_apply_merges", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""apply_merges: lowest rank first, repeatedly, until no pair is in the table."""
table = {(97, 97): 256, (97, 98): 257, (256, 257): 258}
got = list(apply_merges(list(b"aaabdaaabac"), table))
assert got == [258, 100, 258, 97, 99], f"aaabdaaabac -> {got}, expected [258, 100, 258, 97, 99]"
# The table is listed out of rank order on purpose: rank is the new id, not the dict order.
table = {(1, 2): 11, (2, 3): 10}
got = list(apply_merges([1, 2, 3], table))
assert got == [1, 10], f"(2, 3) has rank 10 < 11, so it goes first: expected [1, 10], got {got}"
# Wherever the pair sits (the start, the middle, the very end, the only pair), it merges.
for ids, expected in [([7, 8, 5, 6], [20, 5, 6]), ([5, 7, 8, 6], [5, 20, 6]),
                      ([5, 6, 7, 8], [5, 6, 20]), ([7, 8], [20])]:
    got = list(apply_merges(ids, {(7, 8): 20}))
    assert got == expected, f"{ids} with {{(7, 8): 20}}: expected {expected}, got {got}"
# Overlapping pairs merge left to right, as in merge_pair.
got = list(apply_merges(list(b"aaaaa"), {(97, 97): 256}))
assert got == [256, 256, 97], f"'aaaaa' with (a, a) -> 256: expected [256, 256, 97], got {got}"
# Merged ids merge again, until nothing in the table is left: here the last pair, twice.
got = list(apply_merges(list(b"aaaa"), {(97, 97): 256, (256, 256): 257}))
assert got == [257], f"'aaaa': (a, a) twice, then (256, 256): expected [257], got {got}"
got = list(apply_merges([3, 4, 5, 6], {(5, 6): 30, (4, 30): 31}))
assert got == [3, 31], f"[3, 4, 5, 6]: (5, 6) -> 30, then (4, 30) -> 31; got {got}"
### BEGIN HIDDEN TESTS
assert list(apply_merges([1, 2, 3], {(1, 2): 10, (2, 3): 11})) == [10, 3]
assert list(apply_merges([1, 2, 3], {(2, 3): 10, (1, 10): 11})) == [11], "merge merged ids"
assert list(apply_merges([5], {(1, 2): 10})) == [5] and list(apply_merges([], {})) == []
assert list(apply_merges([1, 2, 1, 2], {})) == [1, 2, 1, 2], "an empty table changes nothing"
# 1 2 3 4 with (3, 4) -> 10 first, then (2, 10) -> 11, never (1, 2) -> 12 or (2, 3) -> 13.
table = {(2, 3): 13, (1, 2): 12, (2, 10): 11, (3, 4): 10}
assert list(apply_merges([1, 2, 3, 4], table)) == [1, 11], "ranks across several rounds"
# Properties on random input: expanding the tokens gives the input back, and nothing
# that is left could still be merged.
rng = np.random.default_rng(5)
table = {(0, 1): 4, (4, 2): 5, (1, 1): 6, (5, 0): 7, (3, 3): 8, (6, 4): 9}
parts = {new: pair for pair, new in table.items()}


def expand(token):
    return [token] if token not in parts else expand(parts[token][0]) + expand(parts[token][1])


for n in (50, 200):
    ids = [int(i) for i in rng.integers(0, 4, size=n)]
    out = list(apply_merges(ids, table))
    assert [x for t in out for x in expand(t)] == ids, "the tokens must spell the input"
    assert not set(zip(out, out[1:])) & set(table), "a mergeable pair was left"
    assert len(out) < n, "random text of this length always has something to merge"
### END HIDDEN TESTS

# %% [markdown]
# ## A BPE trained on Tiny Shakespeare
#
# `tokenizers.BPETokenizer.train` does all of the above at scale: GPT-2's chunking, pair
# counts over distinct chunks weighted by how often each occurs, and one special token,
# `<|endoftext|>`, that marks document boundaries. We train on the first 90% of the text
# and keep the last 10% to measure how well the tokenizer compresses text it has not seen.

# %%
split = int(0.9 * len(text))
train_text, val_text = text[:split], text[split:]
start = time.perf_counter()
# vocab_size counts the special token too: max(VOCAB_SIZES) - 256 merges, plus <|endoftext|>.
bpe = tokenizers.BPETokenizer.train(train_text, vocab_size=max(VOCAB_SIZES) + 1, progress=True)
train_seconds = time.perf_counter() - start
print(f"trained {len(bpe.merges)} merges in {train_seconds:.1f} s")

print("the first 20 merges:")
for rank, ((a, b), new_id) in enumerate(list(bpe.merges.items())[:20]):
    left, right = bpe.vocab[a].decode("utf-8", "replace"), bpe.vocab[b].decode("utf-8", "replace")
    print(f"  {rank:2d}: {left!r:>8} + {right!r:<8} -> {new_id}  {bpe.vocab[new_id]!r}")

# %% [markdown]
# The first merges join a space to the letter after it (`' t'`, `' a'`) and frequent
# letter pairs (`'he'`, `'ou'`); soon whole short words such as `' the'` follow. A newline
# never merges with a letter, because GPT-2's pattern keeps whitespace in chunks of its own.
# The longest tokens, learned last, are frequent long words and the speakers' names:

# %%
merged = [bpe.vocab[i] for i in bpe.merges.values()]  # not the special token
longest = sorted(merged, key=len, reverse=True)[:15]
print([t.decode("utf-8", "replace") for t in longest])
sentence = "To be, or not to be, that is the question."
sentence_ids = bpe.encode(sentence)
print(f"{len(sentence.encode())} bytes -> {len(sentence_ids)} tokens:",
      [bpe.vocab[i].decode("utf-8", "replace") for i in sentence_ids])
assert bpe.decode(sentence_ids) == sentence

# %% [markdown]
# ## Compression vs vocabulary size
#
# A bigger vocabulary means fewer tokens per text (bytes per token goes up) but a bigger
# embedding table and rarer, harder-to-learn tokens. BPE training is greedy, so the first
# `V - 256` merges of a large tokenizer are exactly the merges a tokenizer of size `V`
# would learn: one training run gives the whole curve. We measure on the held-out 10%.
# Your `apply_merges` encodes each distinct chunk once (chunks repeat a lot).

# %%
import regex

chunks = regex.findall(tokenizers.GPT2_SPLIT_PATTERN, val_text)
distinct = sorted(set(chunks))
chunk_counts = {c: 0 for c in distinct}
for c in chunks:
    chunk_counts[c] += 1
val_bytes = len(val_text.encode("utf-8"))
ranked = list(bpe.merges.items())
ratios = {}
for size in VOCAB_SIZES:
    table = dict(ranked[: size - 256])
    n_tokens = sum(len(apply_merges(list(c.encode("utf-8")), table)) * chunk_counts[c]
                   for c in distinct)
    ratios[size] = val_bytes / n_tokens
    print(f"vocab {size:5d}: {n_tokens:8,} tokens, {ratios[size]:.2f} bytes per token")
assert ratios[256] == 1.0, "no merges: one token per byte"
full_ids = bpe.encode(val_text)
assert len(full_ids) == n_tokens, "your apply_merges and the library's encoder disagree"
print(f"bpe.encode (the library) agrees: {len(full_ids):,} tokens at vocab {size}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(list(ratios), list(ratios.values()), "o-")
ax.set_xscale("log", base=2)
ax.set_xlabel("vocabulary size")
ax.set_ylabel("bytes per token (held-out text)")
ax.set_title("BPE compression on Tiny Shakespeare")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The special token `<|endoftext|>`
#
# Training documents are concatenated into one stream; a special token between them tells
# the model "what follows is unrelated". It gets an id of its own after all the merges, and
# it is never produced by merging bytes: the text `<|endoftext|>` is either that one token
# (when special tokens are allowed) or ordinary text, split into bytes and merged.

# %%
eot = "<|endoftext|>"
print("special tokens:", bpe.special_tokens)
two_docs = "First Citizen: speak." + eot + "ROMEO: hark!"
with_special = bpe.encode(two_docs, allowed_special="all")
as_text = bpe.encode(two_docs, allowed_special="none")
print(f"special tokens allowed: {len(with_special)} tokens, {eot} is the one id "
      f"{bpe.special_tokens[eot]}")
print(f"as plain text:          {len(as_text)} tokens, {eot} spelled as "
      f"{[bpe.decode([i]) for i in bpe.encode(eot, allowed_special='none')]}")
assert bpe.special_tokens[eot] in with_special and bpe.special_tokens[eot] not in as_text
assert bpe.decode(with_special) == two_docs == bpe.decode(as_text)

# %% [markdown]
# ## Same merges, another encoder: tiktoken
#
# OpenAI's `tiktoken` runs BPE in Rust. `bpe.to_tiktoken()` hands it our merges; it must
# produce the very same ids, only faster. (tiktoken is an optional package:
# `pip install tiktoken` if the cell below skips.)

# %%
if importlib.util.find_spec("tiktoken") is None:
    print("tiktoken is not installed: skipping (pip install tiktoken)")
else:
    enc = bpe.to_tiktoken()
    bpe.clear_cache()  # time a cold encode: our encoder remembers the chunks it has seen
    start = time.perf_counter()
    ours_ids = bpe.encode(val_text)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    tik_ids = enc.encode(val_text, allowed_special="all")
    tik_s = time.perf_counter() - start
    assert list(tik_ids) == list(ours_ids), "tiktoken and our encoder disagree"
    print(f"identical ids ({len(tik_ids):,} tokens). Encoding {val_bytes:,} bytes: "
          f"ours {ours_s * 1e3:.1f} ms, tiktoken {tik_s * 1e3:.1f} ms "
          f"({ours_s / tik_s:.0f}x faster)")

# %% [markdown]
# ## Exercise 5 · the batch sampler
#
# A GPT learns to predict token $t+1$ from tokens $\le t$. A training example is a window
# of `block_size` tokens `x = data[o : o + block_size]` and its target is the same window
# shifted by one, `y = data[o + 1 : o + block_size + 1]`. A batch stacks `batch_size`
# windows at random offsets `o`.
#
# Write `get_batch(data, batch_size, block_size, rng)` returning `(x, y)`, both int64
# arrays of shape `(batch_size, block_size)` (tokens are stored as uint16 to save memory;
# embedding layers want int64). Draw the offsets with one call,
# `rng.integers(0, len(data) - block_size, size=batch_size)`: exactly the rule of the
# library's `course.data.batch_offsets`, which is how the PyTorch and TensorFlow pipelines
# below reproduce your batches. (The largest offset is `len(data) - block_size - 1`:
# `y` needs one token more than `x`.)

# %% nbgrader={"grade": false, "grade_id": "get_batch", "locked": false, "schema_version": 3, "solution": true, "task": false}
def get_batch(data, batch_size, block_size, rng):
    """``(x, y)`` int64 arrays (batch_size, block_size); y is x shifted by one token."""
    ### BEGIN SOLUTION
    offsets = rng.integers(0, len(data) - block_size, size=batch_size)
    x = np.stack([data[o : o + block_size] for o in offsets]).astype(np.int64)
    y = np.stack([data[o + 1 : o + block_size + 1] for o in offsets]).astype(np.int64)
    return x, y
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_get_batch", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""get_batch: shapes, int64, y = x shifted by one, offsets from the given generator."""
tokens = np.arange(65_000, 65_100, dtype=np.uint16)  # token i sits at position i - 65000
x, y = get_batch(tokens, 4, 8, np.random.default_rng(0))
checks.assert_shape(x, (4, 8), "x")
checks.assert_shape(y, (4, 8), "y")
checks.assert_dtype(x, "int64", "x")
checks.assert_dtype(y, "int64", "y")
assert np.array_equal(y[:, :-1], x[:, 1:]), "y must be x shifted left by one"
assert np.array_equal(y, x + 1), "y[b, t] must be the token after x[b, t]"
assert 65_000 <= x.min() and x.max() < 65_100, (
    f"ids from {x.min()} to {x.max()}: the tokens are 65000..65099 (an int16 wraps above 32767)"
)
offsets = np.random.default_rng(0).integers(0, 100 - 8, size=4)
assert np.array_equal(x[:, 0] - 65_000, offsets), (
    f"offsets {x[:, 0] - 65_000}, expected {offsets} from rng.integers(0, len(data) - block_size, "
    "size=batch_size)"
)
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(1)
tokens = np.random.default_rng(2).integers(0, 50_000, size=5000).astype(np.uint16)
for b, t in [(3, 5), (16, 32)]:
    x, y = get_batch(tokens, b, t, rng)
    checks.assert_shape(x, (b, t), "x")
    checks.assert_dtype(y, "int64", "y")
# Two calls on one generator: the same offsets as two draws of a same-seeded generator.
rng, twin = np.random.default_rng(7), np.random.default_rng(7)
for _ in range(2):
    x, y = get_batch(tokens, 6, 10, rng)
    o = twin.integers(0, len(tokens) - 10, size=6)
    checks.assert_close(x, np.stack([tokens[i : i + 10] for i in o]), atol=0, name="x")
    checks.assert_close(y, np.stack([tokens[i + 1 : i + 11] for i in o]), atol=0, name="y")
# Exactly one window fits: block_size + 1 tokens leave only offset 0.
tiny = np.arange(9, dtype=np.uint16)
for seed in range(20):
    x, y = get_batch(tiny, 5, 8, np.random.default_rng(seed))
    assert np.array_equal(x, np.tile(np.arange(8), (5, 1))), "offset 0 is the only valid one"
    assert np.array_equal(y, np.tile(np.arange(1, 9), (5, 1)))
x, _ = get_batch(np.full(20, 65535, dtype=np.uint16), 2, 4, np.random.default_rng(0))
assert (x == 65535).all(), "ids up to 65535 must survive (no int16 wrap-around)"
### END HIDDEN TESTS

# %% [markdown]
# ## Two data pipelines, one stream of batches
#
# Training wants the next batch ready the moment the model asks for it. The two frameworks
# have different tools for that:
#
# - **PyTorch**: `torch.utils.data.DataLoader`, where `num_workers > 0` starts that many
#   *worker processes* that build batches in parallel and queue them;
# - **TensorFlow**: `tf.data`, a graph of transformations run by TensorFlow's own thread
#   pool; `.prefetch()` builds the next batches in the background while the model works.
#
# `course.torch.data.make_loader` and `course.tf.data.make_dataset` both draw their
# batches with `course.data.get_batch` and a generator seeded with `seed`, so for one seed
# they serve the same batches as your `get_batch`, in the same order: the two frameworks
# can be trained on identical data. First the tokens: the whole text, encoded once.

# %%
tokens = np.array(bpe.encode(text), dtype=np.uint16)
train_tokens, val_tokens = data.train_val_split(tokens, val_fraction=0.1)
print(f"{len(tokens):,} tokens ({tokens.nbytes / 2**20:.1f} MB as uint16): "
      f"{len(train_tokens):,} train, {len(val_tokens):,} val")

# %%
from course.torch.data import make_loader

rng = np.random.default_rng(SEED)
expected = [get_batch(train_tokens, BATCH_SIZE, BLOCK_SIZE, rng) for _ in range(3)]


def same_batches(pipeline, name):
    for k, ((x, y), (ex, ey)) in enumerate(zip(pipeline, expected)):
        checks.assert_close(x, ex, atol=0, name=f"{name} batch {k} x")
        checks.assert_close(y, ey, atol=0, name=f"{name} batch {k} y")
    print(f"{name}: the same first {len(expected)} batches as get_batch")


for workers in (0, 2):
    loader = make_loader(train_tokens, BATCH_SIZE, BLOCK_SIZE, seed=SEED, num_workers=workers,
                         steps=len(expected))
    same_batches(loader, f"DataLoader(num_workers={workers})")

# %%
tf = runtime.import_tensorflow()
from course.tf.data import make_dataset

for prefetch in (False, True):
    dataset = make_dataset(train_tokens, BATCH_SIZE, BLOCK_SIZE, seed=SEED, steps=len(expected),
                           prefetch=prefetch)
    same_batches(dataset, f"tf.data(prefetch={prefetch})")

# %% [markdown]
# ## Measured: batches per second
#
# Each pipeline serves `PIPELINE_BATCHES` batches, timed after the first one (starting
# worker processes or tracing a `tf.data` graph is a one-off cost, shown separately).
# Twice: consuming batches as fast as possible, and with a pretend training step of
# `STEP_MS` ms between batches (a `time.sleep`, which, like a real step in C++, leaves the
# CPU to the pipeline). Background workers and prefetching can only help in the second case.

# %%
def pipelines():
    def plain():
        gen = np.random.default_rng(SEED)
        for _ in range(PIPELINE_BATCHES + 1):
            yield get_batch(train_tokens, BATCH_SIZE, BLOCK_SIZE, gen)

    yield "get_batch loop (numpy)", plain
    for workers in (0, 2):
        yield f"DataLoader, {workers} workers", lambda w=workers: make_loader(
            train_tokens, BATCH_SIZE, BLOCK_SIZE, seed=SEED, num_workers=w,
            steps=PIPELINE_BATCHES + 1)
    for prefetch in (False, True):
        yield f"tf.data, prefetch={prefetch}", lambda p=prefetch: make_dataset(
            train_tokens, BATCH_SIZE, BLOCK_SIZE, seed=SEED, steps=PIPELINE_BATCHES + 1,
            prefetch=p)


def measure(make, step_s):
    start = time.perf_counter()
    iterator = iter(make())
    next(iterator)
    first_s = time.perf_counter() - start
    start, served = time.perf_counter(), 0
    for _ in iterator:
        served += 1
        if step_s:
            time.sleep(step_s)
    return first_s, served / (time.perf_counter() - start)


results = {}
for name, make in pipelines():
    first_s, raw = measure(make, 0.0)
    _, with_step = measure(make, STEP_MS / 1000)
    results[name] = (first_s, raw, with_step)

print(f"{'pipeline':<26} {'first batch':>11} {'batches/s':>10} {f'with {STEP_MS:g} ms step':>16}")
for name, (first_s, raw, with_step) in results.items():
    print(f"{name:<26} {first_s * 1e3:9.1f} ms {raw:10.0f} {with_step:16.0f}")
print(f"(a {STEP_MS:g} ms step alone allows at most {1000 / STEP_MS:.0f} batches/s; "
      f"batch {BATCH_SIZE} x {BLOCK_SIZE} tokens)")

fig, axes = plt.subplots(1, 2, figsize=(10, 3), sharey=True)
names = list(results)
for ax, col, title in [(axes[0], 1, "as fast as possible"),
                       (axes[1], 2, f"with a {STEP_MS:g} ms step")]:
    ax.barh(names, [results[n][col] for n in names])
    ax.set_xlabel("batches/s (higher is better)")
    ax.set_title(title)
axes[0].invert_yaxis()
plt.tight_layout()
plt.show()

# %% [markdown]
# Read your own table before believing any rule of thumb (and rerun it: on a shared
# machine the figures move). Building a batch here is one fancy-indexing of a numpy array,
# tens of microseconds, so the plain loop is hard to beat: worker processes add the cost
# of sending every batch from one process to another, and `tf.data` a fixed per-batch
# overhead for its runtime. The balance turns when each batch needs real work (decoding
# images, tokenizing on the fly) and there are spare cores: then workers and prefetching
# earn their keep. For a GPT on pre-tokenized text, any of them keeps up with the model.
#
# ## What's next
#
# Chapter 04 embeds these ids and builds attention in PyTorch. From then on every training
# run draws its batches by this chapter's rule, seeded alike: `get_batch` itself in the
# PyTorch loops, `make_dataset` under Keras's `fit` in chapter 06.

# %% [markdown]
# ## Check yourself
#
# <!-- written by `python -m autograde release` from solutions/chapters.toml -->
# Answer each in a few sentences, from what this chapter showed you; where you are not sure,
# change the code and see.
#
# 1. Encoding with a merge table must merge the lowest-ranked pair first. Build a short
#    example where merging left to right instead gives other tokens than training produced.
# 2. Doubling the vocabulary makes the token sequence shorter but the model larger. Which
#    parts of a GPT grow with the vocabulary, which with the sequence length, and what does
#    the chapter's compression curve suggest about diminishing returns?
# 3. Why is the largest offset `get_batch` may draw `len(data) - block_size - 1`, one less
#    than the last full window of `x`? And when would `DataLoader` workers or `tf.data`
#    prefetching make batches faster than the plain loop, unlike in the chapter's
#    measurement?
