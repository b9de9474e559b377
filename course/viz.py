"""Pictures for the notebooks: loss curves, computation graphs and attention maps.

matplotlib (and ipywidgets for the widget) only, imported when a function is called; no
framework: the graph drawer draws ``course.autograd`` graphs (any node with ``_parents``,
``_op`` and ``shape``), and the attention plots take numpy arrays (n_layer, n_head, T, T),
such as ``GPT.attention_maps(idx)`` in either framework, on any device
(``course.checks.to_numpy``).
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


# --------------------------------------------------------------------------------------
# Attention maps (chapter 04): numpy in, so this module never needs a framework
# --------------------------------------------------------------------------------------

# Whitespace tokens would be invisible as tick labels: show them as visible marks.
_VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥"}


def token_label(token) -> str:
    """A tick label for one token: whitespace made visible (" " -> "␣", "\\n" -> "⏎")."""
    text = token if isinstance(token, str) else str(token)
    return "".join(_VISIBLE.get(ch, ch) for ch in text)


def _check_index(name: str, value, size: int, what: str) -> int:
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not 0 <= value < size:
        raise ValueError(f"{name} must be in 0..{size - 1} ({size} {what}), got {value}")
    return int(value)


def _rotation(labels: list[str]) -> int:
    """Tick labels stand upright while they are short and few, else they turn sideways."""
    return 90 if len(labels) > 48 or max(map(len, labels), default=0) > 2 else 0


def check_attention_maps(maps, tokens):
    """``maps`` as a float numpy array (n_layer, n_head, T, T), after checking it fits
    ``tokens`` (T of them); raises a ValueError that names what is wrong otherwise."""
    from course.checks import to_numpy  # a tensor on a GPU is copied to the CPU first

    maps = to_numpy(maps).astype(float)
    if maps.ndim != 4:
        raise ValueError(
            f"maps must have shape (n_layer, n_head, T, T), got {maps.ndim} dimension(s) "
            f"{maps.shape}; for one head's (T, T) map use maps[None, None]"
        )
    n_layer, n_head, T, S = maps.shape
    if T != S:
        raise ValueError(
            f"maps must be square in their last two dimensions (queries x keys, T x T), "
            f"got {T} x {S}"
        )
    if min(n_layer, n_head, T) == 0:
        raise ValueError(f"maps is empty: shape {maps.shape}")
    if len(tokens) != T:
        raise ValueError(f"tokens has {len(tokens)} entries, but the maps are over T = {T} tokens")
    return maps


def plot_attention(maps, tokens, layer: int, head: int, position: int | None = None, ax=None):
    """Heatmap of ``maps[layer, head]``: row t holds the weights query t gives each key.

    ``maps`` is (n_layer, n_head, T, T), a numpy array, a tensor on any device or anything
    ``np.asarray`` takes (``GPT.attention_maps(idx)``, say); ``tokens`` are the T tokens,
    shown as tick labels (queries down, keys across). ``position`` outlines that query's
    row. Returns the axis.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    maps = check_attention_maps(maps, tokens)
    n_layer, n_head, T, _ = maps.shape
    layer = _check_index("layer", layer, n_layer, "layers")
    head = _check_index("head", head, n_head, "heads")
    if position is not None:
        position = _check_index("position", position, T, "tokens")
    if ax is None:
        size = min(8.0, 2.0 + 0.25 * T)
        _, ax = plt.subplots(figsize=(size, size))
    ax.imshow(maps[layer, head], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    labels = [token_label(t) for t in tokens]
    ax.set_xticks(range(T), labels, fontsize=8, rotation=_rotation(labels))
    ax.set_yticks(range(T), labels, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(f"layer {layer}, head {head}")
    if position is not None:
        ax.add_patch(
            Rectangle((-0.5, position - 0.5), T, 1, fill=False, edgecolor="red", linewidth=1.5)
        )
    return ax


def plot_attention_row(maps, tokens, layer: int, head: int, position: int, ax=None):
    """Bar chart of one query's weights, ``maps[layer, head, position]``; returns the axis."""
    import matplotlib.pyplot as plt

    maps = check_attention_maps(maps, tokens)
    n_layer, n_head, T, _ = maps.shape
    layer = _check_index("layer", layer, n_layer, "layers")
    head = _check_index("head", head, n_head, "heads")
    position = _check_index("position", position, T, "tokens")
    if ax is None:
        _, ax = plt.subplots(figsize=(min(10.0, 2.0 + 0.3 * T), 3))
    ax.bar(range(T), maps[layer, head, position], color="tab:blue")
    labels = [token_label(t) for t in tokens]
    ax.set_xticks(range(T), labels, fontsize=8, rotation=_rotation(labels))
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("weight")
    ax.set_title(f"query {position} ({token_label(tokens[position])!r}) attends to")
    return ax


def attention_widget(maps, tokens):
    """Sliders for layer, head and query position over ``maps`` (n_layer, n_head, T, T):
    the head's heatmap beside the chosen query's weights. Returns an ipywidgets widget
    (display it, or leave it last in a cell); ``widget.result`` is the figure last drawn.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    maps = check_attention_maps(maps, tokens)
    n_layer, n_head, T, _ = maps.shape
    tokens = list(tokens)

    def draw(layer: int, head: int, position: int):
        fig, (left, right) = plt.subplots(
            1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1.3]}
        )
        plot_attention(maps, tokens, layer, head, position, ax=left)
        plot_attention_row(maps, tokens, layer, head, position, ax=right)
        fig.tight_layout()
        display(fig)
        plt.close(fig)  # shown once, by display; not again by the inline backend
        return fig

    def slider(description: str, size: int, value: int = 0):
        return widgets.IntSlider(
            value=value, min=0, max=size - 1, description=description, continuous_update=False
        )

    return widgets.interactive(
        draw,
        layer=slider("layer", n_layer),
        head=slider("head", n_head),
        position=slider("position", T, T - 1),
    )
