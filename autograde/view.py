"""What a student's kernel sees of the machine: a list of what it needs, nothing else.

Hiding a list of folders (this checkout's solutions, the grading output) leaves everything
else in sight: a second checkout of the course with its solutions, the instructor's home
folder, a database server's Unix socket, a shared /var/tmp. So where bubblewrap (``bwrap``,
Debian package ``bubblewrap``) is installed, the kernel (or the fork server it is forked
from) starts in a file system of its own made of:

- the system's programs and libraries, read-only (/usr and its links /bin, /lib, ...), and
  from /etc only what programs read to run (`ETC`): no credentials, no configuration with
  secrets;
- the interpreter, its libraries, the course and its data (`needed`), read-only,
  at the paths the grader gives them and at their real ones;
- the worker's scratch folder, where the kernel works and its sockets are, writable;
- an empty /tmp, a /proc of its own processes, a minimal /dev; no network, no host name,
  no System V IPC of the machine's.

Folders to hide that lie inside what is shown (this checkout's solutions/ and .git/) are
covered by empty read-only folders. Everything else of the machine is simply not there.

bubblewrap works as root (the kernel then still drops to a sandbox user of its own) and,
where the machine allows unprivileged user namespaces, as an ordinary user: there the
kernel runs as the instructor's user id, but nothing the instructor owns is in its sight
except its scratch folder. Inside, `sandbox.enter` does the rest per kernel (its own /tmp,
its own PID namespace, limits), with the capabilities bubblewrap keeps for it, and drops
them all before the student's first cell.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# The system's folders of programs and libraries (links, such as /bin -> usr/bin, stay links).
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What programs read from /etc to run: the loader's cache, time zone, users and groups (no
# passwords: those are in /etc/shadow), name service switch, certificates, fonts, the
# links of update-alternatives. Not pip.conf, npmrc, ssh, postgresql, ... (secrets).
ETC = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "passwd",
    "group",
    "nsswitch.conf",
    "hosts",
    "host.conf",
    "ssl",
    "ca-certificates",
    "alternatives",
    "fonts",
    "mime.types",
    "os-release",
)
# What the machine tells of its processors (os.cpu_count reads it).
CPU_INFO = "/sys/devices/system/cpu"


def bwrap() -> str | None:
    """The bubblewrap program, or None when it is not installed."""
    return shutil.which("bwrap", path=os.pathsep.join(["/usr/bin", "/bin", "/usr/local/bin"]))


def _places(paths) -> list[Path]:
    """Each path as given (made absolute) and where it really is, once each."""
    found = {}
    for path in paths:
        path = Path(path)
        try:
            path.stat()
        except OSError:  # not there, or out of this user's reach: nothing to show
            continue
        found.setdefault(Path(os.path.abspath(path)), None)
        found.setdefault(Path(os.path.realpath(path)), None)
    return list(found)


def command(settings, argv: list[str], files=(), program: str | None = None) -> list[str]:
    """The bubblewrap command that runs `argv` in a kernel's view of the machine
    (`settings`: a `sandbox.Settings`); `files` are more files to show read-only (the
    settings file). Running it needs `bwrap()`."""
    scratch = Path(settings.scratch)
    args = [program or bwrap() or "bwrap", "--die-with-parent"]
    args += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    args += ["--hostname", "sandbox"]
    if settings.isolate_network:
        args.append("--unshare-net")
    if os.geteuid() != 0:  # its own user namespace: root in there, nothing outside
        args += ["--unshare-user", "--disable-userns"]
    # `sandbox.enter` needs them per kernel (mounts, PID namespace, user id), then drops them.
    args += ["--cap-add", "ALL"]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    for folder in SYSTEM:
        path = Path(folder)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), folder]
        elif path.is_dir():
            args += ["--ro-bind", folder, folder]
    for name in ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for folder in reversed(Path(CPU_INFO).parents[:-1]):  # /sys, /sys/devices, ...: open,
        args += ["--perms", "0755", "--dir", str(folder)]  # so a missing /sys/bus is ENOENT
    args += ["--ro-bind-try", CPU_INFO, CPU_INFO]  # (gloo lists PCI devices: EACCES is fatal)
    # The scratch folder is made anew for each kernel: its parent is the one that lasts.
    writable = _places([scratch.parent])
    shown_needed = [p for p in needed(settings, scratch) if p != scratch]
    shown = {place: "--ro-bind" for place in _places([*shown_needed, *files])}
    shown.update({place: "--bind" for place in writable})
    made = {Path("/"), Path("/tmp"), Path("/etc"), Path("/sys"), *map(Path, SYSTEM)}
    for place in sorted(shown):  # parents first
        for folder in reversed(place.parents):  # the way down, open (bwrap makes it 0700)
            if folder not in made and not any(folder.is_relative_to(p) for p in shown):
                args += ["--perms", "0755", "--dir", str(folder)]
                made.add(folder)
        args += [shown[place], str(place.resolve()), str(place)]
    for folder in settings.cgroups:  # the kernel joins them (`sandbox.enter`), as root
        args += ["--bind", folder, folder]
    for folder in settings.hide:  # inside what is shown: covered
        folder = Path(folder)
        if folder.is_dir() and any(folder.is_relative_to(place) for place in shown):
            args += ["--perms", "0000", "--tmpfs", str(folder), "--remount-ro", str(folder)]
    args += ["--chdir", str(scratch.parent), "--"]
    return args + list(argv)


def needed(settings, scratch: Path) -> list[Path]:
    """The folders a kernel needs: its scratch folder, the interpreter and its libraries,
    the course (the repository, what is on its PYTHONPATH) and the course data."""
    data = settings.env.get("COURSE_DATA_DIR") or os.environ.get("COURSE_DATA_DIR")
    paths = [scratch, sys.prefix, sys.base_prefix, Path(sys.executable).resolve().parent]
    paths += [settings.repo, *settings.python_path] + ([data] if data else [])
    return [Path(p) for p in paths]
