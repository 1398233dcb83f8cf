"""Results -> matplotlib figures. No I/O: the driver logs what these return.

Figures are built on matplotlib.figure.Figure directly (no pyplot state, no GUI
backend), so drawing is safe anywhere and nothing leaks between figures. Each
analysis adds its figures here in its own section, reading the same tables it
logs, so a report can redraw any figure from the logged tables.
"""

from __future__ import annotations

import matplotlib
from matplotlib.figure import Figure


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """A blank figure of the given size in inches."""
    return Figure(figsize=(width, height), layout="constrained")


# ---------------------------------------------------------------- adversarial (thesis 4.5-4.7)

def _step_axis(ax, steps) -> None:
    """Log x axis when the steps span more than a decade (and are all positive)."""
    positive = [s for s in steps if s > 0]
    if len(positive) == len(steps) and positive and max(positive) / min(positive) > 10:
        ax.set_xscale("log")
    ax.set_xlabel("step size")


def adversarial_examples(pixels, titles, row_labels) -> Figure:
    """Figure 4.5: rows of (image, target), columns of step sizes; pixels (R, K, H, W).

    titles[r][k] names the step and the confidences (t: true class, y: target).
    """
    rows, cols = pixels.shape[:2]
    figure = new_figure(1.7 * cols, 1.9 * rows)
    axes = figure.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for k in range(cols):
            ax = axes[r][k]
            ax.imshow(pixels[r, k], cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_title(titles[r][k], fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(row_labels[r], fontsize=7)
    figure.suptitle("Perturbations along d y_target / d x (t: true class, y: target confidence)", fontsize=9)
    return figure


def _per_target_lines(per_target, per_step, column: str, ylabel: str, title: str, class_names=None) -> Figure:
    figure = new_figure(6.5, 4.0)
    ax = figure.add_subplot()
    cmap = matplotlib.colormaps["tab20"]
    targets = sorted(per_target.target.unique())
    for i, target in enumerate(targets):
        rows = per_target[per_target.target == target].sort_values("step_index")
        name = class_names[target] if class_names is not None else str(target)
        ax.plot(rows.step, rows[column], color=cmap(i % 20), linewidth=1, label=name)
    ax.plot(per_step.step, per_step[column], color="black", linewidth=2.5, label="mean")
    _step_axis(ax, list(per_step.step))
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(title="target", fontsize=6, ncols=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return figure


def adversarial_success(per_target, per_step, class_names=None) -> Figure:
    """Figure 4.6: success rate (argmax == target) vs step size, one line per target."""
    return _per_target_lines(per_target, per_step, "success", "success (argmax = target)",
                             "Targeted perturbation success", class_names)


def adversarial_induced_error(per_target, per_step, class_names=None) -> Figure:
    """Figure 4.7: induced error (argmax != true class) vs step size, one line per target."""
    return _per_target_lines(per_target, per_step, "induced_error", "induced error (argmax != true class)",
                             "Classifier error induced by the perturbation", class_names)
