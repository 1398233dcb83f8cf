"""Writing into a run: params, metrics, tags, files, tables, figures and the model."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from pgsweep.models.checkpoint import MODEL_FILE, TrainedModel
from pgsweep.settings import TrackingSettings
from pgsweep.tracking.store import MODEL_ARTIFACT_DIR, Metric, MlflowClient, Param, client, mlflow

# The trained model's name among the run's logged models. Not "model": MLflow reads
# runs:/ID/NAME/... as the logged model NAME's files, which would hide the model/ folder
# every stage loads pgsweep-model.pt from.
MLFLOW_MODEL_NAME = "pytorch_model"
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
        self.log_metric_steps([(metrics, step)])

    def log_metric_steps(self, steps: Sequence[tuple[Mapping[str, float], int]]) -> None:
        """Several steps' metrics (each a mapping and its step) in as few store calls as MLflow
        allows: one call per epoch would cost a database commit per epoch."""
        timestamp = int(time.time() * 1000)
        items = [
            Metric(key, float(value), timestamp, step)
            for metrics, step in steps
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

    def log_model(self, model: TrainedModel, example=None, artifact_dir: str = MODEL_ARTIFACT_DIR,
                  name: str = MLFLOW_MODEL_NAME, registered_name: str | None = None) -> str:
        """Store the model file as an artifact; returns the URI later stages load it from.

        With `example` (a few input images, (N, C, H, W)), the network is also logged as an
        MLflow PyTorch model called `name` (signature and input example; the model file
        inside it, under extra_files/), so it is listed under the run's logged models,
        loads with mlflow.pytorch.load_model and serves with `mlflow models serve`;
        registered_name also registers it in the Model Registry.
        """
        with tempfile.TemporaryDirectory() as folder:
            path = model.save(Path(folder) / MODEL_FILE)
            self.log_file(path, artifact_dir)
            if example is not None:
                self._log_mlflow_model(model.network, path, example, name, registered_name)
        return f"runs:/{self.run_id}/{artifact_dir}/{MODEL_FILE}"

    def _log_mlflow_model(self, network, model_file: Path, example, name: str, registered_name: str | None) -> None:
        import mlflow.pytorch  # noqa: F401  (a flavour MLflow does not import by itself)
        import torch
        from mlflow.models import infer_signature

        example = np.ascontiguousarray(np.asarray(example, dtype=np.float32))
        with torch.no_grad():
            outputs = network.eval()(torch.from_numpy(example)).numpy()
        # pinned to what computed it; pickled, so loading needs pgsweep importable (serve with
        # --env-manager local where pgsweep is installed)
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
        with self._fluent(), _quiet("mlflow.pytorch", "mlflow.models"):
            mlflow.pytorch.log_model(
                network, name=name, run_id=self.run_id, signature=infer_signature(example, outputs),
                input_example=example, pip_requirements=requirements, extra_files=[str(model_file)],
                serialization_format="pickle",  # any nn.Module (pruned too), any batch size
                registered_model_name=registered_name,
            )

    def log_dataset(self, name: str, features, targets, source: str, context: str) -> None:
        """A data set as an MLflow dataset input of the run (its name, digest and source path)."""
        import mlflow.data  # noqa: F401
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with _quiet("mlflow.data"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the source can be interpreted in multiple ways": a local path
            dataset = mlflow.data.from_numpy(np.asarray(features), targets=np.asarray(targets), source=source,
                                             name=name)
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=tags)])

    @contextlib.contextmanager
    def _fluent(self) -> Iterator[None]:
        """MLflow's fluent API (which log_model uses) pointed at this run's store and experiment
        (else the logged model lands in the Default experiment) for the call."""
        # set_tracking_uri and set_experiment also write MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_ID
        # into os.environ, which every later subprocess (a Ray worker, the next pgsweep) would inherit
        environment = {name: os.environ.get(name) for name in _FLUENT_ENVIRONMENT}
        before = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.client.tracking_uri)
        mlflow.set_experiment(experiment_id=self.client.get_run(self.run_id).info.experiment_id)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before)
            for name, value in environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


_FLUENT_ENVIRONMENT = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """MLflow's warnings about formats pgsweep chose on purpose stay out of the user's log."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def log_files(settings: TrackingSettings, run_id: str, folder: str | Path, artifact_dir: str) -> None:
    """Every file under `folder` as artifacts of a run (even a finished one), under artifact_dir."""
    client(settings.uri).log_artifacts(run_id, str(folder), artifact_dir)
