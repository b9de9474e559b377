"""Chapter 03: plausible wrong answers for the tokenizer and batch exercises, and the
library's reference of each exercise, which must pass the same graded test cells.

Each wrong answer replaces the whole solution cell (for ``char_tokenizer``, all three
functions, only one thing wrong). The notebook's ``apply_merges`` may call the notebook's
``merge_pair``; the wrong answers of one exercise never touch another exercise's function.
"""

from autograde.probe import ReferenceAnswer, WrongAnswer

# The char tokenizer has no single library twin: the reference wraps CharTokenizer.
_CHAR_REFERENCE = """
from course.tokenizers import CharTokenizer

def build_char_vocab(text):
    tok = CharTokenizer.from_text(text)
    return {ch: i for i, ch in enumerate(tok.chars)}, list(tok.chars)

def encode_chars(text, stoi):
    return CharTokenizer.from_text("".join(stoi)).encode(text)

def decode_chars(ids, itos):
    chars = itos.values() if isinstance(itos, dict) else itos
    return CharTokenizer.from_text("".join(chars)).decode([int(i) for i in ids])
"""

REFERENCE_ANSWERS = [
    ReferenceAnswer("char_tokenizer", "course.tokenizers.CharTokenizer", _CHAR_REFERENCE),
    *(
        ReferenceAnswer(name, "course.tokenizers", f"from course.tokenizers import {name}")
        for name in ("count_pairs", "merge_pair", "apply_merges")
    ),
    ReferenceAnswer("get_batch", "course.data", "from course.data import get_batch"),
]

_ENCODE_DECODE = """
def encode_chars(text, stoi):
    return [stoi[ch] for ch in text]

def decode_chars(ids, itos):
    return "".join(itos[int(i)] for i in ids)
"""

WRONG_ANSWERS = [
    # char_tokenizer ----------------------------------------------------------------------
    WrongAnswer(
        "char_tokenizer",
        "vocabulary in order of first appearance, not sorted",
        """
def build_char_vocab(text):
    chars = list(dict.fromkeys(text))
    return {ch: i for i, ch in enumerate(chars)}, dict(enumerate(chars))
"""
        + _ENCODE_DECODE,
    ),
    WrongAnswer(
        "char_tokenizer",
        "ids start at 1",
        """
def build_char_vocab(text):
    chars = sorted(set(text))
    return {ch: i for i, ch in enumerate(chars, start=1)}, dict(enumerate(chars, start=1))
"""
        + _ENCODE_DECODE,
    ),
    WrongAnswer(
        "char_tokenizer",
        "encodes code points (ord) instead of vocabulary ids",
        """
def build_char_vocab(text):
    chars = sorted(set(text))
    return {ch: i for i, ch in enumerate(chars)}, dict(enumerate(chars))

def encode_chars(text, stoi):
    return [ord(ch) for ch in text]

def decode_chars(ids, itos):
    return "".join(chr(i) for i in ids)
""",
    ),
    WrongAnswer(
        "char_tokenizer",
        "sorted by frequency (most common first), not by character",
        """
from collections import Counter

def build_char_vocab(text):
    chars = [ch for ch, _ in Counter(text).most_common()]
    return {ch: i for i, ch in enumerate(chars)}, dict(enumerate(chars))
"""
        + _ENCODE_DECODE,
    ),
    # count_pairs -------------------------------------------------------------------------
    WrongAnswer(
        "count_pairs",
        "skips the last pair (range(len(ids) - 2))",
        """
def count_pairs(ids, counts=None):
    counts = {} if counts is None else counts
    for i in range(len(ids) - 2):
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
    return counts
""",
    ),
    WrongAnswer(
        "count_pairs",
        "non-overlapping windows (steps of two)",
        """
def count_pairs(ids, counts=None):
    counts = {} if counts is None else counts
    for pair in zip(ids[::2], ids[1::2]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts
""",
    ),
    WrongAnswer(
        "count_pairs",
        "ignores the counts it is given (starts afresh every call)",
        """
def count_pairs(ids, counts=None):
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts
""",
    ),
    WrongAnswer(
        "count_pairs",
        "counts unordered pairs: (2, 1) is filed under (1, 2)",
        """
def count_pairs(ids, counts=None):
    counts = {} if counts is None else counts
    for a, b in zip(ids, ids[1:]):
        pair = (min(a, b), max(a, b))
        counts[pair] = counts.get(pair, 0) + 1
    return counts
""",
    ),
    WrongAnswer(
        "count_pairs",
        "counts = counts or {}: a given empty dict is replaced, the caller's stays empty",
        """
def count_pairs(ids, counts=None):
    counts = counts or {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts
""",
    ),
    WrongAnswer(
        "count_pairs",
        "adds into a copy of counts: the right total, but the caller's dict is unchanged",
        """
from collections import Counter

def count_pairs(ids, counts=None):
    counts = Counter(counts or {})
    counts.update(zip(ids, ids[1:]))
    return counts
""",
    ),
    # merge_pair --------------------------------------------------------------------------
    WrongAnswer(
        "merge_pair",
        "overlapping merges: [1, 1, 1] becomes two new tokens",
        """
def merge_pair(ids, pair, new_id):
    merged = []
    for i in range(len(ids)):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            merged.append(new_id)
        elif i > 0 and (ids[i - 1], ids[i]) == tuple(pair):
            continue
        else:
            merged.append(ids[i])
    return merged
""",
    ),
    WrongAnswer(
        "merge_pair",
        "drops an unmatched last id (loop stops at len(ids) - 1)",
        """
def merge_pair(ids, pair, new_id):
    merged, i = [], 0
    while i < len(ids) - 1:
        if ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged
""",
    ),
    WrongAnswer(
        "merge_pair",
        "scans right to left: [1, 1, 1] becomes [1, new]",
        """
def merge_pair(ids, pair, new_id):
    merged, i = [], len(ids) - 1
    while i >= 0:
        if i >= 1 and ids[i - 1] == pair[0] and ids[i] == pair[1]:
            merged.append(new_id)
            i -= 2
        else:
            merged.append(ids[i])
            i -= 1
    return merged[::-1]
""",
    ),
    WrongAnswer(
        "merge_pair",
        "merges in place, changing the caller's list",
        """
def merge_pair(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if ids[i] == pair[0] and ids[i + 1] == pair[1]:
            ids[i : i + 2] = [new_id]
        i += 1
    return ids
""",
    ),
    # apply_merges ------------------------------------------------------------------------
    WrongAnswer(
        "apply_merges",
        "merges pairs in the order they are found, left to right, not by rank",
        """
def apply_merges(ids, merges):
    ids = list(ids)
    changed = True
    while changed:
        changed = False
        for pair in zip(ids, ids[1:]):
            if pair in merges:
                ids = merge_pair(ids, pair, merges[pair])
                changed = True
                break
    return ids
""",
    ),
    WrongAnswer(
        "apply_merges",
        "one pass over the table in the dict's order, not by rank",
        """
def apply_merges(ids, merges):
    ids = list(ids)
    for pair, new_id in merges.items():
        ids = merge_pair(ids, pair, new_id)
    return ids
""",
    ),
    WrongAnswer(
        "apply_merges",
        "stops after the first merge",
        """
def apply_merges(ids, merges):
    ids = list(ids)
    if len(ids) < 2:
        return ids
    pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
    return merge_pair(ids, pair, merges[pair]) if pair in merges else ids
""",
    ),
    WrongAnswer(
        "apply_merges",
        "highest rank first",
        """
def apply_merges(ids, merges):
    ids = list(ids)
    while len(ids) >= 2:
        present = [p for p in zip(ids, ids[1:]) if p in merges]
        if not present:
            break
        pair = max(present, key=merges.get)
        ids = merge_pair(ids, pair, merges[pair])
    return ids
""",
    ),
    WrongAnswer(
        "apply_merges",
        "never looks at the last pair (range(len(ids) - 2))",
        """
def apply_merges(ids, merges):
    ids = list(ids)
    while True:
        present = [(ids[i], ids[i + 1]) for i in range(len(ids) - 2)]
        candidates = [p for p in present if p in merges]
        if not candidates:
            return ids
        pair = min(candidates, key=merges.get)
        ids = merge_pair(ids, pair, merges[pair])
""",
    ),
    WrongAnswer(
        "apply_merges",
        "stops while two ids are left (while len(ids) > 2)",
        """
def apply_merges(ids, merges):
    ids = list(ids)
    while len(ids) > 2:
        present = set(zip(ids, ids[1:]))
        pair = min(present, key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = merge_pair(ids, pair, merges[pair])
    return ids
""",
    ),
    WrongAnswer(
        "apply_merges",
        "merges the lowest-ranked pair at one place only, then stops",
        """
def apply_merges(ids, merges):
    ids = list(ids)
    candidates = [(merges[p], i) for i, p in enumerate(zip(ids, ids[1:])) if p in merges]
    if not candidates:
        return ids
    new_id, i = min(candidates)
    return ids[:i] + [new_id] + ids[i + 2 :]
""",
    ),
    # get_batch ---------------------------------------------------------------------------
    WrongAnswer(
        "get_batch",
        "y shifted by two instead of one",
        """
def get_batch(data, batch_size, block_size, rng):
    offsets = rng.integers(0, len(data) - block_size - 1, size=batch_size)
    x = np.stack([data[o : o + block_size] for o in offsets]).astype(np.int64)
    y = np.stack([data[o + 2 : o + block_size + 2] for o in offsets]).astype(np.int64)
    return x, y
""",
    ),
    WrongAnswer(
        "get_batch",
        "offsets up to len(data) - block_size: y can run past the end",
        """
def get_batch(data, batch_size, block_size, rng):
    offsets = rng.integers(0, len(data) - block_size + 1, size=batch_size)
    x = np.stack([data[o : o + block_size] for o in offsets]).astype(np.int64)
    y = np.stack([data[o + 1 : o + block_size + 1] for o in offsets]).astype(np.int64)
    return x, y
""",
    ),
    WrongAnswer(
        "get_batch",
        "int32 instead of int64",
        """
def get_batch(data, batch_size, block_size, rng):
    offsets = rng.integers(0, len(data) - block_size, size=batch_size)
    x = np.stack([data[o : o + block_size] for o in offsets]).astype(np.int32)
    y = np.stack([data[o + 1 : o + block_size + 1] for o in offsets]).astype(np.int32)
    return x, y
""",
    ),
    WrongAnswer(
        "get_batch",
        "int16: token ids above 32767 wrap around",
        """
def get_batch(data, batch_size, block_size, rng):
    offsets = rng.integers(0, len(data) - block_size, size=batch_size)
    x = np.stack([data[o : o + block_size] for o in offsets]).astype(np.int16)
    y = np.stack([data[o + 1 : o + block_size + 1] for o in offsets]).astype(np.int16)
    return x.astype(np.int64), y.astype(np.int64)
""",
    ),
    WrongAnswer(
        "get_batch",
        "uses numpy's global generator, not the rng it is given",
        """
def get_batch(data, batch_size, block_size, rng):
    offsets = np.random.randint(0, len(data) - block_size, size=batch_size)
    x = np.stack([data[o : o + block_size] for o in offsets]).astype(np.int64)
    y = np.stack([data[o + 1 : o + block_size + 1] for o in offsets]).astype(np.int64)
    return x, y
""",
    ),
]
