"""Kernel channels that look again: a missed wake-up costs a second, not a cell's timeout.

jupyter_client's asyncio channels wait for a kernel's message by asking pyzmq to poll the
socket, and pyzmq waits for ZeroMQ's notification file descriptor, which is edge-triggered:
it signals a change once. When the signal is consumed before the event loop sees it (ZeroMQ
drains it whenever anyone asks the socket for its events), the message sits in the socket
and the wait goes on to its full timeout, then finds it there. Executing a notebook, that is
a cell that ends in a second and is reported after the cell timeout (600 s in the chapter
probe): a cell that opens widgets did so in CI, at an idle CPU. The same hang is reported
upstream for nbclient and nbconvert with widgets.

`WakefulChannel.get_msg` waits the same total time in slices of at most `POLL_SLICE_S`,
asking the socket itself after each, so a missed notification is noticed within a slice.
`WakefulKernelClient` uses it for every ZeroMQ channel. Who executes notebooks for the
grader uses it: the probe and the notebook-memory benchmark through `config()`, nbgrader
through autograde/nbgrader_config.py.
"""

from __future__ import annotations

import time
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import Type
from traitlets.config import Config

POLL_SLICE_S = 1.0  # the longest a message can sit unseen in a socket


class WakefulChannel(AsyncZMQSocketChannel):
    """A kernel channel whose `get_msg` looks at its socket at least every POLL_SLICE_S."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            wait = POLL_SLICE_S
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            try:
                return await super().get_msg(timeout=wait)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class WakefulKernelClient(AsyncKernelClient):
    """jupyter_client's asyncio kernel client with `WakefulChannel`s."""

    shell_channel_class = Type(WakefulChannel)  # type: ignore[assignment]
    iopub_channel_class = Type(WakefulChannel)  # type: ignore[assignment]
    stdin_channel_class = Type(WakefulChannel)  # type: ignore[assignment]
    control_channel_class = Type(WakefulChannel)  # type: ignore[assignment]


def config() -> Config:
    """Settings that give an nbclient `NotebookClient` (or nbconvert's executor) kernel
    clients of `WakefulKernelClient`: pass as its ``config``."""
    c = Config()
    c.AsyncKernelManager.client_factory = WakefulKernelClient
    return c
