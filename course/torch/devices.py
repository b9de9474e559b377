"""Where tensors live: the model's device, and a checker that every tensor follows it.

On a GPU, an operation that mixes a tensor on the GPU with one on the CPU fails
("Expected all tensors to be on the same device"). On a machine without a GPU every
tensor is on the CPU, and the same mistake passes unnoticed until a learner opens the
notebook on Colab. `check_device_following()` catches it on the CPU anyway:

    from course.torch.devices import check_device_following
    checker = check_device_following()   # from here on, for the rest of the process
    ...                                  # build, train, sample
    checker.raise_if_violations()        # AssertionError listing every problem

It gives every tensor a *virtual* device. A tensor is **placed** (on the model's device)
when it comes from `.to(device)` / `.cuda()` / `.mps()`, from a factory given `device=`,
or is a parameter or buffer of a module after `module.to(device)`; any operation's
result is placed when one of its inputs is. Every other tensor stays **on the CPU**:
`torch.tensor`, `zeros`, `arange`, `randint`, `from_numpy`, ... without `device=`, and
`.cpu()`. An operation that mixes a placed tensor with a CPU tensor of one dimension or
more (a 0-dim CPU tensor beside a GPU one is allowed, as in PyTorch), or turns a placed
tensor into a numpy array without `.cpu()`, is exactly what fails on a GPU: the checker
records it, with the operation and the lines of code that led there. What that operation
computed is not reported again: on a GPU, the program would have stopped there.

`device=x.device` follows x: the device object a tensor hands out remembers which of the
two it came from. A device given any other way (a string, `pick_device()`'s answer,
`torch.device("cuda")`) counts as the model's, so `device="cpu"` written to mean the CPU
is not told apart, nor is a string made from a CPU tensor's device (`x.device.type`).
Generators (`torch.Generator(device=...)`) are not followed, nor are parameters rebuilt
by hand (`nn.Parameter(tensor)`, a `copy.deepcopy` of a model): they start on the CPU.
While `torch.compile` traces, the checker steps aside: code compiled into kernels is not
checked. TensorFlow places operations by itself and needs none of this.
"""

from __future__ import annotations

import itertools
import linecache
import os
import sys
import weakref
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode

_is_compiling = torch.compiler.is_compiling

# Frames inside these files are torch's own or the checker's: the user's line is outside.
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_THIS_FILE = os.path.abspath(__file__)
# Frames below these are installed packages (numpy, matplotlib, IPython, ...), not project code.
_NOT_PROJECT = (*{sys.prefix, sys.base_prefix, sys.exec_prefix}, "<frozen ")
_PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(_THIS_FILE))) + os.sep
_FRAMES_SHOWN = 4

# Questions about one tensor, answered without a tensor: nothing to follow.
_NO_TENSOR_OUT = frozenset(
    {"size", "dim", "numel", "stride", "__len__", "__int__", "__float__", "__bool__",
     "__index__", "item", "tolist", "is_floating_point", "is_contiguous", "data_ptr",
     "element_size", "_set_grad_enabled", "__repr__", "__format__", "__hash__"}
)  # fmt: skip
# Operations that copy between devices by design, or only compare metadata.
_MOVES = frozenset(
    {"copy_", "new_tensor", "set_", "_make_subclass", "_has_compatible_shallow_copy_type"}
)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of `model`'s parameters (of its buffers if it has none; else the CPU)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


@dataclass
class DeviceViolation:
    """One place where a tensor did not follow the model's device (`count` times)."""

    op: str
    problem: str
    where: list[str] = field(default_factory=list)  # innermost first: "file:line in f: code"
    count: int = 1

    def __str__(self) -> str:
        times = f" ({self.count} times)" if self.count > 1 else ""
        lines = [f"{self.op}: {self.problem}{times}"]
        lines += [f"    {frame}" for frame in self.where]
        return "\n".join(lines)


class DeviceMismatchError(RuntimeError):
    """Raised at the operation itself by a checker made with `raise_on_violation=True`."""


class DeviceChecker(TorchFunctionMode):
    """A torch function mode that tags tensors with a virtual device (see the module).

    Use it as a context manager (`with DeviceChecker() as checker:`), or install it for
    the rest of the process with `check_device_following()`. `violations` lists what it
    found; with `raise_on_violation=True` the offending operation raises instead.
    """

    def __init__(self, raise_on_violation: bool = False) -> None:
        super().__init__()
        self.raise_on_violation = raise_on_violation
        self.violations: list[DeviceViolation] = []
        self._seen: dict[tuple[str, ...], DeviceViolation] = {}
        # id(tensor) -> weak reference, for every placed tensor: nothing is kept alive, and
        # an entry leaves with its tensor.
        self._placed: dict[int, weakref.ref] = {}
        # The same for what an operation found at fault computed: on a GPU the program would
        # have stopped there, so what follows from it is not reported again.
        self._poisoned: dict[int, weakref.ref] = {}
        # (device type, index) -> (the object CPU tensors hand out, the one placed ones do)
        self._device_objects: dict[tuple[str, int | None], tuple[torch.device, torch.device]] = {}
        # id(device object) -> (the object, placed?), for the objects above and for the ones
        # `module.to(...)` parses its arguments into; the objects are kept, so ids stay unique.
        self._device_kinds: dict[int, tuple[torch.device, bool]] = {}
        self._parsed: list[int] = []  # ids of parsed devices, oldest first (a few are kept)

    # -- tags ------------------------------------------------------------------------------

    def is_placed(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor` is on the model's device (virtually), rather than the CPU."""
        ref = self._placed.get(id(tensor))
        return ref is not None and ref() is tensor

    def _place(self, tensor: torch.Tensor) -> None:
        _weak_add(self._placed, tensor)

    def _unplace(self, tensor: torch.Tensor) -> None:
        if self.is_placed(tensor):
            del self._placed[id(tensor)]

    def _tag(self, out, placed: bool) -> None:
        if isinstance(out, torch.Tensor):
            if placed:
                self._place(out)
            else:
                self._unplace(out)
        elif isinstance(out, tuple | list):
            for item in out:
                if isinstance(item, torch.Tensor):
                    self._tag(item, placed)

    def _device_object(self, real: torch.device, placed: bool) -> torch.device:
        """An object equal to `real` that says which kind of tensor it was read from."""
        key = (real.type, real.index)
        pair = self._device_objects.get(key)
        if pair is None:
            pair = (torch.device(real), torch.device(real))
            self._device_objects[key] = pair
            self._device_kinds[id(pair[0])] = (pair[0], False)
            self._device_kinds[id(pair[1])] = (pair[1], True)
        return pair[1] if placed else pair[0]

    def _device_kind(self, device) -> bool | None:
        """Whether `device` is the model's (True) or the CPU (False), if it was read from a
        tensor; None for a device given any other way (a string, `torch.device("cuda")`)."""
        entry = self._device_kinds.get(id(device))
        return entry[1] if entry is not None and entry[0] is device else None

    def _device_is_placed(self, device) -> bool:
        return self._device_kind(device) is not False

    # -- the mode --------------------------------------------------------------------------

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        if _is_compiling():
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in _NO_TENSOR_OUT:
            return func(*args, **kwargs)
        handler = _HANDLERS.get(name)
        if handler is not None:
            return handler(self, func, name, args, kwargs)
        return self._generic(func, name, args, kwargs)

    def _generic(self, func, name, args, kwargs):
        placed_inputs, cpu_inputs = self._split(args, kwargs)
        device = kwargs.get("device")
        if device is not None:  # a factory told where: its result goes there
            out = func(*args, **kwargs)
            placed = self._device_is_placed(device)
            if args and out is args[0]:  # as_tensor(x, device=...) may give x back
                return self._moved(out, out, placed)
            self._tag(out, placed)
            return out
        poisoned = False
        if placed_inputs:
            poisoned = bool(self._poisoned) and any(
                _weak_has(self._poisoned, tensor) for tensor in placed_inputs
            )
            if cpu_inputs and not poisoned and name not in _MOVES:
                self._violation(name, _mixing(placed_inputs, cpu_inputs))
                poisoned = True
        out = func(*args, **kwargs)
        if placed_inputs:
            self._tag(out, True)
            if poisoned:
                for tensor in out if isinstance(out, tuple | list) else (out,):
                    if isinstance(tensor, torch.Tensor):
                        _weak_add(self._poisoned, tensor)
        return out

    def _split(self, args, kwargs) -> tuple[list, list]:
        """The placed tensor inputs, and the CPU ones of 1 dimension or more (this runs for
        every operation: written for speed)."""
        placed, cpu = [], []
        tags = self._placed
        for arg in itertools.chain(args, kwargs.values()) if kwargs else args:
            if isinstance(arg, torch.Tensor):
                items = (arg,)
            elif isinstance(arg, (tuple, list)):  # torch.cat([...]), foreach ops
                items = arg
            else:
                continue
            for item in items:
                if isinstance(item, torch.Tensor):
                    ref = tags.get(id(item))
                    if ref is not None and ref() is item:
                        placed.append(item)
                    elif item.dim() > 0:
                        cpu.append(item)
        return placed, cpu

    # -- operations that need more than the generic rule -----------------------------------

    def _get(self, func, name, args, kwargs):
        """Property reads: `x.device` hands out a device object that remembers x's kind."""
        out = func(*args, **kwargs)
        prop = getattr(getattr(func, "__self__", None), "__name__", None)
        if prop == "device" and isinstance(out, torch.device):
            return self._device_object(out, self.is_placed(args[0]))
        if isinstance(out, torch.Tensor) and self.is_placed(args[0]):
            self._place(out)  # .grad, .data, .T, ... of a placed tensor
            self._pass_poison(args[0], out)
        return out

    def _set(self, func, name, args, kwargs):
        """`param.data = t` (how `module.to` moves a parameter) makes param t's kind."""
        prop = getattr(getattr(func, "__self__", None), "__name__", None)
        if prop == "data":
            out = func(*args, **kwargs)
            self._tag(args[0], self.is_placed(args[1]))
            return out
        return self._generic(func, prop or name, args, kwargs)

    def _to(self, func, name, args, kwargs):
        """`.to(device)`, `.to(tensor)`, `.to(dtype)` (which keeps the tensor's kind)."""
        source = args[0]
        placed = None
        target = kwargs.get("device", args[1] if len(args) > 1 else None)
        if isinstance(target, torch.Tensor):
            placed = self.is_placed(target)
        elif isinstance(target, str | torch.device) or type(target) is int:
            placed = self._device_kind(target)
            if placed is None and not _called_from_torch():
                placed = True  # the user named a device: the model's (pick_device())
            # else torch's own code, with a device it made in C++ (clip_grad_norm_ groups
            # tensors by device): the tensor keeps its kind
        return self._moved(source, func(*args, **kwargs), placed)

    def _parse_to(self, func, name, args, kwargs):
        """`module.to(...)` parses its arguments into a new device object: remember whether
        it stands for the model's device or the CPU, for the `.to` of every parameter."""
        out = func(*args, **kwargs)
        device = out[0] if isinstance(out, tuple) and out else None
        if isinstance(device, torch.device):
            target = kwargs.get("device", args[0] if args else None)
            if isinstance(target, torch.Tensor):
                placed = self.is_placed(target)
            else:
                placed = self._device_kind(target) is not False
            self._device_kinds[id(device)] = (device, placed)
            self._parsed.append(id(device))
            if len(self._parsed) > 64:
                del self._device_kinds[self._parsed.pop(0)]
        return out

    def _to_accelerator(self, func, name, args, kwargs):
        return self._moved(args[0], func(*args, **kwargs), True)

    def _cpu(self, func, name, args, kwargs):
        return self._moved(args[0], func(*args, **kwargs), False)

    def _moved(self, source, out, placed: bool | None):
        if placed is None:
            placed = self.is_placed(source)
        if out is source and placed != self.is_placed(source):
            # Already there for real (everything is on the CPU here), so torch returned the
            # tensor itself: hand out a new view, so that the source keeps its own kind.
            out = out.view_as(out)
        self._tag(out, placed)
        if placed:
            self._pass_poison(source, out)
        return out

    def _pass_poison(self, source: torch.Tensor, out) -> None:
        if self._poisoned and isinstance(out, torch.Tensor) and _weak_has(self._poisoned, source):
            _weak_add(self._poisoned, out)

    def _numpy(self, func, name, args, kwargs):
        if self.is_placed(args[0]) and not kwargs.get("force", False):
            self._violation(
                name,
                f"a {_shape(args[0])} tensor on the model's device was turned into a numpy "
                "array; numpy needs the CPU: call .cpu() first",
            )
        return func(*args, **kwargs)

    def _getitem(self, func, name, args, kwargs):
        """Indexing a placed tensor with CPU indices is allowed (torch moves them)."""
        if self.is_placed(args[0]):
            out = func(*args, **kwargs)
            self._tag(out, True)
            self._pass_poison(args[0], out)
            return out
        return self._generic(func, name, args, kwargs)

    def _setitem(self, func, name, args, kwargs):
        """`x[2:5] = y` copies y across devices; an index tensor must follow x, though."""
        index = args[1] if len(args) > 1 else None
        items = index if isinstance(index, tuple) else (index,)
        if any(isinstance(item, torch.Tensor) for item in items):
            return self._generic(func, name, args, kwargs)
        return func(*args, **kwargs)

    # -- violations ------------------------------------------------------------------------

    def _violation(self, op: str, problem: str) -> None:
        where = _user_frames()
        key = (op, *where)
        seen = self._seen.get(key)
        if seen is not None:
            seen.count += 1
        else:
            seen = self._seen[key] = DeviceViolation(op, problem, where)
            self.violations.append(seen)
        if self.raise_on_violation:
            raise DeviceMismatchError(f"{seen}\n(this would fail on a GPU)")

    def report(self) -> str:
        """Every violation, numbered, with where it happened; or a line saying there is none."""
        if not self.violations:
            return "every tensor followed the model's device"
        lines = [
            f"{len(self.violations)} place(s) where a tensor did not follow the model's "
            "device (each would fail on a GPU):"
        ]
        lines += [f"{i}. {violation}" for i, violation in enumerate(self.violations, 1)]
        return "\n".join(lines)

    def raise_if_violations(self) -> None:
        """Raise an AssertionError with the report if anything was recorded."""
        if self.violations:
            raise AssertionError(self.report())

    def uninstall(self) -> None:
        """Stop checking (the checker must be the innermost torch function mode)."""
        global _installed
        depth = torch._C._len_torch_function_stack()
        if depth:
            top = torch._C._get_function_stack_at(depth - 1)
            if top is not self:
                raise RuntimeError(f"another torch function mode ({top!r}) is active above it")
            self.__exit__(None, None, None)
        if _installed is self:
            _installed = None


_HANDLERS = {
    "__get__": DeviceChecker._get,
    "__set__": DeviceChecker._set,
    "to": DeviceChecker._to,
    "_parse_to": DeviceChecker._parse_to,
    "cuda": DeviceChecker._to_accelerator,
    "mps": DeviceChecker._to_accelerator,
    "xpu": DeviceChecker._to_accelerator,
    "cpu": DeviceChecker._cpu,
    "numpy": DeviceChecker._numpy,
    "__array__": DeviceChecker._numpy,
    "__getitem__": DeviceChecker._getitem,
    "__setitem__": DeviceChecker._setitem,
}

_installed: DeviceChecker | None = None


def check_device_following(raise_on_violation: bool = False) -> DeviceChecker:
    """Check, from now on and for the rest of the process, that every tensor follows the
    model's device; return the checker (`.violations`, `.report()`, `.uninstall()`).

    Calling it again returns the checker already installed. Tensors made before the call
    count as on the CPU, so install it before building the model.
    """
    global _installed
    if _installed is None:
        checker = DeviceChecker(raise_on_violation)
        checker.__enter__()
        _installed = checker
    return _installed


# -- messages ------------------------------------------------------------------------------


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) if tensor.dim() else "0-dim"


def _mixing(placed: list, cpu: list) -> str:
    def shapes(tensors):
        return ", ".join(f"({_shape(t)})" for t in tensors[:3])

    return (
        f"tensor(s) on the model's device {shapes(placed)} met tensor(s) left on the CPU "
        f"{shapes(cpu)}; create them with device=... or move them with .to(device)"
    )


def _weak_add(table: dict[int, weakref.ref], tensor: torch.Tensor) -> None:
    """Put `tensor` in `table` (id -> weak reference), which it leaves when it dies."""
    key = id(tensor)
    ref = table.get(key)
    if ref is not None and ref() is tensor:
        return

    def forget(dead: weakref.ref, key: int = key) -> None:
        if table.get(key) is dead:
            del table[key]

    table[key] = weakref.ref(tensor, forget)


def _weak_has(table: dict[int, weakref.ref], tensor: torch.Tensor) -> bool:
    ref = table.get(id(tensor))
    return ref is not None and ref() is tensor


def _called_from_torch() -> bool:
    """Whether the operation being handled was called by torch's own Python code."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) == _THIS_FILE:
        frame = frame.f_back
    return frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIR)


def _user_frames() -> list[str]:
    """The lines of code that led to the current operation, innermost first: project
    code (a notebook cell, the course) before installed packages, torch's own left out."""
    frames = []
    frame = sys._getframe(2)
    while frame is not None and len(frames) < 40:
        filename = frame.f_code.co_filename
        if not filename.startswith(_TORCH_DIR) and os.path.abspath(filename) != _THIS_FILE:
            frames.append(frame)
        frame = frame.f_back
    project = [f for f in frames if not f.f_code.co_filename.startswith(_NOT_PROJECT)]
    return [_describe(f) for f in (project or frames)[:_FRAMES_SHOWN]]


def _describe(frame) -> str:
    filename = frame.f_code.co_filename
    shown = filename[len(_PROJECT_DIR) :] if filename.startswith(_PROJECT_DIR) else filename
    code = linecache.getline(filename, frame.f_lineno).strip()
    return f"{shown}:{frame.f_lineno} in {frame.f_code.co_name}" + (f": {code}" if code else "")
