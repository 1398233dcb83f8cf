"""The test error over training epochs, per model (read from the runs' metric history)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pgsweep.plots.common import legend_below, new_figure


def error_curves(history, panels: str, line: str, reference: float | None = None,
                 reference_label: str = "") -> Figure:
    """Test error after each epoch: one panel per value of `panels`, one line per value of
    `line` (at most about 10 a panel). history: rows (epoch, test_error, panels, line, ...)."""
    groups = list(dict.fromkeys(history[panels]))
    figure = new_figure(4.6 * len(groups) + 0.4, 3.9)
    axes = figure.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    colours = [f"C{i}" for i in range(10)]
    for ax, group in zip(axes, groups):
        rows = history[history[panels] == group]
        for i, (value, curve) in enumerate(rows.groupby(line, sort=True)):
            curve = curve.sort_values("epoch")
            ax.plot(curve["epoch"], curve["test_error"], color=colours[i % 10], lw=1.2, label=f"{line} {value}")
        if reference is not None:
            ax.axhline(reference, color="black", ls=":", lw=1.2, label=reference_label)
        ax.set_title(f"{panels} = {group}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, max(0.5, float(np.nanmax(history["test_error"])) + 0.02))
    axes[0].set_ylabel("test error (share of the test images)")
    legend_below(figure, axes, columns=6)
    return figure
