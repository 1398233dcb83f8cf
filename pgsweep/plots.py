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


# ---------------------------------------------------------------- query analyses (thesis 4.2, 4.3)
# Each figure reads the table its stage logs beside it (rank/, knockout/, diagrams/, features/).

import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.patches import Circle, Rectangle  # noqa: E402

SCORE_STYLE = {  # score -> (label, colour) in every knockout figure
    "pg_softmax": ("PG (softmax)", "tab:red"),
    "pg_logit": ("PG (logit)", "tab:orange"),
    "loss_gradient": ("loss gradient dL/da", "tab:blue"),
    "activation": ("activation magnitude", "tab:green"),
    "taylor": ("activation x dL/da (Taylor)", "tab:purple"),
    "oracle": ("oracle (single knockout)", "black"),
    "random": ("random order", "tab:gray"),
}


def ranking_heatmap(scores, scores_shown=("pg_softmax", "pg_logit")) -> Figure:
    """Class x filter heatmaps of class-averaged scores, one panel per score, log colour scale.

    scores: the rank stage's class_scores table (class_name, layer, channel, one column per score).
    The log scale keeps confident classes (softmax PG 100x smaller) visible beside the rest.
    """
    classes = list(dict.fromkeys(scores["class_name"]))
    units = scores[scores["class_name"] == classes[0]]
    labels = [f"{layer}:{channel}" for layer, channel in zip(units["layer"], units["channel"])]
    figure = new_figure(1.2 + 0.28 * len(labels) * len(scores_shown), 1.2 + 0.25 * len(classes))
    axes = figure.subplots(1, len(scores_shown), squeeze=False)[0]
    for ax, name in zip(axes, scores_shown):
        grid = np.stack([scores.loc[scores["class_name"] == c, name].to_numpy() for c in classes])
        positive = grid[np.isfinite(grid) & (grid > 0)]
        norm = LogNorm(positive.min(), positive.max()) if positive.size and positive.max() > positive.min() else Normalize()
        image = ax.imshow(np.where(grid > 0, grid, np.nan), aspect="auto", cmap="magma", norm=norm)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_title(SCORE_STYLE.get(name, (name,))[0], fontsize=9)
        figure.colorbar(image, ax=ax, shrink=0.8)
    return figure


def _network_diagram(ax, scores: np.ndarray, layer_index: np.ndarray, layers) -> None:
    """One image's filter scores as circles, one column per layer (numbered from 1), brighter = higher."""
    top = scores.max() if scores.max() > 0 else 1.0
    tallest = max(np.bincount(layer_index))
    for j, _ in enumerate(layers):
        values = scores[layer_index == j]
        offset = (tallest - len(values)) / 2
        for i, value in enumerate(values):
            ax.add_patch(Circle((j, offset + i), 0.38, color=str(float(np.clip(value / top, 0, 1))), ec="0.4", lw=0.3))
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylim(tallest - 0.4, -0.6)
    ax.set_aspect("equal")
    ax.set_facecolor("black")
    ax.set_xticks(range(len(layers)), [str(j + 1) for j in range(len(layers))], fontsize=6)
    ax.set_yticks([])


def network_diagrams(images: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names,
                     layer_index: np.ndarray, layers) -> Figure:
    """Thesis Table 4.1: per class a column pair (image | network diagram), one row per image.

    images: (n, H, W); scores: (n, U) each image's own-class PG per filter; labels: (n,).
    """
    classes = list(dict.fromkeys(np.asarray(labels).tolist()))
    rows = max(int((np.asarray(labels) == c).sum()) for c in classes)
    figure = new_figure(2.6 * len(classes), 1.5 * rows)
    axes = figure.subplots(rows, 2 * len(classes), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for col, c in enumerate(classes):
        members = np.flatnonzero(np.asarray(labels) == c)
        for row, n in enumerate(members):
            image_ax, net_ax = axes[row, 2 * col], axes[row, 2 * col + 1]
            image_ax.imshow(images[n], cmap="gray", vmin=0, vmax=1)
            net_ax.axis("on")
            _network_diagram(net_ax, scores[n], layer_index, layers)
            if row == 0:
                image_ax.set_title(str(class_names[c]), fontsize=8)
    return figure


def _knockout_axes(ax, curves, column: str, direction_styles) -> None:
    for score, group in curves.groupby("score", sort=False):
        label, colour = SCORE_STYLE.get(score, (score, None))
        if score == "random":
            by_step = group.groupby("step")[column]
            steps = np.asarray(sorted(group["step"].unique()))
            ax.fill_between(steps, by_step.min().to_numpy(), by_step.max().to_numpy(), color=colour, alpha=0.2, lw=0)
            ax.plot(steps, by_step.mean().to_numpy(), color=colour, lw=1.2, label=f"{label} (mean, range)")
            continue
        for direction, style in direction_styles.get(score, {"strongest": "-"}).items():
            line = group[group["direction"] == direction].sort_values("step")
            if len(line):
                ax.plot(line["step"], line[column], style, color=colour, lw=1.2, label=f"{label}, {direction} first")
    ax.set_xlabel("filters knocked out")
    ax.set_ylim(-0.03, 1.03)


def knockout_curves(curves, pg_score: str = "pg_softmax") -> Figure:
    """One class: error after each knockout step, ordered by every score; class error and overall error.

    curves: the knockout curves table rows of one class. Strongest-first for every score,
    weakest-first too for the PG score, random orders as mean and min-max band.
    """
    name = curves["class_name"].iloc[0]
    figure = new_figure(11, 4.2)
    axes = figure.subplots(1, 2)
    styles = {pg_score: {"strongest": "-", "weakest": "--"}}
    for ax, column, title in ((axes[0], "class_error", f"error on class {name}"),
                              (axes[1], "overall_error", "overall test error")):
        _knockout_axes(ax, curves, column, styles)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("error")
    axes[1].legend(fontsize=7, loc="lower right")
    return figure


def thesis_knockout(curves, score: str, column: str) -> Figure:
    """Thesis Figures 4.1 (column="class_error") and 4.2 ("overall_error"): strongest-first
    (solid) against weakest-first (dashed) for each class, ordered by `score`."""
    figure = new_figure(6.5, 4.2)
    ax = figure.subplots()
    chosen = curves[curves["score"] == score]
    colours = iter(np.resize(np.array([f"C{i}" for i in range(10)]), chosen["class"].nunique()))
    for (_, name), group in chosen.groupby(["class", "class_name"]):
        colour = next(colours)
        for direction, style in (("strongest", "-"), ("weakest", "--")):
            line = group[group["direction"] == direction].sort_values("step")
            ax.plot(line["step"], line[column], style, color=colour, lw=1.1, label=f"{name} {direction}")
    ax.set_xlabel("filters knocked out")
    ax.set_ylabel("class error" if column == "class_error" else "overall test error")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"knockout ordered by {SCORE_STYLE.get(score, (score,))[0]}", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    return figure


def characteristic_feature(image: np.ndarray, maps, title: str) -> Figure:
    """Thesis Figures 4.3/4.4: the image with the peak-PG position's receptive field outlined,
    the layer's activation maps, and the PG maps (brighter = more positive), peak marked.

    image: (H, W); maps: pgsweep.analyses.features.FeatureMaps.
    """
    count = maps.activation.shape[0]
    figure = new_figure(max(1.3 * count, 4), 4.4)
    grid = figure.add_gridspec(3, count)
    ax = figure.add_subplot(grid[0, :])
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    top, left, bottom, right = maps.box
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, ec="red", lw=1.5))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    limit = np.abs(maps.pg).max() or 1.0
    for f in range(count):
        act_ax, pg_ax = figure.add_subplot(grid[1, f]), figure.add_subplot(grid[2, f])
        act_ax.imshow(maps.activation[f], cmap="gray")
        pg_ax.imshow(maps.pg[f], cmap="gray", vmin=-limit, vmax=limit)
        act_ax.set_title(f"filter {f}", fontsize=7)
        if f == maps.filter:
            pg_ax.plot([maps.col], [maps.row], "r+", ms=8)
            for spine in pg_ax.spines.values():
                spine.set_edgecolor("red")
        act_ax.set_xticks([]), act_ax.set_yticks([]), pg_ax.set_xticks([]), pg_ax.set_yticks([])
    return figure
