"""Thesis Table 4.2's scores as a picture: class x filter heatmaps, and which layers the
strongest and weakest filters fall in. Reads rank/class_scores.parquet."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from pgsweep.plots.common import new_figure
from pgsweep.plots.knockout import SCORE_STYLE


def ranking_heatmap(scores, scores_shown=("pg_softmax", "pg_logit")) -> Figure:
    """Class x filter heatmaps of class-averaged scores, two panels a row, log colour scale.

    scores: the rank stage's class_scores table (class_name, filter, one column per score),
    filters named the thesis's way (`layer-unit`, from 1). The log scale keeps confident
    classes (softmax PG 100x smaller) visible beside the rest.
    """
    classes = list(dict.fromkeys(scores["class_name"]))
    units = scores[scores["class_name"] == classes[0]]
    labels = list(units["filter"]) if "filter" in units else [str(u + 1) for u in units["unit"]]
    columns = min(2, len(scores_shown))
    rows = int(np.ceil(len(scores_shown) / columns))
    figure = new_figure(1.5 + 0.26 * len(labels) * columns + 1.2 * columns, 1.0 + (0.9 + 0.2 * len(classes)) * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(scores_shown):]:
        ax.axis("off")
    for ax, name in zip(axes, scores_shown):
        grid = np.stack([scores.loc[scores["class_name"] == c, name].to_numpy() for c in classes])
        positive = grid[np.isfinite(grid) & (grid > 0)]
        norm = LogNorm(positive.min(), positive.max()) if positive.size and positive.max() > positive.min() else Normalize()
        image = ax.imshow(np.where(grid > 0, grid, np.nan), aspect="auto", cmap="magma", norm=norm)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("filter (layer-unit, numbered from 1 as in the thesis)", fontsize=8)
        ax.set_ylabel("class", fontsize=8)
        ax.set_title(SCORE_STYLE.get(name, (name,))[0], fontsize=10)
        bar = figure.colorbar(image, ax=ax, shrink=0.9)
        bar.set_label("class-averaged score (log scale)", fontsize=8)
    return figure


def layer_shares(shares) -> Figure:
    """Which layers the strongest and weakest filters fall in, against chance (the layer's
    share of all filters). shares: rows (kind, layer, share, chance)."""
    figure = new_figure(6.0, 3.6)
    ax = figure.add_subplot()
    layers = sorted(shares["layer"].unique())
    width = 0.38
    x = np.arange(len(layers))
    for i, (kind, colour) in enumerate((("strongest", "#D55E00"), ("weakest", "#0072B2"))):
        rows = shares[shares["kind"] == kind].set_index("layer").reindex(layers)
        ax.bar(x + (i - 0.5) * width, rows["share"], width, color=colour, label=f"{kind} filters")
    chance = shares.groupby("layer")["chance"].first().reindex(layers)
    ax.scatter(x, chance, marker="_", s=900, color="black", zorder=3, label="chance (layer's share of filters)")
    ax.set_xticks(x, [f"layer {layer}" for layer in layers])
    ax.set_ylabel("share of the listed filters")
    ax.set_ylim(0, 1)
    ax.set_title("Layers of the strongest and weakest filters", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    return figure
