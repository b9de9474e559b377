"""Where the course runs: device choice, seeding, versions and the smoke-mode switch.

This module is framework-neutral on purpose. Importing it must stay cheap, so it never
imports torch or tensorflow at module level: each function that needs a framework imports
it inside, at the moment it is called. Chapter 00 prints `report()` to check a setup.

It also holds the course's policies for Triton and TensorFlow in one process (`use_triton`,
`import_tensorflow`, `import_kernels`), applied only where they are called: importing
`course.torch`, `course.tf` or `kernels` loads neither Triton nor TensorFlow and sets no
environment variable, and nothing in the course edits `sys.modules`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import random
import re
import sys
import sysconfig
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


# --- Triton, TensorFlow and the kernels/ package -------------------------------------------
#
# The course's policy for these lives here and is applied only by explicit calls:
# `use_triton` (before Triton kernels are defined), `import_tensorflow`, `import_kernels`.

# Triton reads TRITON_INTERPRET when `@triton.jit` turns a function into a kernel: with one
# of these values the kernel runs in Triton's interpreter (on the CPU) instead of compiled.
TRITON_INTERPRET_ENV = "TRITON_INTERPRET"
_INTERPRET_WORDS = ("1", "true", "on")

# Why a process that has loaded TensorFlow must not load Triton (measured: TensorFlow 2.21,
# Triton 3.9, torch 2.13). The other order, Triton first, works.
_TRITON_AFTER_TENSORFLOW = (
    "TensorFlow and Triton each bundle LLVM, and loading Triton into a process that has "
    'already loaded TensorFlow aborts it ("LLVM ERROR: ... registered more than once"). '
    "PyTorch loads Triton too, in torch.compile and in every optimizer's constructor."
)

# Twin GPT's kernels/ package sits beside course/, whether installed editable or not.
KERNELS_DIR = Path(__file__).resolve().parent.parent / "kernels"


def use_triton(required: bool = True):
    """Import and return Triton, with the decision made whether its kernels run interpreted.

    The course's one place for this decision: call it before defining or importing a
    `@triton.jit` kernel (`import_kernels` does). Without an NVIDIA driver, a kernel can only
    run in Triton's interpreter, so TRITON_INTERPRET is set to "1" (a value already set to
    something false is an error). Triton reads the variable when `@triton.jit` runs, not when
    it is imported: Triton loaded earlier (torch.optim loads it) is fine, but a kernel defined
    earlier stays compiled and fails at its launch ("0 active drivers"). Such kernels, in the
    notebook or in the project's modules, raise a RuntimeError that names them.

    Also a RuntimeError, instead of an aborted process, when TensorFlow is loaded and Triton
    is not (see `import_tensorflow`). Triton not installed: ImportError, or None when
    `required` is False.
    """
    if "triton" not in sys.modules and importlib.util.find_spec("triton") is None:
        if not required:
            return None
        raise ImportError(
            "Triton is not installed (it ships for Linux); install it with: "
            "pip install 'twin-gpt[triton]'"
        )
    no_gpu = not _has_cuda_driver()
    if no_gpu:
        value = os.environ.setdefault(TRITON_INTERPRET_ENV, "1")
        if value.strip().lower() not in _INTERPRET_WORDS:
            raise RuntimeError(
                f"{TRITON_INTERPRET_ENV}={value!r} turns Triton's interpreter off, but there "
                "is no NVIDIA driver here, so Triton kernels could not run. Unset it (or set "
                "it to 1) and restart the kernel."
            )
    triton = _import_triton()
    if no_gpu:
        _interpret_tritons_own_functions()
    compiled = _kernels_compiled_for_a_gpu() if no_gpu else []
    if compiled:
        raise RuntimeError(
            f"Too late to run these Triton kernels in the interpreter: {', '.join(compiled)}. "
            f"They were defined while {TRITON_INTERPRET_ENV} was off, and without a GPU they "
            "fail when launched. Restart the kernel and call course.runtime.use_triton() "
            "before defining or importing any @triton.jit kernel (kernels defined from now "
            "on do run interpreted)."
        )
    return triton


def _interpret_tritons_own_functions() -> None:
    """Make Triton's own `@jit` functions (tl.max, tl.sum, tl.softmax, tl.cdiv, ...) run in
    the interpreter too.

    Triton decorates them when it is imported, and whatever imported it first decided how:
    PyTorch does in every optimizer's constructor, before any notebook could set
    TRITON_INTERPRET. Decorated then, they are compiled-only, and an interpreted kernel that
    calls one fails with "Cannot call @triton.jit'd outside of the scope of a kernel". So
    each one still compiled-only is replaced, in every module of `triton.language` that
    holds it, by its interpreted twin: what it would have been, imported after the decision.
    """
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    twins: dict[int, InterpretedFunction] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "triton.language" or name.startswith("triton.language.")):
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, JITFunction):
                if id(value) not in twins:
                    twins[id(value)] = InterpretedFunction(value.fn)
                setattr(module, attr, twins[id(value)])


def _import_triton():
    """The course's one `import triton`: refused, with the reason, once TensorFlow is loaded."""
    if "triton" not in sys.modules and "tensorflow" in sys.modules:
        raise RuntimeError(
            f"TensorFlow is already loaded in this process, so Triton cannot be: "
            f"{_TRITON_AFTER_TENSORFLOW} Restart the kernel and call "
            "course.runtime.use_triton() or course.runtime.import_tensorflow() before "
            "anything imports TensorFlow."
        )
    import triton

    return triton


def check_torch_may_load_triton(what: str = "this") -> None:
    """Raise a RuntimeError that says why and what to do, where PyTorch loading Triton now
    would abort the process: TensorFlow is loaded, Triton is installed but not loaded.

    PyTorch loads Triton on its own in torch.compile and in every optimizer's constructor
    (through torch._dynamo). Code of the course that reaches those calls asks here first,
    so a notebook that ran `import tensorflow` at its top gets an error, not a dead kernel.
    """
    if (
        "tensorflow" in sys.modules
        and "triton" not in sys.modules
        and importlib.util.find_spec("triton") is not None
    ):
        raise RuntimeError(
            f"{what} would load Triton, and TensorFlow is already loaded in this process: "
            f"{_TRITON_AFTER_TENSORFLOW} Restart the kernel and load TensorFlow through "
            "course.runtime.import_tensorflow() (or `from course.tf import ...`), which loads "
            "Triton first, instead of `import tensorflow`."
        )


def _kernels_compiled_for_a_gpu() -> list[str]:
    """`@triton.jit` kernels that were made compiled, not interpreted ("module.name").

    Looks in the notebook (`__main__`), in kernels/ and in modules outside the installed
    libraries (whose own kernels are not the course's business).
    """
    jit = sys.modules.get("triton.runtime.jit")
    if jit is None:
        return []
    libraries = tuple(
        os.path.join(sysconfig.get_path(key), "")
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
    )
    found = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        ours = name == "__main__" or name.partition(".")[0] == "kernels"
        if not ours and (not path or path.startswith(libraries)):
            continue
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            while isinstance(value, jit.KernelInterface) and not isinstance(value, jit.JITFunction):
                value = getattr(value, "fn", None)  # @triton.autotune wraps the kernel
            if isinstance(value, jit.JITFunction):
                found.append(f"{name}.{attr}")
    return found


def import_kernels(name: str):
    """Import and return `kernels.<name>`, Twin GPT's Triton kernels, with Triton ready.

    The PyPI package `kernels` (Hugging Face's kernel hub) has the same import name. So this
    first checks that the `kernels` Python finds is this project's (its folder, and the
    `__twin_gpt__` marker in its __init__.py), and raises an ImportError naming both if not;
    then calls `use_triton()`, then imports the module. A module kernels/ does not have
    raises ModuleNotFoundError.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"name must be a module name inside kernels/, such as 'attention', got {name!r}"
        )
    _twin_gpt_kernels()
    fullname = f"kernels.{name}"
    if importlib.util.find_spec(fullname) is None:
        raise ModuleNotFoundError(
            f"Twin GPT's kernels/ ({KERNELS_DIR}) has no module {name!r}", name=fullname
        )
    use_triton()
    return importlib.import_module(fullname)


def _twin_gpt_kernels():
    """The `kernels` package, imported once it is known to be Twin GPT's (`import_kernels`)."""
    module = sys.modules.get("kernels")
    if module is not None:
        found = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
    else:
        spec = importlib.util.find_spec("kernels")
        if spec is None:
            raise ModuleNotFoundError(
                f"No module named 'kernels': Twin GPT's kernels/ ({KERNELS_DIR}) is not "
                "importable. Reinstall twin-gpt (pip install -e . in its repository).",
                name="kernels",
            )
        found = spec.origin or list(spec.submodule_search_locations or [])
    if not isinstance(found, str) or Path(found).resolve() != KERNELS_DIR / "__init__.py":
        raise ImportError(_kernels_clash(found))  # someone else's package: do not run it
    try:
        module = importlib.import_module("kernels")  # Twin GPT's own imports nothing
    except Exception as err:
        raise ImportError(_kernels_clash(found, overwritten=True)) from err
    if getattr(module, "__twin_gpt__", False) is not True:
        raise ImportError(_kernels_clash(found, overwritten=True))
    return module


def _kernels_clash(found, overwritten: bool = False) -> str:
    """The error for a `kernels` package that is not Twin GPT's, naming both."""
    owners = importlib.metadata.packages_distributions().get("kernels", [])
    others = sorted({d for d in owners if re.sub(r"[-_.]+", "-", d).lower() != "twin-gpt"})
    if others:
        who = f"it comes from the installed distribution {' and '.join(map(repr, others))}"
    else:
        who = "it is probably the PyPI package 'kernels', or a folder named kernels on sys.path"
    if overwritten:
        what = f"{found} is in Twin GPT's kernels/ folder but is not Twin GPT's file"
    else:
        what = (
            f"The `kernels` package found at {found} is not Twin GPT's kernels/ "
            f"(which is at {KERNELS_DIR})"
        )
    return (
        f"{what}: {who}. The PyPI package 'kernels' (Hugging Face's kernel hub) and Twin "
        "GPT's Triton kernels share the import name `kernels`. Uninstall the other one "
        f"(pip uninstall {' '.join(others) or 'kernels'}) or give it an environment of its "
        "own, then reinstall twin-gpt (pip install -e . in its repository): pip writes a "
        "second package's files over the first's in the same folder."
    )


def import_tensorflow():
    """Import and return TensorFlow, safely beside PyTorch and Triton.

    TensorFlow and Triton each bundle LLVM, and only one order works in one process: Triton
    first. With TensorFlow first, whatever loads Triton later aborts the process, and
    PyTorch does in torch.compile and in every optimizer's constructor (through
    torch._dynamo). So where Triton is installed, this loads it first (without deciding
    TRITON_INTERPRET: that is `use_triton`'s). If TensorFlow was already imported some other
    way, it is too late for that, and a RuntimeWarning says what to do.

    Also keeps TensorFlow's C++ start-up messages quiet, and on a GPU turns on memory
    growth: by default TensorFlow reserves almost all GPU memory at its first op, leaving
    none for PyTorch in the same process (or for a second notebook).
    """
    triton_installed = importlib.util.find_spec("triton") is not None
    if "tensorflow" not in sys.modules and triton_installed:
        _import_triton()
    elif "triton" not in sys.modules and triton_installed:
        warnings.warn(
            "TensorFlow was imported before Triton (`import tensorflow` instead of "
            f"course.runtime.import_tensorflow()): {_TRITON_AFTER_TENSORFLOW} TensorFlow "
            "alone works; to use PyTorch too, restart the kernel and call "
            "course.runtime.import_tensorflow() before anything imports TensorFlow.",
            RuntimeWarning,
            stacklevel=2,
        )
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


def _local_processes() -> int:
    """How many training processes share this machine's cores (LOCAL_WORLD_SIZE, else 1)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _thread_cap() -> int | None:
    """OMP_NUM_THREADS as a positive count, or None (unset or not a positive integer): the
    usual way to cap a process's threads, which torchrun sets to 1 per rank, a grading
    sandbox gives each kernel and a test suite's workers share the cores with."""
    try:
        cap = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return cap if cap > 0 else None


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


def set_threads(n: int = 0) -> int:
    """Use `n` threads inside each operation (0 = one per usable core); return the count.

    0 shares the cores among the training processes of this machine: a rank of N on one
    machine (LOCAL_WORLD_SIZE=N, as torchrun and the course's launchers set it) takes
    cores // N. Two ranks that each took every core were measured 10 times slower a step
    (416 vs 38 ms on 2 cores): their threads spin against each other. OMP_NUM_THREADS,
    when set, is a cap on that count (a grading sandbox sets it to 1 for each of its
    parallel kernels, torchrun for each rank).

    The course's one thread policy, called by both trainers. It applies to the frameworks
    already imported, and imports neither: `torch.set_num_threads`, and TensorFlow's
    intra-op thread pool. TensorFlow fixes that pool when it runs its first operation;
    after that a different count cannot be set, and a warning says so (restart the kernel,
    or call `set_threads` before anything runs in TensorFlow).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n (threads) must be an int, got {type(n).__name__} {n!r}")
    if n < 0:
        raise ValueError(f"n (threads) must be >= 0 (0 = one per usable core), got {n}")
    count = n or max(1, _usable_cpus() // _local_processes())
    if not n and (cap := _thread_cap()) is not None:
        count = min(count, cap)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(count)
        except RuntimeError as err:  # TensorFlow is initialised: its pool is fixed
            fixed = tf.config.threading.get_intra_op_parallelism_threads()  # 0 = its default
            if fixed != count and (fixed, n) != (0, 0):
                warnings.warn(
                    f"TensorFlow's intra-op thread pool stays at {fixed or 'its default size'}, "
                    f"not {count}: it already ran an operation ({err}). Call set_threads "
                    "before anything runs in TensorFlow, or restart the kernel.",
                    stacklevel=2,
                )
    return count


def command_name(module: str) -> str:
    """How this process was started, for a command-line tool's usage line: the console
    script's name (`twin-gpt-train`) when run as one, else `python -m <module>`."""
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return script if script.startswith("twin-gpt-") else f"python -m {module}"
