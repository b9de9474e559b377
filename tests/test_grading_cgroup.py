"""Control groups for a kernel's whole tree: the groups made (v1 and v2 layouts, in a
folder standing for /sys/fs/cgroup), and, where the machine allows them, a memory bomb
spread over several processes, each under its own limit, stopped by the group."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import TOY
from test_grading_sandbox import ADD, _answer, _rows, _submit, needs_isolation

from autograde import cgroup
from autograde.grade import grade
from autograde.sandbox import Limits


def _own() -> dict[str, str]:
    return cgroup._own_paths(Path("/proc/self/cgroup").read_text())


def test_a_v1_group_gets_the_memory_limit(tmp_path):
    own = _own()
    (tmp_path / "memory" / own.get("memory", "/").lstrip("/")).mkdir(parents=True)
    group = cgroup.KernelGroup("k", memory_mb=300, root=tmp_path)
    assert group.error == "" and len(group.folders) == 1
    (memory,) = group.folders
    assert (memory / "memory.limit_in_bytes").read_text() == str(300 * 1024 * 1024)
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert group.oom_kills() == 3
    for folder in group.folders:  # what the kernel writes and the files above are not
        for name in folder.iterdir():  # folders: rmdir would refuse (a real group has none)
            name.unlink()
    group.close()
    assert not memory.exists()


def test_a_v2_group_enables_its_controller_and_counts_kills(tmp_path):
    parent = tmp_path / _own().get("", "/").lstrip("/")
    parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (parent / "cgroup.subtree_control").write_text("")
    group = cgroup.KernelGroup("k", memory_mb=256, root=tmp_path)
    assert group.error == ""
    (folder,) = group.folders
    assert (parent / "cgroup.subtree_control").read_text() == "+memory"
    assert (folder / "memory.max").read_text() == str(256 << 20)
    assert group.oom_kills() == 0
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\n")
    assert group.oom_kills() == 2


def test_no_group_where_the_controllers_are_missing(tmp_path):
    group = cgroup.KernelGroup("k", memory_mb=256, root=tmp_path)
    assert group.folders == [] and "no control group" in group.error and "memory" in group.error
    assert group.oom_kills() == 0


@needs_isolation
@pytest.mark.skipif(cgroup.available() != "", reason=f"no control groups: {cgroup.available()}")
def test_memory_spread_over_processes_is_stopped_for_the_whole_tree(toy_course, tmp_path):
    # Each child stays under the per-process limit (1536 MB of address space); four of
    # them together (2 GB, the most this payload takes) pass the tree's 1536 MB.
    solutions, release_dir = toy_course
    spread = textwrap.dedent("""
        import os, time
        children = []
        for i in range(4):
            pid = os.fork()
            if pid == 0:
                block = b"x" * (500 << 20)
                time.sleep(30)
                os._exit(0)
            children.append(pid)
        print("ended", sorted(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children))
    """)
    subs, out = tmp_path / "subs", tmp_path / "out"
    _submit(subs, "hog", _answer(release_dir / TOY / f"{TOY}.ipynb", tmp_path / "h.ipynb",
                                 ADD + spread))  # fmt: skip
    _submit(subs, "alice", solutions / TOY / f"{TOY}.ipynb")
    said = []
    grade(subs, out, cell_timeout=60, timeout=120, solutions=solutions, preload=False,
          limits=Limits(memory_mb=1536), log=said.append)  # fmt: skip
    assert "limited for a kernel's whole tree" in said[0], said[0]
    rows = _rows(out)
    assert (rows["hog"]["status"], rows["hog"]["score"]) == ("memory-limit", "0.0"), rows
    assert "1536 MB of memory together" in rows["hog"]["notes"]
    assert (rows["alice"]["status"], rows["alice"]["score"]) == ("ok", "3.0"), rows
