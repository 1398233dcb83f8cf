"""What every figure shares: a blank figure, an image drawn the one right way, unit names.

Figures are built on matplotlib.figure.Figure directly (no pyplot state, no GUI
backend), so drawing is safe anywhere and nothing leaks between figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

# The five identities of the thesis's Table 4.2 and Figures 4.1-4.2, in its order
THESIS_IDENTITIES = ("subject15", "subject14", "subject07", "subject10", "subject12")
# one colour per identity wherever the five are drawn (Okabe-Ito: tells apart for colour-blind readers)
IDENTITY_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00")


# The thesis report's text column: 1,100 px (pgsweep/report/document.py's max-width) less its
# padding, at the 110 dpi it renders figures with. A figure drawn wider is shrunk to fit, and
# its ticks and legends shrink with it: figures the report shows are drawn at most this wide.
REPORT_WIDTH_INCHES = 9.6


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """A blank figure of the given size in inches."""
    return Figure(figsize=(width, height), layout="constrained")


def image_pixels(pixels) -> np.ndarray:
    """(H, W), (1, H, W) or (3, H, W) pixels in [0, 1] -> (H, W) gray or (H, W, 3) RGB for imshow."""
    array = np.asarray(pixels, dtype=np.float32)
    if array.ndim == 3:
        if array.shape[0] == 1:
            array = array[0]
        elif array.shape[0] == 3:
            array = np.moveaxis(array, 0, -1)
        else:
            raise ValueError(f"an image is (H, W), (1, H, W) or (3, H, W), got {array.shape}")
    elif array.ndim != 2:
        raise ValueError(f"an image is (H, W), (1, H, W) or (3, H, W), got {array.shape}")
    return np.clip(array, 0.0, 1.0)


def show_image(ax, pixels) -> None:
    """Draw an input image: grayscale in gray (0 black, 1 white), RGB in colour; no ticks."""
    array = image_pixels(pixels)
    if array.ndim == 2:
        ax.imshow(array, cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(array)
    ax.set_xticks([])
    ax.set_yticks([])


def thesis_classes(class_names: Sequence[str], classes: Sequence[int] | None = None) -> list[int]:
    """The thesis's five identities where the data has them, else the first five of `classes`."""
    classes = list(range(len(class_names))) if classes is None else list(classes)
    index = {name: i for i, name in enumerate(class_names)}
    chosen = [index[name] for name in THESIS_IDENTITIES if name in index and index[name] in classes]
    return chosen if len(chosen) == len(THESIS_IDENTITIES) else classes[:5]


def legend_below(figure: Figure, axes, columns: int = 3, **kwargs) -> None:
    """One legend for the figure, under the axes, so it never covers data."""
    handles, labels = [], []
    for ax in np.atleast_1d(axes).ravel():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=8, frameon=False, **kwargs)
