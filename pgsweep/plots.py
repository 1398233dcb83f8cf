"""Results -> matplotlib figures. No I/O: the driver logs what these return.

Figures are built on matplotlib.figure.Figure directly (no pyplot state, no GUI
backend), so drawing is safe anywhere and nothing leaks between figures. Each
analysis adds its figures here in its own section, reading the same tables it
logs, so a report can redraw any figure from the logged tables.
"""

from __future__ import annotations

from matplotlib.figure import Figure


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """A blank figure of the given size in inches."""
    return Figure(figsize=(width, height), layout="constrained")
