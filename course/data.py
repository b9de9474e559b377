"""Corpora for the course: find, download, verify and cache them.

A corpus is found in this order:

1. `$COURSE_DATA_DIR/<filename>`: a folder you filled by hand (CI points it at a shared
   copy). A wrong file there is an error; the course never deletes a file you put there.
2. The cache folder (see `cache_dir()`): filled by earlier downloads. A wrong file there
   is removed and downloaded again.
3. A download from the corpus's URL.

Every file is checked against its sha256 before use, and a download is written to a
temporary file that only takes the final name once it is complete and verified, so an
interrupted download never leaves a half file behind that a later run would trust.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

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
    """Stream `url` into a temporary file next to `final`, verify it, then rename it.

    `os.replace` is atomic on one file system: other readers see either no file or the
    whole verified file, never a partial one. Whatever goes wrong, the temporary file is
    deleted by the `finally` clause.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    part = tempfile.NamedTemporaryFile(
        delete=False, dir=final.parent, prefix=f".{final.name}.", suffix=".part"
    )
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "twin-gpt course"})
        with part, urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None else None
            digest, received = hashlib.sha256(), 0
            with tqdm(
                total=expected, unit="B", unit_scale=True, desc=final.name, disable=not progress
            ) as bar:
                while chunk := response.read(_CHUNK_BYTES):
                    part.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            part.flush()
            os.fsync(part.fileno())  # the bytes are on disk before the file gets its name
        # urllib returns b"" when the server closes early, so check the length ourselves.
        if expected is not None and received != expected:
            raise ConnectionError(f"transfer interrupted after {received} of {expected} bytes")
        if digest.hexdigest() != sha256:
            raise ChecksumMismatchError(
                f"downloaded bytes have sha256 {digest.hexdigest()}, expected {sha256}"
            )
        os.replace(part.name, final)
    finally:
        Path(part.name).unlink(missing_ok=True)  # already gone after a successful replace


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
