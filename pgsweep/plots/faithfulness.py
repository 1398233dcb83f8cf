"""Which score predicts knockout: each score's faithfulness measures with their intervals,
drawn from knockout/faithfulness.parquet (one model: intervals over classes) or the report's
table over models (the same columns)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pgsweep.plots.common import REPORT_WIDTH_INCHES, new_figure
from pgsweep.plots.knockout import SCORE_STYLE

PANELS = (  # column, axis title, the side that means "predicts knockout"
    ("spearman_oracle", "Spearman correlation with the oracle\n(random order: 0)", "right"),
    ("class_error_strongest_vs_random", "class error after the {after} strongest,\nminus random orders'", "right"),
    ("overall_error_weakest_vs_random", "overall error after the {after} weakest,\nminus random orders'", "left"),
)


def faithfulness(table, over: str = "classes") -> Figure:
    """Three panels, one row per score (best Spearman on top): the mean and its interval (`over`
    says what the interval is over). Zero is chance in every panel; the oracle is the ceiling."""
    table = table.sort_values("spearman_oracle", ascending=True, na_position="first").reset_index(drop=True)
    after = int(table["after"].iloc[0]) if "after" in table and len(table) else 0
    figure = new_figure(REPORT_WIDTH_INCHES, 1.2 + 0.32 * len(table))
    axes = figure.subplots(1, len(PANELS), sharey=True)
    rows = np.arange(len(table))
    labels = [SCORE_STYLE.get(s, (s, None))[0] for s in table["score"]]
    for ax, (column, title, good) in zip(axes, PANELS):
        mean = table[column].to_numpy(dtype=float)
        low = table[f"{column}_low"].to_numpy(dtype=float)
        high = table[f"{column}_high"].to_numpy(dtype=float)
        error = np.vstack([mean - low, high - mean])
        colours = ["black" if s == "oracle" else "#D55E00" if s.startswith("pg_") else "#0072B2" for s in table["score"]]
        ax.axvline(0, color="0.6", lw=0.8, zorder=1)
        for i in rows:
            ax.errorbar(mean[i], i, xerr=np.nan_to_num(error[:, i : i + 1]), fmt="o", color=colours[i], ms=4,
                        capsize=2, lw=1, zorder=3)
        ax.set_title(title.format(after=after), fontsize=9)
        ax.set_xlabel(f"{'higher' if good == 'right' else 'lower'}: predicts knockout", fontsize=8)
        ax.grid(axis="x", color="0.9", lw=0.6)
    figure.supxlabel(f"dot: mean over {over}; bar: its 95% interval", fontsize=8)
    axes[0].set_yticks(rows, labels, fontsize=8)
    axes[0].set_ylim(-0.6, len(table) - 0.4)
    return figure
