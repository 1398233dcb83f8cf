"""A multirun's results as the report reads them: one Job per finished child run, its
params, metrics and logged tables, read back from the store (nothing is recomputed).
This is the one place the report gathers from the store; the claims read Jobs."""

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

    def departures(self, thesis_setup: dict) -> dict[str, str]:
        """The job's params that differ from the thesis's setup: {key: this job's value}."""
        return {key: self.params.get(key, "unset") for key, value in thesis_setup.items()
                if not _same(self.params.get(key), value)}

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


def _same(param: str | None, value) -> bool:
    """A logged param (always text) against a YAML value."""
    if param is None:
        return False
    if isinstance(value, bool):
        return param == str(value)
    if isinstance(value, (int, float)):
        try:
            return float(param) == float(value)
        except ValueError:
            return False
    return param == str(value)


def setup_departures(jobs: list[Job], thesis_setup: dict) -> str:
    """One line naming every param where some jobs depart from the thesis's setup ('' if none)."""
    parts = []
    for key, value in thesis_setup.items():
        differing = [job.departures({key: value}).get(key) for job in jobs]
        differing = [v for v in differing if v is not None]
        if differing:
            seen = ", ".join(sorted(set(differing)))
            parts.append(f"{key}={seen} (thesis {str(value).lower() if isinstance(value, bool) else value}; "
                         f"{len(differing)} of {len(jobs)} models)")
    return "; ".join(parts)


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
