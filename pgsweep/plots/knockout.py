"""Thesis Figures 4.1 and 4.2, and each class's knockout curves by every score.

Each figure reads the knockout stage's curves table (knockout/curves.parquet): rows
(class, class_name, score, direction, seed, step, class_error, overall_error, ...), and
optionally a `run` column when curves of several models are drawn together.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from pgsweep.plots.common import IDENTITY_COLOURS, REPORT_WIDTH_INCHES, legend_below, new_figure

SCORE_STYLE = {  # score -> (label, colour) in every knockout figure
    "pg_softmax": ("PG (softmax)", "#D55E00"),
    "pg_logit": ("PG (logit)", "#E69F00"),
    "loss_gradient": ("loss gradient dL/da", "#0072B2"),
    "activation": ("activation magnitude", "#009E73"),
    "taylor": ("activation x dL/da (Taylor)", "#CC79A7"),
    "taylor_abs": ("|activation x dL/da| (Taylor)", "#CC79A7"),
    "taylor_signed": ("activation x dL/da, signed", "#882255"),
    "grad_x_activation": ("activation x PG, signed", "#56B4E9"),
    "grad_x_activation_l2": ("activation x PG, L2", "#44AA99"),
    "integrated_pg": ("integrated PG", "#AA4499"),
    "conductance": ("conductance (Captum)", "#332288"),
    "deeplift": ("DeepLift, logit (Captum)", "#999933"),
    "gradcam": ("Grad-CAM weight (Captum)", "#661100"),
    "ablation": ("ablation (Captum)", "#117733"),
    "oracle": ("oracle (single knockout)", "black"),
    "random": ("random order", "0.5"),
}
ERROR_LABEL = {
    "class_error": "class error (share of the class's test images)",
    "class_error_all": "class error (share of all the class's images)",
    "overall_error": "overall error (share of all test images)",
}


def _filters_axis(ax, curves) -> None:
    ax.set_xlabel(f"filters knocked out (of {int(curves['step'].max())})")
    ax.set_ylim(-0.03, 1.05)


def _random_band(ax, curves, column: str, label: str | None, quartiles: bool = False) -> None:
    """Random orders: their mean, and their range (or, over many models, their middle half)."""
    rows = curves[curves["score"] == "random"]
    if not len(rows):
        return
    by_step = rows.groupby("step")[column]
    steps = np.asarray(sorted(rows["step"].unique()))
    low, high = (by_step.quantile(0.25), by_step.quantile(0.75)) if quartiles else (by_step.min(), by_step.max())
    ax.fill_between(steps, low.to_numpy(), high.to_numpy(), color="0.5", alpha=0.2, lw=0,
                    label=None if label is None else f"{label} ({'middle half' if quartiles else 'range'})")
    ax.plot(steps, by_step.mean().to_numpy(), color="0.4", lw=1.0, label=None if label is None else f"{label} (mean)")


def knockout_curves(curves, pg_score: str = "pg_softmax") -> Figure:
    """One class: error after each knockout step, ordered by every score; class error and overall error.

    Strongest-first for every score, weakest-first too for the PG score, random orders as
    mean and min-max band. The PG curves are drawn last and thickest, so no baseline hides
    them. A baseline whose ordering is the same as a curve drawn before it (the loss
    gradient often orders filters exactly as PG does) is drawn dotted with markers,
    slightly raised, and its legend entry says "= " the curve it repeats.
    """
    name = curves["class_name"].iloc[0]
    figure = new_figure(11, 5.0)
    axes = figure.subplots(1, 2, sharey=True)
    # PG first in the identity check (so a baseline is "= PG"), last on the canvas (so it stays visible)
    lines = [(pg_score, "strongest"), (pg_score, "weakest")]
    lines += [(score, "strongest") for score in curves["score"].unique() if score not in ("random", pg_score)]
    images = int(curves["class_images"].iloc[0]) if "class_images" in curves else None
    for ax, column, title in ((axes[0], "class_error", f"error on {name}" + (f" ({images} test images)" if images else "")),
                              (axes[1], "overall_error", "overall test error" + (
                                  f" ({int(curves['images'].iloc[0])} images)" if "images" in curves else ""))):
        _random_band(ax, curves, column, SCORE_STYLE["random"][0])
        drawn: dict[tuple, str] = {}
        for order, (score, direction) in enumerate(lines):
            line = curves[(curves["score"] == score) & (curves["direction"] == direction)].sort_values("step")
            if not len(line):
                continue
            label, colour = SCORE_STYLE.get(score, (score, None))
            label = f"{label}, {direction} first"
            key = tuple(line["knocked"]) if "knocked" in line else tuple(np.round(line[column].to_numpy(), 9))
            is_pg = score == pg_score
            if key in drawn:  # the same ordering, so the same curve: show it anyway, and say so
                repeats = list(drawn).index(key) + 1
                ax.plot(line["step"], line[column] + 0.012 * repeats, ":", color=colour, lw=1.6, marker="o",
                        ms=3, label=f"{label} (= {drawn[key]})", zorder=2)
            else:
                drawn[key] = label
                ax.plot(line["step"], line[column], "--" if direction == "weakest" else "-", color=colour,
                        lw=2.2 if is_pg else 1.2, label=label, zorder=4 if is_pg else 2 + order / 100)
        _filters_axis(ax, curves)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ERROR_LABEL[column])
        ax.yaxis.set_tick_params(labelleft=True)
    legend_below(figure, axes, columns=3)
    return figure


def thesis_knockout(curves, score: str, column: str, classes=None) -> Figure:
    """Thesis Figures 4.1 (column="class_error" or "class_error_all") and 4.2 ("overall_error"):
    one panel per identity (the thesis's five), strongest-first solid, weakest-first dashed,
    random orders as a gray band (min-max) with their mean.

    classes: the class indices to draw (default: the first five in the table). With a `run`
    column (several models), each line is the mean over the models, and the gray band the
    middle half (25-75%) of the random orders of every model (a class with 3 test images
    spans 0 to 1 somewhere, so a range would fill the panel).
    """
    chosen = curves[curves["score"].isin([score, "random"])]
    classes = list(dict.fromkeys(chosen["class"])) if classes is None else list(classes)
    classes = [c for c in classes if c in set(chosen["class"])][:5]
    # drawn for the report's column (REPORT_WIDTH_INCHES), so its text is shown at the size set here
    figure = new_figure(min(2.0 * len(classes) + 0.6, REPORT_WIDTH_INCHES), 3.4)
    axes = figure.subplots(1, len(classes), sharey=True, squeeze=False)[0]
    models = chosen["run"].nunique() if "run" in chosen else 1
    for i, (ax, c) in enumerate(zip(axes, classes)):
        rows = chosen[chosen["class"] == c]
        colour = IDENTITY_COLOURS[i % len(IDENTITY_COLOURS)]
        _random_band(ax, rows, column, "random order" if i == 0 else None, quartiles=models > 1)
        for direction, style in (("strongest", "-"), ("weakest", "--")):
            line = rows[(rows["score"] == score) & (rows["direction"] == direction)]
            by_step = line.groupby("step")[column]
            steps = np.asarray(sorted(line["step"].unique()))
            ax.plot(steps, by_step.mean().to_numpy(), style, color=colour, lw=1.8, label=f"PG {direction} first")
        ax.set_title(str(rows["class_name"].iloc[0]), fontsize=10, color=colour)
        _filters_axis(ax, rows)
        if i != len(classes) // 2:  # one axis title, under the middle panel: the panels are too narrow for one each
            ax.set_xlabel("")
        if i == 0:
            ax.set_ylabel(ERROR_LABEL[column])
    figure.suptitle(f"Knockout ordered by {SCORE_STYLE.get(score, (score,))[0]}: "
                    + ("thesis Figure 4.2" if column == "overall_error" else "thesis Figure 4.1"), fontsize=10)
    # legend lines in black: the panel title's colour names the identity, the style the direction
    over = f", mean of {models} models" if models > 1 else ""
    keys = [Line2D([], [], color="black", lw=1.8, label=f"PG strongest first{over}"),
            Line2D([], [], color="black", lw=1.8, ls="--", label=f"PG weakest first{over}"),
            Line2D([], [], color="0.4", lw=1.0, label="random orders (mean)"),
            Patch(color="0.5", alpha=0.2, label="random orders (" + ("middle half)" if models > 1 else "range)"))]
    figure.legend(handles=keys, loc="outside lower center", ncols=len(keys), fontsize=8, frameon=False)
    return figure
