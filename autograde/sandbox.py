"""The sandbox a student's kernel runs in while nbgrader grades it.

nbgrader runs every cell of a submission as the user who grades. Here nbgrader itself still
runs as that user (it must read the gradebook and write grades), but the *kernel* it starts
is launched through this module's kernel launcher, which, before it turns into ipykernel:

- moves into a scratch folder holding only the release's input files (its HOME too);
- replaces the environment with a short list of harmless variables (no secrets);
- sets resource limits: address space (memory), processes and threads, file size (output
  written to disk), CPU seconds, no core files;
- where the machine allows it (running as root): hides the instructor's folders (the
  course's solutions/, the grading output with its gradebook, the submissions of the whole
  class) behind empty read-only mounts in a private mount namespace, gives it an empty
  /tmp and /dev/shm of its own there (gone when it ends), cuts the network off (a fresh
  network namespace with no interface up), runs it as PID 1 of a PID namespace of its own
  (it sees only its own processes; when it ends, they all do) and finally drops to an
  unprivileged user id of its own, so files the grader owns with private permissions stay
  unreadable.

The kernel talks to nbgrader over Unix sockets in the scratch folder (jupyter's "ipc"
transport), which is what lets it live without a network. `isolation()` reports what
this machine allows; README.md ("Grading a class") says what is and is not isolated.

The launcher is run as ``python -m autograde.sandbox SETTINGS.json -f CONNECTION_FILE``
from a kernel spec that `kernel_spec` writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import cgroup, forkprotocol, view

KERNEL_NAME = "twin-gpt-sandbox"
# Linux clone flags and mount flags (linux/sched.h, linux/mount.h).
CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUSER = 0x00020000, 0x40000000, 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND = 1, 2, 4, 8, 4096
MS_REC, MS_PRIVATE = 16384, 1 << 18
PR_SET_PDEATHSIG = 1
# The machine's shared temporary folders; a kernel gets empty ones of its own instead.
TMP_FOLDERS = ("/tmp", "/dev/shm")
# Variables a kernel may keep; everything else (tokens, passwords, cloud keys) is dropped.
KEPT_VARIABLES = (
    "LANG",
    "LC_ALL",
    "TZ",
    "COURSE_SMOKE",
    "COURSE_DATA_DIR",
    "TF_CPP_MIN_LOG_LEVEL",
    "TRITON_INTERPRET",
    "JPY_PARENT_PID",
)


@dataclass(frozen=True)
class Limits:
    """What one student kernel may use. Defaults fit every chapter at its smoke size."""

    memory_mb: int = 4096  # address space of each kernel process (torch + TF use ~2 GB)
    processes: int = 64  # processes and threads of the sandbox user (a kernel uses ~10)
    file_mb: int = 64  # the largest file a kernel may write
    cpu_seconds: int = 3600  # CPU time of each kernel process: a backstop to the timeouts
    open_files: int = 1024
    threads: int = 1  # OMP/MKL threads per kernel: one core each for parallel workers
    tmp_mb: int = 256  # the size of each of the kernel's own /tmp and /dev/shm (in memory)

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")


@dataclass
class Settings:
    """Everything the launcher needs, written to a root-only file for each worker."""

    scratch: str
    repo: str
    python_path: list[str] = field(default_factory=list)
    uid: int | None = None  # drop to this user (only when started as root)
    gid: int | None = None
    hide: list[str] = field(default_factory=list)  # folders to cover with empty mounts
    isolate_network: bool = True
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)
    fork_server: str | None = None  # the Unix socket of this worker's fork server, if any
    use_view: bool = False  # start kernels in bubblewrap's view of the machine (`view`)
    cgroups: list[str] = field(default_factory=list)  # control groups a kernel joins

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))
        path.chmod(0o600)

    @classmethod
    def read(cls, path: Path) -> Settings:
        data = json.loads(Path(path).read_text())
        data["limits"] = Limits(**data["limits"])
        return cls(**data)


# --- what the machine allows ----------------------------------------------------------------


def _libc():
    return ctypes.CDLL(None, use_errno=True)


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1  # <linux/sockios.h>, <net/if.h>


def _loopback_up() -> None:
    """Bring up `lo` in this process's (new, empty) network namespace: the kernel gets a
    network of one, 127.0.0.1, with no interface and no route out. Distributed training's
    ranks meet there (chapter 09). Needs CAP_NET_ADMIN in the namespace, which the process
    that just made it has."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)  # struct ifreq: name, then flags
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _no_network() -> None:
    """A network namespace of its own, with only its loopback up."""
    _unshare(CLONE_NEWNET)
    _loopback_up()


def _unshare(flags: int) -> None:
    if _libc().unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare({flags:#x}): {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    libc = _libc()
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _closed_ancestor(path: Path) -> tuple[Path, Path] | None:
    """The highest folder above `path` that other users cannot enter (like /root when
    Python lives in /root/.pyenv), with its child on the way to `path`; None if open."""
    for parent in reversed(path.parents):
        if parent != path and not parent.stat().st_mode & 0o001:
            child = parent / path.relative_to(parent).parts[0]
            return parent, child
    return None


def _expose(paths: list[Path]) -> None:
    """Make each of `paths` reachable for the sandbox user, in this mount namespace only:
    every closed folder above them (/root, a 0700 temporary folder, ...) is replaced by an
    empty open one holding just the way down, folder after folder."""
    while True:
        closed: dict[Path, set[Path]] = {}
        for path in paths:
            found = _closed_ancestor(path)
            if found:
                closed.setdefault(found[0], set()).add(found[1])
        if not closed:
            return
        for folder, children in closed.items():
            # Hold each child by a descriptor: the tmpfs below hides its path.
            held = {child: os.open(child, os.O_PATH) for child in children}
            try:
                _mount("tmpfs", str(folder), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
                for child, fd in held.items():
                    target = folder / child.name
                    is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
                    target.mkdir(mode=0o755) if is_dir else target.touch()
                    _mount(f"/proc/self/fd/{fd}", str(target), None, MS_BIND | MS_REC, None)
            finally:
                for fd in held.values():
                    os.close(fd)


def _bind_back(fd: int, path: Path, below: Path) -> None:
    """Bind the folder held by `fd` at `path`, making the open folders on the way down from
    `below` (an empty tmpfs) to it."""
    folder = below
    for part in path.relative_to(below).parts:
        folder = folder / part
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)  # not the umask's (a fork server's is 077)
    _mount(f"/proc/self/fd/{fd}", str(path), None, MS_BIND | MS_REC, None)


def _private_tmp(keep: list[Path], size_mb: int) -> None:
    """Cover /tmp and /dev/shm with empty tmpfs of `size_mb` each, in this mount namespace
    (they vanish with it), but for the folders of `keep` below them (the scratch folder,
    where the kernel's sockets are; the interpreter, the course and its data when they live
    in /tmp, as in a fresh clone there), bound back at their own paths: the grader outside
    still reaches the same socket files, the kernel its libraries."""
    # Each bound at the path the kernel is given (a link on the way, such as a checkout's
    # ../shared, is not there any more) and at its real one, once each, parents first.
    places = {}
    for path in (Path(p) for p in keep if Path(p).exists()):
        for place in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):
            places.setdefault(place, Path(os.path.realpath(path)))
    chosen = sorted(places)
    chosen = [p for p in chosen if not any(p != q and p.is_relative_to(q) for q in chosen)]
    held = {place: os.open(places[place], os.O_PATH | os.O_CLOEXEC) for place in chosen}
    try:  # their paths are about to be covered: held by descriptor
        for name in TMP_FOLDERS:
            folder = Path(name)
            if folder.is_symlink() or not folder.is_dir():
                continue
            options = f"size={size_mb}m,mode=1777"
            _mount("tmpfs", name, "tmpfs", MS_NOSUID | MS_NODEV, options)
            for place, fd in held.items():
                if place.is_relative_to(folder):
                    _bind_back(fd, place, folder)
    finally:
        for fd in held.values():
            os.close(fd)


def _mount_proc() -> None:
    """A /proc of this process's PID namespace over the machine's (mount namespace: ours)."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)


def _private_mount_namespace() -> None:
    _unshare(CLONE_NEWNS)
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)


def _try_private_tmp() -> None:
    _private_mount_namespace()
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=1777")


def _try_own_processes() -> None:
    _private_mount_namespace()
    _unshare(CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:  # PID 1 of the new namespace
        try:
            _mount_proc()
            os._exit(0 if os.getpid() == 1 else 1)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError("no proc of its own")


def _tried(attempt) -> bool:
    """Whether `attempt()` succeeds in a throw-away child (this process is left untouched)."""
    pid = os.fork()
    if pid == 0:  # the child tries and reports by its exit code
        try:
            attempt()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


ATTEMPTS = {
    "hidden_folders": _private_mount_namespace,
    "no_network": _no_network,
    "private_tmp": _try_private_tmp,
    "own_processes": _try_own_processes,
}


def tries() -> dict[str, bool]:
    """Which of `ATTEMPTS` succeed here, each in a throw-away child process."""
    able = _privileged()
    return {name: able and _tried(attempt) for name, attempt in ATTEMPTS.items()}


VIEW_PROBE_TIMEOUT = 60.0  # seconds for a Python to start in the view and try


@functools.cache
def view_tries() -> dict[str, bool] | None:
    """What a kernel may do inside the view (`sandbox.tries`, run there), or None when
    bubblewrap is missing or cannot make the view on this machine."""
    program = view.bwrap()
    if program is None:
        return None
    repo = Path(__file__).resolve().parents[1]
    parent = Path(tempfile.mkdtemp(prefix="twin-gpt-view-"))
    try:
        settings = Settings(scratch=str(parent / "work"), repo=str(repo), python_path=[str(repo)])
        (parent / "work").mkdir()
        argv = [sys.executable, "-m", "autograde.sandbox", "--tries"]
        try:
            done = subprocess.run(
                view.command(settings, argv, program=program),
                env=kernel_env(settings),
                capture_output=True,
                text=True,
                timeout=VIEW_PROBE_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        try:
            return {k: bool(v) for k, v in json.loads(done.stdout.splitlines()[-1]).items()}
        except (ValueError, IndexError):
            return None
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def isolation() -> dict[str, bool]:
    """What this machine lets the sandbox do: {"separate_user", "allow_list",
    "hidden_folders", "no_network", "private_tmp", "own_processes"}. "allow_list": the kernel
    sees only what it needs (`view`, bubblewrap); the other four are tried in there then,
    or on the machine itself without it. A separate user needs root."""
    inside = view_tries()
    report = {"separate_user": os.geteuid() == 0, "allow_list": inside is not None}
    report.update(inside if inside is not None else tries())
    return report


def _privileged() -> bool:
    """Whether this process may make namespaces and mounts: root, or the owner of a user
    namespace of its own holding CAP_SYS_ADMIN (inside bubblewrap's view)."""
    if os.geteuid() == 0:
        return True
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << CAP_SYS_ADMIN))
    return False


CAP_SYS_ADMIN = 21
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_CAPABILITY_VERSION_3 = 0x20080522


def _drop_capabilities() -> None:
    """Give up every capability for good (what bubblewrap's user namespace gave for the
    set-up): none left to use, none to get back at an exec."""
    libc = _libc()
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: none (two words)
    if libc.capset(header, data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"capset: {os.strerror(errno)}")


class SandboxUser:
    """An unprivileged user id for one worker's kernels, held (by a lock file) until
    `release()`: two grading runs on one machine never share a user, so neither one's
    clean-up (kill every process of its user) can touch the other's kernels. Ids come from
    `base` upwards, skipping every id the machine has an account for.

    The lock files live in a folder only root may enter (`lock_folder`), never in the
    shared /tmp where a kernel could plant a symlink or a file at the next lock's path; they
    are opened without following a link and without truncating anything."""

    FOLDER_NAME = "twin-gpt-sandbox-locks"

    @classmethod
    def lock_folder(cls) -> Path:
        """/run/twin-gpt-sandbox-locks (or the temporary folder's, without /run), made
        root's alone; an error if someone else made it first."""
        base = Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
        folder = base / cls.FOLDER_NAME
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        info = folder.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise RuntimeError(
                f"{folder} is not a folder of this user's (a link or someone else's): remove "
                "it; the grader keeps its sandbox locks there"
            )
        if info.st_mode & 0o077:
            folder.chmod(0o700)
        return folder

    def __init__(self, base: int = 61000, tries: int = 1000):
        import fcntl
        import pwd

        used = {p.pw_uid for p in pwd.getpwall()}
        folder = self.lock_folder()
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        for uid in range(base, base + tries):
            if uid in used:
                continue
            try:
                fd = os.open(folder / f"{uid}.lock", flags, 0o600)
            except OSError:  # a link or something else than a file: not ours, skip the id
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # another worker, in this run or another, has it
                os.close(fd)
                continue
            self.uid = self.gid = uid
            self._fd = fd
            return
        raise RuntimeError(f"no free sandbox user id in {base}..{base + tries - 1}")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None


def _kill_all_as(uid: int) -> bool:
    """kill(-1, SIGKILL) from a child running as `uid`: every process of that user at once
    (a fork in progress cannot slip through, unlike one pid at a time). True if there was
    any process to signal."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # all processes this user may signal, but itself
            code = 0
        except ProcessLookupError:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise RuntimeError(f"could not signal the processes of sandbox user {uid}")
    return code == 0


def _live_processes(uid: int) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter(["uids", "status"]):
        uids = proc.info["uids"]
        if uids and uids.real == uid and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def kill_user(uid: int, wait: float = 10.0) -> int:
    """Kill every process of `uid` (what a kernel left behind: forks, sleepers, a process
    that keeps forking), round after round until none is left; the number of rounds that
    found some. An error if some still run after `wait` seconds."""
    deadline = time.monotonic() + wait
    rounds = 0
    while _kill_all_as(uid):
        rounds += 1
        time.sleep(0.01)  # the killed become zombies until their parents reap them
        if not _live_processes(uid) and not _live_processes(uid):
            return rounds
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of sandbox user {uid} still run after {wait:g} s")
    return rounds


# --- set-up done by the grader -----------------------------------------------------------------


def kernel_spec(folder: Path, settings_file: Path) -> Path:
    """Write a kernel spec that starts kernels through this launcher; return the folder to
    put on JUPYTER_PATH (the spec lives in its kernels/ subfolder)."""
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "autograde.sandbox",
        str(settings_file),
        "-f",
        "{connection_file}",
    ]
    kernel = {"argv": argv, "display_name": "Python 3 (grading sandbox)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel, indent=1))
    return folder


# A Unix socket's path holds at most 107 bytes; the kernel's sit at
# <parent>/twin-gpt-sandbox-<worker>-<8 random>/work/.ipc-<port>.
SOCKET_PATH_MAX = 107
_SOCKET_TAIL = len("/twin-gpt-sandbox-999-12345678/work/.ipc-99999")


def scratch_parent(worker: int) -> Path:
    """A new folder for one grading worker's scratch folder and kernel sockets: in the
    temporary folder, or in /tmp or /dev/shm where that one's path is too long for a socket.
    The sandbox user may enter it but not list it."""
    for base in dict.fromkeys([tempfile.gettempdir(), "/tmp", "/dev/shm"]):
        if len(base) + _SOCKET_TAIL <= SOCKET_PATH_MAX and os.access(base, os.W_OK | os.X_OK):
            parent = Path(tempfile.mkdtemp(prefix=f"twin-gpt-sandbox-{worker}-", dir=base))
            parent.chmod(0o711)
            return parent
    raise RuntimeError(
        f"no temporary folder with a path short enough for the kernel's sockets (at most "
        f"{SOCKET_PATH_MAX - _SOCKET_TAIL} characters; {tempfile.gettempdir()!r} is "
        f"{len(tempfile.gettempdir())}): set TMPDIR to a shorter folder"
    )


def prepare_scratch(settings: Settings, inputs: Path | None) -> Path:
    """An empty scratch folder for the next kernel, holding a copy of `inputs`' files (the
    release folder, notebooks left out), owned by the sandbox user."""
    scratch = Path(settings.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, mode=0o700)
    if inputs is not None:
        for item in inputs.iterdir():
            if item.suffix == ".ipynb" or item.name.startswith("."):
                continue
            copy = shutil.copytree if item.is_dir() else shutil.copy2
            copy(item, scratch / item.name)
    if settings.uid is not None:
        for path in [scratch, *scratch.rglob("*")]:
            os.lchown(path, settings.uid, settings.gid)
    return scratch


# --- the launcher, run as the kernel ---------------------------------------------------------


def kernel_env(settings: Settings, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The whole environment of a kernel: the harmless variables of `base` (the launcher's
    environment) and the sandbox's own."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: base[k] for k in KEPT_VARIABLES if k in base}
    threads = str(settings.limits.threads)
    env.update(
        PATH=os.pathsep.join([venv_bin, "/usr/local/bin", "/usr/bin", "/bin"]),
        HOME=settings.scratch,
        USER="student",
        LOGNAME="student",
        TMPDIR=settings.scratch,
        PYTHONPATH=os.pathsep.join(settings.python_path),
        MPLBACKEND="Agg",
        MPLCONFIGDIR=str(Path(settings.scratch) / ".config" / "matplotlib"),
        XDG_CACHE_HOME=str(Path(settings.scratch) / ".cache"),
        OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
        LANG=env.get("LANG", "C.UTF-8"),
    )
    env.update(settings.env)
    return env


def _set_limits(limits: Limits) -> None:
    mb = 1 << 20
    for which, value in (
        (resource.RLIMIT_AS, limits.memory_mb * mb),
        (resource.RLIMIT_NPROC, limits.processes),
        (resource.RLIMIT_FSIZE, limits.file_mb * mb),
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(which, (value, value))


def _private_mounts(settings: Settings, scratch: Path, notes: list[str]) -> bool:
    """In a mount namespace of this process's own: hide the instructor's folders, give it
    its own /tmp and /dev/shm, and keep the interpreter and the scratch folder reachable
    for the sandbox user. Whether there is such a namespace; what failed goes to `notes`."""
    try:
        _private_mount_namespace()
    except OSError as err:
        notes.append(f"instructor folders not hidden, /tmp shared ({err})")
        return False
    try:  # first: what it binds back is then covered below like any other folder
        _private_tmp(view.needed(settings, scratch), settings.limits.tmp_mb)
    except OSError as err:
        notes.append(f"/tmp and /dev/shm shared with the machine ({err})")
    try:
        for folder in settings.hide:
            if Path(folder).is_dir():
                flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
                _mount("tmpfs", folder, "tmpfs", flags, "size=4k,mode=000")
    except OSError as err:
        notes.append(f"instructor folders not hidden ({err})")
    if settings.uid is not None:  # the interpreter or the scratch folder may sit in a
        try:  # closed folder (/root/.pyenv, a 0700 temporary folder)
            _expose([Path(sys.base_prefix), Path(sys.executable).resolve(), scratch])
        except OSError as err:
            notes.append(f"interpreter or scratch folder maybe out of reach ({err})")
    return True


def _own_processes(notes: list[str]) -> int | None:
    """Go on in a PID namespace of its own: fork a child, the namespace's PID 1, that sees
    only its own processes (a /proc of its own, in this mount namespace) and returns a
    descriptor that reads end-of-file once this process is gone (`_die_with_stand_in`).
    This process stays outside as the kernel's stand-in and never returns (`_stand_in`).
    None, and a note, if the machine refuses."""
    try:
        _unshare(CLONE_NEWPID)
    except OSError as err:
        notes.append(f"processes of the machine visible ({err})")
        return None
    read_end, write_end = os.pipe()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, forkprotocol.RELAYED)
    pid = os.fork()
    if pid != 0:
        os.close(read_end)
        _stand_in(pid, mask)
    os.close(write_end)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        _mount_proc()
    except OSError as err:
        notes.append(f"processes of the machine visible in /proc ({err})")
    return read_end


def _stand_in(kernel: int, mask) -> None:
    """Outside the kernel's PID namespace: wait for its PID 1 and exit as it does; never
    returns. Signals for the kernel come to the process group (from jupyter_client, or
    the fork server) and reach the kernel as well: an interrupt is the kernel's alone, but
    PID 1 ignores any signal it has no handler for, so the others (SIGTERM, SIGHUP, ...),
    which would end any other process, end the kernel here with SIGKILL (and with it every
    process of its namespace); this process then ends by that signal, as the kernel would
    have."""
    ended_by = []

    def end_kernel(signum, _frame):
        ended_by.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(kernel, signal.SIGKILL)

    for signum in forkprotocol.RELAYED:
        signal.signal(signum, signal.SIG_IGN if signum == signal.SIGINT else end_kernel)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    _, status = os.waitpid(kernel, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == -signal.SIGKILL and ended_by:
        code = -ended_by[0]
    if code == -signal.SIGKILL:  # exit_like cannot reset the handler of SIGKILL
        os.kill(os.getpid(), signal.SIGKILL)
    forkprotocol.exit_like(code)


def _die_with_stand_in(fd: int) -> None:
    """Be killed when the stand-in outside ends (a launcher killed alone), or leave at once
    if it is gone already (`fd` reads end-of-file). Set after the last change of user id,
    which clears it."""
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    gone, _, _ = select.select([fd], [], [], 0)
    os.close(fd)
    if gone:
        os._exit(1)


def enter(settings: Settings, connection_file: str) -> Path:
    """Put this process in the sandbox: hidden folders, its own /tmp and /dev/shm, no
    network, its own processes, limits, the sandbox user, the scratch folder as working
    folder. Returns the kernel's own copy of the connection file. Run by the launcher, or
    by a fork server's child (`forkserver`).

    With a sandbox user, what returns is a child, PID 1 of a PID namespace of its own: the
    process that called stays outside, waits for it and exits as it does (`_stand_in`)."""
    scratch = Path(settings.scratch)
    # The connection file sits in the grader's private runtime folder: hand the kernel a copy.
    connection = _connection_copy(scratch, connection_file)
    notes = []
    stand_in = None
    root = os.geteuid() == 0
    try:  # first: all it starts from here on is counted in its worker's group
        cgroup.join(settings.cgroups)
    except OSError as err:
        notes.append(f"memory not limited for the kernel's whole tree ({err})")
    if _privileged():  # root, or inside bubblewrap's view (`view`)
        mounted = _private_mounts(settings, scratch, notes)
        if settings.isolate_network:
            try:
                _no_network()
            except OSError as err:
                notes.append(f"network not cut off, or its loopback down ({err})")
        if mounted and (settings.uid is not None or not root):
            stand_in = _own_processes(notes)
    elif settings.isolate_network:
        try:  # without root, a user namespace may still bring a network namespace
            _unshare(CLONE_NEWUSER | CLONE_NEWNET)
            _loopback_up()
        except OSError as err:
            notes.append(f"network not cut off, or its loopback down ({err})")
    _set_limits(settings.limits)
    _first_to_go()
    if settings.uid is not None and root:
        os.lchown(connection, settings.uid, settings.gid)
        os.setgroups([])
        os.setgid(settings.gid)
        os.setuid(settings.uid)
    elif not root and _privileged():
        _drop_capabilities()
    if stand_in is not None:
        _die_with_stand_in(stand_in)
    os.umask(0o077)
    os.chdir(scratch)
    for note in notes:  # the kernel's stderr goes to the grading log, not to the notebook
        print(f"grading sandbox: {note}", file=sys.stderr, flush=True)
    return connection


def _connection_copy(scratch: Path, connection_file: str) -> Path:
    """The kernel's own copy of its connection file, in its scratch folder (the original
    sits in the grader's private runtime folder)."""
    connection = scratch / ".kernel.json"
    if Path(connection_file) != connection:
        shutil.copyfile(connection_file, connection)
    return connection


PR_SET_NO_NEW_PRIVS = 38  # linux/prctl.h


def _first_to_go() -> None:
    """No new privileges for this process and all it starts (a setuid program stays
    unprivileged), and the first to be killed when the machine runs out of memory (the
    grader and the other kernels last)."""
    if _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as fh:
        fh.write("1000")


# ipykernel's arguments after the connection file: no history file in the scratch folder.
KERNEL_ARGS = ("--HistoryManager.hist_file=:memory:",)


def launch(settings: Settings, connection_file: str, settings_file: str | None = None,
           in_view: bool = False) -> None:  # fmt: skip
    """Turn this process into a sandboxed ipykernel, or stand in for one a fork server
    starts (`autograde.forkserver`, asked by `forkprotocol.run_kernel`); never returns.
    With `settings.use_view` the kernel starts in bubblewrap's view of the machine (this
    process becomes bubblewrap, which runs this launcher again inside, `in_view`)."""
    if not in_view:
        connection_file = str(_connection_copy(Path(settings.scratch), connection_file))
        if settings.fork_server:
            status = forkprotocol.run_kernel(settings.fork_server, connection_file)
            if status is not None:
                forkprotocol.exit_like(status)
        if settings.use_view and settings_file:
            inner = [sys.executable, "-m", "autograde.sandbox", "--in-view", settings_file]
            argv = view.command(settings, [*inner, "-f", connection_file], [settings_file])
            # jupyter_client interrupts the kernel with a SIGINT to its whole process group:
            # bubblewrap, which this process becomes, would die of it, and the kernel with
            # it. Ignored here, it stays ignored across the exec (the kernel, which sets its
            # own handler for each cell it runs, still gets the interrupt).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.execve(argv[0], argv, kernel_env(settings))
    connection = enter(settings, connection_file)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", str(connection), *KERNEL_ARGS]
    os.execve(sys.executable, argv, kernel_env(settings))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--tries"]:  # run by `view_tries` inside the view
        print(json.dumps(tries()))
        return
    in_view = argv[:1] == ["--in-view"]
    argv = argv[1:] if in_view else argv
    if len(argv) != 3 or argv[1] != "-f":
        sys.exit("usage: python -m autograde.sandbox [--in-view] SETTINGS.json -f CONNECTION_FILE")
    launch(Settings.read(Path(argv[0])), argv[2], argv[0], in_view)


if __name__ == "__main__":
    main()
