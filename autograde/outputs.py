"""The output limit: what a student cell sends back is capped in the nbgrader process.

nbgrader's Execute preprocessor keeps every output a kernel sends (stream text, displays,
results, errors, widget messages) in the notebook it writes. `CappedExecute` takes its place
in ``Autograde.autograde_preprocessors`` (see `autograde_preprocessors`) and counts the bytes
of each message of a cell as it arrives. Once the cell's outputs pass `max_cell_output`, or
the notebook's pass `max_notebook_output`, the rest of that cell's messages are dropped
unread, the kernel is interrupted, and the cell ends in an error output named `ENAME`: its
row gets the "output-limit" status (`autograde.submission`).

The count is made here, not in the kernel: a student's code could undo anything done there.
"""

from __future__ import annotations

import asyncio

from jupyter_core.utils import ensure_async
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
    """The error output that ends a cell cut short, `limit` ("cell" or "notebook") having
    passed `size` bytes."""
    evalue = (
        f"the {limit}'s output passed the grader's limit of {size / MB:g} MB: the rest was not "
        "kept and the kernel was interrupted"
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
        cap = self.max_cell_output if limit == "cell" else self.max_notebook_output
        self.log.warning(
            "Cell %d: output passed the %s limit (%d bytes): interrupting the kernel",
            cell_index, limit, cap,
        )  # fmt: skip
        self._interrupt = asyncio.ensure_future(ensure_async(self.km.interrupt_kernel()))

    async def on_cell_executed(self, **kwargs) -> None:
        """nbgrader's hook (which records the reply's error); a cell cut short ends in the
        `ENAME` error instead, as its last output."""
        if self._interrupt is not None:
            try:
                await self._interrupt
            except Exception as err:  # the kernel may be gone already: the cell ended anyway
                self.log.warning("Interrupting the kernel failed: %s", err)
        if not self._cut:
            return super().on_cell_executed(**kwargs)
        cap = self.max_cell_output if self._cut == "cell" else self.max_notebook_output
        kwargs["cell"].outputs.append(cut_note(self._cut, cap))
        return None


def autograde_preprocessors() -> list[type]:
    """nbgrader's autograde preprocessors, its Execute replaced by `CappedExecute`."""
    from nbgrader.converters.autograde import Autograde

    default = list(Autograde.class_traits()["autograde_preprocessors"].default())
    if Execute not in default:
        raise RuntimeError(f"nbgrader's autograde preprocessors have no Execute: {default}")
    return [CappedExecute if pp is Execute else pp for pp in default]
