"""Pictures for the notebooks: loss curves and computation graphs.

matplotlib only (imported when a function is called), no framework: the graph drawer
draws ``course.autograd`` graphs (any node with ``_parents``, ``_op`` and ``shape``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def plot_losses(curves: Mapping[str, Sequence[float]], ax=None, title: str = "training loss"):
    """Overlay several loss curves (name → loss per step) on one axis; returns the axis."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    styles = ["-", "--", ":", "-."]
    for i, (name, losses) in enumerate(curves.items()):
        ax.plot(range(len(losses)), list(losses), styles[i % len(styles)], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    return ax


def graph_layers(root) -> list[list]:
    """The nodes ``root`` depends on, grouped by depth: inputs first, ``root`` last.

    A node's depth is one more than the deepest of its parents, so every edge points from
    a lower layer to a higher one and the drawing reads left to right like the forward pass.
    """
    from course.autograd import topological_order  # parents always come before children

    depth: dict[int, int] = {}
    layers: list[list] = []
    for node in topological_order(root):
        d = 1 + max((depth[id(p)] for p in node._parents), default=-1)
        depth[id(node)] = d
        if d == len(layers):
            layers.append([])
        layers[d].append(node)
    return layers


def draw_graph(root, names: Mapping[int, str] | None = None, ax=None):
    """Draw the computation graph behind ``root`` (a small one: a few dozen nodes at most).

    Leaves show their name from ``names`` (``{id(tensor): "W1"}``) or their shape; other
    nodes show the operation that made them. Returns the matplotlib axis.
    """
    import matplotlib.pyplot as plt

    layers = graph_layers(root)
    names = names or {}
    if ax is None:
        tallest = max(len(layer) for layer in layers)
        _, ax = plt.subplots(figsize=(1.8 * len(layers) + 1, 0.9 * tallest + 1))
    position = {}
    for x, layer in enumerate(layers):
        for i, node in enumerate(layer):
            position[id(node)] = (x, i - (len(layer) - 1) / 2)
    for layer in layers:
        for node in layer:
            x1, y1 = position[id(node)]
            for parent in node._parents:
                x0, y0 = position[id(parent)]
                ax.annotate(
                    "",
                    xy=(x1 - 0.3, y1),
                    xytext=(x0 + 0.3, y0),
                    arrowprops={"arrowstyle": "->", "color": "0.5"},
                )
    for layer in layers:
        for node in layer:
            x, y = position[id(node)]
            leaf = not node._parents
            label = names.get(id(node)) or (str(tuple(node.shape)) if leaf else node._op)
            ax.text(
                x,
                y,
                f"{label}\n{tuple(node.shape)}" if not leaf and node.shape else label,
                ha="center",
                va="center",
                fontsize=8,
                bbox={"boxstyle": "round", "fc": "#dbe9f6" if leaf else "#fde3c8", "ec": "0.4"},
            )
    half_height = max(len(layer) for layer in layers) / 2
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylim(-half_height - 0.5, half_height + 0.5)
    ax.axis("off")
    return ax
