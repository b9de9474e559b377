"""Chapter 02: plausible wrong answers for the autograd exercises, and the library's
reference of each exercise, which must pass the same graded test cells."""

from autograde.probe import ReferenceAnswer, WrongAnswer
from course.autograd import RULES

# Every rule the engine is built from is an exercise; the library's version must pass it.
REFERENCE_ANSWERS = [
    ReferenceAnswer(name, "course.autograd", f"from course.autograd import {name}")
    for name in (*RULES, "Value")
]

# The warm-up's scalar engine; each wrong answer below fills the three rules differently.
VALUE = """
import math


class Value:
    def __init__(self, data, _parents=()):
        self.data, self.grad, self._parents = float(data), 0.0, _parents
        self._backward = lambda: None

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def _backward():
            {add}

        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def _backward():
            {mul}

        out._backward = _backward
        return out

    __radd__, __rmul__ = __add__, __mul__

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,))

        def _backward():
            {tanh}

        out._backward = _backward
        return out

    def backward(self):
        order, visited = [], set()

        def visit(v):
            if v not in visited:
                visited.add(v)
                for parent in v._parents:
                    visit(parent)
                order.append(v)

        visit(self)
        self.grad = 1.0
        for v in reversed(order):
            v._backward()
"""
ADD = "self.grad += out.grad; other.grad += out.grad"
MUL = "self.grad += other.data * out.grad; other.grad += self.data * out.grad"
TANH = "self.grad += (1 - t * t) * out.grad"

WRONG_ANSWERS = [
    # Value --------------------------------------------------------------------------------
    WrongAnswer(
        "Value",
        "= instead of +=: a value used twice keeps only its last term",
        VALUE.format(
            add="self.grad = out.grad; other.grad = out.grad",
            mul="self.grad = other.data * out.grad; other.grad = self.data * out.grad",
            tanh="self.grad = (1 - t * t) * out.grad",
        ),
    ),
    WrongAnswer(
        "Value",
        "mul passes on each input's own value instead of the other's",
        VALUE.format(
            add=ADD,
            mul="self.grad += self.data * out.grad; other.grad += other.data * out.grad",
            tanh=TANH,
        ),
    ),
    WrongAnswer(
        "Value",
        "tanh's derivative from the input, 1 - a^2, not from the output",
        VALUE.format(add=ADD, mul=MUL, tanh="self.grad += (1 - self.data**2) * out.grad"),
    ),
    WrongAnswer(
        "Value",
        "mul and tanh forget to multiply by out.grad",
        VALUE.format(
            add=ADD,
            mul="self.grad += other.data; other.grad += self.data",
            tanh="self.grad += 1 - t * t",
        ),
    ),
    WrongAnswer(
        "Value",
        "add passes the gradient to its first input only",
        VALUE.format(add="self.grad += out.grad", mul=MUL, tanh=TANH),
    ),
    # unbroadcast ------------------------------------------------------------------------
    WrongAnswer(
        "unbroadcast",
        "sums the added leading axes only, not the stretched size-1 axes",
        """
def unbroadcast(grad, shape):
    added = grad.ndim - len(shape)
    return grad.sum(axis=tuple(range(added))) if added else grad
""",
    ),
    WrongAnswer(
        "unbroadcast",
        "sums the stretched axes without keepdims",
        """
def unbroadcast(grad, shape):
    added = grad.ndim - len(shape)
    if added:
        grad = grad.sum(axis=tuple(range(added)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched) if stretched else grad
""",
    ),
    WrongAnswer(
        "unbroadcast",
        "averages instead of summing",
        """
def unbroadcast(grad, shape):
    added = grad.ndim - len(shape)
    if added:
        grad = grad.mean(axis=tuple(range(added)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.mean(axis=stretched, keepdims=True) if stretched else grad
""",
    ),
    WrongAnswer(
        "unbroadcast",
        "finds the size-1 axes counting from the left, before the added axes are summed",
        """
def unbroadcast(grad, shape):
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    added = grad.ndim - len(shape)
    return grad.sum(axis=tuple(range(added))) if added else grad
""",
    ),
    WrongAnswer(
        "unbroadcast",
        "handles the size-1 axes only when no axis was added",
        """
def unbroadcast(grad, shape):
    added = grad.ndim - len(shape)
    if added:
        return grad.sum(axis=tuple(range(added)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad
""",
    ),
    WrongAnswer(
        "unbroadcast",
        "treats a leading 1 like a missing axis: its size-1 axis is dropped",
        """
def unbroadcast(grad, shape):
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    added = grad.ndim - len(shape)
    if added:
        grad = grad.sum(axis=tuple(range(added)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad
""",
    ),
    WrongAnswer(
        "unbroadcast",
        "sums every axis where the sizes differ, without reshaping to the input's shape",
        """
def unbroadcast(grad, shape):
    padded = (1,) * (grad.ndim - len(shape)) + tuple(shape)
    return grad.sum(axis=tuple(i for i, n in enumerate(padded) if n != grad.shape[i]))
""",
    ),
    # sum_backward -----------------------------------------------------------------------
    WrongAnswer(
        "sum_backward",
        "broadcasts without putting the summed axes back (right only by luck)",
        """
def sum_backward(grad_out, shape, axis=None, keepdims=False):
    return np.broadcast_to(grad_out, shape)
""",
    ),
    WrongAnswer(
        "sum_backward",
        "ignores keepdims: expands axes that were kept",
        """
def sum_backward(grad_out, shape, axis=None, keepdims=False):
    ndim = len(shape)
    axes = (axis,) if isinstance(axis, int) else axis
    axes = tuple(range(ndim)) if axis is None else tuple(sorted(a % ndim for a in axes))
    return np.broadcast_to(np.expand_dims(grad_out, axes), shape)
""",
    ),
    WrongAnswer(
        "sum_backward",
        "puts the axes back one at a time in the order given, not sorted",
        """
def sum_backward(grad_out, shape, axis=None, keepdims=False):
    axes = range(len(shape)) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    if not keepdims:
        for a in axes:
            grad_out = np.expand_dims(grad_out, a)
    return np.broadcast_to(grad_out, shape)
""",
    ),
    WrongAnswer(
        "sum_backward",
        "divides by the number of elements summed, as the mean's rule does",
        """
def sum_backward(grad_out, shape, axis=None, keepdims=False):
    ndim = len(shape)
    axes = (axis,) if isinstance(axis, int) else axis
    axes = tuple(range(ndim)) if axis is None else tuple(sorted(a % ndim for a in axes))
    grad = grad_out if keepdims else np.expand_dims(grad_out, axes)
    return np.broadcast_to(grad, shape) / np.prod([shape[a] for a in axes])
""",
    ),
    # mul_backward -----------------------------------------------------------------------
    WrongAnswer(
        "mul_backward",
        "forgets to unbroadcast",
        """
def mul_backward(a, b, grad_out):
    return grad_out * b, grad_out * a
""",
    ),
    WrongAnswer(
        "mul_backward",
        "multiplies by its own input instead of the other one",
        """
def mul_backward(a, b, grad_out):
    return unbroadcast(grad_out * a, a.shape), unbroadcast(grad_out * b, b.shape)
""",
    ),
    # matmul_backward --------------------------------------------------------------------
    WrongAnswer(
        "matmul_backward",
        "transposes with .T, which reverses the batch axes too",
        """
def matmul_backward(a, b, grad_out):
    return unbroadcast(grad_out @ b.T, a.shape), unbroadcast(a.T @ grad_out, b.shape)
""",
    ),
    WrongAnswer(
        "matmul_backward",
        "forgets to transpose: g @ b and a @ g",
        """
def matmul_backward(a, b, grad_out):
    return unbroadcast(grad_out @ b, a.shape), unbroadcast(a @ grad_out, b.shape)
""",
    ),
    WrongAnswer(
        "matmul_backward",
        "does not sum over broadcast batch axes",
        """
def matmul_backward(a, b, grad_out):
    return grad_out @ b.swapaxes(-1, -2), a.swapaxes(-1, -2) @ grad_out
""",
    ),
    # softmax_cross_entropy_backward -----------------------------------------------------
    WrongAnswer(
        "softmax_cross_entropy_backward",
        "the gradient of the sum, not the mean (no division by N)",
        """
def softmax_cross_entropy_backward(logits, targets):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = exp / exp.sum(axis=-1, keepdims=True)
    flat = probs.reshape(-1, logits.shape[-1])
    flat[np.arange(flat.shape[0]), np.asarray(targets).reshape(-1)] -= 1.0
    return probs
""",
    ),
    WrongAnswer(
        "softmax_cross_entropy_backward",
        "forgets to subtract the one-hot target",
        """
def softmax_cross_entropy_backward(logits, targets):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = exp / exp.sum(axis=-1, keepdims=True)
    return probs / np.asarray(targets).size
""",
    ),
    WrongAnswer(
        "softmax_cross_entropy_backward",
        "divides by the batch size only, ignoring the time axis",
        """
def softmax_cross_entropy_backward(logits, targets):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = exp / exp.sum(axis=-1, keepdims=True)
    flat = probs.reshape(-1, logits.shape[-1])
    flat[np.arange(flat.shape[0]), np.asarray(targets).reshape(-1)] -= 1.0
    return probs / logits.shape[0]
""",
    ),
    WrongAnswer(
        "softmax_cross_entropy_backward",
        "softmax without subtracting the maximum: overflows",
        """
def softmax_cross_entropy_backward(logits, targets):
    exp = np.exp(logits)
    probs = exp / exp.sum(axis=-1, keepdims=True)
    flat = probs.reshape(-1, logits.shape[-1])
    flat[np.arange(flat.shape[0]), np.asarray(targets).reshape(-1)] -= 1.0
    return probs / flat.shape[0]
""",
    ),
    # topological_order ------------------------------------------------------------------
    WrongAnswer(
        "topological_order",
        "recursive depth-first search: fails on a 10,000-step chain",
        """
def topological_order(root):
    order, visited = [], set()
    def visit(node):
        if node in visited:
            return
        visited.add(node)
        for p in node._parents:
            visit(p)
        order.append(node)
    visit(root)
    return order
""",
    ),
    WrongAnswer(
        "topological_order",
        "no visited set: a tensor used twice is listed twice",
        """
def topological_order(root):
    order, stack = [], [(root, False)]
    while stack:
        node, parents_listed = stack.pop()
        if parents_listed:
            order.append(node)
        else:
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents)
    return order
""",
    ),
    WrongAnswer(
        "topological_order",
        "breadth-first from the root, reversed: a shared input can come too late",
        """
def topological_order(root):
    order, seen, queue = [], {root}, [root]
    while queue:
        node = queue.pop(0)
        order.append(node)
        for p in node._parents:
            if p not in seen:
                seen.add(p)
                queue.append(p)
    return order[::-1]
""",
    ),
    WrongAnswer(
        "topological_order",
        "pre-order: lists a tensor before its inputs, the root first",
        """
def topological_order(root):
    order, visited, stack = [], set(), [root]
    while stack:
        node = stack.pop()
        if node not in visited:
            visited.add(node)
            order.append(node)
            stack.extend(node._parents)
    return order
""",
    ),
    WrongAnswer(
        "topological_order",
        "reversed pre-order: the root last, but a shared input can follow one of its users",
        """
def topological_order(root):
    order, visited, stack = [], set(), [root]
    while stack:
        node = stack.pop()
        if node not in visited:
            visited.add(node)
            order.append(node)
            stack.extend(node._parents)
    return order[::-1]
""",
    ),
    WrongAnswer(
        "topological_order",
        "a right order, reversed: the root first",
        """
def topological_order(root):
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, parents_listed = stack.pop()
        if parents_listed:
            order.append(node)
        elif node not in visited:
            visited.add(node)
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if p not in visited)
    return order[::-1]
""",
    ),
    WrongAnswer(
        "topological_order",
        "marks a tensor visited when it is pushed: a shared input can come after its user",
        """
def topological_order(root):
    order, visited = [], {root}
    stack = [(root, False)]
    while stack:
        node, parents_listed = stack.pop()
        if parents_listed:
            order.append(node)
            continue
        stack.append((node, True))
        for p in node._parents:
            if p not in visited:
                visited.add(p)
                stack.append((p, False))
    return order
""",
    ),
    WrongAnswer(
        "topological_order",
        "does not check a popped tensor against the visited set: a shared one is listed twice",
        """
def topological_order(root):
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, parents_listed = stack.pop()
        if parents_listed:
            order.append(node)
            continue
        visited.add(node)
        stack.append((node, True))
        stack.extend((p, False) for p in node._parents if p not in visited)
    return order
""",
    ),
]
