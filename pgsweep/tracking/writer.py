"""Writing into a run: params, metrics, tags, files, tables, figures and the model."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from pgsweep.models.checkpoint import MODEL_FILE, TrainedModel
from pgsweep.settings import TrackingSettings
from pgsweep.tracking.store import MODEL_ARTIFACT_DIR, Metric, MlflowClient, Param

_MAX_PARAM_VALUE = 6000  # MLflow's limit on one param value
_BATCH = 100  # MLflow's limit on params per log_batch call


def flatten(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """{"data": {"root": "x"}} -> {"data.root": "x"}; lists and None as text."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


class Tracker:
    """One MLflow run; the driver's handle for logging results."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, object]) -> None:
        items = [Param(key, str(value)[:_MAX_PARAM_VALUE]) for key, value in params.items()]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + _BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        timestamp = int(time.time() * 1000)
        items = [
            Metric(key, float(value), timestamp, step)
            for key, value in metrics.items()
            if value is not None and not math.isnan(float(value))
        ]
        for start in range(0, len(items), _BATCH * 10):
            self.client.log_batch(self.run_id, metrics=items[start : start + _BATCH * 10])

    def set_tags(self, tags: Mapping[str, object]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_table(self, table, artifact_file: str) -> None:
        """A pandas DataFrame as a Parquet artifact (`artifact_file` ends in .parquet).

        Tables are how a stage's results travel: a report reads them back with
        pandas.read_parquet, so every result a figure shows is also a table.
        """
        if not artifact_file.endswith(".parquet"):
            raise ValueError(f"table artifacts are Parquet files: {artifact_file}")
        self._log_written(artifact_file, lambda path: table.to_parquet(path, index=False))

    def log_figure(self, figure, artifact_file: str, dpi: int = 120) -> None:
        """A matplotlib Figure as an image artifact (PNG unless the name says otherwise)."""
        self._log_written(artifact_file, lambda path: figure.savefig(path, dpi=dpi, bbox_inches="tight"))

    def _log_written(self, artifact_file: str, write) -> None:
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            write(path)
            self.log_file(path, folder or None)

    def log_model(self, model: TrainedModel) -> str:
        """Store the model file as an artifact; returns the URI later stages load it from."""
        with tempfile.TemporaryDirectory() as folder:
            path = model.save(Path(folder) / MODEL_FILE)
            self.log_file(path, MODEL_ARTIFACT_DIR)
        return f"runs:/{self.run_id}/{MODEL_ARTIFACT_DIR}/{MODEL_FILE}"


def log_files(settings: TrackingSettings, run_id: str, folder: str | Path, artifact_dir: str) -> None:
    """Every file under `folder` as artifacts of a run (even a finished one), under artifact_dir."""
    client = MlflowClient(tracking_uri=settings.uri)
    client.log_artifacts(run_id, str(folder), artifact_dir)
