"""Reading logged runs back (reports): params, metrics, metric histories, tables, files."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pgsweep.errors import ConfigError
from pgsweep.tracking.store import PARENT_TAG, check_reachable, client, local_db_path


class StoreReader:
    """Reads logged runs back from a store: params, metrics, metric histories, tables, files.

    What a report needs, without MLflow types leaking out: runs come back as RunRecords,
    tables as pandas DataFrames, files as bytes. Downloads are cached for the reader's life.
    """

    def __init__(self, uri: str) -> None:
        check_reachable(uri)
        db = local_db_path(uri)
        if db is not None and not db.is_file():
            raise ConfigError(f"no MLflow store at {db.resolve()} ({uri}): run where the store is, or pass its URI")
        self.uri = uri
        self.client = client(uri)
        self._folder = tempfile.TemporaryDirectory(prefix="pgsweep-report-")
        self._files: dict[tuple[str, str], Path] = {}
        self._roots: dict[str, Path | None] = {}

    def run(self, run_id: str) -> "RunRecord":
        try:
            return RunRecord.of(self.client.get_run(run_id))
        except Exception:  # MLflow raises its own error type for a missing run
            raise ConfigError(f"run {run_id}: no such run in {self.uri}") from None

    def children(self, parent_run_id: str) -> list["RunRecord"]:
        """The runs nested under a parent, oldest first."""
        parent = self.run(parent_run_id)
        runs = self.client.search_runs(
            [parent.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            order_by=["attributes.start_time ASC"], max_results=10_000,
        )
        return [RunRecord.of(run) for run in runs]

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """A metric's (step, value) pairs, by step."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))

    def _local_artifacts(self, run_id: str) -> Path | None:
        """The run's artifact folder when it is on this machine's disk (a file URI), else None."""
        if run_id not in self._roots:
            from urllib.parse import unquote, urlparse

            uri = self.client.get_run(run_id).info.artifact_uri
            parsed = urlparse(uri)
            local = Path(unquote(parsed.path)) if parsed.scheme in ("", "file") and not parsed.netloc else None
            self._roots[run_id] = local if local is not None and local.is_dir() else None
        return self._roots[run_id]

    def path(self, run_id: str, artifact: str) -> Path:
        key = (run_id, artifact)
        root = self._local_artifacts(run_id)
        if key not in self._files and root is not None and (root / artifact).is_file():
            self._files[key] = root / artifact  # read where it lies (a copy per file cost a store query each)
        if key not in self._files:
            target = Path(self._folder.name) / run_id
            target.mkdir(exist_ok=True)
            try:
                self._files[key] = Path(self.client.download_artifacts(run_id, artifact, str(target)))
            except Exception as error:  # MLflow raises several types for a missing path
                raise ConfigError(f"run {run_id} has no artifact {artifact}: "
                                  f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
        return self._files[key]

    def has(self, run_id: str, artifact: str) -> bool:
        folder, _, name = artifact.rpartition("/")
        return any(Path(a.path).name == name for a in self.client.list_artifacts(run_id, folder or None))

    def table(self, run_id: str, artifact: str):
        import pandas as pd

        return pd.read_parquet(self.path(run_id, artifact))

    def file(self, run_id: str, artifact: str) -> bytes:
        return self.path(run_id, artifact).read_bytes()


class RunRecord:
    """A run as plain values: id, name, status, experiment, params, metrics (last values), tags."""

    def __init__(self, run_id, name, status, experiment_id, params, metrics, tags) -> None:
        self.run_id, self.name, self.status, self.experiment_id = run_id, name, status, experiment_id
        self.params, self.metrics, self.tags = dict(params), dict(metrics), dict(tags)

    @classmethod
    def of(cls, run) -> "RunRecord":
        return cls(run.info.run_id, run.info.run_name, run.info.status, run.info.experiment_id,
                   run.data.params, run.data.metrics, run.data.tags)

