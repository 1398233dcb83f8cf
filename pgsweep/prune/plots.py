"""The pruning figures, drawn from prune/curves.parquet (no I/O: the stage logs them).

Rows: (criterion, seed, step, removed_fraction, test_error_before, test_error, latency_ms, ...).
One line per criterion, the mean over seeds; random as its mean and its range over seeds.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from pgsweep.plots.common import legend_below, new_figure
from pgsweep.plots.knockout import SCORE_STYLE

STYLE = {**{k: v for k, v in SCORE_STYLE.items() if k != "oracle"},
         "magnitude": ("weight magnitude (L1)", "#56B4E9"), "random": ("random", "0.4")}


def _label(criterion: str) -> tuple[str, str]:
    return STYLE.get(criterion, (criterion, "black"))


def _by_step(curves: pd.DataFrame, criterion: str, column: str) -> pd.DataFrame:
    rows = curves[curves.criterion == criterion]
    return rows.groupby("step").agg(x=(column, "mean"), mean=("test_error", "mean"),
                                    low=("test_error", "min"), high=("test_error", "max"),
                                    before=("test_error_before", "mean"),
                                    before_low=("test_error_before", "min"),
                                    before_high=("test_error_before", "max")).reset_index()


def _draw(ax, curves: pd.DataFrame, column: str, error: str) -> None:
    """error: "" (after fine-tuning) or "before"; one line per criterion, PG last and thickest."""
    mean, low, high = ("mean", "low", "high") if not error else ("before", "before_low", "before_high")
    order = sorted(curves.criterion.unique(), key=lambda c: (c.startswith("pg_"), c))
    for criterion in order:
        label, colour = _label(criterion)
        part = _by_step(curves, criterion, column).sort_values("x")
        if criterion == "random":
            ax.fill_between(part.x, part[low], part[high], color="0.5", alpha=0.25, lw=0,
                            label="random (range over seeds)")
            ax.plot(part.x, part[mean], color=colour, lw=1.0, ls="--", label="random (mean)")
            continue
        pg = criterion.startswith("pg_")
        ax.plot(part.x, part[mean], color=colour, lw=2.2 if pg else 1.3, marker="o", ms=3.5 if pg else 2.5,
                label=label, zorder=3 if pg else 2)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _title(curves: pd.DataFrame) -> str:
    seeds = curves.seed.nunique()
    return (f"{curves['mode'].iloc[0].replace('_', '-')} pruning of {int(curves.filters_total.iloc[0])} filters; "
            f"mean of {seeds} seed{'s' if seeds > 1 else ''} per criterion")


def error_vs_fraction(curves: pd.DataFrame) -> Figure:
    """Test error against the fraction of filters removed: before and after fine-tuning."""
    figure = new_figure(10, 4.4)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, error, title in ((axes[0], "before", "before fine-tuning"), (axes[1], "", "after fine-tuning")):
        _draw(ax, curves, "removed_fraction", error)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("fraction of the prunable filters removed")
    axes[0].set_ylabel("test error (share of test images)")
    figure.suptitle(_title(curves), fontsize=10)
    legend_below(figure, axes, columns=4)
    return figure


def error_vs_latency(curves: pd.DataFrame) -> Figure:
    """Test error after fine-tuning against the measured CPU time of one batch (left: faster)."""
    figure = new_figure(6.5, 4.6)
    ax = figure.subplots()
    _draw(ax, curves, "latency_ms", "")
    batch = int(curves.latency_batch.iloc[0])
    ax.set_xlabel(f"CPU latency of a batch of {batch} images (ms, median of repeats)")
    ax.set_ylabel("test error after fine-tuning")
    intact = curves[curves.step == 0].latency_ms.mean()
    ax.axvline(intact, color="0.6", lw=0.8, ls=":")
    ax.annotate("intact network", (intact, 0.98), fontsize=7, color="0.4", ha="right", va="top", rotation=90)
    ax.set_title(_title(curves), fontsize=10)
    legend_below(figure, ax, columns=3)
    return figure

