"""`make lab` serves JupyterLab on notebooks/ (a real server on 127.0.0.1, then stopped)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from conftest import REPO

TOKEN = "twin-gpt-test-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_make_lab_serves_the_release_notebooks(tmp_path):
    port = _free_port()
    flags = (
        f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 "
        f"--IdentityProvider.token={TOKEN}"
    )
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_ARGS={flags}"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        listing = None
        for _ in range(120):  # up to a minute for the server to come up
            if server.poll() is not None:
                break
            try:
                listing = _get_json(f"{base}/api/contents?token={TOKEN}")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        log.flush()
        output = (tmp_path / "lab.log").read_text()
        assert listing is not None, f"JupyterLab did not answer on {base}:\n{output[-3000:]}"
        names = {item["name"] for item in listing["content"]}
        assert "00_setup" in names, names
        chapter = _get_json(f"{base}/api/contents/00_setup?token={TOKEN}")
        assert "00_setup.ipynb" in {item["name"] for item in chapter["content"]}
        assert f"127.0.0.1:{port}/lab" in output, "the URL to open is printed"
        with urllib.request.urlopen(f"{base}/lab?token={TOKEN}", timeout=10) as page:
            assert page.status == 200 and b"JupyterLab" in page.read()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
