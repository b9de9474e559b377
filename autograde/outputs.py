"""The output limit: what a student cell sends back is capped in the nbgrader process.

nbgrader's Execute preprocessor keeps every output a kernel sends (stream text, displays,
results, errors, widget messages) in the notebook it writes. `CappedExecute` takes its place
in ``Autograde.autograde_preprocessors`` (see `autograde_preprocessors`) and counts the bytes
of each message of a cell as it arrives. Once the cell's outputs pass `max_cell_output`, or
the notebook's pass `max_notebook_output`, the rest of that cell's messages are dropped
unread, the kernel is interrupted, and the cell ends in an error output named `ENAME`: its
row gets the "output-limit" status (`autograde.submission`).

The count is made here, not in the kernel: a student's code could undo anything done there.

A single message is only counted once it has arrived whole, so one message of hundreds of
MB would first be held in memory. The grader's sockets therefore refuse any message larger
than `max_message` (ZeroMQ's MAXMSGSIZE: the kernel is disconnected and the message lost,
never read); a watch on the IOPub socket sees the disconnection, and the cell ends cut short
as above.
"""

from __future__ import annotations

import asyncio
import itertools

import zmq
from jupyter_core.utils import ensure_async, run_sync
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Integer

ENAME = "OutputLimitExceeded"  # the ename of the error that ends a cell cut short
MB = 2**20
# Messages that are not output: passed on whole and not counted (nbclient reads no more
# than their state or timing from them, and the idle status is what ends a cell).
NOT_OUTPUT = frozenset({"status", "execute_input"})


def message_size(msg: dict) -> int:
    """About how many bytes a kernel message carries: the length of every string in its
    type and content (keys too), 8 for any other value, and its binary buffers' sizes."""
    total = len(msg.get("msg_type", "")) + sum(
        memoryview(b).nbytes for b in msg.get("buffers") or ()
    )
    stack = [msg.get("content")]
    while stack:  # no recursion: a message's nesting is the kernel's choice
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            total += 8
    return total


def head(msg: dict, room: int) -> dict | None:
    """The part of a message worth keeping when only `room` bytes are left: the first
    `room` characters of stream text; None for anything else, or no room at all."""
    content = msg.get("content") or {}
    if room <= 0 or msg.get("msg_type") != "stream" or not isinstance(content.get("text"), str):
        return None
    return {**msg, "content": {**content, "text": content["text"][:room]}}


def cut_note(limit: str, size: int) -> NotebookNode:
    """The error output that ends a cell cut short, `limit` ("cell", "notebook", or
    "message": a single message) having passed `size` bytes."""
    evalue = (
        f"the {limit}'s output passed the grader's limit of {size / MB:g} MB: the rest was not "
        "kept and the kernel was interrupted"
    )
    if limit == "message":
        evalue = (
            f"an output message passed the grader's limit of {size / MB:g} MB for one message: "
            "it was not read and the kernel was interrupted"
        )
    return NotebookNode(
        output_type="error",
        ename=ENAME,
        evalue=evalue,
        traceback=[f"\x1b[0;31m{ENAME}\x1b[0m: {evalue}"],
    )


class CappedExecute(Execute):
    """nbgrader's Execute preprocessor with a cap on the outputs of a cell and a notebook."""

    max_cell_output = Integer(
        MB, help="Bytes of output a cell may send; past them it is cut short."
    ).tag(config=True)
    max_notebook_output = Integer(
        8 * MB, help="Bytes of output a notebook's cells may send in all."
    ).tag(config=True)

    _watches = itertools.count()

    def max_message(self) -> int:
        """The largest message the grader's sockets accept (a little above the notebook's
        cap: anything bigger could never be kept whole)."""
        return self.max_notebook_output + MB

    def create_kernel_manager(self):
        """nbclient's kernel manager, whose clients' sockets refuse messages over
        `max_message` (each client gets a ZeroMQ context of its own saying so)."""
        import zmq.asyncio
        from jupyter_client import AsyncKernelManager

        km = super().create_kernel_manager()
        make_client = km.client
        kind = zmq.asyncio.Context if isinstance(km, AsyncKernelManager) else zmq.Context

        def client(**kwargs):
            self._stop_context()
            self._context = kind()
            self._context.setsockopt(zmq.MAXMSGSIZE, self.max_message())
            return make_client(context=self._context, **kwargs)

        km.client = client
        return km

    def _stop_context(self) -> None:
        self._stop_watch()  # a socket the context does not know of would block its end
        context, self._context = getattr(self, "_context", None), None
        if context is not None:
            context.destroy(linger=0)

    async def async_start_new_kernel_client(self):
        """nbclient's kernel client, with a watch on its IOPub socket's disconnections (a
        message over `max_message` is one)."""
        kc = await super().async_start_new_kernel_client()
        self._watch_iopub(kc)
        return kc

    def _watch_iopub(self, kc) -> None:
        self._stop_watch()
        socket = kc.iopub_channel.socket
        address = f"inproc://twin-gpt-iopub-watch-{next(self._watches)}"
        socket.monitor(address, zmq.EVENT_DISCONNECTED)
        self._watch = zmq.Context.shadow(socket.context.underlying).socket(zmq.PAIR)
        self._watch.connect(address)

    start_new_kernel_client = run_sync(async_start_new_kernel_client)  # as nbclient binds it

    def _stop_watch(self) -> None:
        watch, self._watch = getattr(self, "_watch", None), None
        if watch is not None:
            watch.close(linger=0)

    def _message_lost(self) -> bool:
        """Whether the kernel was disconnected (a message refused) since the last look."""
        watch, lost = getattr(self, "_watch", None), False
        while watch is not None and watch.poll(0):
            watch.recv_multipart()
            lost = True
        return lost

    async def _reconnected(self, tries: int = 10, settle: float = 0.3) -> None:
        """A new IOPub socket in place of the one the kernel was cut off from (ZeroMQ does
        not reconnect after refusing a message), once the kernel has stopped sending what
        is refused again: `settle` seconds after the connection without a new refusal (the
        subscription has reached the kernel; the next cell's messages are not lost)."""
        for _ in range(tries):
            self._message_lost()
            old, self.kc._iopub_channel = self.kc._iopub_channel, None
            if old is not None:
                old.close()
            self._watch_iopub(self.kc)
            await asyncio.sleep(settle)
            if not self._message_lost():
                return
        self.log.warning("The kernel's output channel kept being cut off: %d tries", tries)

    async def _async_cleanup_kernel(self) -> None:
        try:
            await super()._async_cleanup_kernel()
        finally:
            self._stop_context()

    _cleanup_kernel = run_sync(_async_cleanup_kernel)  # as nbclient binds it

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        """nbclient's execution of one cell; a cell whose idle status went with a refused
        message (the IOPub wait times out) ends cut short instead of stopping the notebook."""
        from nbclient.exceptions import CellTimeoutError

        try:
            return await super().async_execute_cell(cell, cell_index, execution_count,
                                                    store_history)  # fmt: skip
        except CellTimeoutError as err:
            if "IOPub" not in str(err) or not (self._cut == "message" or self._message_lost()):
                raise
            if self._cut is None:
                self._cut_short("message", cell_index)
            await self._finish_interrupt()
            await self._reconnected()
            cell.outputs.append(cut_note("message", self.max_message()))
            return cell

    execute_cell = run_sync(async_execute_cell)  # as nbclient binds it

    def reset_execution_trackers(self) -> None:
        """nbclient's per-notebook reset; the notebook's and the cell's counts start at 0."""
        super().reset_execution_trackers()
        self._notebook_kept = 0
        self._start_cell()

    def _start_cell(self) -> None:
        self._cell_kept = 0
        self._cut: str | None = None  # the limit that cut this cell: "cell", "notebook"
        self._interrupt: asyncio.Future | None = None

    def preprocess_cell(self, cell, resources, index):
        """Execute one cell, its count starting at 0."""
        self._start_cell()
        return super().preprocess_cell(cell, resources, index)

    def _room(self) -> tuple[int, str]:
        """(bytes the cell may still keep, the limit that leaves that few)."""
        cell_room = self.max_cell_output - self._cell_kept
        notebook_room = self.max_notebook_output - self._notebook_kept
        return (cell_room, "cell") if cell_room <= notebook_room else (notebook_room, "notebook")

    def process_message(self, msg: dict, cell: NotebookNode, cell_index: int):
        """nbclient's handling of one message of the running cell, within the limits: past
        them it is dropped (the first past them cut to what fits) and the kernel interrupted."""
        if self._cut is None and self._message_lost():
            self._cut_short("message", cell_index)
        if msg.get("msg_type") in NOT_OUTPUT:
            return super().process_message(msg, cell, cell_index)
        if self._cut:
            return None
        size, (room, limit) = message_size(msg), self._room()
        if size > room:
            self._cut_short(limit, cell_index)
            msg = head(msg, room)
            if msg is None:
                return None
            size = room
        self._cell_kept += size
        self._notebook_kept += size
        return super().process_message(msg, cell, cell_index)

    def _cut_short(self, limit: str, cell_index: int) -> None:
        """Drop the rest of the cell's output and interrupt the kernel (in the background:
        this runs in nbclient's event loop, which goes on draining the kernel's messages)."""
        self._cut = limit
        cap = self._cap(limit)
        self.log.warning(
            "Cell %d: output passed the %s limit (%d bytes): interrupting the kernel",
            cell_index, limit, cap,
        )  # fmt: skip
        self._interrupt = asyncio.ensure_future(ensure_async(self.km.interrupt_kernel()))

    def _cap(self, limit: str) -> int:
        return {"cell": self.max_cell_output, "notebook": self.max_notebook_output}.get(
            limit, self.max_message()
        )

    async def _finish_interrupt(self) -> None:
        if self._interrupt is not None:
            try:
                await self._interrupt
            except Exception as err:  # the kernel may be gone already: the cell ended anyway
                self.log.warning("Interrupting the kernel failed: %s", err)

    async def on_cell_executed(self, **kwargs) -> None:
        """nbgrader's hook (which records the reply's error); a cell cut short ends in the
        `ENAME` error instead, as its last output."""
        if self._cut is None and self._message_lost():
            self._cut_short("message", kwargs.get("cell_index", -1))
        await self._finish_interrupt()
        if self._cut == "message":
            await self._reconnected()
        if not self._cut:
            return super().on_cell_executed(**kwargs)
        kwargs["cell"].outputs.append(cut_note(self._cut, self._cap(self._cut)))
        return None


def autograde_preprocessors() -> list[type]:
    """nbgrader's autograde preprocessors, its Execute replaced by `CappedExecute`."""
    from nbgrader.converters.autograde import Autograde

    default = list(Autograde.class_traits()["autograde_preprocessors"].default())
    if Execute not in default:
        raise RuntimeError(f"nbgrader's autograde preprocessors have no Execute: {default}")
    return [CappedExecute if pp is Execute else pp for pp in default]
