"""Thesis Figures 4.5-4.7: perturbed faces, targeted success and induced error vs step size."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation, LogLocator

from pgsweep.plots.common import legend_below, new_figure, show_image


def _step_axis(ax, steps, label: str = "step size s (x' = x + s g)") -> None:
    """Log x axis when the steps span more than a decade (and are all positive)."""
    positive = [s for s in steps if s > 0]
    if len(positive) == len(steps) and positive and max(positive) / min(positive) > 10:
        ax.set_xscale("log")
        _log_labels(ax.xaxis)
    ax.set_xlabel(label)


def _log_labels(axis) -> None:
    """Label a log axis at 1, 2 and 5 times each power of ten (matplotlib's default labels
    either one decade only, or every minor tick, colliding)."""
    axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    axis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(10, 10)))


def _rms_axis(ax, per_step) -> None:
    """A second x axis on top: the RMS pixel change of x' - x at each step, the median over the
    off-target points (raw steps move each point by its own gradient's norm)."""
    if "pixel_rms" not in per_step or not (per_step["step"] > 0).all():
        return
    ratio = float(np.median(per_step["pixel_rms"] / per_step["step"]))
    if not ratio > 0:
        return
    top = ax.secondary_xaxis("top", functions=(lambda s: s * ratio, lambda r: r / ratio))
    _log_labels(top.xaxis)
    top.set_xlabel("actual RMS pixel change of x' - x (pixels in [0, 1]; median over the points)", fontsize=8)


def adversarial_examples(pixels, titles, row_labels) -> Figure:
    """Figure 4.5: rows of (image, target), columns of step sizes.

    pixels: (R, K, H, W) or (R, K, C, H, W) with C 1 or 3; titles[r][k] names the step and
    the confidences (t: true class, y: target).
    """
    pixels = np.asarray(pixels)
    rows, cols = pixels.shape[:2]
    figure = new_figure(1.7 * cols, 1.9 * rows)
    axes = figure.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for k in range(cols):
            ax = axes[r][k]
            show_image(ax, pixels[r, k])
            ax.set_title(titles[r][k], fontsize=7)
        axes[r][0].set_ylabel(row_labels[r], fontsize=7)
    figure.suptitle("Perturbations along d y_target / d x (t: true-class confidence, y: target confidence)",
                    fontsize=9)
    return figure


def _per_target_lines(per_target, per_step, column: str, ylabel: str, title: str, class_names=None,
                      highlight: int = 2) -> Figure:
    """Every target thin and gray, the `highlight` easiest and hardest in colour, the mean in black."""
    figure = new_figure(7.0, 4.6)
    ax = figure.add_subplot()
    ranking = per_target.groupby("target")[column].mean().sort_values(ascending=False)
    easy, hard = list(ranking.index[:highlight]), list(ranking.index[-highlight:])
    colours = dict(zip(easy + hard, ("#0072B2", "#56B4E9", "#D55E00", "#E69F00")))
    name = (lambda t: class_names[int(t)]) if class_names is not None else str
    others = False
    for target, rows in per_target.groupby("target"):
        rows = rows.sort_values("step_index")
        if target in colours:
            kind = "easiest" if target in easy else "hardest"
            ax.plot(rows.step, rows[column], color=colours[target], lw=1.6, marker="o", ms=3,
                    label=f"{name(target)} ({kind}, mean {ranking[target]:.2f})")
        else:
            ax.plot(rows.step, rows[column], color="0.75", lw=0.8,
                    label=None if others else f"the other {per_target.target.nunique() - len(colours)} targets")
            others = True
    ax.plot(per_step.step, per_step[column], color="black", lw=2.5, label="mean over all targets")
    _step_axis(ax, list(per_step.step))
    _rms_axis(ax, per_step)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    legend_below(figure, ax, columns=2)
    return figure


def adversarial_success(per_target, per_step, class_names=None) -> Figure:
    """Figure 4.6: success rate (argmax == target) vs step size, one line per target."""
    return _per_target_lines(per_target, per_step, "success", "success (share of images: argmax = target)",
                             "Targeted perturbation success (thesis Figure 4.6)", class_names)


def adversarial_induced_error(per_target, per_step, class_names=None) -> Figure:
    """Figure 4.7: induced error (argmax != true class) vs step size, one line per target."""
    return _per_target_lines(per_target, per_step, "induced_error",
                             "induced error (share of images: argmax != true class)",
                             "Classifier error induced by the perturbation (thesis Figure 4.7)", class_names)


def step_kinds(by_kind) -> Figure:
    """Raw gradient steps (the thesis) beside sign steps at the same actual pixel change:
    success and induced error. by_kind: rows (step_kind, rms_bin, pixel_rms, success,
    induced_error) of off-target points binned by each point's actual RMS pixel change
    (pgsweep.analyses.adversarial.by_pixel_rms); with a `run` column (several models) the
    mean over runs is drawn, with its range as a band."""
    figure = new_figure(7.0, 4.4)
    ax = figure.add_subplot()
    styles = {"raw": "#0072B2", "l2": "#009E73", "sign": "#D55E00"}
    for (kind, column), rows in by_kind.melt(
            id_vars=["step_kind", "rms_bin", "pixel_rms"] + (["run"] if "run" in by_kind else []),
            value_vars=["success", "induced_error"], var_name="column").groupby(["step_kind", "column"]):
        by_bin = rows.groupby("rms_bin")
        x = by_bin.pixel_rms.median().to_numpy()
        mean = by_bin.value.mean().to_numpy()
        style = "-" if column == "induced_error" else "--"
        what = "induced error" if column == "induced_error" else "targeted success"
        ax.plot(x, mean, style, color=styles.get(kind, "black"), marker="o", ms=3, label=f"{kind} steps: {what}")
        if "run" in rows and rows["run"].nunique() > 1:
            ax.fill_between(x, by_bin.value.min().to_numpy(), by_bin.value.max().to_numpy(),
                            color=styles.get(kind, "black"), alpha=0.12, lw=0)
    ax.set_xscale("log")
    _log_labels(ax.xaxis)
    ax.set_xlabel("actual RMS pixel change of x' - x (pixels in [0, 1]; median of a quarter-decade bin)")
    ax.set_ylabel("share of off-target (image, target, step) points")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Raw PG steps (thesis) vs sign steps, binned by each point's actual pixel change", fontsize=10)
    legend_below(figure, ax, columns=2)
    return figure


def target_spread(per_target_means, class_names=None) -> Figure:
    """Mean success per target class, one point per target with its confidence interval over
    models. per_target_means: rows (target, mean, low, high, models), any order."""
    table = per_target_means.sort_values("mean")
    figure = new_figure(6.0, 0.3 * len(table) + 1.4)
    ax = figure.add_subplot()
    y = np.arange(len(table))
    ax.errorbar(table["mean"], y, xerr=[table["mean"] - table["low"], table["high"] - table["mean"]],
                fmt="o", color="#0072B2", ecolor="0.5", capsize=2, ms=4)
    names = [class_names[int(t)] if class_names is not None else str(t) for t in table["target"]]
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("targeted success, mean over steps and test images (95% CI over models)")
    ax.set_ylabel("target class")
    ax.set_xlim(left=0)
    ax.set_title("Some targets are much easier than others", fontsize=10)
    return figure
