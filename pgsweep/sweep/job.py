"""What run_sweep fans out: a Job cut into pieces, each computed by a worker into one table.

The adversarial grid (pgsweep.sweep.grid.SweepJob) and the pruning schedule
(pgsweep.stages.prune_job.PruneJob) are both Jobs. A Job is plain data, put in Ray's
object store once; a worker builds `network()` once and runs each piece it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pandas as pd
import torch


class Piece(Protocol):
    """One unit of work; `index` names its file in the shard store."""

    index: int


class Job(Protocol):
    label: str  # the progress bar's name

    def key(self) -> str:
        """A hash of everything that decides the results: names the folder of finished pieces."""

    def describe(self) -> dict:
        """What the key hashes, as JSON-able values (the folder's grid.json)."""

    def pieces(self) -> Sequence[Piece]:
        """The work, cut into pieces."""

    def network(self) -> torch.nn.Module:
        """The network a worker builds once and runs every piece on."""

    def run(self, piece: Piece, network: torch.nn.Module | None = None) -> pd.DataFrame:
        """One piece's table."""

    def gather(self, tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
        """Every piece's table (in pieces() order) as one."""
