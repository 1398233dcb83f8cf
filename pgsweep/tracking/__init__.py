"""Everything MLflow: runs, params, metrics, artifacts, and finding saved models.

This is the only module that imports mlflow, apart from pgsweep/mlflow_ui.py, the MLflow
server app (`mlflow ui --app-name pgsweep`), which the server loads without this
module's torch and logging settings. Workers compute and return; the
driver logs through a Tracker. A local SQLite store takes one writer at a time;
an MLflow tracking server (tracking.uri=http://host:port) takes many.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pgsweep.errors import ConfigError, Interrupted, ModelError
from pgsweep.logs import release_held
from pgsweep.mlflow_ui import MODEL_TRAINING_WORKFLOW_TYPE
from pgsweep.models.checkpoint import MODEL_FILE, TrainedModel
from pgsweep.settings import TrackingSettings


def _quiet_mlflow() -> bool:
    """MLflow's info lines and download bars are noise for a CLI user; keep them for verbose logging.

    Hydra's `hydra.verbose=true` (or `=mlflow`) sets the loggers to DEBUG before this
    module is imported; MLFLOW_LOGGING_LEVEL and MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR,
    when set, win.
    """
    if logging.getLogger("mlflow").isEnabledFor(logging.DEBUG):
        return False
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read by MLflow at import
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # read at each download
    return True


_QUIET = _quiet_mlflow()

import mlflow  # noqa: E402  (after the environment above is set)
from mlflow.entities import LifecycleStage, Metric, Param, RunStatus  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

if _QUIET:  # MLflow imported earlier (a notebook, a test) configured itself already
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())

log = logging.getLogger(__name__)

MODEL_ARTIFACT_DIR = "model"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_MAX_PARAM_VALUE = 6000  # MLflow's limit on one param value
_BATCH = 100  # MLflow's limit on params per log_batch call
PARENT_TAG = "mlflow.parentRunId"  # the tag the MLflow UI nests runs by
# MLflow 3's experiment kind (its UI's "Machine learning" kind, not "GenAI apps & agents"):
# the tag and value MLflow's own experiment-kind selector writes (mlflow/server/js bundle).
# MLflow 3.17.2's UI does not choose its view from this tag (seen in a browser: a tagged
# experiment opens in GenAI just as an untagged one): a link's `workflowType` decides, else
# its sidebar switch (GenAI / Model training, kept per browser), which starts at GenAI with
# plain `mlflow ui` and at Model training with pgsweep's app (pgsweep/mlflow_ui.py, README).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# a link's view: that page in model training, whatever the switch and whichever server app
UI_VIEW = f"workflowType={MODEL_TRAINING_WORKFLOW_TYPE}"
MODEL_RUN_TAG = "pgsweep.model_run_id"  # on a query run: the run that logged the model it queried
SUMMARY_TABLE = "multirun/summary.parquet"
RUNNING, FINISHED, FAILED, KILLED = (
    RunStatus.to_string(s) for s in (RunStatus.RUNNING, RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)
)


def _local_db_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _check_reachable(uri: str) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, if a server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        raise ConfigError(f"cannot reach the MLflow server at tracking.uri={uri}: {error}") from None


def _prepare_store(settings: TrackingSettings) -> tuple[MlflowClient, str | None]:
    """A client for the store, and the artifact location new experiments get."""
    settings.validate()
    _check_reachable(settings.uri)
    artifact_location = settings.artifact_location
    db = _local_db_path(settings.uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        if artifact_location is None:
            artifact_location = str(db.resolve().parent / "mlartifacts")
    if artifact_location and "://" not in artifact_location:
        artifact_location = Path(artifact_location).expanduser().resolve().as_uri()
    return MlflowClient(tracking_uri=settings.uri), artifact_location


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


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment's id, creating it when missing; marked a model-training experiment
    (EXPERIMENT_KIND_TAG) unless it already has a kind."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException:  # another process created it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by hand, or by an older pgsweep
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return experiment.experiment_id


def _open_run(settings: TrackingSettings, tags: Mapping[str, str] | None) -> tuple[MlflowClient, str]:
    """Create the store and experiment when missing, then a run in it (nested when asked)."""
    client, artifact_location = _prepare_store(settings)
    experiment_id = _experiment_id(client, settings.experiment, artifact_location)
    tags = dict(tags or {})
    if settings.parent_run_id:
        try:
            parent = client.get_run(settings.parent_run_id)
        except Exception:  # MLflow raises its own error type for a missing run
            raise ConfigError(f"tracking.parent_run_id {settings.parent_run_id}: no such run") from None
        if parent.info.experiment_id != experiment_id:
            raise ConfigError(
                f"tracking.parent_run_id {settings.parent_run_id} is in another experiment "
                f"than tracking.experiment '{settings.experiment}'"
            )
        tags[PARENT_TAG] = settings.parent_run_id
    run = client.create_run(experiment_id, run_name=settings.run_name, tags=tags)
    release_held()  # the input passed every check: the lines its checks logged can show now
    where = settings.uri
    if settings.is_server:  # the run in model training whatever the browser's switch (GenAI on a plain server)
        where = f"{settings.uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run.info.run_id}?{UI_VIEW}"
    log.info("MLflow run %s (experiment '%s', %s)", run.info.run_id, settings.experiment, where)
    return client, run.info.run_id


def worker_tracker(settings: TrackingSettings, run_id: str) -> Tracker:
    """A Tracker for a worker process (a Ray task) logging straight into a driver's run.

    Only a tracking server takes many writers at once. With a local SQLite store the
    workers return their results and the driver logs them; the driver also creates the
    store (tracked_run, start_parent_run) before any worker starts, since concurrent
    first use of a new SQLite store fails in MLflow's schema migrations.
    """
    if not settings.is_server:
        raise ConfigError(
            f"workers log only to an MLflow server (tracking.uri=http://HOST:PORT), not to "
            f"'{settings.uri}': there the driver logs what the workers return"
        )
    return Tracker(MlflowClient(tracking_uri=settings.uri), run_id)


@contextmanager
def tracked_run(settings: TrackingSettings, tags: Mapping[str, str] | None = None) -> Iterator[Tracker]:
    """Start a run; it ends FINISHED, or FAILED if the body raises (KILLED on Ctrl-C or SIGTERM)."""
    client, run_id = _open_run(settings, tags)
    try:
        yield Tracker(client, run_id)
    except (KeyboardInterrupt, Interrupted):
        try:
            client.set_terminated(run_id, KILLED)
            log.warning("MLflow run %s interrupted: marked KILLED", run_id)
        except Exception as error:  # the interrupt, not this, decides the exit status
            log.warning("MLflow run %s interrupted, but marking it KILLED failed: %s", run_id, error)
        raise
    except BaseException:
        client.set_terminated(run_id, FAILED)
        raise
    client.set_terminated(run_id, FINISHED)


# ---------------------------------------------------------------- multiruns: a parent run

def start_parent_run(settings: TrackingSettings, tags: Mapping[str, str], params: Mapping[str, object]) -> str:
    """The run a multirun's jobs nest under. Creating it also creates a new local store,
    once, before any job starts: concurrent first use of a new SQLite store fails in
    MLflow's schema migrations."""
    client, run_id = _open_run(settings, tags)
    Tracker(client, run_id).log_params(params)
    return run_id


def child_runs(settings: TrackingSettings, parent_run_id: str) -> list:
    client = MlflowClient(tracking_uri=settings.uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"], max_results=10_000,
    )


def finish_parent_run(settings: TrackingSettings, parent_run_id: str, swept: list[str], ended: bool) -> str:
    """Log the summary table (a row per job) to the parent run and end it; returns its status.

    ended: the multirun reached its end hook. When it did not (an interrupt, a job that
    stopped the process), children still RUNNING are ended KILLED, and the parent ends
    KILLED if any child was, else FAILED: no run of the multirun is left RUNNING.
    """
    import pandas as pd

    client = MlflowClient(tracking_uri=settings.uri)
    children = child_runs(settings, parent_run_id)
    statuses = []
    for child in children:
        if child.info.status == RUNNING:  # its process is gone, or the multirun was stopped
            client.set_terminated(child.info.run_id, KILLED)
        statuses.append(KILLED if child.info.status == RUNNING else child.info.status)
    if ended and all(status == FINISHED for status in statuses):
        status = FINISHED
    else:
        status = KILLED if KILLED in statuses else FAILED
    rows = [
        {"run_id": child.info.run_id, "run_name": child.info.run_name, "status": job_status,
         **{key: child.data.params.get(key) for key in swept}, **child.data.metrics}
        for child, job_status in zip(children, statuses)
    ]
    tracker = Tracker(client, parent_run_id)
    if rows:
        tracker.log_table(pd.DataFrame(rows), SUMMARY_TABLE)
    tracker.log_metrics({"jobs": len(children), "jobs_finished": statuses.count(FINISHED),
                         "jobs_failed": statuses.count(FAILED), "jobs_killed": statuses.count(KILLED)})
    client.set_terminated(parent_run_id, status)
    return status


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the default local store (mlflow.db here)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or TrackingSettings.uri


@dataclass(frozen=True)
class ModelOrigin:
    """The MLflow run that logged a model, and its experiment's name."""

    run_id: str
    experiment: str


def model_origin(ref: str, tracking_uri: str | None = None) -> ModelOrigin | None:
    """The run a model_ref names (a run id or a runs:/RUN_ID/... URI) in `tracking_uri`.

    None for a model file, a models:/ URI, a store that is not there (reading never
    creates one), or a run or experiment that is not found or deleted: then a query
    simply keeps its configured experiment, and resolve_model reports what is wrong.
    """
    ref = str(ref).strip()
    if not ref or Path(ref).expanduser().exists():
        return None
    uri = re.match(r"^runs:/([0-9a-f]{32})(/.*)?$", ref)
    run_id = uri.group(1) if uri else ref if _RUN_ID.match(ref) else None
    if run_id is None:
        return None
    tracking_uri = tracking_uri or default_tracking_uri()
    db = _local_db_path(tracking_uri)
    if db is not None and not db.is_file():
        return None
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        run = client.get_run(run_id)
        experiment = client.get_experiment(run.info.experiment_id)
    except Exception:  # MLflow raises several types for a missing run; unreachable servers too
        return None
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        return None
    return ModelOrigin(run.info.run_id, experiment.name)


def resolve_model(ref: str, tracking_uri: str | None = None) -> TrainedModel:
    """Load a model from a file path, an MLflow run id, or any MLflow artifact URI.

    `0123...cdef` (run id) and `runs:/ID` mean `runs:/ID/model/pgsweep-model.pt`.
    Reading never creates a store: a local SQLite file that is not there is an error.
    """
    tracking_uri = tracking_uri or default_tracking_uri()
    ref = str(ref).strip()
    if not ref:
        raise ModelError("model_ref is empty: give an MLflow run id, a runs:/ URI, or a model file")
    local = Path(ref).expanduser()
    if local.exists():
        return TrainedModel.load(local / MODEL_FILE if local.is_dir() else local)
    if _RUN_ID.match(ref):
        ref = f"runs:/{ref}"
    if "://" not in ref and not ref.startswith(("runs:/", "models:/")):
        raise ModelError(f"model_ref '{ref}': no such file, and not a run id or artifact URI")
    if re.match(r"^runs:/[0-9a-f]{32}/?$", ref):
        ref = f"{ref.rstrip('/')}/{MODEL_ARTIFACT_DIR}/{MODEL_FILE}"
    _check_reachable(tracking_uri)
    db = _local_db_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ModelError(
            f"cannot fetch model '{ref}': no MLflow store at {db.resolve()} ({tracking_uri}); run where "
            "the store is, or pass its URI (tracking.uri=, tracking_uri=, or MLFLOW_TRACKING_URI)"
        )
    with tempfile.TemporaryDirectory() as folder:
        try:
            downloaded = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=folder, tracking_uri=tracking_uri)
            )
        except Exception as error:  # MLflow raises several types for a missing run or path
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelError(f"cannot fetch model '{ref}' from {tracking_uri}: {message}") from None
        return TrainedModel.load(downloaded / MODEL_FILE if downloaded.is_dir() else downloaded)


# ---------------------------------------------------------------- reading results back (reports)

class StoreReader:
    """Reads logged runs back from a store: params, metrics, metric histories, tables, files.

    What a report needs, without MLflow types leaking out: runs come back as RunRecords,
    tables as pandas DataFrames, files as bytes. Downloads are cached for the reader's life.
    """

    def __init__(self, uri: str) -> None:
        _check_reachable(uri)
        db = _local_db_path(uri)
        if db is not None and not db.is_file():
            raise ConfigError(f"no MLflow store at {db.resolve()} ({uri}): run where the store is, or pass its URI")
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self._folder = tempfile.TemporaryDirectory(prefix="pgsweep-report-")
        self._files: dict[tuple[str, str], Path] = {}

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

    def path(self, run_id: str, artifact: str) -> Path:
        key = (run_id, artifact)
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


def log_files(settings: TrackingSettings, run_id: str, folder: str | Path, artifact_dir: str) -> None:
    """Every file under `folder` as artifacts of a run (even a finished one), under artifact_dir."""
    client = MlflowClient(tracking_uri=settings.uri)
    client.log_artifacts(run_id, str(folder), artifact_dir)
