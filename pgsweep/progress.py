"""Progress bars for long loops: on stderr, shown on a terminal by default and never in a log.

The math takes a plain callback (`progress(n)`: n more pieces done) and knows no bar; a
stage or the sweep's driver makes the bar and passes its `update`.
"""

from __future__ import annotations

import sys


def progress_bar(total: int, label: str, enabled: bool, unit: str = "step", initial: int = 0):
    """A tqdm bar of `total` pieces on stderr; one that prints nothing when not `enabled`."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=label, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)
