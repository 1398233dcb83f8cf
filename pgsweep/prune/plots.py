"""The pruning figures, drawn from prune/curves.parquet (no I/O: the stage logs them).

Rows: (criterion, seed, step, removed_fraction, test_error_before, test_error, latency_ms, ...).
One line per criterion, the mean over seeds; random as its mean and its range over seeds.
"""

from __future__ import annotations

import numpy as np
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


def _draw(ax, curves: pd.DataFrame, column: str, error: str) -> float:
    """error: "" (after fine-tuning) or "before"; one line per criterion, PG last and thickest.

    A criterion whose errors (in this panel) equal, at every seed and step, those of one drawn before
    it (the loss gradient often removes what softmax PG removes) is drawn dotted with open
    markers, and its legend entry says "= " the one it repeats, so no line hides another.
    """
    mean, low, high = ("mean", "low", "high") if not error else ("before", "before_low", "before_high")
    order = sorted(curves.criterion.unique(), key=lambda c: (c.startswith("pg_"), c), reverse=True)
    drawn: dict[str, np.ndarray] = {}
    top = 0.0
    for criterion in order:
        label, colour = _label(criterion)
        part = _by_step(curves, criterion, column).sort_values("x")
        top = max(top, float(part[high].max()))
        if criterion == "random":
            ax.fill_between(part.x, part[low], part[high], color="0.5", alpha=0.25, lw=0,
                            label="random (range over seeds)")
            ax.plot(part.x, part[mean], color=colour, lw=1.0, ls="--", label="random (mean)")
            continue
        errors = curves[curves.criterion == criterion].sort_values(["seed", "step"])[
            "test_error_before" if error else "test_error"].to_numpy()
        same = next((other for other, values in drawn.items()
                     if values.shape == errors.shape and np.array_equal(values, errors)), None)
        drawn[criterion] = errors
        pg = criterion.startswith("pg_")
        if same is not None:
            ax.plot(part.x, part[mean], color=colour, lw=1.3, ls=":", marker="o", ms=6, mfc="none",
                    label=f"{label} (= {_label(same)[0]})", zorder=4)
            continue
        ax.plot(part.x, part[mean], color=colour, lw=2.2 if pg else 1.3, marker="o", ms=3.5 if pg else 2.5,
                label=label, zorder=3 if pg else 2)
    ax.grid(alpha=0.3)
    return top


def _error_axis(ax, top: float) -> None:
    """From 0 to a little above the highest error drawn (errors near 0.1 would be flat on 0..1)."""
    ax.set_ylim(0, min(1.02, max(0.1, top * 1.15)))


def _title(curves: pd.DataFrame) -> str:
    seeds = curves.seed.nunique()
    return (f"{curves['mode'].iloc[0].replace('_', '-')} pruning of {int(curves.filters_total.iloc[0])} filters; "
            f"mean of {seeds} seed{'s' if seeds > 1 else ''} per criterion")


def error_vs_fraction(curves: pd.DataFrame) -> Figure:
    """Test error against the fraction of filters removed: before and after fine-tuning."""
    figure = new_figure(10, 4.4)
    axes = figure.subplots(1, 2, sharey=True)
    top = 0.0
    for ax, error, title in ((axes[0], "before", "before fine-tuning"), (axes[1], "", "after fine-tuning")):
        top = max(top, _draw(ax, curves, "removed_fraction", error))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("fraction of the prunable filters removed")
    _error_axis(axes[0], top)
    axes[0].set_ylabel("test error (share of test images)")
    figure.suptitle(_title(curves), fontsize=10)
    legend_below(figure, axes, columns=4)
    return figure


def error_vs_latency(curves: pd.DataFrame) -> Figure:
    """Test error after fine-tuning against the network's size (MACs), and the CPU latency of
    each step's width with its spread.

    Every criterion removes the same number of filters from each layer at a step, so all have
    the same MACs and parameters there; their measured latencies differ only by timing noise.
    So the error is drawn against MACs (the same x for every criterion: lines cannot zig-zag),
    and latency once per step: the median over every network of that width, with its range.
    (The name is the one the prune stage logs as prune/error_vs_latency.png.)
    """
    figure = new_figure(10, 4.4)
    error_ax, latency_ax = figure.subplots(1, 2, width_ratios=[1.35, 1])
    _error_axis(error_ax, _draw(error_ax, curves.assign(macs_millions=curves.macs / 1e6), "macs_millions", ""))
    error_ax.set_xlabel("multiply-adds per image (millions; the intact network is on the right)")
    error_ax.set_ylabel("test error after fine-tuning")
    error_ax.set_title("error at equal compute", fontsize=10)

    widths = curves.groupby("step").agg(macs=("macs", "first"), params=("params", "first"),
                                        median=("latency_ms", "median"), low=("latency_ms", "min"),
                                        high=("latency_ms", "max"), networks=("latency_ms", "size")).reset_index()
    macs = widths.macs / 1e6
    latency_ax.fill_between(macs, widths["low"], widths["high"], color="0.5", alpha=0.25, lw=0,
                            label="range over every network of the width")
    latency_ax.plot(macs, widths["median"], color="black", marker="o", ms=3.5, lw=1.4, label="median")
    for _, row in widths.iterrows():
        latency_ax.annotate(f"{int(row.params):,} params", (row.macs / 1e6, row["median"]), fontsize=7,
                            color="0.3", textcoords="offset points", xytext=(4, -10))
    latency_ax.set_ylim(0, float(widths["high"].max()) * 1.15)
    batch = int(curves.latency_batch.iloc[0])
    latency_ax.set_xlabel("multiply-adds per image (millions)")
    latency_ax.set_ylabel(f"CPU latency of a batch of {batch}, one thread (ms)")
    latency_ax.set_title("latency of each step's width", fontsize=10)
    latency_ax.grid(alpha=0.3)
    latency_ax.legend(fontsize=7, loc="upper left", frameon=False)
    figure.suptitle(_title(curves), fontsize=10)
    legend_below(figure, error_ax, columns=3)
    return figure
