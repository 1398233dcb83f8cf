"""Thesis Table 4.1: each image's PG per filter drawn as the network, beside the image.
Reads diagrams/image_scores.parquet (one row per test image, a column per filter)."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from pgsweep.plots.common import new_figure, show_image


def _network_diagram(ax, scores: np.ndarray, layer_index: np.ndarray, layers) -> None:
    """One image's filter scores as circles, one column per layer (numbered from 1), brighter = higher."""
    top = scores.max() if scores.max() > 0 else 1.0
    tallest = max(np.bincount(layer_index))
    gray = colormaps["gray"]
    for j, _ in enumerate(layers):
        values = scores[layer_index == j]
        offset = (tallest - len(values)) / 2
        for i, value in enumerate(values):
            ax.add_patch(Circle((j, offset + i), 0.38, color=gray(float(np.clip(value / top, 0, 1))), ec="0.4", lw=0.3))
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylim(tallest - 0.4, -0.6)
    ax.set_aspect("equal")
    ax.set_facecolor("0.15")
    ax.set_xticks(range(len(layers)), [str(j + 1) for j in range(len(layers))], fontsize=7)
    ax.set_yticks([])
    ax.set_xlabel("layer", fontsize=7, labelpad=1)


def network_diagrams(images: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names,
                     layer_index: np.ndarray, layers) -> Figure:
    """Thesis Table 4.1: per class a column pair (image | network diagram), one row per image.

    images: (n, H, W) or (n, C, H, W), C 1 or 3; scores: (n, U) each image's own-class PG per
    filter; labels: (n,). Each circle is a filter (top to bottom: filter 1, 2, ...),
    its brightness the filter's PG over the image's largest.
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
    key = figure.colorbar(ScalarMappable(Normalize(0, 1), colormaps["gray"]), ax=axes, shrink=0.6, pad=0.02)
    key.set_label("filter's PG / the image's largest PG\n(brighter = higher)", fontsize=8)
    figure.suptitle("Own-class PG of every filter (thesis Table 4.1)", fontsize=9)
    return figure
