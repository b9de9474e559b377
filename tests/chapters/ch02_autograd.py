"""Chapter 02: plausible wrong answers for the autograd exercises, and the library's
reference of each exercise, which must pass the same graded test cells."""

from autograde.probe import ReferenceAnswer, WrongAnswer
from course.autograd import RULES

# Every rule the engine is built from is an exercise; the library's version must pass it.
REFERENCE_ANSWERS = [
    ReferenceAnswer(name, "course.autograd", f"from course.autograd import {name}")
    for name in RULES
]

WRONG_ANSWERS = [
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
]
