"""Tests for course.autograd, chapter 02's numpy autograd engine.

Three kinds of evidence, none copied from a run of the engine:

- ``check_*`` functions for the backward rules that chapter 02's learners write. Each takes
  the implementation as its argument, so the notebook's graded cells can run the same checks
  on a learner's function, and compares it with an independent oracle: a small example
  worked out by hand, then exact gradients of linear maps (plug in each basis array) or
  central differences in float64. Below, plausible wrong answers must fail them.
- Property tests (hypothesis) over random shapes, broadcasting included: every operation's
  gradient equals torch.autograd's and tf.GradientTape's (float64, 1e-6) and the numerical
  gradient (1e-4), under a random upstream gradient.
- A small MLP trained with the engine and with PyTorch from the same start: same losses.
"""

from __future__ import annotations

import math
import operator
import re
import subprocess
import sys
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from course import autograd as ag
from course.checks import assert_close

REPO = Path(__file__).resolve().parent.parent


# === Reusable checks of the backward rules (numpy and course.autograd only) ================


def _call(impl, what: str, *args):
    """``impl(*args)``; any exception but a failed check becomes a failed check that says so."""
    try:
        return impl(*args)
    except AssertionError:
        raise
    except NotImplementedError:
        raise AssertionError(f"{what}: not implemented yet") from None
    except Exception as err:
        raise AssertionError(f"{what} raised {type(err).__name__}: {err}") from err


def _close(got, want, name: str, hint: str = "") -> None:
    """assert_close at float64 precision, with a hint appended to the failure message."""
    try:
        assert_close(got, want, atol=1e-9, rtol=1e-7, name=name)
    except AssertionError as err:
        raise AssertionError(f"{err}{hint}") from None


def _pair(grads, what: str):
    if not isinstance(grads, tuple | list) or len(grads) != 2:
        raise AssertionError(f"{what} should return a pair (grad_a, grad_b), got {type(grads)}")
    return grads


def _linear_gradient(f: Callable[[np.ndarray], float], shape) -> np.ndarray:
    """The gradient of a scalar function that is *linear* in x: entry i is f(basis array i).

    Exact, with no finite-difference error: a linear f(x) equals sum(gradient * x).
    """
    grad, basis = np.zeros(shape), np.zeros(shape)
    for i in np.ndindex(*shape):
        basis[i] = 1.0
        grad[i] = f(basis)
        basis[i] = 0.0
    return grad


def _numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, eps=1e-6):
    """Central differences of a scalar function at x, in float64."""
    x, grad = x.astype(np.float64), np.zeros(x.shape)
    for i in np.ndindex(*x.shape):
        original = x[i]
        x[i] = original + eps
        plus = f(x)
        x[i] = original - eps
        minus = f(x)
        x[i] = original
        grad[i] = (plus - minus) / (2 * eps)
    return grad


UNBROADCAST_HINT = (
    " (a gradient has its input's shape: sum over the axes broadcasting added, and over the "
    "axes where the input had size 1, keeping those)"
)


def check_unbroadcast(unbroadcast) -> None:
    """``unbroadcast(grad, shape)`` sums grad back to ``shape``, undoing broadcasting."""
    grad = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    by_hand = {(2, 3): grad, (3,): [5.0, 7.0, 9.0], (1, 3): [[5.0, 7.0, 9.0]]}
    by_hand |= {(2, 1): [[6.0], [15.0]], (1, 1): [[21.0]], (): 21.0}
    for shape, want in by_hand.items():
        got = _call(unbroadcast, f"unbroadcast(grad (2, 3), {shape})", grad, shape)
        _close(got, np.array(want), f"unbroadcast of [[1, 2, 3], [4, 5, 6]] to {shape}")
    rng = np.random.default_rng(1)
    for grad_shape, shape in [((4, 2, 3), (2, 1)), ((2, 3, 4), (3, 1)), ((3, 1, 5), (3, 1, 1))]:
        g = rng.standard_normal(grad_shape)
        got = _call(unbroadcast, f"unbroadcast(grad {grad_shape}, {shape})", g, shape)
        # Broadcasting is linear, and unbroadcast is the gradient of sum(g * broadcast(x)).
        want = _linear_gradient(lambda x, g=g: np.sum(g * np.broadcast_to(x, g.shape)), shape)
        _close(got, want, f"unbroadcast(grad {grad_shape}, {shape})", UNBROADCAST_HINT)


def check_mul_backward(mul_backward) -> None:
    """``mul_backward(a, b, grad_out)`` gives the gradients of a * b, shaped like a and b."""
    a, b, g = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([10.0, 20.0]), np.ones((2, 2))
    grad_a, grad_b = _pair(_call(mul_backward, "mul_backward(a (2, 2), b (2,))", a, b, g), "")
    _close(grad_a, [[10.0, 20.0], [10.0, 20.0]], "grad_a of [[1, 2], [3, 4]] * [10, 20]")
    _close(grad_b, [4.0, 6.0], "grad_b of [[1, 2], [3, 4]] * [10, 20]", UNBROADCAST_HINT)
    rng = np.random.default_rng(2)
    for a_shape, b_shape in [((2, 3), (2, 3)), ((4, 1, 3), (2, 1)), ((), (2, 3)), ((3, 1), (4,))]:
        a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
        g = rng.standard_normal(np.broadcast_shapes(a_shape, b_shape))
        what = f"mul_backward(a {a_shape}, b {b_shape}, grad_out {g.shape})"
        grad_a, grad_b = _pair(_call(mul_backward, what, a, b, g), what)
        want_a = _linear_gradient(lambda x, b=b, g=g: np.sum(g * (x * b)), a_shape)
        want_b = _linear_gradient(lambda y, a=a, g=g: np.sum(g * (a * y)), b_shape)
        _close(grad_a, want_a, f"grad_a of a {a_shape} * b {b_shape}", UNBROADCAST_HINT)
        _close(grad_b, want_b, f"grad_b of a {a_shape} * b {b_shape}", UNBROADCAST_HINT)


def check_matmul_backward(matmul_backward) -> None:
    """``matmul_backward(a, b, grad_out)`` gives the gradients of a @ b, batched ones too."""
    a, b = np.array([[1.0, 2.0]]), np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]])
    what = "matmul_backward(a (1, 2), b (2, 3), grad_out (1, 3))"
    grad_a, grad_b = _pair(_call(matmul_backward, what, a, b, np.ones((1, 3))), what)
    _close(grad_a, [[3.0, 4.0]], "grad_a of [[1, 2]] @ [[1, 0, 2], [0, 1, 3]]")
    _close(grad_b, [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], "grad_b of [[1, 2]] @ [[1, 0, 2], ...]")
    rng = np.random.default_rng(3)
    shapes = [((3, 3), (3, 3)), ((2, 3), (3, 4)), ((2, 2, 3), (3, 4)), ((2, 1, 3, 4), (5, 4, 6))]
    for a_shape, b_shape in shapes + [((4, 4), (3, 4, 4))]:
        a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
        g = rng.standard_normal(np.matmul(a, b).shape)
        what = f"matmul_backward(a {a_shape}, b {b_shape}, grad_out {g.shape})"
        grad_a, grad_b = _pair(_call(matmul_backward, what, a, b, g), what)
        want_a = _linear_gradient(lambda x, b=b, g=g: np.sum(g * np.matmul(x, b)), a_shape)
        want_b = _linear_gradient(lambda y, a=a, g=g: np.sum(g * np.matmul(a, y)), b_shape)
        hint = " (transpose only the last two axes: swapaxes(-1, -2); then unbroadcast)"
        _close(grad_a, want_a, f"grad_a of a {a_shape} @ b {b_shape}", hint)
        _close(grad_b, want_b, f"grad_b of a {a_shape} @ b {b_shape}", hint)


def check_sum_backward(sum_backward) -> None:
    """``sum_backward(grad_out, shape, axis, keepdims)``: the gradient of x.sum(axis, keepdims)."""
    what = "sum_backward([10, 20], (2, 3), axis=1)"
    got = _call(sum_backward, what, np.array([10.0, 20.0]), (2, 3), 1, False)
    _close(got, [[10.0, 10.0, 10.0], [20.0, 20.0, 20.0]], "gradient of x.sum(axis=1), x (2, 3)")
    rng = np.random.default_rng(4)
    cases = [((2, 3), None, False), ((2, 3), None, True), ((2, 3), 0, False), ((3, 3), 1, False)]
    cases += [((3, 3), -1, False), ((4, 4), 0, True), ((2, 3, 4), (0, 2), False)]
    cases += [((2, 3, 4), (-1, 0), True), ((3, 2, 3), -3, False), ((5,), 0, False)]
    for shape, axis, keepdims in cases:
        g = rng.standard_normal(np.sum(np.zeros(shape), axis=axis, keepdims=keepdims).shape)
        what = f"sum_backward(grad_out {g.shape}, {shape}, axis={axis}, keepdims={keepdims})"
        got = _call(sum_backward, what, g, shape, axis, keepdims)
        want = _linear_gradient(
            lambda x, g=g, axis=axis, k=keepdims: np.sum(g * x.sum(axis=axis, keepdims=k)), shape
        )
        hint = " (put the summed axes back as size 1, unless keepdims kept them, then broadcast)"
        _close(got, want, f"gradient of x.sum(axis={axis}, keepdims={keepdims}), x {shape}", hint)


def _mean_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """The loss itself, written out in numpy (stable log-sum-exp), for central differences."""
    top = logits.max(axis=-1, keepdims=True)
    log_sum_exp = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return float(np.mean(log_sum_exp - picked))


def _close_ce(got, want, n: int, name: str, hint: str = "") -> None:
    """Like _close, with a hint for the classic slip: forgetting to divide by N."""
    if n > 1 and np.shape(got) == np.shape(want) and np.allclose(got, np.multiply(want, n)):
        hint = f" (it is N = {n} times too large: the loss is a mean over N positions)"
    try:
        assert_close(got, want, atol=1e-7, rtol=1e-6, name=name)
    except AssertionError as err:
        raise AssertionError(f"{err}{hint}") from None


def check_softmax_cross_entropy_backward(softmax_cross_entropy_backward) -> None:
    """Gradient of the mean cross-entropy w.r.t. logits (..., V): (softmax - onehot) / N."""
    # By hand: softmax([1000, 0, -1000]) = [1, 0, 0] in float64, softmax([0, 0, 0]) = 1/3 each.
    logits, targets = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]]), np.array([1, 2])
    what = "softmax_cross_entropy_backward([[1000, 0, -1000], [0, 0, 0]], [1, 2])"
    got = _call(softmax_cross_entropy_backward, what, logits, targets)
    want = np.array([[1.0, -1.0, 0.0], [1 / 3, 1 / 3, -2 / 3]]) / 2
    hint = " (subtract each row's maximum before exp, so that exp(1000) never happens)"
    _close_ce(
        got, want, 2, "gradient for logits [[1000, 0, -1000], [0, 0, 0]], targets [1, 2]", hint
    )
    rng = np.random.default_rng(5)
    for shape in [(4, 5), (2, 3, 4), (1, 3), (6, 1)]:
        logits = rng.standard_normal(shape) * 3
        targets = rng.integers(0, shape[-1], shape[:-1])
        what = f"softmax_cross_entropy_backward(logits {shape}, targets {targets.shape})"
        got = _call(softmax_cross_entropy_backward, what, logits, targets)
        want = _numerical_gradient(lambda x, t=targets: _mean_cross_entropy(x, t), logits)
        _close_ce(got, want, targets.size, f"gradient for logits {shape}")


def _all_inputs(root) -> set[int]:
    """ids of root and of every tensor it depends on (breadth-first, independently)."""
    seen, queue = {id(root)}, deque([root])
    while queue:
        for parent in queue.popleft()._parents:
            if id(parent) not in seen:
                seen.add(id(parent))
                queue.append(parent)
    return seen


def _check_order(order, root, graph: str) -> None:
    if not isinstance(order, list):
        raise AssertionError(f"{graph}: topological_order should return a list, got {type(order)}")
    ids = [id(node) for node in order]
    counts = Counter(ids)
    for node in order:
        if counts[id(node)] > 1:
            raise AssertionError(
                f"{graph}: a {node._op or 'leaf'!r} tensor is listed {counts[id(node)]} times; "
                f"list each tensor once (remember which tensors you have visited)"
            )
    if not order or order[-1] is not root:
        first = (
            " (it came first: list a tensor after its inputs)" if order and order[0] is root else ""
        )
        raise AssertionError(f"{graph}: the root should come last{first}")
    if set(ids) != _all_inputs(root):
        raise AssertionError(
            f"{graph}: the order has {len(set(ids))} tensors, but the root depends on "
            f"{len(_all_inputs(root)) - 1} tensors plus itself: list every one"
        )
    position = {id(node): i for i, node in enumerate(order)}
    for i, node in enumerate(order):
        for parent in node._parents:
            if position[id(parent)] > i:
                raise AssertionError(
                    f"{graph}: the {node._op!r} tensor at position {i} comes before its input "
                    f"(a {parent._op or 'leaf'!r} tensor at position {position[id(parent)]})"
                )


def _graphs():
    """Small graphs with the traps: shared inputs, a shortcut, a constant, a lone leaf."""
    x = ag.tensor([0.5, -1.0], requires_grad=True)
    yield "single leaf", x
    a, b = x.exp(), x.tanh()
    yield "diamond x -> (exp, tanh) -> mul -> sum", (a * b).sum()
    a = x.exp()
    yield "shortcut: a = exp(x); root = a * tanh(a)", a * a.tanh()
    constant = ag.tensor([2.0, 3.0])
    yield "x * constant + x", x * constant + x


def check_topological_order(topological_order, chain_length: int = 10_000) -> None:
    """Every tensor the root depends on, once, each after its inputs, the root last."""
    for graph, root in _graphs():
        order = _call(topological_order, f"topological_order on the graph {graph}", root)
        _check_order(order, root, graph)
    node = ag.tensor(0.5, requires_grad=True)
    for _ in range(chain_length):
        node = node.tanh()
    graph = f"a chain of {chain_length} tanh"
    try:
        order = topological_order(node)
    except RecursionError:
        raise AssertionError(
            f"{graph}: RecursionError; keep your own stack (a list) instead of recursing"
        ) from None
    except Exception as err:
        raise AssertionError(f"{graph}: raised {type(err).__name__}: {err}") from err
    _check_order(order, node, graph)


def check_value(Value) -> None:
    """The warm-up's scalar ``Value``: add, mul and tanh, each input used once or more."""
    a, b = Value(3.0), Value(-2.0)
    out = a * b + a  # by hand: d/da = b + 1 = -1, d/db = a = 3
    _call(out.backward, "backward() of a * b + a")
    _close([a.grad, b.grad], [-1.0, 3.0], "the gradients of a * b + a at a=3, b=-2")
    expressions = [
        ("a * b", lambda a, b: a * b, (0.5, 4.0)),
        ("b * a", lambda a, b: b * a, (-1.5, 2.5)),
        ("(a + b) * 5", lambda a, b: (a + b) * 5.0, (1.5, -0.25)),
        ("2 * a + b * -3 + 1", lambda a, b: 2.0 * a + b * -3.0 + 1.0, (0.1, 0.9)),
        ("a * a", lambda a: a * a, (-1.5,)),
        ("a + a", lambda a: a + a, (2.0,)),
        ("tanh(a) * 3", lambda a: a.tanh() * 3.0, (0.7,)),
        ("a * tanh(a)", lambda a: a * a.tanh(), (-0.4,)),
        ("tanh(x * w + b)", lambda x, w, b: (x * w + b).tanh(), (2.0, -0.5, 0.3)),
    ]
    for what, f, numbers in expressions:
        leaves = [Value(x) for x in numbers]
        _call(f(*leaves).backward, f"backward() of {what}")

        def moved(i, step, f=f, numbers=numbers):  # f, its input i moved by step
            return f(*(Value(x + step * (j == i)) for j, x in enumerate(numbers))).data

        numeric = [(moved(i, 1e-6) - moved(i, -1e-6)) / 2e-6 for i in range(len(numbers))]
        assert_close([v.grad for v in leaves], numeric, atol=1e-6, name=f"the gradients of {what}")


# --- The reference passes every check --------------------------------------------------------


def test_unbroadcast():
    check_unbroadcast(ag.unbroadcast)


def test_mul_backward():
    check_mul_backward(ag.mul_backward)


def test_matmul_backward():
    check_matmul_backward(ag.matmul_backward)


def test_sum_backward():
    check_sum_backward(ag.sum_backward)


def test_softmax_cross_entropy_backward():
    check_softmax_cross_entropy_backward(ag.softmax_cross_entropy_backward)


def test_topological_order():
    check_topological_order(ag.topological_order)


def test_value():
    check_value(ag.Value)


def test_value_backward_uses_topological_order_and_survives_a_long_chain():
    x = ag.Value(0.5)
    y = x
    for _ in range(5_000):
        y = y * 1.0001
    y.backward()
    assert_close(x.grad, 1.0001**5_000, atol=0, rtol=1e-9, name="d(1.0001^5000 x)/dx")
    assert repr(x).startswith("Value(data=0.5, grad=")


# --- ... and plausible wrong answers fail them -----------------------------------------------


def _stub(*args):
    raise NotImplementedError


def _unbroadcast_leading_only(grad, shape):
    return grad.sum(axis=tuple(range(grad.ndim - len(shape))))


def _unbroadcast_without_keepdims(grad, shape):
    grad = _unbroadcast_leading_only(grad, shape)
    return grad.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1))


def _unbroadcast_mean(grad, shape):
    while grad.ndim > len(shape):
        grad = grad.mean(axis=0)
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.mean(axis=stretched, keepdims=True)


def _matmul_no_transpose(a, b, g):
    return ag.unbroadcast(g @ b, a.shape), ag.unbroadcast(a @ g, b.shape)


def _matmul_dot_t(a, b, g):  # .T reverses every axis, batch axes included
    return ag.unbroadcast(g @ b.T, a.shape), ag.unbroadcast(a.T @ g, b.shape)


def _topological_recursive_no_visited(root):
    order = []

    def visit(node):
        for parent in node._parents:
            visit(parent)
        order.append(node)

    visit(root)
    return order


def _topological_recursive(root):
    order, visited = [], set()

    def visit(node):
        if id(node) not in visited:
            visited.add(id(node))
            for parent in node._parents:
                visit(parent)
            order.append(node)

    visit(root)
    return order


def _topological_root_first(root):
    order, visited, stack = [], set(), [root]
    while stack:
        node = stack.pop()
        if id(node) not in visited:
            visited.add(id(node))
            order.append(node)
            stack.extend(node._parents)
    return order


def _topological_reversed_bfs(root):
    order, visited, queue = [], {id(root)}, deque([root])
    while queue:
        node = queue.popleft()
        order.append(node)
        for parent in node._parents:
            if id(parent) not in visited:
                visited.add(id(parent))
                queue.append(parent)
    return order[::-1]


class _ValueOverwrites(ag.Value):
    def __mul__(self, other):  # `=` instead of `+=`: a value used twice keeps one term
        other = other if isinstance(other, ag.Value) else ag.Value(other)
        out = ag.Value(self.data * other.data, (self, other))

        def _backward():
            self.grad = other.data * out.grad
            other.grad = self.data * out.grad

        out._backward = _backward
        return out


class _ValueMulOwnInput(ag.Value):
    def __mul__(self, other):  # each input's own value instead of the other's
        other = other if isinstance(other, ag.Value) else ag.Value(other)
        out = ag.Value(self.data * other.data, (self, other))

        def _backward():
            self.grad += self.data * out.grad
            other.grad += other.data * out.grad

        out._backward = _backward
        return out


class _ValueTanhFromInput(ag.Value):
    def tanh(self):  # 1 - a^2 instead of 1 - tanh(a)^2
        out = ag.Value(math.tanh(self.data), (self,))

        def _backward():
            self.grad += (1 - self.data**2) * out.grad

        out._backward = _backward
        return out


def _softmax_np(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _ce_minus_onehot(logits, targets, scale, probs=None):
    probs = _softmax_np(logits) if probs is None else probs
    onehot = np.eye(logits.shape[-1])[targets]
    return (probs - onehot) * scale


WRONG = [
    (check_unbroadcast, "stub", _stub),
    (check_unbroadcast, "returns grad unchanged", lambda grad, shape: grad),
    (check_unbroadcast, "sums only the added leading axes", _unbroadcast_leading_only),
    (check_unbroadcast, "drops the stretched size-1 axes", _unbroadcast_without_keepdims),
    (check_unbroadcast, "averages instead of summing", _unbroadcast_mean),
    (check_mul_backward, "stub", _stub),
    (check_mul_backward, "no unbroadcast", lambda a, b, g: (g * b, g * a)),
    (
        check_mul_backward,
        "gradients swapped",
        lambda a, b, g: (ag.unbroadcast(g * a, a.shape), ag.unbroadcast(g * b, b.shape)),
    ),
    (
        check_mul_backward,
        "ignores grad_out",
        lambda a, b, g: (
            ag.unbroadcast(np.broadcast_to(b, g.shape), a.shape),
            ag.unbroadcast(np.broadcast_to(a, g.shape), b.shape),
        ),
    ),
    (check_matmul_backward, "stub", _stub),
    (check_matmul_backward, "grad_a = grad_out @ b, no transpose", _matmul_no_transpose),
    (check_matmul_backward, ".T instead of swapaxes(-1, -2)", _matmul_dot_t),
    (
        check_matmul_backward,
        "no unbroadcast over batch axes",
        lambda a, b, g: (g @ b.swapaxes(-1, -2), a.swapaxes(-1, -2) @ g),
    ),
    (check_sum_backward, "stub", _stub),
    (
        check_sum_backward,
        "forgets to put the summed axes back",
        lambda g, shape, axis=None, keepdims=False: np.broadcast_to(g, shape),
    ),
    (
        check_sum_backward,
        "divides by the count, as for a mean",
        lambda g, shape, axis=None, keepdims=False: (
            ag.sum_backward(g, shape, axis, keepdims) * np.prod(np.shape(g)) / np.prod(shape)
        ),
    ),
    (check_softmax_cross_entropy_backward, "stub", _stub),
    (
        check_softmax_cross_entropy_backward,
        "no division by N",
        lambda logits, t: _ce_minus_onehot(logits, t, 1.0),
    ),
    (
        check_softmax_cross_entropy_backward,
        "onehot - softmax: the sign flipped",
        lambda logits, t: -_ce_minus_onehot(logits, t, 1.0 / t.size),
    ),
    (
        check_softmax_cross_entropy_backward,
        "no max subtraction: nan on large logits",
        lambda logits, t: _ce_minus_onehot(
            logits,
            t,
            1.0 / t.size,
            np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True),
        ),
    ),
    (
        check_softmax_cross_entropy_backward,
        "divides by the number of classes V, not of positions N",
        lambda logits, t: _ce_minus_onehot(logits, t, 1.0 / logits.shape[-1]),
    ),
    (check_topological_order, "stub", _stub),
    (check_topological_order, "DFS without a visited set", _topological_recursive_no_visited),
    (check_topological_order, "root first (pre-order)", _topological_root_first),
    (check_topological_order, "reversed breadth-first order", _topological_reversed_bfs),
    (check_topological_order, "recursive: fails on a long chain", _topological_recursive),
    (check_value, "= instead of +=", _ValueOverwrites),
    (check_value, "mul by its own input", _ValueMulOwnInput),
    (check_value, "tanh derivative from the input", _ValueTanhFromInput),
]


@pytest.mark.parametrize(
    ("check", "wrong"),
    [(c, w) for c, _, w in WRONG],
    ids=[f"{c.__name__}: {d}" for c, d, _ in WRONG],
)
def test_checks_reject_a_wrong_answer(check, wrong):
    with np.errstate(all="ignore"), pytest.raises(AssertionError):
        check(wrong)


def test_messages_point_at_the_mistake():
    with pytest.raises(AssertionError, match=re.escape("it is N = 2 times too large")):
        check_softmax_cross_entropy_backward(lambda logits, t: _ce_minus_onehot(logits, t, 1.0))
    with pytest.raises(AssertionError, match="RecursionError; keep your own stack"):
        check_topological_order(_topological_recursive)
    with pytest.raises(AssertionError, match="listed 2 times"):
        check_topological_order(_topological_recursive_no_visited)
    with pytest.raises(AssertionError, match="it came first"):
        check_topological_order(_topological_root_first)
    with pytest.raises(AssertionError, match="not implemented yet"):
        check_mul_backward(_stub)


def test_a_recursive_topological_order_is_fine_on_a_short_chain():
    check_topological_order(_topological_recursive, chain_length=50)


def test_tensor_operations_use_the_standalone_rules(monkeypatch):
    """The Tensor methods call the module's rules (no second copy of the logic)."""
    x = ag.tensor(np.random.default_rng(0).standard_normal((2, 2)), requires_grad=True)
    uses = {
        "unbroadcast": lambda: (x + x[0]).sum(),
        "mul_backward": lambda: (x * x).sum(),
        "matmul_backward": lambda: (x @ x).sum(),
        "sum_backward": lambda: x.sum(axis=0).sum(),
        "softmax_cross_entropy_backward": lambda: ag.cross_entropy(x, np.array([0, 1])),
        "topological_order": lambda: x.sum(),
    }
    for rule, expression in uses.items():
        calls = []
        original = getattr(ag, rule)
        monkeypatch.setattr(ag, rule, lambda *args, f=original, c=calls: c.append(1) or f(*args))
        expression().backward()
        assert calls, f"Tensor.backward never called course.autograd.{rule}"


def test_using_swaps_a_rule_in_and_puts_it_back():
    rng = np.random.default_rng(0)
    a = ag.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = ag.tensor(rng.standard_normal(3), requires_grad=True)
    calls = []

    def mine(x, y, g):
        calls.append(1)
        return ag.unbroadcast(g * x, x.shape), ag.unbroadcast(g * y, y.shape)  # swapped: wrong

    with pytest.raises(AssertionError, match="gradcheck: input 0"), ag.using(mul_backward=mine):
        ag.gradcheck(lambda a, b: a * b, [a, b])
    assert calls, "the engine did not call the rule passed to using()"
    assert ag.mul_backward is not mine, "using() did not put the library's rule back"
    assert ag.gradcheck(lambda a, b: a * b, [a, b])
    with pytest.raises(TypeError, match="using: no rule named add_backward"):
        with ag.using(add_backward=mine):
            pass


# === Every operation against torch.autograd, tf.GradientTape and central differences =========


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tf():
    pytest.importorskip("tensorflow")
    from course import runtime

    return runtime.import_tensorflow()  # beside PyTorch and Triton: the course's one way


class Case(NamedTuple):
    """One operation on some float64 inputs, written for each framework."""

    arrays: list  # the inputs that get gradients
    engine: Callable  # (*Tensors) -> Tensor
    torch: Callable  # (torch, *torch tensors) -> torch tensor
    tf: Callable  # (tf, *tf tensors) -> tf tensor


def same_everywhere(arrays, fn) -> Case:
    """A case whose expression reads the same in all three frameworks (a + b, a @ b, x ** 2)."""
    return Case(arrays, fn, lambda _, *xs: fn(*xs), lambda _, *xs: fn(*xs))


seeds = st.integers(0, 2**32 - 1)


def shapes(min_dims: int = 0):
    return hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=1, max_side=5)


@st.composite
def binary(draw, fn, positive_b=False):
    shapes_ab = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=5))
    a_shape, b_shape = shapes_ab.input_shapes
    rng = np.random.default_rng(draw(seeds))
    b = rng.uniform(0.5, 2.0, b_shape) if positive_b else rng.standard_normal(b_shape)
    return same_everywhere([rng.standard_normal(a_shape), b], fn)


@st.composite
def unary(draw, engine, torch_fn, tf_fn, positive=False):
    shape, rng = draw(shapes()), np.random.default_rng(draw(seeds))
    x = rng.uniform(0.5, 2.0, shape) if positive else rng.standard_normal(shape) * 2
    return Case([x], engine, torch_fn, tf_fn)


@st.composite
def power(draw):
    shape, exponent = draw(shapes()), draw(st.sampled_from([2, 3, 0.5, -1.5, 1.7]))
    x = np.random.default_rng(draw(seeds)).uniform(0.5, 2.0, shape)
    return same_everywhere([x], lambda x: x**exponent)


@st.composite
def matmul(draw):
    signature = "(m,n),(n,p)->(m,p)"  # batch axes: up to two more, broadcast against each other
    a_shape, b_shape = draw(
        hnp.mutually_broadcastable_shapes(signature=signature, max_dims=2, max_side=5)
    ).input_shapes
    rng = np.random.default_rng(draw(seeds))
    return same_everywhere(
        [rng.standard_normal(a_shape), rng.standard_normal(b_shape)], operator.matmul
    )


@st.composite
def reduction(draw, name):
    shape = draw(shapes(min_dims=1))
    ndim = len(shape)
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    axes = tuple(a - ndim if draw(st.booleans()) else a for a in axes)  # some negative
    axis = draw(st.sampled_from([None, axes[0], axes]))
    keepdims = draw(st.booleans())
    dims = tuple(range(ndim)) if axis is None else axis
    x = np.random.default_rng(draw(seeds)).standard_normal(shape)
    return Case(
        [x],
        lambda x: getattr(x, name)(axis=axis, keepdims=keepdims),
        lambda torch, x: getattr(x, name)(dim=dims, keepdim=keepdims),
        lambda tf, x: getattr(tf, f"reduce_{name}")(
            x, axis=list(dims) if isinstance(dims, tuple) else dims, keepdims=keepdims
        ),
    )


@st.composite
def reshape(draw):
    shape = draw(shapes(min_dims=1))
    size = int(np.prod(shape))
    targets = [(size,), (-1,), shape[::-1], (1, size), (shape[0], -1)]
    target = draw(st.sampled_from(targets))
    x = np.random.default_rng(draw(seeds)).standard_normal(shape)
    return Case(
        [x],
        lambda x: x.reshape(target),
        lambda _, x: x.reshape(target),
        lambda tf, x: tf.reshape(x, target),
    )


@st.composite
def transpose(draw):
    shape = draw(shapes(min_dims=1))
    axes = tuple(draw(st.permutations(range(len(shape)))))
    x = np.random.default_rng(draw(seeds)).standard_normal(shape)
    return Case(
        [x],
        lambda x: x.transpose(*axes),
        lambda _, x: x.permute(*axes),
        lambda tf, x: tf.transpose(x, axes),
    )


@st.composite
def getitem_basic(draw):
    """Integers (negative too) and slices with a step, one per leading axis."""
    shape = draw(shapes(min_dims=1))
    index = []
    for n in shape[: draw(st.integers(1, len(shape)))]:
        if draw(st.booleans()):
            index.append(draw(st.integers(-n, n - 1)))
        else:
            start = draw(st.integers(0, n - 1))
            index.append(slice(start, draw(st.integers(start + 1, n)), draw(st.integers(1, 3))))
    index = tuple(index)
    x = np.random.default_rng(draw(seeds)).standard_normal(shape)
    return same_everywhere([x], lambda x: x[index])


@st.composite
def getitem_rows(draw):
    """An integer array on the first axis, with repeats: their gradients must add up."""
    shape = draw(shapes(min_dims=1))
    rng = np.random.default_rng(draw(seeds))
    rows = rng.integers(0, shape[0], draw(st.integers(1, 6)))
    return Case(
        [rng.standard_normal(shape)],
        lambda x: x[rows],
        lambda torch, x: x[torch.from_numpy(rows)],
        lambda tf, x: tf.gather(x, rows),
    )


@st.composite
def softmax(draw, name):
    shape = draw(shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(draw(seeds)).standard_normal(shape) * 3
    return Case(
        [x],
        lambda x: getattr(x, name)(axis=axis),
        lambda torch, x: getattr(torch, name)(x, dim=axis),
        lambda tf, x: getattr(tf.nn, name)(x, axis=axis),
    )


@st.composite
def embedding(draw):
    vocab, dim = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(seeds))
    ids = rng.integers(0, vocab, draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=5)))
    return Case(
        [rng.standard_normal((vocab, dim))],
        lambda w: ag.embedding(w, ids),
        lambda torch, w: torch.nn.functional.embedding(torch.from_numpy(ids), w),
        lambda tf, w: tf.gather(w, ids),
    )


@st.composite
def cross_entropy(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
    vocab = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(seeds))
    targets = rng.integers(0, vocab, lead)
    flat = targets.reshape(-1)
    return Case(
        [rng.standard_normal((*lead, vocab)) * 3],
        lambda x: ag.cross_entropy(x, targets),
        lambda torch, x: torch.nn.functional.cross_entropy(
            x.reshape(-1, vocab), torch.from_numpy(flat)
        ),
        lambda tf, x: tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(flat, tf.reshape(x, (-1, vocab)))
        ),
    )


def _tf_layer_norm(tf, x, weight, bias):
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + 1e-5) * weight + bias


@st.composite
def layer_norm(draw):
    shape = draw(shapes(min_dims=1))
    rng = np.random.default_rng(draw(seeds))
    # Spread along the last axis keeps the variance well above eps (smooth for differences).
    x = np.linspace(-2.0, 2.0, shape[-1]) + 0.3 * rng.standard_normal(shape)
    weight, bias = rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1])
    return Case(
        [x, weight, bias],
        lambda x, w, b: ag.layer_norm(x, w, b),
        lambda torch, x, w, b: torch.nn.functional.layer_norm(x, (shape[-1],), w, b, eps=1e-5),
        _tf_layer_norm,
    )


OPERATIONS = {
    "add": binary(operator.add),
    "sub": binary(operator.sub),
    "mul": binary(operator.mul),
    "div": binary(operator.truediv, positive_b=True),
    "neg": unary(operator.neg, lambda _, x: -x, lambda _, x: -x),
    "pow": power(),
    "matmul": matmul(),
    "sum": reduction("sum"),
    "mean": reduction("mean"),
    "reshape": reshape(),
    "transpose": transpose(),
    "getitem slices": getitem_basic(),
    "getitem rows": getitem_rows(),
    "exp": unary(ag.Tensor.exp, lambda torch, x: torch.exp(x), lambda tf, x: tf.exp(x)),
    "log": unary(ag.Tensor.log, lambda t, x: t.log(x), lambda tf, x: tf.math.log(x), True),
    "tanh": unary(ag.Tensor.tanh, lambda torch, x: torch.tanh(x), lambda tf, x: tf.tanh(x)),
    "relu": unary(ag.Tensor.relu, lambda torch, x: torch.relu(x), lambda tf, x: tf.nn.relu(x)),
    "gelu": unary(
        ag.Tensor.gelu,
        lambda torch, x: torch.nn.functional.gelu(x, approximate="tanh"),
        lambda tf, x: tf.nn.gelu(x, approximate=True),
    ),
    "softmax": softmax("softmax"),
    "log_softmax": softmax("log_softmax"),
    "embedding": embedding(),
    "cross_entropy": cross_entropy(),
    "layer_norm": layer_norm(),
}


@pytest.mark.parametrize("name", list(OPERATIONS))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_gradient_matches_torch_tensorflow_and_numerical(name, data, torch, tf):
    case = data.draw(OPERATIONS[name], label=name)
    inputs = [ag.tensor(a, requires_grad=True) for a in case.arrays]
    out = case.engine(*inputs)
    upstream = np.asarray(np.random.default_rng(1).standard_normal(out.shape))
    (out * upstream).sum().backward()  # a random upstream gradient, not all ones

    torch_inputs = [torch.tensor(a, requires_grad=True) for a in case.arrays]
    torch_out = case.torch(torch, *torch_inputs)
    (torch_out * torch.from_numpy(upstream)).sum().backward()

    tf_inputs = [tf.constant(a) for a in case.arrays]
    with tf.GradientTape() as tape:
        tape.watch(tf_inputs)
        tf_out = case.tf(tf, *tf_inputs)
        tf_loss = tf.reduce_sum(tf_out * upstream)
    tf_grads = tape.gradient(tf_loss, tf_inputs)

    assert_close(out.data, torch_out, atol=1e-6, rtol=0, name=f"{name} output vs torch")
    assert_close(out.data, tf_out, atol=1e-6, rtol=0, name=f"{name} output vs tensorflow")
    for i, x in enumerate(inputs):
        assert x.grad is not None and x.grad.dtype == np.float64, f"input {i} got no gradient"
        assert_close(
            x.grad, torch_inputs[i].grad, atol=1e-6, rtol=0, name=f"{name} grad {i} vs torch"
        )
        grad = tf.convert_to_tensor(tf_grads[i])  # tf.gather's gradient comes as IndexedSlices
        assert_close(x.grad, grad, atol=1e-6, rtol=0, name=f"{name} grad {i} vs tensorflow")
    fresh = [ag.tensor(a, requires_grad=True) for a in case.arrays]
    assert ag.gradcheck(case.engine, fresh, atol=1e-4, rtol=0)

    # float32 in, float32 out: no operation promotes to float64 on the way.
    inputs32 = [ag.tensor(a.astype(np.float32), requires_grad=True) for a in case.arrays]
    out32 = case.engine(*inputs32)
    (out32 * upstream.astype(np.float32)).sum().backward()
    assert out32.dtype == np.float32, f"{name} turned float32 into {out32.dtype}"
    assert all(x.grad.dtype == np.float32 for x in inputs32), f"{name}: a float64 gradient"


# === The MLP: engine and PyTorch, step by step ================================================


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_trains_exactly_like_pytorch(torch, activation):
    """20 -> 32 -> 5, float64, same initial weights, same 50 batches, plain SGD."""
    rng = np.random.default_rng(7)
    n_in, n_hidden, n_out, batch, lr = 20, 32, 5, 16, 0.2
    initial = [
        rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in),
        rng.standard_normal(n_hidden) * 0.1,
        rng.standard_normal((n_hidden, n_out)) / np.sqrt(n_hidden),
        rng.standard_normal(n_out) * 0.1,
    ]
    teacher = rng.standard_normal((n_in, n_out))  # labels a model can learn
    xs = [rng.standard_normal((batch, n_in)) for _ in range(50)]
    batches = [(x, np.argmax(x @ teacher, axis=1)) for x in xs]

    params = [ag.tensor(w, requires_grad=True) for w in initial]
    w1, b1, w2, b2 = params
    optimizer = ag.SGD(params, lr=lr)
    losses = []
    for x, y in batches:
        hidden = getattr(ag.tensor(x) @ w1 + b1, activation)()
        loss = ag.cross_entropy(hidden @ w2 + b2, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    torch_params = [torch.tensor(w, requires_grad=True) for w in initial]
    tw1, tb1, tw2, tb2 = torch_params
    torch_optimizer = torch.optim.SGD(torch_params, lr=lr)
    torch_losses = []
    for x, y in batches:
        hidden = getattr(torch, activation)(torch.from_numpy(x) @ tw1 + tb1)
        loss = torch.nn.functional.cross_entropy(hidden @ tw2 + tb2, torch.from_numpy(y))
        torch_optimizer.zero_grad()
        loss.backward()
        torch_optimizer.step()
        torch_losses.append(loss.item())

    assert_close(np.array(losses), np.array(torch_losses), atol=0, rtol=1e-6, name="losses")
    for p, tp, name in zip(params, torch_params, ["W1", "b1", "W2", "b2"], strict=True):
        assert_close(p.data, tp, atol=1e-9, rtol=1e-6, name=f"{name} after 50 steps")
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), "the MLP did not learn"


# === Behaviour: graph recording, accumulation, depth, operators ===============================


def test_importing_the_engine_loads_no_framework():
    code = (
        "import sys, course.autograd\n"
        "print([m for m in ('torch', 'tensorflow') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == "[]"


def test_a_new_tensor_has_no_gradient_and_backward_fills_one_of_its_shape():
    x = ag.tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    assert x.grad is None and x._op == "" and x._parents == ()
    y = x * 3.0
    assert y._op == "mul" and y._parents[0] is x
    y.sum().backward()
    assert x.grad.shape == (2, 3) and x.grad.dtype == np.float32
    assert x.grad.tolist() == [[3.0] * 3] * 2


def test_no_grad_records_nothing_and_restores_recording():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    with ag.no_grad():
        y = x * 2
        with ag.no_grad():
            pass
        z = x * 2  # still off after the nested block
    assert not y.requires_grad and y._parents == () and not z.requires_grad
    assert (x * 2).requires_grad
    with pytest.raises(ZeroDivisionError), ag.no_grad():
        raise ZeroDivisionError
    assert (x * 2).requires_grad, "an exception inside no_grad() left recording off"
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_a_tensor_used_twice_gets_the_sum_of_its_gradients():
    x = ag.tensor([1.0, 2.0, 4.0], requires_grad=True)
    (x * x + x).sum().backward()  # d/dx (x^2 + x) = 2x + 1
    assert x.grad.tolist() == [3.0, 5.0, 9.0]
    y = ag.tensor([1.0, 2.0], requires_grad=True)
    (y + y).sum().backward()
    assert y.grad.tolist() == [2.0, 2.0]


def test_leaves_accumulate_over_calls_but_intermediates_do_not_compound():
    x = ag.tensor([1.0, 3.0], requires_grad=True)
    y = x * x
    loss = y.sum()
    loss.backward()
    loss.backward()  # as in PyTorch: leaves add up until zero_grad()
    assert x.grad.tolist() == [4.0, 12.0]  # 2 * 2x
    assert y.grad.tolist() == [1.0, 1.0]
    x.zero_grad()
    assert x.grad is None


def test_each_tensor_owns_its_gradient():
    x, y = ag.tensor([1.0, 2.0], requires_grad=True), ag.tensor([3.0, 4.0], requires_grad=True)
    (x + y).sum().backward()  # add hands the same upstream array to both inputs
    x.grad *= 10
    assert y.grad.tolist() == [1.0, 1.0]


def test_backward_through_a_chain_of_10000_operations():
    x = ag.tensor(2.0, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 0.999
    y.backward()
    assert_close(x.grad, 0.999**10_000, atol=0, rtol=1e-9, name="d(0.999^10000 x)/dx")


def test_backward_with_an_explicit_upstream_gradient():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).backward(np.array([1.0, -2.0]))
    assert x.grad.tolist() == [3.0, -6.0]


def test_python_numbers_and_numpy_arrays_on_either_side():
    x = ag.tensor([1.0, 2.0, 4.0], requires_grad=True)
    y = (2 - x) + 3 * x + 1 / x + (x + 1) - x / 2 + np.array([1.0, 1.0, 1.0]) * x
    # Derivative, term by term: -1 + 3 - 1/x^2 + 1 - 1/2 + 1 = 3.5 - 1/x^2
    assert_close(y.data, [7.5, 10.5, 17.25], name="value")  # 3 + 3.5x + 1/x
    assert isinstance(np.array([1.0]) + x[:1], ag.Tensor)
    y.sum().backward()
    assert_close(x.grad, [2.5, 3.25, 3.4375], name="gradient")
    x32 = ag.tensor([1.0], dtype=np.float32)
    assert (2.5 * x32 - 1).dtype == np.float32 and (x32**2).dtype == np.float32


def test_transpose_T_and_boolean_index():
    x = ag.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.T.shape == (3, 2) and x.T._op == "transpose"
    weights = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    (x.T * weights).sum().backward()
    assert x.grad.tolist() == [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]
    x.zero_grad()
    mask = np.array([[True, False, True], [False, False, True]])
    x[mask].sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]


def test_relu_gradient_at_zero_is_zero_as_in_pytorch():
    x = ag.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    x.relu().sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]


def test_cross_entropy_is_stable_on_large_logits():
    logits = ag.tensor([[1000.0, 0.0], [0.0, 1000.0]], requires_grad=True)
    loss = ag.cross_entropy(logits, np.array([0, 0]))  # right, then wrong by 1000
    assert_close(loss.data, 500.0, name="loss")  # (0 + 1000) / 2
    loss.backward()
    assert np.isfinite(logits.grad).all()


def test_gradcheck_reports_the_input_and_the_difference(monkeypatch):
    rng = np.random.default_rng(0)
    a = ag.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = ag.tensor(rng.standard_normal(3), requires_grad=True)
    assert ag.gradcheck(lambda a, b: a * b, [a, b])
    with pytest.raises(AssertionError, match=r"input 1 \(shape \(3,\)\).*largest difference"):
        ag.gradcheck(lambda a, b: a * b.detach(), [a, b])
    swapped = lambda x, y, g: (ag.unbroadcast(g * x, x.shape), ag.unbroadcast(g * y, y.shape))  # noqa: E731
    monkeypatch.setattr(ag, "mul_backward", swapped)
    with pytest.raises(AssertionError, match=r"input 0 \(shape \(2, 3\)\)"):
        ag.gradcheck(lambda a, b: a * b, [a, b])


def test_gradcheck_upcasts_float32_and_passes_integer_inputs_through():
    weight = ag.tensor(np.ones((4, 2), dtype=np.float32), requires_grad=True)
    assert ag.gradcheck(ag.embedding, [weight, np.array([[0, 3], [3, 3]])])


def test_sgd_steps_against_the_gradient():
    w = ag.tensor([1.0, -2.0], requires_grad=True)
    optimizer = ag.SGD([w], lr=0.5)
    (w * w).sum().backward()  # gradient 2w = [2, -4]
    optimizer.step()
    assert w.data.tolist() == [0.0, 0.0]
    optimizer.zero_grad()
    assert w.grad is None


# --- Errors name the operation and the shapes or dtypes --------------------------------------


def test_shape_errors_name_the_operation_and_the_shapes():
    f64 = lambda *shape: ag.tensor(np.zeros(shape), requires_grad=True)  # noqa: E731
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        f64(2, 3) @ f64(4, 5)
    with pytest.raises(ValueError, match=r"matmul: shapes \(3,\) and \(3, 4\).*2 dimensions"):
        f64(3) @ f64(3, 4)
    with pytest.raises(ValueError, match=r"matmul: the batch sizes of \(2, 3, 4\) and \(5, 4, 6\)"):
        f64(2, 3, 4) @ f64(5, 4, 6)
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) do not broadcast"):
        f64(2, 3) + f64(4)
    with pytest.raises(ValueError, match=r"reshape: cannot reshape \(2, 3\) into \(4,\)"):
        f64(2, 3).reshape(4)
    with pytest.raises(ValueError, match=r"transpose: axes \(0, 1\).*3 axes.*torch"):
        f64(2, 3, 4).transpose(0, 1)
    with pytest.raises(ValueError, match=r"sum: axis 2 is out of range for 2 dimension"):
        f64(2, 3).sum(axis=2)
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(3,\), expected \(4,\)"):
        ag.layer_norm(f64(2, 4), f64(3), f64(4))
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\); pass grad="):
        (f64(2, 3) * 2).backward()
    with pytest.raises(ValueError, match=r"backward: grad has shape \(3,\), expected \(2,\)"):
        (f64(2) * 2).backward(np.ones(3))


def test_dtype_errors_name_the_operation_and_both_dtypes():
    x32 = ag.tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    x64 = ag.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match="add: cannot mix float32 and float64"):
        x32 + x64
    with pytest.raises(TypeError, match="mul: cannot mix float64 and float32"):
        x64 * np.ones(2, dtype=np.float32)
    with pytest.raises(TypeError, match="matmul: cannot mix float32 and float64"):
        x32.reshape(1, 2) @ x64.reshape(2, 1)
    with pytest.raises(TypeError, match="requires_grad needs float32 or float64 data, got int64"):
        ag.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="pow: the exponent must be a Python number"):
        x64**x64


def test_index_errors_name_the_valid_range():
    weight = ag.tensor(np.zeros((10, 4)), requires_grad=True)
    with pytest.raises(IndexError, match=re.escape("embedding: ids must be in the range [0, 10)")):
        ag.embedding(weight, np.array([1, 10]))
    with pytest.raises(IndexError, match=re.escape("got values from -1 to 2")):
        ag.embedding(weight, np.array([-1, 2]))
    with pytest.raises(TypeError, match="embedding: ids must be integers, got float64"):
        ag.embedding(weight, np.array([1.0]))
    logits = ag.tensor(np.zeros((3, 5)), requires_grad=True)
    message = "cross_entropy: targets must be class ids in the range [0, 5), got values from 0 to 5"
    with pytest.raises(IndexError, match=re.escape(message)):
        ag.cross_entropy(logits, np.array([0, 5, 1]))
    with pytest.raises(ValueError, match=r"targets have shape \(2,\).*should have shape \(3,\)"):
        ag.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="targets must be integer class ids, got float64"):
        ag.cross_entropy(logits, np.array([0.0, 1.0, 2.0]))


# --- The chapter 02 solutions pass the same checks as the library ----------------------------


@pytest.fixture(scope="module")
def notebook_solutions():
    """The functions the chapter 02 solution cells define, run in one namespace."""
    from autograde import notebooks

    path = REPO / "solutions" / "02_autograd" / "02_autograd.ipynb"
    namespace = {"np": np, "math": math}
    for cell in notebooks.read(path).cells:
        if notebooks.is_solution(cell) and cell.cell_type == "code":
            exec(cell.source, namespace)
    return namespace


@pytest.mark.parametrize(
    "check, name",
    [
        (check_unbroadcast, "unbroadcast"),
        (check_sum_backward, "sum_backward"),
        (check_mul_backward, "mul_backward"),
        (check_matmul_backward, "matmul_backward"),
        (check_softmax_cross_entropy_backward, "softmax_cross_entropy_backward"),
        (check_topological_order, "topological_order"),
        (check_value, "Value"),
    ],
)
def test_notebook_solution_passes_the_library_checks(notebook_solutions, check, name):
    check(notebook_solutions[name])
