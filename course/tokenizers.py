"""Tokenizers for chapter 03: from characters to GPT-2-style byte-level BPE.

A language model reads integers, so text must become a list of ids and back. Two ways:

1. `CharTokenizer`: one id per distinct character of a corpus, in sorted order (the classic
   character-level Shakespeare setup: 65 ids). Simple, but it cannot spell a character it
   never saw, and every character costs one step of the model.
2. `BPETokenizer`: byte-level *byte-pair encoding*, as in GPT-2. Text is UTF-8 bytes (256
   base ids, so any string can be spelled), and training repeatedly fuses the most frequent
   adjacent pair of ids into a new id. Three small functions carry the idea, and the chapter's
   exercises ask for exactly these:

   - `count_pairs`: how often does each adjacent pair occur?
   - `merge_pair`: replace every occurrence of one pair by a new id (left to right).
   - `apply_merges`: encode with learned merges, lowest rank (oldest merge) first.

Before any merging, GPT-2 cuts text into chunks with a regular expression
(`GPT2_SPLIT_PATTERN`: words with their leading space, numbers, punctuation runs, whitespace)
and merges only *inside* a chunk, so a token never spans " the" and "." together.

Training here is incremental: the pair counts are kept over the *unique* chunks weighted by
how often each occurs, and after a merge only the chunks containing the merged pair are
updated (see `BPETokenizer.train`). A full recount after each merge gives the same merges,
only far slower; the tests prove the two agree.

A tokenizer also travels as plain data: `tokenizer_state` / `tokenizer_from_state` put it
in a checkpoint and take it out again, and `tokenizer_fingerprint` names the token files
encoded with it (see `course.data.corpus_tokens`).

This module imports only the standard library, `regex` (the `\\p{L}` classes of GPT-2's
pattern need it) and `course.files` (the atomic writer of `BPETokenizer.save`); `tiktoken`
and `tqdm` are imported only when you ask for them.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import regex

from course.files import write_text

# GPT-2's pre-tokenization pattern (the same one tiktoken's "gpt2" encoding uses): English
# contractions, an optional space + letters, an optional space + digits, an optional space +
# other symbols, then whitespace (runs of spaces keep their last space for the next word).
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

BPE_FILE_FORMAT = "twin-gpt-bpe"
BPE_FILE_VERSION = 1
N_BYTES = 256  # ids 0..255 are the raw bytes; merges start at id 256

_ENCODE_CACHE_LIMIT = 1 << 18  # chunks remembered by `encode`; cleared when full


# --- Characters ----------------------------------------------------------------------------


class CharTokenizer:
    """One id per character: id `i` is `chars[i]`, and `chars` is sorted.

    Sorting makes the ids independent of where characters first appear in the text, so the
    same corpus always gives the same vocabulary (on Tiny Shakespeare: "\\n", " ", "!", ...,
    65 characters in all).
    """

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        for position, char in enumerate(chars):
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(
                    f"chars must be single characters, got {char!r} at position {position}"
                )
        if chars != sorted(set(chars)):
            raise ValueError("chars must be sorted and without repeats (use sorted(set(text)))")
        self.chars: list[str] = chars
        self.vocab_size: int = len(chars)
        self._id_of = {char: i for i, char in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the sorted set of characters in `text`."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        """The id of each character of `text`; a character outside the vocabulary is an error."""
        try:
            return [self._id_of[char] for char in text]
        except KeyError:
            position, char = next((i, c) for i, c in enumerate(text) if c not in self._id_of)
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) at position {position} is not in the "
                f"vocabulary of {self.vocab_size} characters"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of `ids`; each id must be in range(vocab_size)."""
        ids = list(ids)
        for position, i in enumerate(ids):
            if not 0 <= i < self.vocab_size:
                raise ValueError(
                    f"id {i} at position {position} is outside the vocabulary: "
                    f"ids run from 0 to {self.vocab_size - 1}"
                )
        return "".join(self.chars[i] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# --- The three ideas of BPE ---------------------------------------------------------------


def count_pairs(
    ids: Sequence[int], counts: dict[tuple[int, int], int] | None = None
) -> dict[tuple[int, int], int]:
    """How often each adjacent pair occurs in `ids`, added into `counts` if given.

    [1, 2, 1, 2] has pairs (1, 2), (2, 1), (1, 2): {(1, 2): 2, (2, 1): 1}. Overlapping pairs
    all count: [1, 1, 1] gives {(1, 1): 2}. Passing one dict for many chunks adds up their
    pairs without ever pairing the last id of one chunk with the first of the next.
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge_pair(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """A new list with each occurrence of `pair` in `ids` replaced by `new_id`.

    Scans left to right and never reuses an id: [1, 1, 1] merging (1, 1) gives [new, 1], and
    [1, 1, 1, 1] gives [new, new]. `ids` itself is left unchanged.
    """
    first, second = pair
    merged: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def apply_merges(ids: Sequence[int], merges: dict[tuple[int, int], int]) -> list[int]:
    """Encode `ids` with learned `merges` ({pair: new id}), the way GPT-2 does.

    Repeatedly find the pair present in `ids` whose merge was learned *first* (the lowest new
    id), merge all its occurrences, and stop when no present pair has a merge. Order matters:
    with merges {(2, 3): 256, (1, 2): 257}, [1, 2, 3] becomes [1, 256], not [257, 3].
    """
    ids = list(ids)
    not_a_merge = float("inf")
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:], strict=False), key=lambda p: merges.get(p, not_a_merge))
        if pair not in merges:
            break
        ids = merge_pair(ids, pair, merges[pair])
    return ids


# --- Byte-level BPE -----------------------------------------------------------------------


def _special_splitter(names: Collection[str]) -> regex.Pattern | None:
    """A pattern whose `split` keeps the special tokens as separate pieces (longest first)."""
    if not names:
        return None
    alternatives = sorted(names, key=len, reverse=True)
    return regex.compile("(" + "|".join(regex.escape(name) for name in alternatives) + ")")


def _first_surrogate(text: str) -> int:
    return next(i for i, char in enumerate(text) if 0xD800 <= ord(char) <= 0xDFFF)


class BPETokenizer:
    """A GPT-2-style byte-level BPE tokenizer: pre-tokenize with a regex, then merge bytes.

    Ids: 0..255 are bytes, 256..256+len(merges)-1 are merges in the order they were learned
    (the *rank*), and the special tokens (such as "<|endoftext|>") come last. Build one with
    `BPETokenizer.train(text, vocab_size)` or `BPETokenizer.load(path)`.
    """

    def __init__(
        self,
        merges: dict[tuple[int, int], int] | Sequence[tuple[int, int]],
        special_tokens: dict[str, int] | Sequence[str] = (),
        pattern: str = GPT2_SPLIT_PATTERN,
    ):
        pairs = list(merges.items()) if isinstance(merges, dict) else list(enumerate(merges))
        self.merges: dict[tuple[int, int], int] = {}
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(N_BYTES)}
        for rank, entry in enumerate(pairs):
            pair, new_id = (entry[0], entry[1]) if isinstance(merges, dict) else (entry[1], None)
            expected_id = N_BYTES + rank
            if new_id is not None and new_id != expected_id:
                raise ValueError(f"merge #{rank} {pair} must create id {expected_id}, not {new_id}")
            if (
                not isinstance(pair, (tuple, list))
                or len(pair) != 2
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in pair)
            ):
                raise ValueError(f"merge #{rank} must be a pair of two int ids, got {pair!r}")
            first, second = pair
            for i in (first, second):
                if not 0 <= i < expected_id:
                    raise ValueError(
                        f"merge #{rank} {list(pair)} refers to id {i}, which does not exist yet: "
                        f"a merge may only use ids 0..{expected_id - 1} (bytes and earlier merges)"
                    )
            if (first, second) in self.merges:
                raise ValueError(f"merge #{rank} {list(pair)} repeats an earlier merge")
            self.merges[(first, second)] = expected_id
            self.vocab[expected_id] = self.vocab[first] + self.vocab[second]

        n_base = N_BYTES + len(self.merges)
        if not isinstance(special_tokens, dict):
            special_tokens = {name: n_base + k for k, name in enumerate(special_tokens)}
        expected_ids = list(range(n_base, n_base + len(special_tokens)))
        if sorted(special_tokens.values()) != expected_ids:
            raise ValueError(
                f"special token ids must be {expected_ids} (right after the {n_base} byte and "
                f"merge ids), got {sorted(special_tokens.values())}"
            )
        for name in special_tokens:
            if not isinstance(name, str) or not name:
                raise ValueError(f"special tokens must be non-empty strings, got {name!r}")
        self.special_tokens: dict[str, int] = dict(special_tokens)
        for name, i in self.special_tokens.items():
            self.vocab[i] = name.encode("utf-8")

        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
        try:
            self._compiled = regex.compile(pattern)
        except regex.error as err:
            raise ValueError(f"pattern {pattern!r} is not a valid regex: {err}") from None
        self.pattern: str = pattern
        self.vocab_size: int = len(self.vocab)
        self._bytes_of = [self.vocab[i] for i in range(self.vocab_size)]  # fast decode
        self._splitters: dict[frozenset[str], regex.Pattern | None] = {}
        self._cache: dict[str, list[int]] = {}

    # --- Training ---------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] = ("<|endoftext|>",),
        pattern: str = GPT2_SPLIT_PATTERN,
        progress: bool = False,
    ) -> BPETokenizer:
        """Learn `vocab_size - 256 - len(special_tokens)` merges from `text`.

        1. Cut `text` at the special tokens (they are never merged), then into chunks with
           `pattern`, and count the distinct chunks: {chunk bytes: how often it occurs}.
        2. Count adjacent pairs over the distinct chunks, each weighted by its frequency, and
           remember which chunks contain each pair (`where`).
        3. Repeat: merge the most frequent pair (ties go to the smallest pair, comparing ids,
           so training is deterministic); in the chunks that contained it, and only there,
           subtract the chunk's old pairs, merge, and add its new pairs.

        A heap with lazy deletion finds the most frequent pair without scanning all pairs: each
        count change pushes a new entry, and popped entries that no longer match are dropped.
        If the text runs out of pairs, training stops early with a smaller vocabulary.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        special_tokens = tuple(special_tokens)
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special_tokens has repeats: {special_tokens}")
        smallest = N_BYTES + len(special_tokens)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
            raise ValueError(
                f"vocab_size must be an int >= {smallest} (256 bytes + {len(special_tokens)} "
                f"special tokens), got {vocab_size!r}"
            )
        compiled = regex.compile(pattern)
        splitter = _special_splitter(special_tokens)
        pieces = splitter.split(text)[::2] if splitter else [text]  # drop the specials
        chunk_counts: Counter[str] = Counter()
        for piece in pieces:
            chunk_counts.update(compiled.findall(piece))

        words: list[list[int]] = []
        freqs: list[int] = []
        for chunk, freq in chunk_counts.items():
            try:
                words.append(list(chunk.encode("utf-8")))
            except UnicodeEncodeError:
                raise ValueError(
                    f"text contains a lone surrogate at position {_first_surrogate(text)}, "
                    "which has no UTF-8 encoding"
                ) from None
            freqs.append(freq)

        pair_counts: dict[tuple[int, int], int] = {}
        where: dict[tuple[int, int], set[int]] = {}
        for w, (word, freq) in enumerate(zip(words, freqs, strict=True)):
            for pair, n in count_pairs(word).items():
                pair_counts[pair] = pair_counts.get(pair, 0) + n * freq
                where.setdefault(pair, set()).add(w)
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        n_merges = vocab_size - smallest
        merges: dict[tuple[int, int], int] = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_merges, desc="BPE merges")
        for new_id in range(N_BYTES, N_BYTES + n_merges):
            best = None
            while heap:
                neg_count, pair = heapq.heappop(heap)
                if pair_counts.get(pair) == -neg_count:  # else a stale entry
                    best = pair
                    break
            if best is None:
                break  # no pair left anywhere: the text is fully merged
            merges[best] = new_id
            del pair_counts[best]
            for w in where.pop(best):
                old_word, freq = words[w], freqs[w]
                new_word = merge_pair(old_word, best, new_id)
                words[w] = new_word
                old_pairs, new_pairs = count_pairs(old_word), count_pairs(new_word)
                for pair in old_pairs.keys() | new_pairs.keys():
                    if pair == best:
                        continue
                    delta = new_pairs.get(pair, 0) - old_pairs.get(pair, 0)
                    if pair not in new_pairs:
                        where[pair].discard(w)
                    elif pair not in old_pairs:
                        where.setdefault(pair, set()).add(w)
                    if delta:
                        count = pair_counts.get(pair, 0) + delta * freq
                        if count:
                            pair_counts[pair] = count
                            heapq.heappush(heap, (-count, pair))
                        else:
                            del pair_counts[pair]
                            where.pop(pair, None)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return cls(merges, special_tokens, pattern)

    # --- Encoding and decoding ------------------------------------------------------------

    def _splitter_for(self, allowed_special: str | Collection[str]) -> regex.Pattern | None:
        if allowed_special == "all":
            names = frozenset(self.special_tokens)
        elif allowed_special == "none":
            names = frozenset()
        elif isinstance(allowed_special, str):
            raise ValueError(
                f'allowed_special must be "all", "none" or a set of special token names, '
                f"got {allowed_special!r}"
            )
        else:
            names = frozenset(allowed_special)
            unknown = names - self.special_tokens.keys()
            if unknown:
                raise ValueError(
                    f"allowed_special names unknown special tokens {sorted(unknown)}; "
                    f"this tokenizer has {sorted(self.special_tokens)}"
                )
        if names not in self._splitters:
            self._splitters[names] = _special_splitter(names)
        return self._splitters[names]

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            ids = apply_merges(chunk.encode("utf-8"), self.merges)
            if len(self._cache) >= _ENCODE_CACHE_LIMIT:
                self._cache.clear()
            self._cache[chunk] = ids
        return ids

    def encode(self, text: str, allowed_special: str | Collection[str] = "all") -> list[int]:
        """The ids of `text`: pre-tokenize, then merge each chunk (chunks are cached).

        `allowed_special`: "all" (a special token's text becomes its one id), "none" (it is
        encoded as ordinary text, byte by byte), or a set of the special token names to honour.
        `decode(encode(s)) == s` for every string `s` that UTF-8 can encode (anything but lone
        surrogates, which raise a ValueError).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        splitter = self._splitter_for(allowed_special)
        pieces = splitter.split(text) if splitter else [text]
        ids: list[int] = []
        try:
            for k, piece in enumerate(pieces):
                if k % 2:  # split() puts the special tokens it matched at odd positions
                    ids.append(self.special_tokens[piece])
                    continue
                for chunk in self._compiled.findall(piece):
                    ids.extend(self._encode_chunk(chunk))
        except UnicodeEncodeError:
            raise ValueError(
                f"text contains a lone surrogate at position {_first_surrogate(text)}, "
                "which has no UTF-8 encoding"
            ) from None
        return ids

    def encode_batch(
        self, texts: Iterable[str], allowed_special: str | Collection[str] = "all"
    ) -> list[list[int]]:
        """`encode` each text; the chunk cache is shared, so later texts encode faster."""
        return [self.encode(text, allowed_special) for text in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`: join their bytes and decode them as UTF-8.

        Ids from `encode` always decode to the exact original text. An arbitrary id sequence
        can cut a multi-byte character in half (byte ids 0..255 alone, or a merge holding part
        of one); such bytes become U+FFFD (errors="replace") instead of raising.
        """
        ids = list(ids)
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            position, bad = next((k, i) for k, i in enumerate(ids) if not 0 <= i < self.vocab_size)
            raise ValueError(
                f"id {bad} at position {position} is outside the vocabulary: ids run from 0 "
                f"to {self.vocab_size - 1}"
            )
        return b"".join([self._bytes_of[i] for i in ids]).decode("utf-8", errors="replace")

    def clear_cache(self) -> None:
        """Forget the encoded chunks (benchmarks use it to time a cold encode)."""
        self._cache.clear()

    # --- Files --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer as versioned JSON, atomically (a crash never leaves half a file).

        Only what cannot be recomputed is stored: the pattern, the merges in rank order (merge
        k creates id 256 + k) and the special tokens; the vocabulary is rebuilt on `load`.
        """
        document = {
            "format": BPE_FILE_FORMAT,
            "version": BPE_FILE_VERSION,
            "pattern": self.pattern,
            "merges": [list(pair) for pair in self.merges],
            "special_tokens": self.special_tokens,
        }
        write_text(path, json.dumps(document, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a file written by `save`, checking its format, version and consistency."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON (damaged or truncated?): {err}") from None
        if not isinstance(document, dict):
            raise ValueError(f"{path} holds a JSON {type(document).__name__}, expected an object")
        found_format = document.get("format")
        if found_format != BPE_FILE_FORMAT:
            raise ValueError(
                f"{path} has format {found_format!r}, expected {BPE_FILE_FORMAT!r}: "
                "it is not a twin-gpt BPE tokenizer file"
            )
        found_version = document.get("version")
        if found_version != BPE_FILE_VERSION:
            raise ValueError(
                f"{path} has version {found_version!r}, expected {BPE_FILE_VERSION}: "
                "it was written by another version of the course"
            )
        missing = [key for key in ("pattern", "merges", "special_tokens") if key not in document]
        if missing:
            raise ValueError(f"{path} is missing the key(s) {missing}")
        merges, special_tokens = document["merges"], document["special_tokens"]
        if not isinstance(merges, list):
            raise ValueError(f"{path}: 'merges' must be a list of [a, b] pairs")
        if not isinstance(special_tokens, dict):
            raise ValueError(f"{path}: 'special_tokens' must be an object {{name: id}}")
        try:
            return cls(
                [tuple(pair) if isinstance(pair, list) else pair for pair in merges],
                special_tokens,
                document["pattern"],
            )
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path} is inconsistent: {err}") from None

    # --- Interoperability ---------------------------------------------------------------

    def to_tiktoken(self, name: str = "twin-gpt"):
        """The same tokenizer as a `tiktoken.Encoding` (needs the dev extra's tiktoken).

        tiktoken stores a rank per *byte string*: bytes i -> i, and each merge's bytes -> its
        id. It merges by looking up the concatenated bytes of two neighbours, which matches our
        pair-by-pair merges as long as no two ids spell the same bytes (checked here).
        """
        import tiktoken

        n_ranked = N_BYTES + len(self.merges)
        mergeable_ranks: dict[bytes, int] = {}
        for i in range(n_ranked):
            spelled = self.vocab[i]
            if spelled in mergeable_ranks:
                raise ValueError(
                    f"ids {mergeable_ranks[spelled]} and {i} both spell {spelled!r}; "
                    "tiktoken cannot represent two tokens with the same bytes"
                )
            mergeable_ranks[spelled] = i
        return tiktoken.Encoding(
            name,
            pat_str=self.pattern,
            mergeable_ranks=mergeable_ranks,
            special_tokens=dict(self.special_tokens),
        )

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={list(self.special_tokens)})"
        )


# --- Tokenizers as data --------------------------------------------------------------------


def tokenizer_state(tokenizer: CharTokenizer | BPETokenizer | None) -> dict[str, Any] | None:
    """A tokenizer as plain data (lists, strings) that a checkpoint can hold safely."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, CharTokenizer):
        return {"kind": "char", "chars": list(tokenizer.chars)}
    if isinstance(tokenizer, BPETokenizer):
        merges = [list(pair) for pair in tokenizer.merges]  # in rank order
        return {"kind": "bpe", "merges": merges, "special_tokens": tokenizer.special_tokens,
                "pattern": tokenizer.pattern}  # fmt: skip
    raise TypeError(f"tokenizer must be a CharTokenizer or a BPETokenizer, got {tokenizer!r}")


def tokenizer_from_state(state: dict[str, Any] | None) -> CharTokenizer | BPETokenizer | None:
    """The tokenizer `tokenizer_state` described (None stays None)."""
    if state is None:
        return None
    if state["kind"] == "char":
        return CharTokenizer(state["chars"])
    merges = [tuple(pair) for pair in state["merges"]]
    return BPETokenizer(merges, state["special_tokens"], state["pattern"])


def tokenizer_fingerprint(tokenizer: CharTokenizer | BPETokenizer) -> str:
    """A short name that changes whenever the ids the tokenizer gives would change:
    kind + vocabulary size + the first 12 hex digits of the sha256 of `tokenizer_state`
    (the characters of a CharTokenizer; the merges, special tokens and pattern of a BPE),
    for example "char65-" followed by 12 hex digits. Token files are named by it.
    """
    state = tokenizer_state(tokenizer)
    if state is None:
        raise TypeError("tokenizer must be a CharTokenizer or a BPETokenizer, got None")
    canonical = json.dumps(state, sort_keys=True).encode("ascii")  # non-ASCII as \uXXXX
    return f"{state['kind']}{tokenizer.vocab_size}-{hashlib.sha256(canonical).hexdigest()[:12]}"
