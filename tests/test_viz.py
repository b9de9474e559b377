"""course.viz: the graph layout is right, and the pictures draw without error."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from course import autograd as ag  # noqa: E402
from course import viz  # noqa: E402


def test_graph_layers_put_every_node_after_its_inputs():
    a = ag.tensor(np.ones(3), requires_grad=True)
    b = ag.tensor(np.ones(3), requires_grad=True)
    c = a * b
    loss = (c + c.exp()).sum()
    layers = viz.graph_layers(loss)
    depth = {id(node): i for i, layer in enumerate(layers) for node in layer}
    assert len(depth) == 6, "a, b, a*b, exp, add, sum: each once"
    assert layers[-1] == [loss]
    assert {id(a), id(b)} == {id(n) for n in layers[0]}
    for layer in layers:
        for node in layer:
            for parent in node._parents:
                assert depth[id(parent)] < depth[id(node)]
    # exp(c) sits one layer after c, and the add one after exp: the longest path decides.
    assert [n._op for n in layers[2]] == ["exp"] and [n._op for n in layers[3]] == ["add"]


def test_graph_layers_handle_a_long_chain():
    x = ag.tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(3000):
        y = y.tanh()
    assert len(viz.graph_layers(y)) == 3001


def test_draw_graph_labels_leaves_and_operations():
    W = ag.tensor(np.ones((3, 2)), requires_grad=True)
    x = ag.tensor(np.ones((4, 3)))
    loss = (x @ W).tanh().sum()
    ax = viz.draw_graph(loss, names={id(W): "W"})
    texts = [t.get_text() for t in ax.texts]
    assert "W" in texts and "(4, 3)" in texts
    assert any(t.startswith("matmul") for t in texts) and any(t.startswith("sum") for t in texts)
    plt.close("all")


def test_plot_losses_draws_one_line_per_curve():
    ax = viz.plot_losses({"ours": [3.0, 2.0, 1.5], "torch": [3.0, 2.0, 1.4]})
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["ours", "torch"]
    assert list(lines[1].get_ydata()) == [3.0, 2.0, 1.4]
    plt.close("all")
