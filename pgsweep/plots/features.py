"""Thesis Figures 4.3 and 4.4: the face with the peak-PG position's receptive field, the
layer's activation maps, and its PG maps. Reads features/maps.parquet (the maps drawn)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib import patheffects
from matplotlib.patches import Rectangle

from pgsweep.plots.common import new_figure, show_image

# one colour per kind of feature in every features figure: the own class's (Figure 4.3) and
# the runner-up class's (Figure 4.4, the overview's bottom row)
OWN_CLASS_COLOUR = "red"
RUNNER_UP_COLOUR = "#0072B2"


def feature_title(kind: str, image: int, class_name: str, target_name: str) -> str:
    """A features figure's title, naming its image by the one number every features table uses
    (`image`, the dataset index) and its classes by name: kind "characteristic" or "lookalike"."""
    if kind == "characteristic":
        return f"image {image} (class {class_name}): its most characteristic feature"
    return f"image {image} (class {class_name}): what makes it look like class {target_name}"


def _box(left, top, right, bottom, colour: str = OWN_CLASS_COLOUR) -> Rectangle:
    """The receptive field's outline, with a white halo so it shows on a red or dark colour image too."""
    box = Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, ec=colour, lw=1.5)
    box.set_path_effects([patheffects.withStroke(linewidth=3.5, foreground="white")])
    return box


def characteristic_feature(image: np.ndarray, maps, title: str, layer_number: int = 1,
                           max_pool_after: bool = True, runner_up: bool = False) -> Figure:
    """The image with the receptive field of the highest-PG position outlined, the layer's
    activation maps (row 2) and PG maps (row 3), each row with its colour scale.

    runner_up: the maps are of the class the model ranks next (Figure 4.4), drawn in the
    overview's runner-up colour (blue); else the own class's (Figure 4.3, red).

    image: (H, W) or (C, H, W), C 1 or 3; maps: anything with activation (F, h, w), pg
    (F, h, w), filter, row, col, box (top, left, bottom, right) like
    pgsweep.analyses.features.FeatureMaps. Filters are named `layer-unit` from 1.
    max_pool_after: a 2x2 max pool follows the layer (the thesis convnet): the footnote explains
    the checkerboard it leaves in the PG maps.
    """
    colour = RUNNER_UP_COLOUR if runner_up else OWN_CLASS_COLOUR
    count = maps.activation.shape[0]
    figure = new_figure(max(1.45 * count + 1.4, 5.5), 5.6)
    grid = figure.add_gridspec(3, count + 1, width_ratios=[1] * count + [0.12], height_ratios=[1.4, 1, 1])
    ax = figure.add_subplot(grid[0, :count])
    show_image(ax, image)
    top, left, bottom, right = maps.box
    ax.add_patch(_box(left, top, right, bottom, colour))
    ax.set_title(title, fontsize=9)
    peak = f"{layer_number}-{maps.filter + 1}"
    ax.set_xlabel(f"{'blue' if runner_up else 'red'} box: the input pixels that filter {peak}'s peak-PG position sees",
                  fontsize=8)
    activation_limit = float(np.abs(maps.activation).max()) or 1.0
    pg_limit = float(np.abs(maps.pg).max()) or 1.0
    for f in range(count):
        act_ax, pg_ax = figure.add_subplot(grid[1, f]), figure.add_subplot(grid[2, f])
        act_image = act_ax.imshow(maps.activation[f], cmap="gray", vmin=-activation_limit, vmax=activation_limit)
        pg_image = pg_ax.imshow(maps.pg[f], cmap="RdBu_r", vmin=-pg_limit, vmax=pg_limit)
        act_ax.set_title(f"filter {layer_number}-{f + 1}", fontsize=8, color=colour if f == maps.filter else "black")
        if f == maps.filter:
            pg_ax.plot([maps.col], [maps.row], "+", color="black", ms=9, mew=1.5)
            for spine in pg_ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(1.5)
        for a in (act_ax, pg_ax):
            a.set_xticks([])
            a.set_yticks([])
        if f == 0:
            act_ax.set_ylabel("activation", fontsize=8)
            pg_ax.set_ylabel("PG  d y / d a", fontsize=8)
    bar = figure.colorbar(act_image, cax=figure.add_subplot(grid[1, count]))
    bar.set_label("activation", fontsize=7)
    bar = figure.colorbar(pg_image, cax=figure.add_subplot(grid[2, count]))
    bar.set_label("PG (red +, blue -)", fontsize=7)
    note = ("The 2x2 max pool after the layer passes the gradient to one position of each "
            "2x2 window, hence the checkerboard in the PG maps; + marks the highest PG."
            if max_pool_after else "+ marks the highest PG.")
    figure.text(0.5, 0.0, note, ha="center", va="top", fontsize=7, wrap=True)
    return figure


def feature_boxes(faces, rows, class_names) -> Figure:
    """Figures 4.3 and 4.4 for several identities at once: each face (top row: its own
    class; bottom row: the class the model ranks next) with the receptive field of the
    highest-PG position outlined. faces: rows (image, class_name, channels, size, pixels);
    rows: for each face's image the features table's rows of the own class and the
    runner-up (image, own_class, target, filter_name, top, left, bottom, right)."""
    faces = faces.reset_index(drop=True)
    figure = new_figure(2.2 * len(faces) + 0.4, 5.0)
    axes = figure.subplots(2, len(faces), squeeze=False)
    for i, face in faces.iterrows():
        pixels = np.asarray(face["pixels"], dtype=np.float32).reshape(int(face["channels"]), int(face["size"]),
                                                                      int(face["size"]))
        mine = rows[rows["image"] == face["image"]]
        for r, (own, colour) in enumerate(((True, OWN_CLASS_COLOUR), (False, RUNNER_UP_COLOUR))):
            ax = axes[r, i]
            show_image(ax, pixels)
            picked = mine[mine["own_class"]] if own else mine[~mine["own_class"] & (mine["target"] == mine["runner_up"])]
            if not len(picked):
                continue
            best = picked.iloc[0]
            box = ax.add_patch(Rectangle((best["left"] - 0.5, best["top"] - 0.5), best["right"] - best["left"],
                                         best["bottom"] - best["top"], fill=False, ec=colour, lw=2))
            box.set_path_effects([patheffects.withStroke(linewidth=4, foreground="white")])
            what = face["class_name"] if own else f"like {class_names[int(best['target'])]}"
            ax.set_title(f"{what}\nfilter {best['filter_name']}", fontsize=8, color=colour)
        axes[0, i].set_xlabel(str(face.get("source", "")), fontsize=7)
    axes[0, 0].set_ylabel("own class", fontsize=9)
    axes[1, 0].set_ylabel("runner-up class", fontsize=9)
    figure.suptitle("Where the highest PG looks: the receptive field of the peak position (thesis Figures 4.3, 4.4)",
                    fontsize=9)
    return figure
