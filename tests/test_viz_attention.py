"""course.viz attention plots and widget: clear errors, the right matrix, sliders that fit."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from course import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _maps(n_layer=2, n_head=3, T=5, seed=0):
    """Random causal attention maps: each row a distribution over the keys up to it."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_layer, n_head, T, T))
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


TOKENS = ["T", "o", " ", "b", "\n"]


def test_token_labels_make_whitespace_visible():
    assert [viz.token_label(t) for t in TOKENS] == ["T", "o", "␣", "b", "⏎"]
    assert viz.token_label(" the") == "␣the" and viz.token_label(42) == "42"


@pytest.mark.parametrize("layer, head", [(0, 0), (1, 2), (0, 1)])
def test_plot_attention_shows_the_chosen_head(layer, head):
    maps = _maps()
    ax = viz.plot_attention(maps, TOKENS, layer, head)
    (image,) = ax.get_images()
    np.testing.assert_array_equal(np.asarray(image.get_array()), maps[layer, head])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["T", "o", "␣", "b", "⏎"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["T", "o", "␣", "b", "⏎"]
    assert ax.get_title() == f"layer {layer}, head {head}"


def test_plot_attention_outlines_the_chosen_query_row():
    ax = viz.plot_attention(_maps(), TOKENS, 1, 0, position=3)
    (outline,) = ax.patches
    assert outline.get_xy() == (-0.5, 2.5) and outline.get_height() == 1
    assert outline.get_width() == 5, "the outline spans every key"
    assert not viz.plot_attention(_maps(), TOKENS, 1, 0).patches, "no position, no outline"


def test_plot_attention_draws_on_a_given_axis_and_accepts_lists():
    _, ax = plt.subplots()
    maps = _maps(1, 1, 3)
    assert viz.plot_attention(maps.tolist(), "abc", 0, 0, ax=ax) is ax
    np.testing.assert_array_equal(np.asarray(ax.get_images()[0].get_array()), maps[0, 0])


def test_plot_attention_row_shows_one_querys_weights():
    maps = _maps()
    ax = viz.plot_attention_row(maps, TOKENS, 1, 2, position=3)
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, maps[1, 2, 3])
    assert heights[4] == 0.0, "a causal map gives the future token no weight"
    assert "'b'" in ax.get_title()


@pytest.mark.parametrize(
    "maps, match",
    [
        (np.ones((3, 3)), r"\(n_layer, n_head, T, T\), got 2 dimension"),
        (np.ones((1, 2, 3, 3, 1)), "got 5 dimension"),
        (np.ones((1, 2, 5, 4)), "square .* got 5 x 4"),
        (np.ones((0, 2, 5, 5)), "empty"),
    ],
)
def test_bad_maps_are_named(maps, match):
    for plot in (
        lambda: viz.plot_attention(maps, TOKENS, 0, 0),
        lambda: viz.plot_attention_row(maps, TOKENS, 0, 0, 0),
        lambda: viz.attention_widget(maps, TOKENS),
    ):
        with pytest.raises(ValueError, match=match):
            plot()


def test_tokens_must_match_the_maps():
    with pytest.raises(ValueError, match="tokens has 4 entries, but .* T = 5"):
        viz.plot_attention(_maps(), TOKENS[:4], 0, 0)
    with pytest.raises(ValueError, match="tokens has 6 entries"):
        viz.attention_widget(_maps(), TOKENS + ["x"])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(layer=2, head=0), ValueError, r"layer must be in 0\.\.1 \(2 layers\), got 2"),
        (dict(layer=-1, head=0), ValueError, "layer must be in 0..1"),
        (dict(layer=0, head=3), ValueError, r"head must be in 0\.\.2 \(3 heads\), got 3"),
        (dict(layer=0, head=0, position=5), ValueError, r"position must be in 0\.\.4"),
        (dict(layer=0, head=0, position=-1), ValueError, "position must be in 0..4"),
        (dict(layer=0.0, head=0), TypeError, "layer must be an int, got float"),
        (dict(layer=0, head=True), TypeError, "head must be an int, got bool"),
    ],
)
def test_indices_out_of_range_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        viz.plot_attention(_maps(), TOKENS, **kwargs)
    with pytest.raises(error, match=match):
        viz.plot_attention_row(_maps(), TOKENS, **{"position": 0, **kwargs})


def test_numpy_integers_are_valid_indices():
    ax = viz.plot_attention(_maps(), TOKENS, np.int64(1), np.int32(2), np.int64(4))
    np.testing.assert_array_equal(np.asarray(ax.get_images()[0].get_array()), _maps()[1, 2])


def _sliders(widget) -> dict[str, widgets.IntSlider]:
    return {c.description: c for c in widget.children if isinstance(c, widgets.IntSlider)}


@pytest.mark.parametrize("n_layer, n_head, T", [(2, 3, 5), (1, 1, 1), (4, 2, 7)])
def test_widget_sliders_span_the_maps(n_layer, n_head, T):
    maps = _maps(n_layer, n_head, T)
    widget = viz.attention_widget(maps, "abcdefg"[:T])
    sliders = _sliders(widget)
    assert set(sliders) == {"layer", "head", "position"}
    for name, size in [("layer", n_layer), ("head", n_head), ("position", T)]:
        assert (sliders[name].min, sliders[name].max) == (0, size - 1), name
    assert sliders["position"].value == T - 1, "starts at the last query: it sees every key"


def test_widget_redraws_the_chosen_head_and_row():
    maps = _maps()
    widget = viz.attention_widget(maps, TOKENS)
    sliders = _sliders(widget)
    sliders["layer"].value, sliders["head"].value, sliders["position"].value = 1, 2, 1
    heatmap, row = widget.result.axes
    np.testing.assert_array_equal(np.asarray(heatmap.get_images()[0].get_array()), maps[1, 2])
    np.testing.assert_allclose([bar.get_height() for bar in row.patches], maps[1, 2, 1])
    assert heatmap.patches[0].get_xy() == (-0.5, 0.5), "the chosen query's row is outlined"
    assert not plt.get_fignums(), "the widget closes its figures once shown"


def test_short_labels_stand_upright_and_long_ones_turn():
    chars = viz.plot_attention(_maps(), TOKENS, 0, 0)
    assert {t.get_rotation() for t in chars.get_xticklabels()} == {0.0}
    words = viz.plot_attention(_maps(), [" the", " king", ",", " and", "\n"], 0, 0)
    assert {t.get_rotation() for t in words.get_xticklabels()} == {90.0}
