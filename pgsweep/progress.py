"""Progress bars for long loops: on stderr, shown on a terminal by default and never in a log.

The math takes a plain callback (`progress(n)`: n more pieces done) and knows no bar; a
stage or the sweep's driver makes the bar and passes its `update`. Work inside one piece
of a sweep (a pruning task's steps) asks `piece_bar`: on a Ray worker the sweep makes it a
bar the driver draws (pgsweep.sweep.runner), in this process a plain one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

# set on a Ray worker by the sweep: (total, label) -> a bar the driver draws
_piece_bars: Callable | None = None


def progress_bar(total: int, label: str, enabled: bool, unit: str = "step", initial: int = 0,
                 leave: bool = True):
    """A tqdm bar of `total` pieces on stderr; one that prints nothing when not `enabled`."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=label, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=leave)


def piece_bar(total: int, label: str, enabled: bool):
    """A bar for the steps inside one piece of a sweep; it goes when done (the sweep's own bar stays)."""
    if enabled and _piece_bars is not None:
        return _piece_bars(total, label)
    return progress_bar(total, label, enabled, leave=False)


def use_piece_bars(factory: Callable | None) -> None:
    """Where `piece_bar` draws from now on: `factory(total, label)`, or None for stderr here."""
    global _piece_bars
    _piece_bars = factory
