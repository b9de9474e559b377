# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Twin GPT · 02 Autograd
# Run this cell first. On Colab it installs the course library with this chapter's extras,
# keeping Colab's own PyTorch and TensorFlow; on your machine or on Binder the library is
# already there and nothing is installed.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("course") is None:
    extras = {"torch": "torch", "tf": "tensorflow"}  # extra: the module it installs
    missing = ",".join(e for e, module in extras.items() if not importlib.util.find_spec(module))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         f"twin-gpt[{missing}] @ git+https://github.com/twin-gpt/twin-gpt@v0.1.0"],
        check=True,
    )
from course import runtime

print(runtime.versions_line())

# %% tags=["parameters"] nbgrader={"grade": false, "grade_id": "parameters", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Parameters (this cell is tagged `parameters`). COURSE_SMOKE=1 runs everything small and fast.
SMOKE = runtime.smoke_mode()
MLP_STEPS = 20 if SMOKE else 300  # training steps of the engine-vs-PyTorch race
HIDDEN = 32 if SMOKE else 64  # width of the MLP's hidden layer
BATCH = 64  # examples per step
SEED = 0

# %% [markdown]
# # 02 · Autograd from scratch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/twin-gpt/twin-gpt/blob/v0.1.0/notebooks/02_autograd/02_autograd.ipynb)
#
# <!-- chapter card: written by `python -m autograde release` from solutions/chapters.toml -->
# **Time:** about 85 min to work through; the code runs in at most 2 min on 2 CPU cores.
#
# **You will be able to**
#
# - write backward rules, first for a scalar `Value` (add, multiply, tanh), then for arrays:
#   a broadcast add, a sum over axes, a product, a batched matrix product, softmax with
#   cross-entropy
# - order a computation graph topologically without recursion, and say why reverse mode
#   needs that order
# - check gradients against PyTorch, TensorFlow and finite differences
# - train a small network with your own engine and match PyTorch's losses step for step
#
# **Before you start:** chapters 00 (Setup: one GPT, built twice) and 01 (Tensors, side by
# side). From outside the course: the chain rule and partial derivatives; matrix shapes and
# transposes.
# <!-- end of the chapter card -->
#
# `loss.backward()` in PyTorch and `tape.gradient(loss, vars)` in TensorFlow do the same
# thing, and it is less magic than it looks. In this chapter you warm up on an engine for
# single numbers, then write the core of a reverse-mode autograd engine over numpy arrays,
# deriving each backward rule from the chain rule, plug your parts into the course's
# engine (`course.autograd`), check every gradient against both frameworks, and train a
# small network with it, step for step alongside PyTorch.
#
# **Reverse mode in three sentences.** Every operation records its inputs and a *backward
# rule*: given $g = \partial L / \partial \text{out}$, return
# $\partial L / \partial \text{input}$ for each input (the chain rule, one operation at a
# time). `backward()` visits the operations from the loss back to the inputs, in reverse
# *topological order*, so a tensor's gradient is complete before its own rule runs.
# Because the loss is one number, one backward pass gives the gradient with respect to
# every parameter at once: that is why deep learning uses reverse mode.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from course import autograd as ag
from course import checks, viz

tf = runtime.import_tensorflow()  # after Triton, which torch.optim may load (chapter 00)

# %% [markdown]
# ## A warm-up on single numbers: `Value`
#
# The whole idea fits in one small class before any array appears (Karpathy's micrograd is
# its model). A `Value` holds a number `data`, its gradient `grad` $= \partial L/\partial$
# (this value), the values it was computed from (`_parents`), and `_backward`: a function
# that passes its `grad` on to its parents.
#
# **Every backward rule is the chain rule, one operation at a time.** If the loss $L$ uses
# $a$ through several operations $u_1, u_2, \dots$ (in `x * x`, `x` is used twice), the
# multivariable chain rule sums over the uses:
#
# $$\frac{\partial L}{\partial a} = \sum_{i} \frac{\partial L}{\partial u_i}\,\frac{\partial u_i}{\partial a}$$
#
# So an operation needs only its *local* derivative, and **adds** its term:
# `a.grad += (d out / d a) * out.grad`. The three local derivatives:
#
# - **add**, $o = a + b$: $\partial o/\partial a = \partial o/\partial b = 1$, so both
#   inputs receive `out.grad` unchanged.
# - **mul**, $o = ab$: $\partial o/\partial a = b$ and $\partial o/\partial b = a$, so each
#   input receives `out.grad` times the *other* input.
# - **tanh**, $t = \tanh a = d/s$ with $d = e^{a} - e^{-a}$ and $s = e^{a} + e^{-a}$ (so
#   $d' = s$, $s' = d$). The quotient rule gives
#   $\frac{dt}{da} = \frac{d' s - d s'}{s^2} = \frac{s^2 - d^2}{s^2} = 1 - t^2$,
#   computed from the output $t$ the forward pass already has.
#
# `backward()` lists the graph so that every value comes after the values it was computed
# from (a *topological order*), sets the loss's own gradient to $\partial L/\partial L = 1$,
# and runs each `_backward` from the loss back, so a value's `grad` holds every term before
# it is passed on.
#
# ## Exercise 1 · the backward rules of `Value`
#
# Write the three `_backward` bodies: `add`, `mul` and `tanh`.

# %% nbgrader={"grade": false, "grade_id": "Value", "locked": false, "schema_version": 3, "solution": true, "task": false}
class Value:
    """One number that remembers how it was computed, and its gradient."""

    def __init__(self, data, _parents=()):
        self.data = float(data)
        self.grad = 0.0  # d loss / d this value, filled in by backward()
        self._parents = _parents  # the Values this one was computed from
        self._backward = lambda: None  # passes self.grad on to the parents; a leaf has none

    def __repr__(self):
        return f"Value(data={self.data:.4g}, grad={self.grad:.4g})"

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def _backward():
            ### BEGIN SOLUTION
            self.grad += out.grad
            other.grad += out.grad
            ### END SOLUTION

        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def _backward():
            ### BEGIN SOLUTION
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
            ### END SOLUTION

        out._backward = _backward
        return out

    __radd__, __rmul__ = __add__, __mul__  # 2 * x calls x.__rmul__(2)

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,))

        def _backward():
            ### BEGIN SOLUTION
            self.grad += (1 - t * t) * out.grad
            ### END SOLUTION

        out._backward = _backward
        return out

    def backward(self):
        order, visited = [], set()

        def visit(v):  # depth first: v is listed after every value it was computed from
            if v not in visited:
                visited.add(v)
                for parent in v._parents:
                    visit(parent)
                order.append(v)

        visit(self)
        self.grad = 1.0  # d loss / d loss
        for v in reversed(order):  # the loss first, the leaves last
            v._backward()


# %% nbgrader={"grade": true, "grade_id": "test_Value", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Value: gradients of scalar expressions equal torch.autograd's and central differences."""


def check_value(f, *numbers, what):
    leaves = [Value(x) for x in numbers]
    out = f(*leaves)
    out.backward()
    ours = [v.grad for v in leaves]
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in numbers]
    f(*ts).backward()
    checks.assert_close(ours, [t.grad.item() for t in ts], atol=1e-9, name=f"{what}: vs torch")

    def at(i, x):  # f with input i moved to x, evaluated by torch
        xs = [*numbers[:i], x, *numbers[i + 1:]]
        return f(*(torch.tensor(v, dtype=torch.float64) for v in xs)).item()

    eps = 1e-6
    numeric = [(at(i, x + eps) - at(i, x - eps)) / (2 * eps) for i, x in enumerate(numbers)]
    checks.assert_close(ours, numeric, atol=1e-6, name=f"{what}: vs central differences")


check_value(lambda a, b: a * b, 3.0, -2.0, what="a * b")
check_value(lambda a, b: b * a, 0.5, 4.0, what="b * a")
check_value(lambda a, b: (a + b) * 5.0, 1.5, -0.25, what="(a + b) * 5")
check_value(lambda a, b: 2.0 * a + b * -3.0 + 1.0, 0.1, 0.9, what="2a - 3b + 1")
check_value(lambda a: a.tanh() * 3.0, 0.7, what="tanh(a) * 3")
check_value(lambda a: a * a, -1.5, what="a * a (a used twice)")
check_value(lambda a: a + a, 2.0, what="a + a (a used twice)")
check_value(lambda x1, x2, w1, w2, b: (x1 * w1 + x2 * w2 + b).tanh(),
            2.0, -1.0, 0.5, 1.5, -0.3, what="a neuron, tanh(x1 w1 + x2 w2 + b)")
### BEGIN HIDDEN TESTS
check_value(lambda a, b: a * b, -0.4, 6.0, what="a * b")
check_value(lambda a, b, c: ((a * b).tanh() + c * a) * (b + 1.5), 0.8, -1.2, 2.5, what="mixed")
check_value(lambda a: a * a * a, 1.3, what="a * a * a")
check_value(lambda a, b: b * a + a, -0.6, 2.2, what="b * a + a")
check_value(lambda a: (a.tanh() + a).tanh() * -2.0, 0.3, what="tanh(tanh(a) + a) * -2")
### END HIDDEN TESTS

# %% [markdown]
# One neuron, $o = \tanh(x_1 w_1 + x_2 w_2 + b)$: by the rules above,
# $\partial o/\partial w_1 = x_1 (1 - o^2)$.

# %%
x1, x2, w1, w2, b = Value(2.0), Value(-1.0), Value(0.5), Value(1.5), Value(-0.3)
neuron = (x1 * w1 + x2 * w2 + b).tanh()
neuron.backward()
print(neuron, "| d o / d w1:", w1.grad, "| by hand:", x1.data * (1 - neuron.data**2))

# %% [markdown]
# ## A tour of the engine
#
# `Value` works on single numbers; a network needs the same on arrays, where every rule must
# also handle shapes. A `Tensor` wraps a numpy array; operations build a graph and
# `backward()` fills `.grad`.

# %%
x = ag.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
w = ag.tensor([10.0, 100.0], requires_grad=True)  # broadcast over x's rows
loss = (x * w).sum()
loss.backward()
print("d loss / d x =\n", x.grad)  # each x[i, j] is multiplied by w[j]
print("d loss / d w =", w.grad)  # each w[j] met both rows: 1+3 and 2+4
print("the graph:", [t._op or "leaf" for t in ag.topological_order(loss)])

# %% [markdown]
# Notice `w.grad`: `w` has shape (2,) but was used for a (2, 2) product. Broadcasting
# *reused* each `w[j]` once per row, and a value used several times receives the **sum** of
# the gradients of its uses, exactly as `x` in the warm-up's `x * x`. That is the next rule
# you will write.
#
# ## Exercise 2 · the backward of a broadcast sum: `unbroadcast`
#
# In `a + b` with `a` (2, 3) and `b` (3,), broadcasting makes $o_{ij} = a_{ij} + b_j$: each
# $b_j$ is used once per row $i$. With $g = \partial L/\partial o$, the chain rule sums over
# those uses, and $\partial o_{ij}/\partial b_j = 1$:
#
# $$\frac{\partial L}{\partial b_j} = \sum_i \frac{\partial L}{\partial o_{ij}}\,\frac{\partial o_{ij}}{\partial b_j} = \sum_i g_{ij}$$
#
# So `g`, which has the *output's* shape, is summed back wherever broadcasting reused an input:
#
# - over the leading axes broadcasting **added** (input (3,) used as (2, 3): sum axis 0);
# - over the axes where the input had **size 1** but the output did not, keeping them as
#   size 1 (input (3, 1) used as (3, 4): sum axis 1 with `keepdims=True`).
#
# Write `unbroadcast(grad, shape)` returning an array of exactly `shape`.

# %% nbgrader={"grade": false, "grade_id": "unbroadcast", "locked": false, "schema_version": 3, "solution": true, "task": false}
def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes broadcasting added or stretched, so it has ``shape``."""
    ### BEGIN SOLUTION
    shape = tuple(shape)
    added = grad.ndim - len(shape)
    if added:
        grad = grad.sum(axis=tuple(range(added)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_unbroadcast", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""unbroadcast: the gradients of a broadcast add, for both operands, equal torch's."""


def check_add(a_shape, b_shape, seed):
    """unbroadcast(g, shape) of each operand equals torch's gradient of sum((a + b) * g)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(a_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(b_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(torch.broadcast_shapes(a_shape, b_shape), dtype=torch.float64, generator=gen)
    ((a + b) * g).sum().backward()
    for shape, want in ((a_shape, a.grad), (b_shape, b.grad)):
        ours = unbroadcast(g.numpy(), shape)
        checks.assert_close(ours, want, name=f"unbroadcast to {shape} from {tuple(g.shape)}")


check_add((2, 3), (3,), seed=0)  # an added leading axis
check_add((4, 1), (4, 5), seed=1)  # a stretched size-1 axis, kept
check_add((3, 1, 5), (4, 1), seed=2)  # both: added, and stretched in the middle
check_add((1, 4), (3, 4), seed=3)  # a leading 1 is stretched, not added
check_add((1,), (4, 2), seed=4)  # a 1 that is stretched and an axis that is added
check_add((1, 2, 1), (5, 1, 3), seed=5)  # each operand stretched along other axes
check_add((), (3,), seed=6)  # a scalar
### BEGIN HIDDEN TESTS
for i, (a_shape, b_shape) in enumerate(
    [((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((5, 1, 1), (1, 2, 1)), ((), (2, 2)), ((3, 1), (1, 6))]
):
    check_add(a_shape, b_shape, seed=10 + i)
    check_add(b_shape, a_shape, seed=20 + i)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 3 · the backward of a sum over axes: `sum_backward`
#
# The other direction: `x.sum(axis)` *removes* axes. For $s_i = \sum_j x_{ij}$ (x (2, 3),
# `axis=1`), $\partial s_k/\partial x_{ij}$ is 1 if $k = i$ and 0 otherwise, so
#
# $$\frac{\partial L}{\partial x_{ij}} = \sum_k \frac{\partial L}{\partial s_k}\,\frac{\partial s_k}{\partial x_{ij}} = g_i$$
#
# every element receives the gradient of the one sum it went into. The backward of a
# reduction is a broadcast: put the summed axes back as size 1 (unless `keepdims=True`
# already kept them: `np.expand_dims` takes a tuple of axes), then broadcast to `x`'s
# shape (`np.broadcast_to`). `axis` may be `None` (all axes), an int, a negative int or a
# tuple.

# %% nbgrader={"grade": false, "grade_id": "sum_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sum_backward(grad_out, shape, axis=None, keepdims=False):
    """Gradient of ``x.sum(axis, keepdims)`` with respect to ``x`` of ``shape``."""
    ### BEGIN SOLUTION
    ndim = len(shape)
    if axis is None:
        axes = tuple(range(ndim))
    else:
        axes = tuple(sorted(a % ndim for a in ((axis,) if isinstance(axis, int) else axis)))
    if not keepdims:
        grad_out = np.expand_dims(grad_out, axes)
    return np.broadcast_to(grad_out, shape)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_sum_backward", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""sum_backward: equals torch's gradient of x.sum(axis, keepdims)."""


def torch_sum_grad(shape, axis, keepdims, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=gen, requires_grad=True)
    dims = tuple(range(len(shape))) if axis is None else axis
    out = x.sum(dim=dims, keepdim=keepdims)
    g = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    (out * g).sum().backward()
    ours = sum_backward(g.numpy(), shape, axis=axis, keepdims=keepdims)
    checks.assert_close(ours, x.grad, name=f"sum_backward for {shape}, {axis=}, {keepdims=}")


torch_sum_grad((3, 4), 1, False, seed=0)
torch_sum_grad((3, 4), None, False, seed=1)
torch_sum_grad((4, 2, 3), (2, 0), True, seed=6)  # keepdims kept the axes: nothing to put back
torch_sum_grad((4, 3, 2), (2, 1), False, seed=7)  # axes given out of order
torch_sum_grad((3, 5, 2), -2, False, seed=8)  # a negative axis
torch_sum_grad((3, 4), 0, True, seed=9)
torch_sum_grad((2, 5), None, True, seed=10)
### BEGIN HIDDEN TESTS
torch_sum_grad((2, 3, 4), (0, 2), True, seed=2)
torch_sum_grad((2, 3, 4), -1, False, seed=3)
torch_sum_grad((2, 3, 4), (2, 0), False, seed=4)
torch_sum_grad((5,), 0, True, seed=5)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 4 · the backward of `a * b`
#
# Element by element it is the warm-up's rule: $o_{ij} = a_{ij} b_{ij}$, so
# $\partial o_{ij}/\partial a_{ij} = b_{ij}$ and no other output depends on $a_{ij}$:
#
# $$\frac{\partial L}{\partial a} = g \odot b \qquad \frac{\partial L}{\partial b} = g \odot a$$
#
# ($\odot$: element-wise). The operands may have been broadcast against each other, so each
# is then summed back to its input's shape with your `unbroadcast`.

# %% nbgrader={"grade": false, "grade_id": "mul_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def mul_backward(a, b, grad_out):
    """Gradients of ``a * b`` with respect to ``a`` and ``b``: a tuple of two arrays."""
    ### BEGIN SOLUTION
    return unbroadcast(grad_out * b, a.shape), unbroadcast(grad_out * a, b.shape)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_mul_backward", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""mul_backward: equals torch's gradients, with and without broadcasting."""


def torch_mul_grads(a_shape, b_shape, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(a_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(b_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(torch.broadcast_shapes(a_shape, b_shape), dtype=torch.float64, generator=gen)
    ((a * b) * g).sum().backward()
    ours = mul_backward(a.detach().numpy(), b.detach().numpy(), g.numpy())
    assert isinstance(ours, tuple) and len(ours) == 2, "return (grad_a, grad_b)"
    checks.assert_close(ours[0], a.grad, name=f"grad_a for shapes {a_shape} * {b_shape}")
    checks.assert_close(ours[1], b.grad, name=f"grad_b for shapes {a_shape} * {b_shape}")


torch_mul_grads((3, 4), (3, 4), seed=0)
torch_mul_grads((3, 4), (4,), seed=1)
torch_mul_grads((4,), (3, 4), seed=5)  # the same shapes, the other way round
torch_mul_grads((3, 1, 5), (4, 1), seed=6)
### BEGIN HIDDEN TESTS
torch_mul_grads((2, 1, 4), (3, 1), seed=2)
torch_mul_grads((1,), (5, 2), seed=3)
torch_mul_grads((2, 3), (2, 3), seed=4)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 5 · the backward of a (batched) matrix product
#
# For `out = a @ b` with `a` (n, k) and `b` (k, m):
# $o_{ij} = \sum_k a_{ik} b_{kj}$. The entry $a_{ik}$ is used in every $o_{ij}$ of row $i$,
# with $\partial o_{ij}/\partial a_{ik} = b_{kj}$; $b_{kj}$ in every $o_{ij}$ of column $j$,
# with $\partial o_{ij}/\partial b_{kj} = a_{ik}$. Summing over the uses:
#
# $$\frac{\partial L}{\partial a_{ik}} = \sum_j g_{ij} b_{kj} = (g\, b^{\top})_{ik} \qquad \frac{\partial L}{\partial b_{kj}} = \sum_i a_{ik} g_{ij} = (a^{\top} g)_{kj}$$
#
# Check the shapes: (n, m)(m, k) = (n, k) like `a`. With batches, `a` is (..., n, k) and the
# transposes swap only the **last two** axes (`x.swapaxes(-1, -2)`, not `x.T`, which would
# reverse the batch axes too). Batch axes may broadcast (a (2, 1, n, k) @ b (5, k, m)),
# so finish with `unbroadcast`.

# %% nbgrader={"grade": false, "grade_id": "matmul_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def matmul_backward(a, b, grad_out):
    """Gradients of ``a @ b`` (at least 2-D each) with respect to ``a`` and ``b``."""
    ### BEGIN SOLUTION
    grad_a = grad_out @ b.swapaxes(-1, -2)  # (..., n, m) @ (..., m, k) -> (..., n, k)
    grad_b = a.swapaxes(-1, -2) @ grad_out  # (..., k, n) @ (..., n, m) -> (..., k, m)
    return unbroadcast(grad_a, a.shape), unbroadcast(grad_b, b.shape)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_matmul_backward", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""matmul_backward: equals torch's gradients in 2-D and with (broadcast) batches."""


def torch_matmul_grads(a_shape, b_shape, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(a_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(b_shape, dtype=torch.float64, generator=gen, requires_grad=True)
    out = a @ b
    g = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    (out * g).sum().backward()
    grad_a, grad_b = matmul_backward(a.detach().numpy(), b.detach().numpy(), g.numpy())
    checks.assert_close(grad_a, a.grad, name=f"grad_a for {a_shape} @ {b_shape}")
    checks.assert_close(grad_b, b.grad, name=f"grad_b for {a_shape} @ {b_shape}")


torch_matmul_grads((3, 4), (4, 5), seed=0)
torch_matmul_grads((2, 3, 4), (2, 4, 5), seed=1)
torch_matmul_grads((5, 5), (5, 5), seed=5)  # square: a transpose forgotten still fits
torch_matmul_grads((3, 1, 2, 5), (4, 5, 3), seed=6)  # batch axes stretched and added
torch_matmul_grads((2, 5), (3, 5, 4), seed=7)  # a matrix against a batch
### BEGIN HIDDEN TESTS
torch_matmul_grads((4, 4), (4, 4), seed=2)
torch_matmul_grads((2, 1, 3, 4), (5, 4, 2), seed=3)
torch_matmul_grads((3, 4), (6, 4, 2), seed=4)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 6 · softmax and cross-entropy, backward together
#
# A language model's loss is the mean, over $N$ positions, of $-\log \mathrm{softmax}(z)_t$
# where $t$ is the right next token. Differentiating through the softmax and the log
# separately works but is slow and loses precision; together they collapse. At one position,
# with $p = \mathrm{softmax}(z)$, $p_v = e^{z_v} / \sum_w e^{z_w}$:
#
# $$\ell = -\log p_t = -z_t + \log \sum_w e^{z_w} \qquad \frac{\partial \ell}{\partial z_v} = -[v = t] + \frac{e^{z_v}}{\sum_w e^{z_w}} = p_v - [v = t]$$
#
# ($[v = t]$ is 1 for the target, else 0: the one-hot vector). The mean over $N$ positions
# divides each position's gradient by $N$:
#
# $$\frac{\partial L}{\partial z} = \frac{\mathrm{softmax}(z) - \mathrm{onehot}(t)}{N}$$
#
# Write it for `logits` of shape (..., V) and integer `targets` of shape (...): $N$ is the
# number of positions (`targets.size`). Compute the softmax stably (chapter 00).

# %% nbgrader={"grade": false, "grade_id": "softmax_cross_entropy_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax_cross_entropy_backward(logits, targets):
    """Gradient of the mean cross-entropy with respect to ``logits`` (..., V)."""
    ### BEGIN SOLUTION
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = exp / exp.sum(axis=-1, keepdims=True)
    flat = probs.reshape(-1, logits.shape[-1])  # (N, V), a view into probs
    flat[np.arange(flat.shape[0]), np.asarray(targets).reshape(-1)] -= 1.0
    return probs / flat.shape[0]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_softmax_cross_entropy_backward", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""softmax_cross_entropy_backward: equals torch's gradient of F.cross_entropy (mean)."""


def torch_ce_grad(logits_np, targets_np):
    logits = torch.tensor(logits_np, requires_grad=True)
    targets = torch.tensor(targets_np)
    V = logits.shape[-1]
    torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)).backward()
    return logits.grad.numpy()


rng = np.random.default_rng(0)
logits = rng.normal(size=(4, 5))
targets = np.array([0, 3, 4, 1])
ours = softmax_cross_entropy_backward(logits.copy(), targets)
checks.assert_close(ours, torch_ce_grad(logits, targets), name="the gradient for (4, 5) logits")
logits = rng.normal(size=(3, 2, 6))
targets = rng.integers(0, 6, size=(3, 2))
checks.assert_close(softmax_cross_entropy_backward(logits.copy(), targets),
                    torch_ce_grad(logits, targets), name="the gradient for (3, 2, 6) logits")
big = np.array([[0.0, -800.0, 900.0], [-2.0, -2.0, -2.0]])
checks.assert_close(softmax_cross_entropy_backward(big.copy(), np.array([0, 2])),
                    torch_ce_grad(big, np.array([0, 2])), name="the gradient for large logits")
### BEGIN HIDDEN TESTS
logits = rng.normal(size=(2, 3, 7))
targets = rng.integers(0, 7, size=(2, 3))
checks.assert_close(softmax_cross_entropy_backward(logits.copy(), targets),
                    torch_ce_grad(logits, targets), name="the gradient for (2, 3, 7) logits")
big = np.array([[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0]])
checks.assert_close(softmax_cross_entropy_backward(big.copy(), np.array([2, 1])),
                    torch_ce_grad(big, np.array([2, 1])), name="the gradient for extreme logits")
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 7 · the order of the backward pass
#
# `backward()` must run a tensor's rule only once its gradient is complete, i.e. after every
# tensor that *uses* it has run its own rule. Listing the graph so that each tensor comes
# after all of its inputs (a *topological order*) and walking it backwards does exactly that.
#
# Write `topological_order(root)`: every tensor `root` depends on (follow `t._parents`),
# each listed **once**, each after all of its parents, `root` last. Don't recurse, as
# `Value.backward`'s `visit` did: a chain of 10,000 operations (an unrolled RNN, say) would
# exceed Python's recursion limit. Keep your own stack, and a set of tensors already visited.

# %% nbgrader={"grade": false, "grade_id": "topological_order", "locked": false, "schema_version": 3, "solution": true, "task": false}
def topological_order(root):
    """Every tensor ``root`` depends on, each after all of its parents, ``root`` last."""
    ### BEGIN SOLUTION
    order, visited = [], set()
    stack = [(root, False)]  # (tensor, are its parents listed already?)
    while stack:
        node, parents_listed = stack.pop()
        if parents_listed:
            order.append(node)
        elif node not in visited:
            visited.add(node)
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if p not in visited)
    return order
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_topological_order", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""topological_order: all nodes, once each, parents before children, root last."""


def check_order(root, graph, size):
    order = topological_order(root)
    assert isinstance(order, list), f"{graph}: return a list, got {type(order).__name__}"
    assert order and order[-1] is root, f"{graph}: the root must come last"
    assert len({id(t) for t in order}) == len(order), f"{graph}: a tensor is listed twice"
    position = {id(t): i for i, t in enumerate(order)}
    for t in order:
        for p in t._parents:
            assert id(p) in position, f"{graph}: an input of a {t._op!r} node is missing"
            assert position[id(p)] < position[id(t)], (
                f"{graph}: a {t._op!r} node comes before its input (a {p._op or 'leaf'!r})"
            )
    assert len(order) == size, f"{graph}: {len(order)} tensors listed, expected {size}"


a = ag.tensor(np.ones(3), requires_grad=True)
b = ag.tensor(np.full(3, 2.0), requires_grad=True)
c = a * b
check_order((c + c.exp()).sum(), "a, b, c = a*b, exp(c), c + exp(c), sum", 6)
e = a.exp()  # e reaches the product directly and through tanh: parents in both orders
check_order(e * e.tanh(), "e * tanh(e)", 4)
check_order(e.tanh() * e, "tanh(e) * e", 4)
h = a * b  # h used three times, at three depths, again in both orders
check_order(h * (h + h.tanh()), "h * (h + tanh(h))", 6)
check_order((h.tanh() + h) * h, "(tanh(h) + h) * h", 6)
chain = a
for _ in range(5_000):
    chain = chain.tanh()
check_order(chain, "a chain of 5,000 tanh (deeper than Python's recursion limit)", 5_001)
check_order(b, "a leaf", 1)
### BEGIN HIDDEN TESTS
x = ag.tensor(np.ones(2), requires_grad=True)
chain = x
for _ in range(10_000):
    chain = chain * 1.0
check_order(chain, "x, 10,000 products, and 10,000 scalar constants", 20_001)
leaf = ag.tensor(np.ones(2), requires_grad=True)
check_order(leaf, "another leaf", 1)
k = x.tanh()
check_order(k * x + x * k.exp(), "k * x + x * exp(k)", 6)
check_order(k.exp() * x + x * k, "exp(k) * x + x * k", 6)
### END HIDDEN TESTS

# %% [markdown]
# ## Your parts, in the engine
#
# `course.autograd` is built from exactly these six parts. `ag.using(...)` swaps yours in
# for the duration of a `with` block, so the gradients below are computed by **your**
# code: the same MLP loss, differentiated by your engine, by `torch.autograd` and by
# `tf.GradientTape`, from the same weights.

# %%
rng = np.random.default_rng(SEED)
n_in, n_out = 8, 4
weights = {
    "W1": rng.normal(scale=0.5, size=(n_in, HIDDEN)), "b1": np.zeros(HIDDEN),
    "W2": rng.normal(scale=0.5, size=(HIDDEN, n_out)), "b2": np.zeros(n_out),
}
inputs, labels = rng.normal(size=(BATCH, n_in)), rng.integers(0, n_out, size=BATCH)


def mlp_loss(params, x, y, lib):
    """The same 2-layer MLP in three libraries: tanh hidden layer, mean cross-entropy."""
    if lib == "ours":
        hidden = (x @ params["W1"] + params["b1"]).tanh()
        return ag.cross_entropy(hidden @ params["W2"] + params["b2"], y)
    if lib == "torch":
        hidden = torch.tanh(x @ params["W1"] + params["b1"])
        return torch.nn.functional.cross_entropy(hidden @ params["W2"] + params["b2"], y)
    hidden = tf.tanh(x @ params["W1"] + params["b1"])
    logits = hidden @ params["W2"] + params["b2"]
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))


yours = dict(unbroadcast=unbroadcast, sum_backward=sum_backward, mul_backward=mul_backward,
             matmul_backward=matmul_backward,
             softmax_cross_entropy_backward=softmax_cross_entropy_backward,
             topological_order=topological_order)
with ag.using(**yours):
    ours = {k: ag.tensor(v, requires_grad=True) for k, v in weights.items()}
    mlp_loss(ours, ag.tensor(inputs), labels, "ours").backward()

theirs = {k: torch.tensor(v, requires_grad=True) for k, v in weights.items()}
mlp_loss(theirs, torch.tensor(inputs), torch.tensor(labels), "torch").backward()

variables = {k: tf.Variable(v) for k, v in weights.items()}
with tf.GradientTape() as tape:
    tf_loss = mlp_loss(variables, tf.constant(inputs), tf.constant(labels), "tf")
tf_grads = dict(zip(variables, tape.gradient(tf_loss, list(variables.values()))))

print(f"{'param':>6} {'|ours - torch|':>15} {'|ours - tf|':>13}")
for k in weights:
    d_torch = np.abs(ours[k].grad - theirs[k].grad.numpy()).max()
    d_tf = np.abs(ours[k].grad - tf_grads[k].numpy()).max()
    print(f"{k:>6} {d_torch:15.2e} {d_tf:13.2e}")
    checks.assert_close(ours[k].grad, theirs[k].grad, atol=1e-10, name=f"d loss / d {k}")

# %% [markdown]
# Differences near $10^{-16}$ are float64 rounding: three libraries, one answer.
#
# ## Checking gradients without a reference: finite differences
#
# With no other framework at hand, compare against the definition of the derivative:
# $\frac{f(x + \epsilon) - f(x - \epsilon)}{2\epsilon}$, one element at a time. It is slow
# (two forward passes per element) but needs no backward rule at all, which makes it the
# test of last resort for every new operation. `ag.gradcheck` does it in float64.

# %%
small = {k: ag.tensor(v[:3, :5] if v.ndim == 2 else v[:5], requires_grad=True)
         for k, v in {"W1": weights["W1"], "b1": weights["b1"]}.items()}
x_small = ag.tensor(inputs[:6, :3])


def hidden_layer(W1, b1):
    return (x_small @ W1 + b1).tanh()


with ag.using(**yours):
    print("gradcheck passed:", ag.gradcheck(hidden_layer, [small["W1"], small["b1"]]))

# %% [markdown]
# ## What the engine recorded
#
# The graph of one small expression, inputs on the left, the loss on the right. Orange
# boxes are operations (their output shape below), blue boxes are leaves.

# %%
W = ag.tensor(rng.normal(size=(3, 2)), requires_grad=True)
bias = ag.tensor(np.zeros(2), requires_grad=True)
xb = ag.tensor(rng.normal(size=(4, 3)))
small_loss = ag.cross_entropy((xb @ W + bias).tanh(), np.array([0, 1, 1, 0]))
viz.draw_graph(small_loss, names={id(W): "W", id(bias): "b", id(xb): "x"})
plt.show()

# %% [markdown]
# ## Training with your engine, step for step with PyTorch
#
# The same MLP, the same initial weights, the same batches, plain SGD: if every backward
# rule is right, the two loss curves are the same curve. Data: three interleaved spirals
# in 2-D, generated here (no download).

# %%
def spirals(n_per_class, n_classes=3, seed=SEED):
    """Points on ``n_classes`` noisy spiral arms in 2-D, and their arm labels."""
    gen = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.05, 1.0, n_per_class), n_classes)
    label = np.repeat(np.arange(n_classes), n_per_class)
    angle = label * 2 * np.pi / n_classes + radius * 4 + gen.normal(scale=0.2, size=radius.size)
    points = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    return points, label


points, arms = spirals(200)
init = {
    "W1": rng.normal(scale=1.0, size=(2, HIDDEN)), "b1": np.zeros(HIDDEN),
    "W2": rng.normal(scale=0.3, size=(HIDDEN, 3)), "b2": np.zeros(3),
}
batches = [rng.choice(len(points), size=BATCH, replace=False) for _ in range(MLP_STEPS)]
lr = 0.5

ours = {k: ag.tensor(v, requires_grad=True) for k, v in init.items()}
sgd = ag.SGD(list(ours.values()), lr=lr)
theirs = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
torch_sgd = torch.optim.SGD(list(theirs.values()), lr=lr)
curves = {"your engine": [], "PyTorch": []}
with ag.using(**yours):
    for idx in batches:
        sgd.zero_grad()
        loss = mlp_loss(ours, ag.tensor(points[idx]), arms[idx], "ours")
        loss.backward()
        sgd.step()
        curves["your engine"].append(loss.item())

        torch_sgd.zero_grad()
        loss = mlp_loss(theirs, torch.tensor(points[idx]), torch.tensor(arms[idx]), "torch")
        loss.backward()
        torch_sgd.step()
        curves["PyTorch"].append(loss.item())

ours_curve, torch_curve = np.array(curves["your engine"]), np.array(curves["PyTorch"])
print(f"largest relative difference over {MLP_STEPS} steps: "
      f"{np.max(np.abs(ours_curve - torch_curve) / torch_curve):.2e}")
viz.plot_losses(curves, title="the same MLP, two engines")
plt.show()

# %% [markdown]
# ## How fast is it?
#
# Our engine calls numpy once per operation; PyTorch calls its C++ kernels once per
# operation. On small layers the Python overhead dominates; on large ones both spend their
# time in the same matrix multiplications. Measure one training step of each, here and
# with `python benchmarks/autograd_mlp.py` (a 784→128→10 MLP at batch 256).

# %%
import timeit

idx = batches[0]
x_np, y_np = points[idx], arms[idx]
x_t, y_t = torch.tensor(x_np), torch.tensor(y_np)


def engine_step():
    sgd.zero_grad()
    mlp_loss(ours, ag.tensor(x_np), y_np, "ours").backward()
    sgd.step()


def torch_step():
    torch_sgd.zero_grad()
    mlp_loss(theirs, x_t, y_t, "torch").backward()
    torch_sgd.step()


repeats = 3 if SMOKE else 20
engine_us = min(timeit.repeat(engine_step, number=10, repeat=repeats)) / 10 * 1e6
torch_us = min(timeit.repeat(torch_step, number=10, repeat=repeats)) / 10 * 1e6
print(f"one SGD step: engine {engine_us:.0f} µs, PyTorch eager {torch_us:.0f} µs "
      f"(ratio {engine_us / torch_us:.2f})")

# %% [markdown]
# ## What's next
#
# PyTorch and TensorFlow differ in *when* they record the graph (as the code runs, or by
# tracing a function), not in how they use it. Chapter 03 turns text into the integer
# tensors a GPT trains on, with identical batches for both frameworks.

# %% [markdown]
# ## Check yourself
#
# <!-- written by `python -m autograde release` from solutions/chapters.toml -->
# Answer each in a few sentences, from what this chapter showed you; where you are not sure,
# change the code and see.
#
# 1. A bias of shape (3,) is added to activations of shape (8, 3). Why is its gradient the
#    sum of the upstream gradient over axis 0, and what would be wrong if the engine just
#    reshaped it?
# 2. `backward()` walks a topological order in reverse. Give a small graph where visiting a
#    tensor before all of its users have run would produce a wrong gradient, and say what
#    the gradient would miss.
# 3. Finite differences need no backward rule, so why not train with them? Estimate how many
#    forward passes one gradient of a 10,000-parameter model would cost each way.
