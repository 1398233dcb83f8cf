"""A multirun's results as the report reads them: one Job per finished child run, its
params, metrics and logged tables, read back from the store (nothing is recomputed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from pgsweep.errors import ConfigError
from pgsweep.tracking import StoreReader

FINISHED = "FINISHED"


@dataclass(eq=False)
class Job:
    """One job of the multirun: a model and every answer the stages logged about it."""

    reader: StoreReader = field(repr=False)
    run_id: str
    params: dict
    metrics: dict

    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    @property
    def grouped(self) -> bool:
        """Identical images kept on one side of the split (False: the naive split, as the thesis)."""
        return self.params.get("data.group_duplicates", "True") == "True"

    @property
    def split_name(self) -> str:
        return "grouped" if self.grouped else "naive"

    @property
    def label(self) -> str:
        return f"seed {self.seed}, {self.split_name}"

    @property
    def epochs(self) -> int:
        return int(self.params.get("trainer.max_epochs", 0))

    @property
    def pg_score(self) -> str:
        return f"pg_{self.params.get('analysis.output', 'softmax')}"

    def table(self, artifact: str) -> pd.DataFrame:
        return self.reader.table(self.run_id, artifact)

    def has(self, artifact: str) -> bool:
        return self.reader.has(self.run_id, artifact)

    def file(self, artifact: str) -> bytes:
        return self.reader.file(self.run_id, artifact)

    @cached_property
    def curves(self) -> pd.DataFrame:
        return self.table("knockout/curves.parquet")

    @cached_property
    def test_error_history(self) -> pd.DataFrame:
        """The test error after each epoch (the held-out curve of a run without a val split)."""
        return pd.DataFrame(self.reader.history(self.run_id, "test_error"), columns=["epoch", "test_error"])


def load_jobs(reader: StoreReader, parent_run_id: str) -> list[Job]:
    """The parent's finished child runs, ordered by split reading (grouped first), then seed."""
    parent = reader.run(parent_run_id)
    if parent.tags.get("pgsweep.multirun") != "parent":
        raise ConfigError(f"run {parent_run_id} is not a multirun's parent run (no pgsweep.multirun tag)")
    children = [c for c in reader.children(parent_run_id) if c.status == FINISHED]
    if not children:
        raise ConfigError(f"multirun {parent_run_id} has no finished job to report on")
    jobs = [Job(reader, c.run_id, c.params, c.metrics) for c in children]
    return sorted(jobs, key=lambda job: (not job.grouped, job.seed, job.run_id))
