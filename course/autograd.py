"""A reverse-mode autograd engine over numpy arrays: the reference for chapter 02.

PyTorch and TensorFlow compute gradients the same way this file does, in a few hundred lines
with nothing hidden. Three ideas carry it:

1. Every operation on a `Tensor` returns a new `Tensor` that remembers its inputs
   (``_parents``), its name (``_op``) and a *backward rule* (``_backward``): a function that
   turns the gradient of the loss with respect to the output into gradients with respect to
   each input (the chain rule, one operation at a time).
2. `Tensor.backward` runs those rules from the loss back to the leaves, in reverse
   `topological_order`, so that a tensor's gradient is complete before its rule runs.
3. Broadcasting reuses an input along some axes in the forward pass, so the backward pass
   *sums* the gradient over those axes (`unbroadcast`).

The rules the chapter's exercises ask for are plain numpy functions near the top
(`unbroadcast`, `sum_backward`, `mul_backward`, `matmul_backward`,
`softmax_cross_entropy_backward`, `topological_order`), and the `Tensor` methods call them;
``with using(mul_backward=yours):`` makes the whole engine call your version instead.

`Value` is the same engine on single numbers (Karpathy's micrograd is its model), the
chapter's warm-up before tensors.

Conventions: data is float32 or float64 and never silently promoted (mixing the two is a
TypeError); a Python number takes the dtype of the tensor it meets. Leaves accumulate their
gradients across calls to ``backward()`` until ``zero_grad()``, as in PyTorch.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np

# --- Recording the graph, or not ---------------------------------------------------------

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """``with no_grad():`` operations inside record no graph (evaluation, optimiser steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


# --- Backward rules: numpy in, numpy out ---------------------------------------------------


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes that broadcasting added or stretched, so it has ``shape``.

    An input of shape (3, 1) broadcast to (2, 3, 4) is used 2 * 4 times per element, so its
    gradient is the sum of those 8 upstream gradients: sum over the added leading axis 0, then
    over the last axis, where the input had size 1 (keeping it: the result is (3, 1)).
    """
    shape = tuple(shape)
    added = grad.ndim - len(shape)
    if added < 0 or any(n not in (1, g) for n, g in zip(shape, grad.shape[added:], strict=True)):
        raise ValueError(f"unbroadcast: a gradient of shape {grad.shape} cannot belong to {shape}")
    if added:
        grad = grad.sum(axis=tuple(range(added)))  # now grad.ndim == len(shape)
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return np.asarray(grad)


def _normalize_axes(axis, ndim: int, op: str) -> tuple[int, ...]:
    """``axis`` (None, an int, or a tuple; negative counts from the end) as sorted axes >= 0."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    if any(not -ndim <= a < ndim for a in axes):
        raise ValueError(f"{op}: axis {axis} is out of range for {ndim} dimension(s)")
    normalized = tuple(sorted(a % ndim for a in axes))
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{op}: axis {axis} names an axis twice")
    return normalized


def sum_backward(grad_out: np.ndarray, shape: tuple[int, ...], axis=None, keepdims=False):
    """Gradient of ``x.sum(axis, keepdims)`` with respect to ``x`` of ``shape``.

    Each element of ``x`` is added once into one output element, so it receives that output's
    gradient: put back the summed axes (as size 1) unless ``keepdims`` kept them, then
    broadcast to ``shape``. (``np.broadcast_to`` returns a read-only view; nothing is copied.)
    """
    axes = _normalize_axes(axis, len(shape), "sum")
    if not keepdims:
        grad_out = np.expand_dims(grad_out, axes)  # size 1 where an axis was summed away
    return np.broadcast_to(grad_out, shape)


def mul_backward(a: np.ndarray, b: np.ndarray, grad_out: np.ndarray):
    """Gradients of ``a * b`` (with broadcasting) with respect to ``a`` and ``b``.

    d(a * b)/da = b, so grad_a = grad_out * b, summed back to a's shape; the same for b.
    """
    return unbroadcast(grad_out * b, a.shape), unbroadcast(grad_out * a, b.shape)


def matmul_backward(a: np.ndarray, b: np.ndarray, grad_out: np.ndarray):
    """Gradients of ``a @ b`` with respect to ``a`` (..., n, k) and ``b`` (..., k, m).

    In 2-D, out[i, j] = sum_k a[i, k] * b[k, j], so grad_a = grad_out @ b.T and
    grad_b = a.T @ grad_out. Batched operands do the same on their last two axes, and batch
    axes that broadcasting added or stretched are summed away by `unbroadcast`.
    1-D operands (vectors, to ``np.matmul``) are refused: reshape them to (1, k) or (k, 1).
    """
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(
            f"matmul_backward: operands must be at least 2-D, got {a.shape}, {b.shape}"
        )
    grad_a = grad_out @ b.swapaxes(-1, -2)  # (..., n, m) @ (..., m, k) -> (..., n, k)
    grad_b = a.swapaxes(-1, -2) @ grad_out  # (..., k, n) @ (..., n, m) -> (..., k, m)
    return unbroadcast(grad_a, a.shape), unbroadcast(grad_b, b.shape)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))  # minus the max: same result, no overflow
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)  # log softmax(x) = x - max - log sum exp(...)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax_cross_entropy_backward(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Gradient of the mean cross-entropy with respect to ``logits`` (..., V).

    The loss is the mean, over the N = ``targets.size`` positions, of -log softmax(logits)[t].
    At one position its gradient is softmax(logits) - onehot(t): the right class is pushed up,
    every other class down in proportion to its probability. The mean divides by N.
    """
    probs = _softmax(logits, axis=-1)  # (..., V), a fresh array we may write into
    flat = probs.reshape(-1, logits.shape[-1])  # (N, V), a view of probs
    flat[np.arange(flat.shape[0]), np.asarray(targets).reshape(-1)] -= 1
    return probs / flat.shape[0]


def topological_order(root: Tensor) -> list[Tensor]:
    """Every tensor ``root`` depends on, each after all of its inputs, ``root`` last.

    A depth-first search that lists a tensor once all of its inputs are listed. It keeps its
    own stack instead of recursing (a chain of 10,000 operations would exceed Python's
    recursion limit) and a ``visited`` set, so a tensor used twice is listed once.
    """
    order: list[Tensor] = []
    visited: set[Tensor] = set()
    stack = [(root, False)]  # (tensor, are its inputs listed already?)
    while stack:
        node, inputs_listed = stack.pop()
        if inputs_listed:
            order.append(node)
        elif node not in visited:
            visited.add(node)
            stack.append((node, True))  # popped again once every input above it is done
            stack.extend((parent, False) for parent in node._parents if parent not in visited)
    return order


RULES = (
    "unbroadcast",
    "sum_backward",
    "mul_backward",
    "matmul_backward",
    "softmax_cross_entropy_backward",
    "topological_order",
)


@contextlib.contextmanager
def using(**rules):
    """``with using(mul_backward=mine):`` the engine calls your rule instead of its own.

    Tensor operations look these functions up by name each time they run, so replacing them
    here (and putting them back afterwards) is enough for the whole engine to use yours.
    """
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise TypeError(f"using: no rule named {', '.join(unknown)}; the rules are {RULES}")
    module = globals()
    saved = {name: module[name] for name in rules}
    module.update(rules)
    try:
        yield
    finally:
        module.update(saved)


# --- The scalar warm-up ------------------------------------------------------------------------


class Value:
    """One number that remembers how it was computed: the whole engine, on scalars.

    The tensor engine below does the same on arrays. Here every operation gives its output a
    ``_backward`` closure that *adds* the output's gradient, times the local derivative, into
    each input's ``grad`` (a value used twice collects both contributions). `backward` runs
    those closures from this value back to the leaves, in reverse `topological_order`.
    """

    def __init__(self, data, _parents: tuple[Value, ...] = ()):
        self.data = float(data)
        self.grad = 0.0  # d(the value backward() was called on) / d(this value)
        self._parents = _parents
        self._backward: Callable[[], None] = lambda: None  # a leaf passes nothing on

    def __repr__(self) -> str:
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"

    def __add__(self, other) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def _backward():  # d(a + b)/da = d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def _backward():  # d(ab)/da = b, d(ab)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    __radd__, __rmul__ = __add__, __mul__  # 2 * x calls x.__rmul__(2)

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        out = Value(t, (self,))

        def _backward():  # d tanh(a)/da = 1 - tanh(a)^2, from the output
            self.grad += (1 - t * t) * out.grad

        out._backward = _backward
        return out

    def backward(self) -> None:
        """Fill ``grad`` of every Value this one depends on (start from fresh Values)."""
        order = topological_order(self)
        self.grad = 1.0  # d self / d self
        for node in reversed(order):  # self first: a grad is complete before it is passed on
            node._backward()


# --- The Tensor ------------------------------------------------------------------------------


class Tensor:
    """An array that remembers how it was computed, so that it can be differentiated.

    ``Tensor(data)`` wraps ``data`` without copying it; `tensor` makes a copy.
    """

    __array_ufunc__ = None  # makes `numpy_array * t` call t.__rmul__ rather than numpy's loop

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            raise TypeError("Tensor(data): data is already a Tensor (use .detach() to share it)")
        self.data = np.asarray(data)
        if requires_grad and self.data.dtype not in (np.float32, np.float64):
            raise TypeError(f"requires_grad needs float32 or float64 data, got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad: np.ndarray | None = None
        self._parents: tuple[Tensor, ...] = ()
        self._op = ""  # "" for a leaf: a tensor made by the user, not by an operation
        self._backward: Callable[[np.ndarray], tuple[np.ndarray, ...]] | None = None

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, separator=", ", prefix="tensor(")
        grad = ", requires_grad=True" if self.requires_grad else ""
        op = f", op={self._op!r}" if self._op else ""
        return f"tensor({body}, dtype={self.dtype}{grad}{op})"

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> Tensor:
        """The same data, cut from the graph: nothing flows back through it."""
        return Tensor(self.data)

    def zero_grad(self) -> None:
        self.grad = None

    # Every operation below computes its output with numpy and hands `_result` a backward
    # rule: given g = d(loss)/d(output), it returns d(loss)/d(input) for each input.

    def _operand(self, other, op: str) -> Tensor:
        """``other`` as a Tensor: a number takes self's dtype; an array must already match it."""
        if isinstance(other, numbers.Number):
            return Tensor(np.asarray(other, dtype=self.dtype))
        other = other if isinstance(other, Tensor) else Tensor(other)
        if other.dtype != self.dtype:
            raise TypeError(
                f"{op}: cannot mix {self.dtype} and {other.dtype} (this engine never promotes; "
                f"convert one side with np.asarray(data, dtype=...))"
            )
        return other

    def _elementwise(self, other, op: str, forward, backward) -> Tensor:
        a, b = self, self._operand(other, op)
        try:
            data = forward(a.data, b.data)
        except ValueError:
            raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None
        return _result(data, (a, b), op, lambda g: backward(a.data, b.data, g))

    def __add__(self, other) -> Tensor:
        return self._elementwise(
            other, "add", np.add, lambda a, b, g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape))
        )

    def __sub__(self, other) -> Tensor:
        return self._elementwise(
            other,
            "sub",
            np.subtract,
            lambda a, b, g: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)),
        )

    def __mul__(self, other) -> Tensor:
        return self._elementwise(other, "mul", np.multiply, mul_backward)

    def __truediv__(self, other) -> Tensor:
        def div_backward(a, b, g):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
            return unbroadcast(g / b, a.shape), unbroadcast(-g * a / (b * b), b.shape)

        return self._elementwise(other, "div", np.divide, div_backward)

    __radd__, __rmul__ = __add__, __mul__

    def __rsub__(self, other) -> Tensor:
        return self._operand(other, "sub") - self

    def __rtruediv__(self, other) -> Tensor:
        return self._operand(other, "div") / self

    def __neg__(self) -> Tensor:
        return _result(-self.data, (self,), "neg", lambda g: (-g,))

    def __pow__(self, exponent) -> Tensor:
        """``x ** c`` for a Python number c: d(x^c)/dx = c * x^(c-1)."""
        if not isinstance(exponent, numbers.Real):
            raise TypeError(f"pow: the exponent must be a Python number, got {type(exponent)}")
        c, x = float(exponent), self.data
        return _result(x**c, (self,), "pow", lambda g: (g * c * x ** (c - 1),))

    def __matmul__(self, other) -> Tensor:
        a, b = self, self._operand(other, "matmul")
        _check_matmul_shapes(a.shape, b.shape)
        data = np.matmul(a.data, b.data)  # (..., n, k) @ (..., k, m) -> (..., n, m)
        return _result(data, (a, b), "matmul", lambda g: matmul_backward(a.data, b.data, g))

    def __rmatmul__(self, other) -> Tensor:
        return self._operand(other, "matmul") @ self

    def sum(self, axis=None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis``: None for all, an int or a tuple (negative counts from the end)."""
        axes = _normalize_axes(axis, self.ndim, "sum")
        data = self.data.sum(axis=axes, keepdims=keepdims)
        return _result(
            data, (self,), "sum", lambda g: (sum_backward(g, self.shape, axes, keepdims),)
        )

    def mean(self, axis=None, keepdims: bool = False) -> Tensor:
        """Average over ``axis``: the sum's gradient, divided by how many were averaged."""
        axes = _normalize_axes(axis, self.ndim, "mean")
        count = math.prod(self.shape[a] for a in axes)  # how many elements each output averages
        data = self.data.mean(axis=axes, keepdims=keepdims)
        return _result(
            data, (self,), "mean", lambda g: (sum_backward(g, self.shape, axes, keepdims) / count,)
        )

    def reshape(self, *shape) -> Tensor:
        """``x.reshape(2, 3)`` or ``x.reshape((2, 3))``; one size may be -1."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], Sequence) else shape
        try:
            data = self.data.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape {self.shape} into {shape}") from None
        return _result(data, (self,), "reshape", lambda g: (g.reshape(self.shape),))

    def transpose(self, *axes) -> Tensor:
        """Permute the axes, as numpy does: ``transpose()`` reverses them all.

        Unlike ``torch.transpose(dim0, dim1)``, ``axes`` lists every axis in its new order.
        """
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], Sequence) else axes
        axes = axes or tuple(reversed(range(self.ndim)))
        if sorted(a % self.ndim if -self.ndim <= a < self.ndim else -1 for a in axes) != list(
            range(self.ndim)
        ):
            raise ValueError(
                f"transpose: axes {axes} are not an ordering of all {self.ndim} axes of "
                f"{self.shape} (numpy's meaning, not torch.transpose(dim0, dim1))"
            )
        inverse = tuple(np.argsort([a % self.ndim for a in axes]))
        return _result(
            self.data.transpose(axes), (self,), "transpose", lambda g: (g.transpose(inverse),)
        )

    T = property(lambda self: self.transpose())

    def __getitem__(self, index) -> Tensor:
        """Any numpy index: ints, slices, integer or boolean arrays."""
        if isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        elif isinstance(index, Tensor):
            index = index.data

        def backward(g):
            grad = np.zeros_like(self.data)
            np.add.at(grad, index, g)  # add, not assign: x[[0, 0]] reads row 0 twice
            return (grad,)

        return _result(self.data[index], (self,), "getitem", backward)

    # Element-wise functions: each backward rule is g times the local derivative.

    def exp(self) -> Tensor:
        out = np.exp(self.data)
        return _result(out, (self,), "exp", lambda g: (g * out,))  # d(e^x)/dx = e^x

    def log(self) -> Tensor:
        return _result(np.log(self.data), (self,), "log", lambda g: (g / self.data,))

    def tanh(self) -> Tensor:
        out = np.tanh(self.data)
        return _result(out, (self,), "tanh", lambda g: (g * (1 - out * out),))

    def relu(self) -> Tensor:
        """max(x, 0); its gradient at exactly 0 is taken as 0, as PyTorch and TensorFlow do."""
        return _result(np.maximum(self.data, 0), (self,), "relu", lambda g: (g * (self.data > 0),))

    def gelu(self) -> Tensor:
        """GELU, tanh approximation (GPT-2's): 0.5 x (1 + tanh(k (x + 0.044715 x^3)))."""
        x, k = self.data, math.sqrt(2 / math.pi)
        t = np.tanh(k * (x + 0.044715 * x**3))

        def backward(g):  # product rule, then the chain rule through tanh
            return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)),)

        return _result(0.5 * x * (1 + t), (self,), "gelu", backward)

    def softmax(self, axis: int = -1) -> Tensor:
        (axis,) = _normalize_axes(axis, self.ndim, "softmax")
        s = _softmax(self.data, axis)

        def backward(g):  # Jacobian diag(s) - s s^T, applied to g without building it
            return (s * (g - (g * s).sum(axis=axis, keepdims=True)),)

        return _result(s, (self,), "softmax", backward)

    def log_softmax(self, axis: int = -1) -> Tensor:
        (axis,) = _normalize_axes(axis, self.ndim, "log_softmax")
        out = _log_softmax(self.data, axis)
        return _result(
            out, (self,), "log_softmax", lambda g: (g - np.exp(out) * g.sum(axis, keepdims=True),)
        )

    # --- Backpropagation ---

    def backward(self, grad=None) -> None:
        """Fill ``.grad`` of every tensor this one depends on with d(self)/d(that tensor).

        ``grad`` weights the outputs (the upstream gradient); it defaults to 1 for a tensor of
        one element, such as a loss. Intermediate tensors keep this call's gradient; leaves add
        it to what they had.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad (no input had requires_grad=True, "
                "or it was computed under no_grad())"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: the output has shape {self.shape}; pass grad= of that shape "
                    f"(only a one-element output, such as a loss, defaults to 1)"
                )
            grad = np.ones_like(self.data)
        grad = np.asarray(grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape}, expected {self.shape}")
        order = topological_order(self)
        for node in order:
            if node._backward is not None:
                node.grad = None  # forget an earlier call's gradient on intermediates
        self._accumulate(grad, "backward")
        for node in reversed(order):  # the loss first, the leaves last
            if node._backward is None or node.grad is None:
                continue
            for parent, g in zip(node._parents, node._backward(node.grad), strict=True):
                if parent.requires_grad:
                    parent._accumulate(g, node._op)

    def _accumulate(self, grad: np.ndarray, op: str) -> None:
        grad = np.asarray(grad)
        if grad.shape != self.shape or grad.dtype != self.dtype:
            raise RuntimeError(
                f"the backward rule of {op!r} returned a {grad.dtype} gradient of shape "
                f"{grad.shape} for a {self.dtype} input of shape {self.shape}"
            )
        if self.grad is None:
            self.grad = grad.copy()  # our own copy: `add` passes one array to both inputs
        else:
            self.grad += grad  # a tensor used twice: its gradients add up


def _result(data, parents: tuple[Tensor, ...], op: str, backward) -> Tensor:
    """An operation's output; it joins the graph only if some input needs a gradient."""
    out = Tensor(data)
    out._op = op
    if _grad_enabled and any(p.requires_grad for p in parents):
        out.requires_grad, out._parents, out._backward = True, parents, backward
    return out


def _check_matmul_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    if len(a) < 2 or len(b) < 2:
        raise ValueError(
            f"matmul: shapes {a} and {b}: both operands need at least 2 dimensions "
            f"(reshape a vector to (1, k) or (k, 1))"
        )
    if a[-1] != b[-2]:
        raise ValueError(
            f"matmul: shapes {a} and {b} do not fit: the last size of the first ({a[-1]}) "
            f"must equal the second-to-last size of the second ({b[-2]})"
        )
    try:
        np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        raise ValueError(f"matmul: the batch sizes of {a} and {b} do not broadcast") from None


# --- Functions of tensors ---------------------------------------------------------------------


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A new leaf tensor holding a copy of ``data`` (Python floats become float64, as in numpy)."""
    data = data.data if isinstance(data, Tensor) else data
    return Tensor(np.array(data, dtype=dtype), requires_grad=requires_grad)


def embedding(weight: Tensor, ids) -> Tensor:
    """Rows of ``weight`` (V, D) picked by integer ``ids`` (...): the result is (..., D).

    The backward rule sends each output row's gradient back to the row it was read from,
    adding them up where an id repeats (a token seen twice in a batch).
    """
    ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (V, D), got shape {weight.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"embedding: ids must be integers, got {ids.dtype}")
    vocab = weight.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise IndexError(
            f"embedding: ids must be in the range [0, {vocab}) for a weight of shape "
            f"{weight.shape}, got values from {ids.min()} to {ids.max()}"
        )

    def backward(g):  # g: (..., D)
        grad = np.zeros_like(weight.data)  # (V, D)
        np.add.at(grad, ids, g)
        return (grad,)

    return _result(weight.data[ids], (weight,), "embedding", backward)  # (..., D)


def _check_targets(logits_shape: tuple[int, ...], targets) -> np.ndarray:
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"cross_entropy: targets must be integer class ids, got {targets.dtype}")
    if len(logits_shape) < 1 or targets.shape != logits_shape[:-1]:
        raise ValueError(
            f"cross_entropy: targets have shape {targets.shape}; for logits of shape "
            f"{logits_shape} (..., V) they should have shape {logits_shape[:-1]}"
        )
    vocab = logits_shape[-1]
    if targets.size and (targets.min() < 0 or targets.max() >= vocab):
        raise IndexError(
            f"cross_entropy: targets must be class ids in the range [0, {vocab}), got values "
            f"from {targets.min()} to {targets.max()}"
        )
    return targets


def cross_entropy(logits: Tensor, targets) -> Tensor:
    """Mean over all positions of -log softmax(logits)[target]: logits (..., V), targets (...).

    Computed through log-softmax, which never exponentiates a large number, so logits of 1000
    give a finite loss. One fused operation, with `softmax_cross_entropy_backward` as its rule.
    """
    targets = _check_targets(logits.shape, targets)
    logp = _log_softmax(logits.data, axis=-1)  # (..., V)
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)  # (..., 1)

    def backward(g):  # g: () -- the upstream gradient of the scalar loss
        return (g * softmax_cross_entropy_backward(logits.data, targets),)

    return _result(-picked.mean(), (logits,), "cross_entropy", backward)


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5):
    """Normalise over the last axis to mean 0 and variance 1, then scale and shift (D,).

    Built from the operations above, so it needs no backward rule of its own: the engine
    differentiates the composition. The variance is biased (divides by D), as in PyTorch.
    """
    dim = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (dim,):
            raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected ({dim},)")
    centred = x - x.mean(axis=-1, keepdims=True)  # (..., D)
    variance = (centred * centred).mean(axis=-1, keepdims=True)  # (..., 1)
    out = centred * (variance + eps) ** -0.5  # (..., D)
    out = out * weight if weight is not None else out
    return out + bias if bias is not None else out


class SGD:
    """Plain stochastic gradient descent: ``p.data -= lr * p.grad`` for each parameter."""

    def __init__(self, params, lr: float):
        self.params, self.lr = list(params), lr

    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.data -= self.lr * p.grad  # in place: the graph that used p is finished

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


# --- Checking gradients numerically ---------------------------------------------------------


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-4, rtol: float = 1e-3) -> bool:
    """Compare the engine's gradients of ``fn(*inputs)`` with central differences, in float64.

    Each input Tensor with ``requires_grad`` is copied to float64 and checked, element by
    element: (f(x + eps) - f(x - eps)) / (2 eps). Other inputs (integer ids, say) are passed
    through. The output is reduced to f = sum(out * w) with random weights w, so a gradient
    that is only right on average cannot pass. Returns True, or raises AssertionError naming
    the input and the largest difference.
    """
    inputs = [
        Tensor(np.array(x.data, dtype=np.float64), requires_grad=True)
        if isinstance(x, Tensor) and x.requires_grad
        else x
        for x in inputs
    ]
    out = fn(*inputs)
    weights = np.asarray(np.random.default_rng(0).standard_normal(out.shape))
    if out.requires_grad:
        (out * weights).sum().backward()

    def f() -> float:
        with no_grad():
            return float(np.sum(fn(*inputs).data * weights))

    for i, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        numeric = np.zeros_like(x.data)
        flat = x.data.reshape(-1)  # a view: writing into it changes x
        for j in range(flat.size):
            original = flat[j]
            flat[j] = original + eps
            plus = f()
            flat[j] = original - eps
            minus = f()
            flat[j] = original
            numeric.flat[j] = (plus - minus) / (2 * eps)
        diff = np.abs(analytic - numeric)
        bad = diff > atol + rtol * np.abs(numeric)
        if bad.any():
            where = np.unravel_index(np.argmax(diff), diff.shape)
            raise AssertionError(
                f"gradcheck: input {i} (shape {x.shape}): the gradient differs from central "
                f"differences at {int(bad.sum())} of {diff.size} position(s); largest "
                f"difference {diff[where]:.3g} at index {tuple(map(int, where))}: backward "
                f"gave {analytic[where]:.6g}, numerically {numeric[where]:.6g}"
            )
    return True
