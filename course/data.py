"""Corpora for the course: find, download, verify and cache them; turn them into tokens.

A corpus is found in this order:

1. `$COURSE_DATA_DIR/<filename>`: a folder you filled by hand (CI points it at a shared
   copy). A wrong file there is an error; the course never deletes a file you put there.
2. The cache folder (see `cache_dir()`): filled by earlier downloads. A wrong file there
   is removed and downloaded again.
3. A download from the corpus's URL.

Every file is checked against its sha256 before use, and a download is written through
`course.files.replace_atomically`: the file only takes its final name once it is complete
and verified, so an interrupted download never leaves a half file that a later run trusts.

Tokens and batches (numpy only; `course.torch.data` and `course.tf.data` build on these):

- `corpus_tokens` is the one path from a corpus to token ids: it builds the tokenizer (or
  takes yours), splits the text into train and val *before* encoding, and caches the ids
  (`prepare_tokens`, which writes each part once with `token_file`: a raw uint16 file with
  a JSON sidecar, reused on later runs). Both trainers read their tokens through it.
- `check_tokens` refuses tokens that do not fit a model, with a message that says why.
- `get_batch` draws a random batch of (x, y) blocks with a seeded `np.random.Generator`;
  the PyTorch DataLoader and the tf.data pipeline draw the very same batches for a seed,
  so both frameworks can be trained on identical data. `eval_seed` seeds the evaluation
  batches of a step without touching the training stream.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm.auto import tqdm

from course.checks import check_int  # re-exported: the batch pipelines use it
from course.files import replace_atomically, write_bytes, write_json
from course.tokenizers import BPETokenizer, CharTokenizer, tokenizer_fingerprint

DATA_DIR_ENV = "COURSE_DATA_DIR"
CACHE_DIR_ENV = "COURSE_CACHE_DIR"

# Seconds to wait before retry number k (k = 1, 2, ...): BACKOFF_SECONDS * 2 ** (k - 1).
# Doubling gives a flaky network time to recover without making a learner wait long.
BACKOFF_SECONDS = 1.0

_CHUNK_BYTES = 1 << 16  # read 64 KiB at a time: steady progress bar, little memory
_RETRY_HTTP_CODES = (408, 429, 500, 502, 503, 504)  # worth retrying; other errors are not


class DataUnavailableError(RuntimeError):
    """The corpus could not be found locally nor downloaded; the message says what to do."""


class ChecksumMismatchError(DataUnavailableError):
    """A file's bytes do not match the sha256 the course expects."""


@dataclass(frozen=True)
class Corpus:
    """A text corpus: where to get it, what to call it, and the sha256 that proves it."""

    name: str
    filename: str  # plain file name, looked up in COURSE_DATA_DIR and the cache folder
    url: str
    sha256: str  # 64 lowercase hex digits

    def __post_init__(self) -> None:
        if not self.filename or Path(self.filename).name != self.filename:
            raise ValueError(f"filename must be a plain file name, got {self.filename!r}")
        if re.fullmatch(r"[0-9a-f]{64}", self.sha256) is None:
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")


CORPORA: dict[str, Corpus] = {
    "tinyshakespeare": Corpus(
        name="tinyshakespeare",
        filename="tinyshakespeare.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
}


def cache_dir() -> Path:
    """The download cache: $COURSE_CACHE_DIR, else $XDG_CACHE_HOME/twin-gpt, else
    ~/.cache/twin-gpt. Nothing is created here; a download creates it when needed."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "twin-gpt"
    return Path.home() / ".cache" / "twin-gpt"


def data_dirs() -> list[Path]:
    """The folders searched for a corpus, in order: $COURSE_DATA_DIR (if set), the cache."""
    folders = [Path(os.environ[DATA_DIR_ENV]).expanduser()] if os.environ.get(DATA_DIR_ENV) else []
    return [*folders, cache_dir()]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file as 64 hex digits, read in chunks (fine for large files)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _resolve(corpus: str | Corpus) -> Corpus:
    if isinstance(corpus, Corpus):
        return corpus
    if not isinstance(corpus, str):
        raise TypeError(f"corpus must be a name or a Corpus, got {type(corpus).__name__}")
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; known corpora: {sorted(CORPORA)}")
    return CORPORA[corpus]


def _download(url: str, final: Path, sha256: str, timeout: float, progress: bool) -> None:
    """Stream `url` into `final` through `course.files.replace_atomically`.

    The bytes go to a temporary file beside `final` and are checked as they arrive; a short
    read or a sha256 that does not match raises inside the write, so nothing is renamed and
    `final` never holds a file that was not verified whole.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "twin-gpt course"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None

        def stream_and_verify(part: IO[bytes]) -> None:
            digest, received = hashlib.sha256(), 0
            with tqdm(
                total=expected, unit="B", unit_scale=True, desc=final.name, disable=not progress
            ) as bar:
                while chunk := response.read(_CHUNK_BYTES):
                    part.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            # urllib returns b"" when the server closes early, so check the length ourselves.
            if expected is not None and received != expected:
                raise ConnectionError(f"transfer interrupted after {received} of {expected} bytes")
            if digest.hexdigest() != sha256:
                raise ChecksumMismatchError(
                    f"downloaded bytes have sha256 {digest.hexdigest()}, expected {sha256}"
                )

        replace_atomically(final, stream_and_verify)


def _is_retryable(err: Exception) -> bool:
    if isinstance(err, urllib.error.HTTPError):  # the server answered: is it worth asking again?
        return err.code in _RETRY_HTTP_CODES
    return True


def _by_hand_hint(corpus: Corpus) -> str:
    data_dir = os.environ.get(DATA_DIR_ENV)
    data_dir_hint = (
        f"at {Path(data_dir) / corpus.filename} (COURSE_DATA_DIR is set to {data_dir})"
        if data_dir
        else f"in any folder, as {corpus.filename}, and set COURSE_DATA_DIR to that folder"
    )
    return (
        f"To work without the network, get {corpus.filename} elsewhere and put it\n"
        f"  - at {cache_dir() / corpus.filename} (the cache folder), or\n"
        f"  - {data_dir_hint}.\n"
        f"Its sha256 must be {corpus.sha256} (check with `sha256sum`)."
    )


def ensure_file(
    corpus: str | Corpus = "tinyshakespeare",
    *,
    url: str | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    backoff: float | None = None,
) -> Path:
    """Return the path of a verified copy of `corpus`, downloading it if needed.

    `corpus` is a registered name (see CORPORA) or a `Corpus`. `url` overrides the corpus's
    URL (a mirror, or a local test server). A download is tried `retries` times, waiting
    `backoff` (default BACKOFF_SECONDS) seconds, doubling each time, between attempts.
    """
    corpus = _resolve(corpus)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise ValueError(f"retries must be an int >= 1, got {retries!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    backoff = BACKOFF_SECONDS if backoff is None else backoff
    if backoff < 0:
        raise ValueError(f"backoff must be >= 0 seconds, got {backoff!r}")

    if os.environ.get(DATA_DIR_ENV):
        mine = Path(os.environ[DATA_DIR_ENV]).expanduser() / corpus.filename
        if mine.is_file():
            actual = sha256_file(mine)
            if actual != corpus.sha256:
                raise ChecksumMismatchError(
                    f"{mine} (found through {DATA_DIR_ENV}) is not the expected "
                    f"{corpus.name!r} corpus: its sha256 is {actual}, expected "
                    f"{corpus.sha256}. The file was left untouched; replace it or unset "
                    f"{DATA_DIR_ENV}."
                )
            return mine

    cached = cache_dir() / corpus.filename
    if cached.is_file():
        if sha256_file(cached) == corpus.sha256:
            return cached
        warnings.warn(f"{cached} has the wrong sha256; downloading it again", stacklevel=2)
        cached.unlink()

    try:  # a cache folder we cannot write is not a network problem: say so at once
        cached.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=cached.parent, prefix=".write-test.")
        probe.close()
    except OSError as err:
        raise DataUnavailableError(
            f"cannot write to the cache folder {cached.parent} ({err}). Point "
            f"{CACHE_DIR_ENV} at a folder you can write to, or put the file in "
            f"{DATA_DIR_ENV}.\n{_by_hand_hint(corpus)}"
        ) from err

    url = url or corpus.url
    for attempt in range(1, retries + 1):
        try:
            _download(url, cached, corpus.sha256, timeout, progress)
            return cached
        except (OSError, http.client.HTTPException, ChecksumMismatchError) as err:
            last_error = err  # URLError, timeouts and refused connections are OSErrors
            if attempt == retries or not _is_retryable(err):
                break
            time.sleep(backoff * 2 ** (attempt - 1))
    raise DataUnavailableError(
        f"could not download corpus {corpus.name!r} from {url} "
        f"({attempt} attempt{'s' if attempt > 1 else ''}).\n"
        f"Last error: {last_error!r}\n{_by_hand_hint(corpus)}"
    ) from last_error


def load_text(
    name: str | Corpus = "tinyshakespeare",
    *,
    url: str | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    backoff: float | None = None,
) -> str:
    """The whole corpus as one string (UTF-8). See `ensure_file` for the arguments.

    The bytes are decoded as they are: no newline translation, so `len(text.encode())` is
    the file's size and the text matches its sha256 exactly.
    """
    path = ensure_file(
        name, url=url, retries=retries, timeout=timeout, progress=progress, backoff=backoff
    )
    return path.read_bytes().decode("utf-8")


# --------------------------------------------------------------------------------------
# Token files: encode a corpus once, reuse it on every later run
# --------------------------------------------------------------------------------------

TOKEN_FORMAT = "twin-gpt-tokens"  # the sidecar's "format": says what wrote the .bin file
TOKEN_FORMAT_VERSION = 1  # bump when the layout changes; older files are then re-encoded

_FINGERPRINT_RE = re.compile(r"[A-Za-z0-9._+-]+")  # it becomes part of a file name


def _encode_function(encode: Any) -> Callable[[str], Any]:
    """`encode` may be a function str -> ids or any object with an `.encode` method."""
    method = getattr(encode, "encode", None)
    if callable(method):
        return method
    if callable(encode):
        return encode
    raise TypeError(
        "encode must be a function str -> list of ids, or an object with an .encode method "
        f"(such as a CharTokenizer), got {type(encode).__name__}"
    )


def _sidecar_path(path: Path) -> Path:
    sidecar = path.with_suffix(".json")
    if sidecar == path:
        raise ValueError(f"path {path} must not end in .json: that name is for the sidecar")
    return sidecar


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_existing(path: Path, sidecar: Path, dtype: np.dtype, want: dict) -> str | None:
    """Why the token file at `path` cannot be reused, or None if it can.

    Returns "missing" or "stale" (a normal reason to encode) or a sentence describing a
    damaged file, which the caller reports with a warning.
    """
    if not path.exists() and not sidecar.exists():
        return "missing"
    if not sidecar.is_file():
        return f"{path} has no sidecar {sidecar.name}"
    if not path.is_file():
        return f"{sidecar} describes a token file {path.name} that is missing"
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        length = meta["length"]
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"bad length {length!r}")
        fmt, version, dtype_name = meta["format"], meta["version"], meta["dtype"]
        tokens_sha256 = meta["tokens_sha256"]
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as err:
        return f"its sidecar {sidecar} is damaged ({err})"
    if fmt != TOKEN_FORMAT:
        return f"its sidecar {sidecar} has format {fmt!r}, expected {TOKEN_FORMAT!r}"
    if version != TOKEN_FORMAT_VERSION or dtype_name != dtype.name:
        return "stale"
    if meta.get("text_sha256") != want["text_sha256"]:
        return "stale"
    if meta.get("tokenizer") != want["tokenizer"]:
        return "stale"
    size = path.stat().st_size
    if size != length * dtype.itemsize:
        return (
            f"{path} has {size} bytes but its sidecar promises {length} tokens "
            f"x {dtype.itemsize} bytes = {length * dtype.itemsize} (truncated or damaged)"
        )
    if sha256_file(path) != tokens_sha256:
        return f"{path} does not match the sha256 in its sidecar (damaged)"
    return None


def token_file(
    text: str,
    encode: Any,
    path: str | os.PathLike[str],
    *,
    fingerprint: str,
    dtype: Any = np.uint16,
) -> np.memmap:
    """Encode `text` once into a raw token file at `path`; reuse it on later calls.

    `encode` is a function str -> ids, or a tokenizer with an `.encode` method.
    `fingerprint` names the tokenizer (for example "char65" or "bpe512-v1"): a file is
    reused only if its sidecar records the same fingerprint and the same text sha256, so
    change the fingerprint whenever the tokenizer changes.

    The ids are stored little-endian as `dtype` (uint16 holds ids up to 65535: every
    tokenizer in the course; pass dtype=np.uint32 for larger vocabularies). Next to the
    file, `path.with_suffix(".json")` records format, version, dtype, length, text_sha256,
    tokenizer (the fingerprint) and tokens_sha256. Both files are written to temporary
    names and renamed, the sidecar last, so a crash never leaves a file a later run trusts.
    A file whose size or sha256 disagrees with its sidecar, or a damaged sidecar, is
    re-encoded with a warning.

    Returns the tokens as a read-only `np.memmap` (nothing is loaded into memory until
    it is indexed).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not isinstance(fingerprint, str) or _FINGERPRINT_RE.fullmatch(fingerprint) is None:
        raise ValueError(
            "fingerprint must be a non-empty str of letters, digits, '.', '_', '+' or '-' "
            f"(it names the tokenizer in file names), got {fingerprint!r}"
        )
    encode_fn = _encode_function(encode)
    dtype = np.dtype(dtype)
    if dtype.kind != "u":
        raise ValueError(f"dtype must be an unsigned integer type such as uint16, got {dtype}")
    stored = dtype.newbyteorder("<")  # the same bytes on every machine
    path = Path(path)
    sidecar = _sidecar_path(path)
    want = {"text_sha256": _sha256_text(text), "tokenizer": fingerprint}

    problem = _check_existing(path, sidecar, dtype, want)
    if problem is None:
        length = json.loads(sidecar.read_text(encoding="utf-8"))["length"]
        return np.memmap(path, dtype=stored, mode="r", shape=(length,))
    if problem not in ("missing", "stale"):
        warnings.warn(f"{problem}; encoding the text again", stacklevel=2)

    ids = np.asarray(encode_fn(text))
    if ids.ndim != 1:
        raise ValueError(f"encode must return a flat sequence of ids, got shape {ids.shape}")
    if ids.size == 0:
        raise ValueError("encode returned no tokens: nothing to write (is the text empty?)")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"encode must return integer ids, got dtype {ids.dtype}")
    smallest, largest = int(ids.min()), int(ids.max())
    if smallest < 0:
        raise ValueError(f"token ids must be >= 0, got {smallest}")
    if largest > np.iinfo(dtype).max:
        bigger = "uint32" if dtype.itemsize < 4 else "uint64"
        raise ValueError(
            f"token id {largest} does not fit in {dtype.name} (max {np.iinfo(dtype).max}); "
            f"pass dtype=np.{bigger}"
        )

    payload = ids.astype(stored).tobytes()
    meta = {
        "format": TOKEN_FORMAT,
        "version": TOKEN_FORMAT_VERSION,
        "dtype": dtype.name,
        "length": int(ids.size),
        "text_sha256": want["text_sha256"],
        "tokenizer": fingerprint,
        "tokens_sha256": hashlib.sha256(payload).hexdigest(),
    }
    sidecar.unlink(missing_ok=True)  # no sidecar = not trusted, until the new one lands
    write_bytes(path, payload)
    write_json(sidecar, meta)
    return np.memmap(path, dtype=stored, mode="r", shape=(ids.size,))


def _check_fraction(val_fraction: float) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
        raise TypeError(f"val_fraction must be a number, got {type(val_fraction).__name__}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")


def _split_point(n: int, val_fraction: float) -> int:
    # int(0.9 * n), as in the classic char-level Shakespeare setup (nanoGPT, char-rnn).
    return int(n * (1 - val_fraction))


def train_val_split(tokens: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The first `1 - val_fraction` of `tokens` for training, the rest for validation.

    Not shuffled: validation text is text the model never saw nearby. Returns views (a
    memmap stays a memmap). Each part needs at least 2 tokens (one x and its next y).
    """
    _check_fraction(val_fraction)
    n = len(tokens)
    cut = _split_point(n, val_fraction)
    if cut < 2 or n - cut < 2:
        raise ValueError(
            f"splitting {n} tokens with val_fraction={val_fraction} gives {cut} train and "
            f"{n - cut} val tokens; both parts need at least 2"
        )
    return tokens[:cut], tokens[cut:]


def prepare_tokens(
    name: str | Corpus = "tinyshakespeare",
    tokenizer: Any = None,
    *,
    fingerprint: str,
    folder: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    dtype: Any = np.uint16,
    progress: bool = True,
) -> tuple[np.memmap, np.memmap]:
    """Train and val token files of a corpus, encoded once and reused across runs.

    The corpus *text* is split by characters (first 90% / last 10% by default), then each
    part is encoded with `tokenizer` (a function str -> ids or an object with `.encode`)
    into `<folder>/<name>-<fingerprint>-train.bin` and `-val.bin` (see `token_file`, which
    also explains `fingerprint` and `dtype`). With a character tokenizer this gives the
    classic split: 1,003,854 train and 111,540 val tokens for Tiny Shakespeare. `folder`
    defaults to `cache_dir() / "tokens"`; `progress` shows a bar if the corpus is downloaded.
    """
    if tokenizer is None:
        raise TypeError(
            "prepare_tokens needs a tokenizer: a function str -> ids or an object "
            "with an .encode method"
        )
    corpus = _resolve(name)
    _check_fraction(val_fraction)
    folder = Path(folder) if folder is not None else cache_dir() / "tokens"
    text = load_text(corpus, progress=progress)
    cut = _split_point(len(text), val_fraction)
    parts = {"train": text[:cut], "val": text[cut:]}
    out = []
    for part, part_text in parts.items():
        path = folder / f"{corpus.name}-{fingerprint}-{part}.bin"
        tokens = token_file(part_text, tokenizer, path, fingerprint=fingerprint, dtype=dtype)
        if len(tokens) < 2:
            raise ValueError(
                f"the {part} part of {corpus.name!r} has {len(tokens)} tokens; "
                "it needs at least 2 (choose another val_fraction)"
            )
        out.append(tokens)
    return out[0], out[1]


def corpus_tokens(
    name: str | Corpus = "tinyshakespeare",
    tokenizer: CharTokenizer | BPETokenizer | None = None,
    *,
    kind: str = "char",
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
    folder: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[np.memmap, np.memmap, CharTokenizer | BPETokenizer]:
    """(train tokens, val tokens, tokenizer) of a corpus: the course's one path from a
    corpus to token ids, taken by both trainers, the command line and the benchmarks.

    Without a `tokenizer`, one is built from the whole text as `kind` says: "char", a
    `CharTokenizer` (65 ids for Tiny Shakespeare); "bpe", a byte-level `BPETokenizer` of
    `vocab_size` ids, trained here (pure Python: about 5 s for 512 ids; a 50k vocabulary
    would take long). The ids come from `prepare_tokens`: the text is split before it is
    encoded, and the token files are cached in `folder` (default `cache_dir() / "tokens"`)
    under the tokenizer's `tokenizer_fingerprint`, so a later run with the same tokenizer
    reads them back without encoding anything.
    """
    if tokenizer is None:
        if kind not in ("char", "bpe"):
            raise ValueError(f"kind must be 'char' or 'bpe', got {kind!r}")
        text = load_text(name, progress=progress)
        if kind == "char":
            tokenizer = CharTokenizer.from_text(text)
        else:
            if vocab_size is None:
                raise TypeError("kind='bpe' needs the vocab_size of the BPE to train")
            if progress:
                print(f"training a {vocab_size}-token BPE...", file=sys.stderr)
            tokenizer = BPETokenizer.train(text, vocab_size, progress=progress)
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32  # 2 bytes each if ids fit
    train_tokens, val_tokens = prepare_tokens(
        name,
        tokenizer,
        fingerprint=tokenizer_fingerprint(tokenizer),
        folder=folder,
        val_fraction=val_fraction,
        dtype=dtype,
        progress=progress,
    )
    return train_tokens, val_tokens, tokenizer


# --------------------------------------------------------------------------------------
# Batches: the same random (x, y) blocks in numpy, PyTorch and tf.data
# --------------------------------------------------------------------------------------


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a np.random.Generator, got {type(rng).__name__} {rng!r}; "
            "pass np.random.default_rng(seed) and keep using that one generator, so that "
            "each call draws new batches"
        )


def check_batch_args(
    n_tokens: int, batch_size: int, block_size: int, *, seed=None, steps=None
) -> None:
    """Raise a clear error unless `batch_size` blocks of `block_size` fit in `n_tokens`.

    The pipelines also pass their `seed` (an int >= 0) and `steps` (an int >= 1, or None
    for an endless stream).
    """
    check_int("batch_size", batch_size, 1)
    check_int("block_size", block_size, 1)
    if seed is not None:
        check_int("seed", seed, 0)
    if steps is not None:
        check_int("steps", steps, 1)
    if block_size >= n_tokens:
        raise ValueError(
            f"block_size ({block_size}) must be smaller than the number of tokens in data "
            f"({n_tokens}): x and y together need block_size + 1 consecutive tokens"
        )


def as_token_array(data: Any) -> np.ndarray:
    """`data` as a 1-D integer numpy array (a memmap stays a memmap: nothing is copied)."""
    array = np.asarray(data) if not isinstance(data, np.ndarray) else data
    if array.ndim != 1:
        raise ValueError(f"data must be a 1-D array of token ids, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise TypeError(f"data must hold integer token ids, got dtype {array.dtype}")
    return array


def check_tokens(name: str, data: Any, vocab_size: int, block_size: int) -> np.ndarray:
    """`data` as a 1-D token array, or a clear error if it does not fit the model: it must
    hold more than `block_size` tokens, all of them ids below `vocab_size`. `name` says
    which split it is ("train", "val") in the message."""
    data = as_token_array(data)
    if len(data) <= block_size:
        raise ValueError(
            f"{name} data has {len(data)} tokens; it needs more than block_size ({block_size})"
        )
    low, high = int(data.min()), int(data.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"{name} data holds token id {low if low < 0 else high}, outside the model's "
            f"vocabulary 0..{vocab_size - 1}; set vocab_size to at least {high + 1}"
        )
    return data


def eval_seed(seed: int, step: int) -> int:
    """The seed of the evaluation batches at `step`: fixed per (run seed, step), and never
    drawn from the training batch generator, so evaluating does not move that stream."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def batch_offsets(
    n_tokens: int, batch_size: int, block_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Start offsets of `batch_size` random blocks, shape (B,), dtype int64.

    Exactly `rng.integers(0, n_tokens - block_size, size=batch_size)`: uniform over
    0 .. n_tokens - block_size - 1, the last offset whose y = data[i + 1 : i + 1 + block_size]
    still fits. `get_batch`, `course.torch.data` and `course.tf.data` all draw their
    offsets with this one function, which is why they agree batch for batch.
    """
    _check_rng(rng)
    check_batch_args(n_tokens, batch_size, block_size)
    return rng.integers(0, n_tokens - block_size, size=batch_size, dtype=np.int64)


def blocks_at(
    data: np.ndarray, offsets: np.ndarray, block_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """x = data[i : i + T] and y = data[i + 1 : i + 1 + T] for each offset i: int64 (B, T)."""
    window = np.asarray(data[offsets[:, None] + np.arange(block_size + 1)], dtype=np.int64)
    return np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:])


def get_batch(
    data: Any, batch_size: int, block_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random batch: x (B, T) int64 blocks of `data` and y, the same blocks shifted by one.

    y[b, t] is the token that follows x[b, t]: the target a language model predicts.
    `rng` is a `np.random.Generator` (np.random.default_rng(seed)) that you keep and pass
    again: each call draws new offsets, and the same seed gives the same sequence of
    batches. `data` may be a np.memmap (only the sampled blocks are read).
    """
    _check_rng(rng)
    data = as_token_array(data)
    offsets = batch_offsets(len(data), batch_size, block_size, rng)
    return blocks_at(data, offsets, block_size)


def split_windows(data: Any, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole of `data` as consecutive windows: x, y int64 (N, block_size), y the next
    tokens, every target data[1:] exactly once. The last window may be short: its x is
    padded with 0 and its y with -1 (a target the models' loss leaves out). Scoring a model
    on these windows gives the loss on the whole split, each token predicted once from the
    tokens before it in its window (at most block_size - 1 of them), not an estimate from
    random batches."""
    check_int("block_size", block_size, 1)
    data = as_token_array(data)
    targets = len(data) - 1
    if targets < 1:
        raise ValueError(f"a split needs at least 2 tokens to hold a target, got {len(data)}")
    n = -(-targets // block_size)  # windows, the last one possibly short
    x = np.zeros(n * block_size, dtype=np.int64)
    y = np.full(n * block_size, -1, dtype=np.int64)
    x[:targets] = data[:-1]
    y[:targets] = data[1:]
    return x.reshape(n, block_size), y.reshape(n, block_size)
