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
# `loss.backward()` in PyTorch and `tape.gradient(loss, vars)` in TensorFlow do the same
# thing, and it is less magic than it looks. In this chapter you write the core of a
# reverse-mode autograd engine over numpy arrays, plug your parts into the course's
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
import matplotlib.pyplot as plt
import numpy as np
import torch

from course import autograd as ag
from course import checks, viz

tf = runtime.import_tensorflow()  # after Triton, which torch.optim may load (chapter 00)

# %% [markdown]
# ## A tour of the engine
#
# A `Tensor` wraps a numpy array. Operations build a graph; `backward()` fills `.grad`.

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
# the gradients of its uses. That is the first rule you will write.
#
# ## Exercise 1 · the backward of a broadcast sum: `unbroadcast`
#
# In `a + b`, the gradient flowing to each input is the upstream gradient `g` itself, but
# `g` has the *output's* shape. Where broadcasting stretched an input, sum `g` back:
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
"""unbroadcast: the gradient of a broadcast add equals torch's."""
rng = np.random.default_rng(0)


def torch_add_grads(a_shape, b_shape):
    """torch's gradients of sum((a + b) * g) for random a, b and upstream g."""
    a = torch.randn(a_shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(b_shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(torch.broadcast_shapes(a_shape, b_shape), dtype=torch.float64)
    ((a + b) * g).sum().backward()
    return g.numpy(), a.grad.numpy(), b.grad.numpy()


g, grad_a, grad_b = torch_add_grads((2, 3), (3,))
checks.assert_close(unbroadcast(g, (3,)), grad_b, name="unbroadcast to (3,) from (2, 3)")
checks.assert_close(unbroadcast(g, (2, 3)), grad_a, name="unbroadcast to the same shape")
g, grad_a, grad_b = torch_add_grads((3, 1), (3, 4))
checks.assert_close(unbroadcast(g, (3, 1)), grad_a, name="unbroadcast to (3, 1) from (3, 4)")
### BEGIN HIDDEN TESTS
for a_shape, b_shape in [((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((5, 1, 1), (1, 2, 1)), ((), (2, 2))]:
    g, grad_a, grad_b = torch_add_grads(a_shape, b_shape)
    checks.assert_close(unbroadcast(g, a_shape), grad_a, name=f"unbroadcast to {a_shape}")
    checks.assert_close(unbroadcast(g, b_shape), grad_b, name=f"unbroadcast to {b_shape}")
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 2 · the backward of a sum over axes: `sum_backward`
#
# The other direction: `x.sum(axis)` *removes* axes, and each element of `x` was added
# once into one output element, so it receives that element's gradient. The backward of a
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
### BEGIN HIDDEN TESTS
torch_sum_grad((2, 3, 4), (0, 2), True, seed=2)
torch_sum_grad((2, 3, 4), -1, False, seed=3)
torch_sum_grad((2, 3, 4), (2, 0), False, seed=4)
torch_sum_grad((5,), 0, True, seed=5)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 3 · the backward of `a * b`
#
# $\partial (ab)/\partial a = b$, so the gradient for `a` is `grad_out * b`, and for `b`
# it is `grad_out * a`; each summed back to its input's shape with your `unbroadcast`
# (the operands may have been broadcast against each other).

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
### BEGIN HIDDEN TESTS
torch_mul_grads((2, 1, 4), (3, 1), seed=2)
torch_mul_grads((1,), (5, 2), seed=3)
torch_mul_grads((2, 3), (2, 3), seed=4)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 4 · the backward of a (batched) matrix product
#
# For `out = a @ b` with `a` (n, k) and `b` (k, m):
# $\text{out}_{ij} = \sum_k a_{ik} b_{kj}$, so
#
# $$\frac{\partial L}{\partial a} = g\, b^{\top} \qquad \frac{\partial L}{\partial b} = a^{\top} g$$
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
### BEGIN HIDDEN TESTS
torch_matmul_grads((4, 4), (4, 4), seed=2)
torch_matmul_grads((2, 1, 3, 4), (5, 4, 2), seed=3)
torch_matmul_grads((3, 4), (6, 4, 2), seed=4)
### END HIDDEN TESTS

# %% [markdown]
# ## Exercise 5 · softmax and cross-entropy, backward together
#
# A language model's loss is the mean, over $N$ positions, of $-\log \mathrm{softmax}(z)_t$
# where $t$ is the right next token. Differentiating through the softmax and the log
# separately works but is slow and loses precision; together they collapse to
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
# ## Exercise 6 · the order of the backward pass
#
# `backward()` must run a tensor's rule only once its gradient is complete, i.e. after every
# tensor that *uses* it has run its own rule. Listing the graph so that each tensor comes
# after all of its inputs (a *topological order*) and walking it backwards does exactly that.
#
# Write `topological_order(root)`: every tensor `root` depends on (follow `t._parents`),
# each listed **once**, each after all of its parents, `root` last. Don't recurse: a chain
# of 10,000 operations (an unrolled RNN, say) would exceed Python's recursion limit. Keep
# your own stack, and a set of tensors already visited.

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


def check_order(root):
    order = topological_order(root)
    assert order and order[-1] is root, "the root must come last"
    assert len({id(t) for t in order}) == len(order), "a tensor is listed twice"
    position = {id(t): i for i, t in enumerate(order)}
    for t in order:
        for p in t._parents:
            assert id(p) in position, f"an input of a {t._op!r} node is missing"
            assert position[id(p)] < position[id(t)], f"{t._op!r} comes before one of its inputs"
    return order


a = ag.tensor(np.ones(3), requires_grad=True)
b = ag.tensor(np.full(3, 2.0), requires_grad=True)
c = a * b
diamond = (c + c.exp()).sum()  # c is used twice
assert len(check_order(diamond)) == 6, "a, b, c = a*b, exp(c), c + exp(c), sum: 6 tensors"
### BEGIN HIDDEN TESTS
x = ag.tensor(np.ones(2), requires_grad=True)
chain = x
for _ in range(10_000):
    chain = chain * 1.0
assert len(check_order(chain)) == 20_001, "x, 10,000 products, and 10,000 scalar constants"
leaf = ag.tensor(np.ones(2), requires_grad=True)
assert check_order(leaf) == [leaf], "a leaf's order is itself"
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
