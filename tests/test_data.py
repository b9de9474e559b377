"""Tests for course.data against a real HTTP server on 127.0.0.1 (no mocks of urllib)."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import SHARED_DATA_DIR, needs_shared_corpus

from course import data
from course.data import ChecksumMismatchError, Corpus, DataUnavailableError

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_BYTES = 1_115_394  # documented size of the corpus (../shared/data/README.md)


# Bigger than one 64 KiB read, with non-ASCII text to check UTF-8 decoding.
PAYLOAD = "".join(f"{i}: Wherefore art thou, Römeo? ½ ✓\n" for i in range(6000)).encode()
FAST = {"backoff": 0.001, "progress": False, "timeout": 10.0}


@dataclass
class FakeServer:
    """State shared with the request handler: what to serve and how often it was asked."""

    payload: bytes
    mode: str = "good"  # good | corrupt | truncated | missing
    requests: int = 0
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server looks for)
        state: FakeServer = self.server.state
        with state.lock:
            state.requests += 1
        if state.mode == "missing":
            self.send_error(404)
            return
        body = state.payload
        if state.mode == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 1])  # same size, one bit flipped
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.mode == "truncated":
            self.wfile.write(body[: len(body) // 2])  # promise everything, send half, hang up
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = FakeServer(payload=PAYLOAD)
    httpd.state.url = f"http://127.0.0.1:{httpd.server_address[1]}/corpus.txt"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("COURSE_CACHE_DIR", str(folder))
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    return folder


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing-listens-here.txt"


def _test_corpus(url: str) -> Corpus:
    return Corpus("test", "test.txt", url, hashlib.sha256(PAYLOAD).hexdigest())


def _files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_is_cached_and_reused(server, cache):
    corpus = _test_corpus(server.url)
    assert data.load_text(corpus, **FAST) == PAYLOAD.decode("utf-8")
    assert server.requests == 1
    assert _files_in(cache) == ["test.txt"]  # no .part file left behind
    assert (cache / "test.txt").read_bytes() == PAYLOAD
    assert data.load_text(corpus, **FAST) == PAYLOAD.decode("utf-8")
    assert data.ensure_file(corpus, **FAST) == cache / "test.txt"
    assert server.requests == 1, "a cached, verified file must not be downloaded again"


def test_wrong_checksum_retries_then_fails_clean(server, cache):
    server.mode = "corrupt"
    with pytest.raises(DataUnavailableError) as info:
        data.load_text(_test_corpus(server.url), retries=3, **FAST)
    assert server.requests == 3
    assert _files_in(cache) == []
    message = str(info.value)
    assert server.url in message
    assert hashlib.sha256(PAYLOAD).hexdigest() in message
    assert "ChecksumMismatchError" in message  # the last error is named


def test_interrupted_transfer_leaves_nothing_then_recovers(server, cache):
    server.mode = "truncated"
    corpus = _test_corpus(server.url)
    with pytest.raises(DataUnavailableError) as info:
        data.load_text(corpus, retries=2, **FAST)
    # The size check names the short read (tmp_path also holds the word "interrupted").
    assert f"interrupted after {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes" in str(info.value)
    assert server.requests == 2
    assert _files_in(cache) == []
    server.mode = "good"
    assert data.load_text(corpus, **FAST) == PAYLOAD.decode("utf-8")
    assert _files_in(cache) == ["test.txt"]


def test_client_errors_are_not_retried(server, cache):
    server.mode = "missing"
    with pytest.raises(DataUnavailableError, match="HTTPError 404"):
        data.ensure_file(_test_corpus(server.url), retries=3, **FAST)
    assert server.requests == 1
    assert _files_in(cache) == []


def test_offline_error_says_where_to_put_the_file(cache):
    url = _closed_port_url()
    with pytest.raises(DataUnavailableError) as info:
        data.ensure_file("tinyshakespeare", url=url, retries=2, **FAST)
    message = str(info.value)
    assert url in message
    assert str(cache / "tinyshakespeare.txt") in message
    assert "COURSE_DATA_DIR" in message
    assert SHAKESPEARE_SHA256 in message
    assert _files_in(cache) == []


def test_bad_cached_file_is_replaced(server, cache):
    cache.mkdir()
    (cache / "test.txt").write_bytes(b"half a file")
    with pytest.warns(UserWarning, match="wrong sha256"):
        path = data.ensure_file(_test_corpus(server.url), **FAST)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == 1


@needs_shared_corpus
def test_course_data_dir_serves_the_real_corpus(monkeypatch, cache):
    monkeypatch.setenv("COURSE_DATA_DIR", str(SHARED_DATA_DIR))
    # Any download attempt would fail: this proves the local copy is used.
    text = data.load_text(url=_closed_port_url(), retries=1, **FAST)
    assert len(text.encode("utf-8")) == SHAKESPEARE_BYTES
    assert text.startswith("First Citizen:")
    assert _files_in(cache) == []  # found in place, not copied


@needs_shared_corpus
def test_url_override_downloads_the_registered_corpus(server, cache):
    server.payload = (SHARED_DATA_DIR / "tinyshakespeare.txt").read_bytes()
    path = data.ensure_file("tinyshakespeare", url=server.url, **FAST)
    assert path == cache / "tinyshakespeare.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHAKESPEARE_SHA256


def test_course_data_dir_without_the_file_falls_back_to_download(
    server, cache, tmp_path, monkeypatch, capsys
):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("COURSE_DATA_DIR", str(empty))
    path = data.ensure_file(_test_corpus(server.url), backoff=0.001, progress=True)
    assert path == cache / "test.txt"
    assert server.requests == 1
    assert _files_in(empty) == []
    assert "test.txt" in capsys.readouterr().err  # the tqdm bar is labelled with the file


def test_wrong_file_in_course_data_dir_is_an_error_and_kept(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    wrong = folder / "tinyshakespeare.txt"
    wrong.write_text("To be, or not to be: that is not the whole corpus.\n")
    monkeypatch.setenv("COURSE_DATA_DIR", str(folder))
    with pytest.raises(ChecksumMismatchError) as info:
        data.load_text(url=_closed_port_url(), retries=1, **FAST)
    assert str(wrong) in str(info.value)
    assert SHAKESPEARE_SHA256 in str(info.value)
    assert wrong.read_text() == "To be, or not to be: that is not the whole corpus.\n"


def test_unknown_corpus_lists_known_names():
    with pytest.raises(ValueError, match="tinyshakespeare") as info:
        data.load_text("tiny-shakespeare")
    assert "'tiny-shakespeare'" in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{"retries": 0}, {"retries": 1.5}, {"timeout": 0}, {"backoff": -1.0}]
)
def test_bad_arguments_are_named(kwargs):
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        data.ensure_file(_test_corpus("http://127.0.0.1:9/"), **kwargs)


@pytest.mark.parametrize(
    ("filename", "sha256"),
    [("a/b.txt", "0" * 64), ("", "0" * 64), ("ok.txt", "xyz"), ("ok.txt", "A" * 64)],
)
def test_corpus_validates_its_fields(filename, sha256):
    with pytest.raises(ValueError):
        Corpus("bad", filename, "http://127.0.0.1/", sha256)


def test_cache_dir_fallbacks(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "twin-gpt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "twin-gpt"
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "mine"))
    assert data.data_dirs() == [tmp_path / "mine", data.cache_dir()]


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(PAYLOAD)
    assert data.sha256_file(path) == hashlib.sha256(PAYLOAD).hexdigest()


def test_unwritable_cache_folder_is_named_without_downloading(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("COURSE_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    corpus = data.Corpus("tiny", "tiny.txt", "http://127.0.0.1:9/never-contacted", "0" * 64)
    with pytest.raises(data.DataUnavailableError, match="cannot write to the cache folder") as err:
        data.ensure_file(corpus, retries=3, backoff=0, progress=False)
    assert str(blocker / "cache") in str(err.value)
    assert "COURSE_CACHE_DIR" in str(err.value)
