"""Thesis Table 4.1: each image's PG per filter drawn as the network, beside the image.
Reads the own-class rows of diagrams/image_scores.parquet (a column per filter)."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from pgsweep.plots.common import new_figure, show_image

# light (low) to dark (high): a low score stays visible against the white panel, unlike
# a gray scale whose low end is black
DIAGRAM_COLOURS = "YlGnBu"


def _network_diagram(ax, scores: np.ndarray, layer_index: np.ndarray, layers) -> None:
    """One image's filter scores as numbered circles (`layer-unit`: the column is the layer,
    the number the unit, both from 1), darker = higher."""
    top = scores.max() if scores.max() > 0 else 1.0
    tallest = max(np.bincount(layer_index))
    colours = colormaps[DIAGRAM_COLOURS]
    for j, _ in enumerate(layers):
        values = scores[layer_index == j]
        offset = (tallest - len(values)) / 2
        for i, value in enumerate(values):
            share = float(np.clip(value / top, 0, 1))
            ax.add_patch(Circle((j, offset + i), 0.42, color=colours(share), ec="0.45", lw=0.3))
            # the number in white where the fill is dark, so it reads on every colour
            ax.text(j, offset + i, str(i + 1), ha="center", va="center", fontsize=4.5,
                    color="white" if share > 0.6 else "black")
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylim(tallest - 0.4, -0.6)
    ax.set_aspect("equal")
    ax.set_facecolor("white")
    ax.set_xticks(range(len(layers)), [str(j + 1) for j in range(len(layers))], fontsize=7)
    ax.set_yticks([])
    ax.set_xlabel("layer", fontsize=7, labelpad=1)


def network_diagrams(images: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names,
                     layer_index: np.ndarray, layers) -> Figure:
    """Thesis Table 4.1: per class a column pair (image | network diagram), one row per image.

    images: (n, H, W) or (n, C, H, W), C 1 or 3; scores: (n, U) each image's own-class PG per
    filter; labels: (n,). Each circle is a filter, numbered 1, 2, ... from the top of its
    layer's column, its colour the filter's PG over the image's largest.
    """
    classes = list(dict.fromkeys(np.asarray(labels).tolist()))
    rows = max(int((np.asarray(labels) == c).sum()) for c in classes)
    figure = new_figure(2.9 * len(classes) + 0.8, 1.7 * rows + 0.4)
    # each image with its diagram right beside it, and a gap before the next class
    ratios = [w for _ in classes for w in (1.0, 0.45, 0.3)][:-1]
    axes = figure.subplots(rows, len(ratios), squeeze=False, gridspec_kw={"width_ratios": ratios})
    for ax in axes.ravel():
        ax.axis("off")
    for col, c in enumerate(classes):
        members = np.flatnonzero(np.asarray(labels) == c)
        for row, n in enumerate(members):
            image_ax, net_ax = axes[row, 3 * col], axes[row, 3 * col + 1]
            image_ax.axis("on")
            show_image(image_ax, images[n])
            net_ax.axis("on")
            _network_diagram(net_ax, scores[n], layer_index, layers)
            if row == 0:
                image_ax.set_title(str(class_names[c]), fontsize=8)
    key = figure.colorbar(ScalarMappable(Normalize(0, 1), colormaps[DIAGRAM_COLOURS]), ax=axes, shrink=0.6, pad=0.02)
    key.set_label("filter's PG / the image's largest PG\n(darker = higher; dot n of layer l is filter l-n)", fontsize=8)
    figure.suptitle("Own-class PG of every filter (thesis Table 4.1)", fontsize=9)
    return figure
