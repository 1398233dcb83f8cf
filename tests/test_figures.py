"""Figures: input images in gray or colour, the thesis's numbering, identical curves made
visible, and the report's document rendering."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.lines import Line2D

from pgsweep import plots
from pgsweep.analyses.features import FeatureMaps
from pgsweep.report.document import Document, Figure


def _images_in(figure) -> list[np.ndarray]:
    return [image.get_array() for ax in figure.axes for image in ax.get_images()]


@pytest.mark.parametrize("channels", [1, 3])
def test_every_input_image_figure_takes_gray_or_rgb(channels):
    rng = np.random.default_rng(0)
    face = rng.random((channels, 12, 12)).astype(np.float32)
    expected_ndim = 2 if channels == 1 else 3  # RGB stays in colour: (H, W, 3) for imshow

    diagrams = plots.network_diagrams(np.stack([face, face]), rng.random((2, 5)), np.array([0, 1]), ["a", "b"],
                                      np.array([0, 0, 1, 1, 1]), ["act1", "act2"])
    maps = FeatureMaps(rng.random((3, 8, 8)), rng.normal(size=(3, 8, 8)), 1, 2, 3, 0.5, (1, 2, 6, 7))
    feature = plots.characteristic_feature(face, maps, "a face", 1)
    examples = plots.adversarial_examples(np.stack([np.stack([face, face])]), [["x", "y"]], ["a -> b"])
    for figure in (diagrams, feature, examples):
        faces = [a for a in _images_in(figure) if a.shape[:2] == (12, 12)]
        assert faces and all(a.ndim == expected_ndim for a in faces)
    if channels == 3:
        np.testing.assert_allclose(plots.image_pixels(face)[..., 1], face[1])
    with pytest.raises(ValueError, match="3, H, W"):
        plots.image_pixels(np.zeros((2, 4, 4)))
    # filters are named the thesis's way in the features figure
    titles = [ax.get_title() for ax in feature.axes]
    assert {"filter 1-1", "filter 1-2", "filter 1-3"} <= set(titles)


def _curves(pg_equals_loss: bool) -> pd.DataFrame:
    rows = []
    steps = np.arange(4)
    for score in ("pg_softmax", "loss_gradient"):
        for direction in ("strongest", "weakest"):
            shift = 0.1 if score == "loss_gradient" and not pg_equals_loss else 0.0
            values = np.clip(steps / 3 + shift, 0, 1) if direction == "strongest" else steps / 9
            rows += [{"class": 0, "class_name": "subject15", "score": score, "direction": direction, "seed": -1,
                      "step": s, "class_error": v, "overall_error": v / 2, "class_images": 3, "images": 41}
                     for s, v in zip(steps, values)]
    for seed in range(2):
        rows += [{"class": 0, "class_name": "subject15", "score": "random", "direction": "random", "seed": seed,
                  "step": s, "class_error": s / 5, "overall_error": s / 6, "class_images": 3, "images": 41}
                 for s in steps]
    return pd.DataFrame(rows)


def test_identical_knockout_curves_are_drawn_visibly_and_named():
    figure = plots.knockout_curves(_curves(pg_equals_loss=True), "pg_softmax")
    labels = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert "loss gradient dL/da, strongest first (= PG (softmax), strongest first)" in labels
    ax = figure.axes[0]
    repeated = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(repeated) == 1 and repeated[0].get_marker() == "o"
    assert not ax.get_legend()  # the legend sits under the axes, off the data
    different = plots.knockout_curves(_curves(pg_equals_loss=False), "pg_softmax")
    assert not any("(= " in text.get_text() for legend in different.legends for text in legend.get_texts())


def test_thesis_knockout_is_one_panel_per_identity_with_few_lines():
    curves = pd.concat([_curves(True).assign(**{"class": c, "class_name": f"subject{c:02d}"}) for c in (7, 10, 12, 14, 15)])
    figure = plots.thesis_knockout(curves, "pg_softmax", "class_error", [15, 14, 7, 10, 12])
    axes = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["subject15", "subject14", "subject07", "subject10", "subject12"]
    assert all(len(ax.get_lines()) <= 10 for ax in axes)
    legend = figure.legends[0]
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels[0].startswith("PG strongest first") and labels[1].startswith("PG weakest first")
    assert labels[2:] == ["random orders (mean)", "random orders (range)"]
    # the directions are told apart by line style, the identity by the panel's title
    styles = [h.get_linestyle() for h in legend.legend_handles[:2]]
    assert all(isinstance(h, Line2D) for h in legend.legend_handles[:3]) and styles == ["-", "--"]
    assert "filters knocked out" in axes[len(axes) // 2].get_xlabel() and "class error" in axes[0].get_ylabel()


def test_heatmap_names_filters_from_one_with_axis_titles():
    table = pd.DataFrame({"class_name": np.repeat(["a", "b"], 3), "filter": ["1-1", "1-2", "2-1"] * 2,
                          "pg_softmax": np.arange(1, 7) / 10.0, "pg_logit": np.arange(1, 7)})
    figure = plots.ranking_heatmap(table, ("pg_softmax", "pg_logit"))
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1-1", "1-2", "2-1"]
    assert "layer-unit" in ax.get_xlabel() and ax.get_ylabel() == "class"


def test_a_document_renders_to_markdown_and_self_contained_html():
    doc = Document()
    doc.heading(2, "1. A claim")
    doc.quote("what the thesis says")
    doc.table(["a", "b"], [["x|y", 1]])
    doc.paragraph("**Verdict: reproduced.** `code` and *words*")
    doc.figure(Figure("f.png", b"\x89PNG...", "a caption"))
    text = doc.markdown()
    assert "## 1. A claim" in text and "> what the thesis says" in text and "| x/y | 1 |" in text
    assert "![a caption](figures/f.png)" in text
    html = doc.html("t")
    assert "<strong>Verdict: reproduced.</strong> <code>code</code> and <em>words</em>" in html
    assert 'src="data:image/png;base64,iVBORy4uLg=="' in html
