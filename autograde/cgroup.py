"""A control group per grading worker: memory counted for a kernel's whole tree, not per
process.

Resource limits (`sandbox.Limits`, setrlimit) bound each process: a kernel that forks ten
children may use ten times its address-space limit. A control group counts them together:
`KernelGroup` makes one per worker, below the grader's own (so the machine's limits on the
grader still hold): the kernel and everything it starts share `Limits.memory_mb` of
memory; past it the out-of-memory killer ends one of them (`oom_kills` counts those, so the
row can say why). Processes need no group: each worker's kernels run as a user of their
own, whose process limit (RLIMIT_NPROC) already counts the whole tree.

Each kernel joins its worker's group as it enters the sandbox (`join`, writing "0", itself,
to the group's ``cgroup.procs``), before any student code runs; a fork server stays outside,
so the libraries it preloaded are charged to it, not to the kernel. Control groups need
root; the cgroup v1 memory controller and the unified (v2) hierarchy are both handled. Where
neither can be written, there is no group and the per-process limits remain (`grade` says
which in its first line).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_paths(text: str) -> dict[str, str]:
    """{controller or "" (v2): path} from /proc/self/cgroup's lines."""
    found = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            found[name] = path
    return found


class KernelGroup:
    """The control group(s) of one worker's kernels (see the module's docstring)."""

    def __init__(self, name: str, memory_mb: int, root: Path = ROOT):
        self.folders: list[Path] = []
        self._memory_events: Path | None = None
        self.error = ""
        try:
            own = _own_paths(Path("/proc/self/cgroup").read_text())
            if (root / "cgroup.controllers").is_file():  # the unified hierarchy (v2)
                self._make_v2(root / own.get("", "/").lstrip("/"), name, memory_mb)
            else:
                self._make_v1(root, own, name, memory_mb)
        except (OSError, ValueError) as err:
            self.close()
            self.error = f"no control group for the kernels ({err})"

    def _make_v1(self, root, own, name, memory_mb) -> None:
        parent = root / "memory" / own.get("memory", "/").lstrip("/")
        if not parent.is_dir():
            raise OSError(f"no cgroup v1 memory controller at {parent}")
        folder = self._made(parent / name)
        (folder / "memory.limit_in_bytes").write_text(str(memory_mb << 20))
        swap = folder / "memory.memsw.limit_in_bytes"  # no swapping past the limit
        with contextlib.suppress(OSError):
            swap.write_text(str(memory_mb << 20))
        self._memory_events = folder / "memory.oom_control"

    def _make_v2(self, parent, name, memory_mb) -> None:
        wanted = {"memory"}
        have = set((parent / "cgroup.subtree_control").read_text().split())
        if not wanted <= have:  # may fail: a group with processes cannot hand controllers on
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{k}" for k in wanted))
        folder = self._made(parent / name)
        (folder / "memory.max").write_text(str(memory_mb << 20))
        with contextlib.suppress(OSError):
            (folder / "memory.swap.max").write_text("0")
        self._memory_events = folder / "memory.events"

    def _made(self, folder: Path) -> Path:
        if folder.exists():  # left by a run that was killed: empty by now, or in use
            folder.rmdir()
        folder.mkdir()
        self.folders.append(folder)
        return folder

    def oom_kills(self) -> int:
        """How many processes the memory limit has killed in this group so far."""
        if self._memory_events is None:
            return 0
        with contextlib.suppress(OSError, ValueError):
            for line in self._memory_events.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def close(self) -> None:
        """Remove the groups (their processes must be gone: the worker killed them)."""
        for folder in reversed(self.folders):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.folders = []


def available() -> str:
    """ "" when kernels can have control groups here, else why not."""
    if os.geteuid() != 0:
        return "control groups need root"
    group = KernelGroup(f"twin-gpt-probe-{os.getpid()}", 64)
    group.close()
    return group.error


def join(folders: list[str]) -> None:
    """Move this process (and so all it will start) into each group of `folders`."""
    for folder in folders:
        with open(os.path.join(folder, "cgroup.procs"), "w") as procs:
            procs.write("0")
