"""Where the course runs: device choice, seeding, versions and the smoke-mode switch.

This module is framework-neutral on purpose. Importing it must stay cheap, so it never
imports torch or tensorflow at module level: each function that needs a framework imports
it inside, at the moment it is called. Chapter 00 prints `report()` to check a setup.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import random
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import psutil

# Env var names, in one place so error messages and docs agree.
SMOKE_ENV = "COURSE_SMOKE"
DEVICE_ENV = "COURSE_DEVICE"

_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("", "0", "false", "no", "off")

DEVICES = ("cpu", "cuda", "mps")

# Apple's MPS backend existed long before it was dependable: older torch releases lacked
# ops the GPT needs or returned wrong results for some of them. From torch 2.4 on, the
# course's models train correctly on MPS, so below that we quietly fall back to the CPU.
MPS_MIN_TORCH = (2, 4)

# seed_everything accepts what numpy's legacy global generator accepts: 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1

# Report key -> the distribution names that provide it. The first one installed wins;
# TensorFlow ships as "tensorflow-cpu" on Linux x86_64 (Binder, CI), "tensorflow" elsewhere.
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "twin-gpt": ("twin-gpt",),
    "numpy": ("numpy",),
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel"),
    "keras": ("keras",),
    "triton": ("triton",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "onnxscript": ("onnxscript",),
    "ai-edge-litert": ("ai-edge-litert",),
    "nbgrader": ("nbgrader",),
    "jupyterlab": ("jupyterlab",),
    "matplotlib": ("matplotlib",),
    "psutil": ("psutil",),
}


def smoke_mode() -> bool:
    """Return True when COURSE_SMOKE asks for a tiny, fast run of every chapter.

    The test suite sets COURSE_SMOKE=1 so that each notebook's `parameters` cell shrinks
    models and step counts. A typo such as COURSE_SMOKE=ture is an error, not a silent
    False: a learner who meant "fast" should not wait an hour to find out.
    """
    raw = os.environ.get(SMOKE_ENV, "")
    value = raw.strip().lower()
    if value in _TRUE_WORDS:
        return True
    if value in _FALSE_WORDS:
        return False
    raise ValueError(
        f"{SMOKE_ENV}={raw!r} is not understood; use one of {_TRUE_WORDS} to turn smoke "
        f"mode on, or one of {_FALSE_WORDS[1:]} (or leave it unset) to turn it off."
    )


def _version_tuple(version: str) -> tuple[int, int]:
    """Turn a version string such as '2.13.0+cpu' into (2, 13), comparable as numbers.

    Comparing the strings themselves is a classic bug: '2.13' < '2.4' as text.
    """
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"cannot read a major.minor version from {version!r}")
    return int(match.group(1)), int(match.group(2))


def _device_problem(torch, device: str) -> str | None:
    """Say why `device` cannot be used with this torch, or return None if it can."""
    if device == "cuda" and not torch.cuda.is_available():
        build = torch.version.cuda
        why = "it is a CPU-only build" if build is None else f"built for CUDA {build}"
        return f"torch.cuda.is_available() is False (torch {torch.__version__}, {why})"
    if device == "mps":
        if not torch.backends.mps.is_available():
            return "torch.backends.mps.is_available() is False (MPS needs Apple silicon macOS)"
        if _version_tuple(torch.__version__) < MPS_MIN_TORCH:
            minimum = ".".join(map(str, MPS_MIN_TORCH))
            return f"torch {torch.__version__} is older than {minimum}, where MPS is reliable"
    return None


def pick_device(prefer: str | None = None) -> str:
    """Choose the torch device string for this machine: "cuda", "mps" or "cpu".

    Order of authority: the `prefer` argument, then the COURSE_DEVICE env var, then an
    automatic choice (CUDA if present, else a reliable MPS, else the CPU). "auto" in either
    place means "choose for me". Forcing a device that is not usable raises a RuntimeError
    that says why, instead of failing later deep inside a training loop.
    """
    source = "prefer"
    choice = prefer
    if choice is None:
        source, choice = DEVICE_ENV, os.environ.get(DEVICE_ENV)
    if choice is not None:
        if not isinstance(choice, str):
            raise TypeError(f"{source} must be a str such as 'cpu', got {choice!r}")
        choice = choice.strip().lower()
        if choice in ("", "auto"):
            choice = None
        elif choice not in DEVICES:
            raise ValueError(f"{source}={choice!r}: expected one of {DEVICES} or 'auto'")
    if choice == "cpu":
        return "cpu"  # needs no framework at all

    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "pick_device needs PyTorch; install it with: pip install 'twin-gpt[torch]'"
        ) from err

    if choice is not None:
        problem = _device_problem(torch, choice)
        if problem is not None:
            raise RuntimeError(f"{source}={choice!r} was asked for, but {problem}.")
        return choice
    for device in ("cuda", "mps"):
        if _device_problem(torch, device) is None:
            return device
    return "cpu"


def seed_everything(seed: int) -> None:
    """Seed every random generator the course uses, so a run can be repeated exactly.

    Seeds Python's `random`, numpy's global generator, and sets PYTHONHASHSEED (which only
    affects Python processes started *after* this call, such as DataLoader workers).
    torch, tensorflow and keras are seeded only if they are already imported: seeding must
    never drag a heavy framework into a process that does not use it. So import your
    framework first, then call seed_everything.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in 0..{MAX_SEED} (2**32 - 1), got {seed}")

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)  # seeds the CPU and every GPU
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(seed)
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(seed)  # Keras' own seed generators


def _dist_version(names: tuple[str, ...]) -> str | None:
    """Version of the first installed distribution in `names`, read from its metadata."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    """Versions of Python, the platform and the course's packages (None = not installed).

    Read from installed package metadata, so nothing is imported: asking for TensorFlow's
    version costs microseconds instead of the seconds `import tensorflow` takes.
    """
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for key, names in _DISTRIBUTIONS.items():
        found[key] = _dist_version(names)
    return found


def versions_line() -> str:
    """One line for a notebook's first cell: Python and the frameworks that are installed."""
    found = versions()
    keys = ("python", "numpy", "torch", "tensorflow", "keras", "triton")
    parts = [f"{key} {found[key]}" for key in keys if found.get(key)]
    return "Twin GPT · " + " · ".join(parts) + (" · smoke mode" if _smoke_or_false() else "")


def _smoke_or_false() -> bool:
    try:
        return smoke_mode()
    except ValueError:
        return False


def preload_triton() -> bool:
    """Load Triton now, before anything imports TensorFlow; return whether it is loaded.

    TensorFlow and Triton each bundle LLVM. If TensorFlow loads first, the first thing that
    loads Triton later (``torch.compile``, even ``torch.optim``'s first step through
    ``torch._dynamo``) aborts the whole process: "LLVM ERROR: Option ... registered more
    than once". Loaded the other way round they coexist. `course.torch` and
    `import_tensorflow` call this first. If TensorFlow is already loaded, Triton is blocked
    for this process instead (importing it raises ImportError, which PyTorch handles), with
    a warning: PyTorch still works, without Triton kernels. Without a GPU driver, Triton is
    set to run kernels in its interpreter (``TRITON_INTERPRET=1``), as the course does on CPU.
    """
    if sys.modules.get("triton") is not None:
        return True
    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return False  # blocked earlier, or not installed
    if "tensorflow" in sys.modules:
        sys.modules["triton"] = None  # `import triton` now raises ImportError: no abort
        warnings.warn(
            "TensorFlow was imported before Triton, so Triton is disabled in this process "
            "(loading it now would abort it): PyTorch works, but without Triton kernels. "
            "To have both, restart the kernel and import course.torch or "
            "course.runtime.import_tensorflow() before anything imports TensorFlow.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    if not _has_cuda_driver():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU only: kernels run interpreted
    import triton  # noqa: F401

    return True


def import_tensorflow():
    """Import and return TensorFlow, safely beside PyTorch and Triton (`preload_triton`).

    Also keeps TensorFlow's C++ start-up messages quiet, and on a GPU turns on memory
    growth: by default TensorFlow reserves almost all GPU memory at its first op, leaving
    none for PyTorch in the same process (or for a second notebook).
    """
    preload_triton()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the GPU is already initialised: too late, and already set
            pass
    return tf


def import_keras():
    """Import and return Keras 3 on the TensorFlow backend (after `import_tensorflow`).

    The course's Keras code is written for the TensorFlow backend. KERAS_BACKEND is set to
    "tensorflow" unless it is already set to something else, which is an error.
    """
    backend = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow":
        raise RuntimeError(
            f"KERAS_BACKEND is {backend!r}: the course's Keras code needs 'tensorflow'. "
            "Unset it (or set it to tensorflow) and restart the kernel."
        )
    import_tensorflow()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"Keras was already loaded with the {keras.backend.backend()!r} backend; "
            "restart the kernel with KERAS_BACKEND=tensorflow"
        )
    return keras


def _has_cuda_driver() -> bool:
    """Whether an NVIDIA driver is present (without importing torch)."""
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/proc/driver/nvidia/version"))


def free_memory_gb() -> float:
    """Memory available to new work right now, in GiB (2**30 bytes)."""
    return psutil.virtual_memory().available / 2**30


def _usable_cpus() -> int:
    """CPUs this process may run on (a container may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def report(with_device: bool = False) -> str:
    """A human-readable summary of this environment, for chapter 00 and bug reports.

    Kept light by default: it imports no framework. Pass with_device=True to also ask
    torch which device `pick_device()` would choose (this imports torch).
    """
    memory = psutil.virtual_memory()
    lines = ["Twin GPT environment"]
    for key, version in versions().items():
        lines.append(f"  {key:<15} {version or 'not installed'}")
    lines.append(f"  {'cpus':<15} {_usable_cpus()} usable of {os.cpu_count()}")
    lines.append(
        f"  {'memory':<15} {memory.available / 2**30:.1f} GiB available "
        f"of {memory.total / 2**30:.1f} GiB"
    )
    try:
        smoke = "on" if smoke_mode() else "off"
    except ValueError as err:
        smoke = f"invalid ({err})"
    lines.append(f"  {'smoke mode':<15} {smoke} ({SMOKE_ENV})")
    if with_device:
        try:
            device = pick_device()
        except (ImportError, RuntimeError, ValueError) as err:
            device = f"unavailable ({err})"
        lines.append(f"  {'device':<15} {device}")
    return "\n".join(lines)
