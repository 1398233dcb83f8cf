"""A run's life: the store and experiment made when missing, a run started, nested under a
parent, and ended FINISHED, FAILED or KILLED; a multirun's parent run and its summary."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pgsweep.errors import ConfigError, Interrupted
from pgsweep.logs import release_held
from pgsweep.mlflow_ui import MODEL_TRAINING_WORKFLOW_TYPE
from pgsweep.provenance import RunFacts
from pgsweep.settings import TrackingSettings
from pgsweep.tracking.store import (
    PARENT_TAG, MlflowClient, MlflowException, RunStatus, check_reachable, client as store_client, local_db_path,
)
from pgsweep.tracking.writer import Tracker

log = logging.getLogger(__package__)  # one logger for the package: its lines read [pgsweep.tracking]

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
SUMMARY_TABLE = "multirun/summary.parquet"
RUNNING, FINISHED, FAILED, KILLED = (
    RunStatus.to_string(s) for s in (RunStatus.RUNNING, RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)
)


def _prepare_store(settings: TrackingSettings) -> tuple[MlflowClient, str | None]:
    """A client for the store, and the artifact location new experiments get."""
    settings.validate()
    check_reachable(settings.uri)
    artifact_location = settings.artifact_location
    db = local_db_path(settings.uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        if artifact_location is None:
            artifact_location = str(db.resolve().parent / "mlartifacts")
    if artifact_location and "://" not in artifact_location:
        artifact_location = Path(artifact_location).expanduser().resolve().as_uri()
    return store_client(settings.uri), artifact_location


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


@contextmanager
def tracked_run(settings: TrackingSettings, tags: Mapping[str, str] | None = None) -> Iterator[Tracker]:
    """Start a run; it ends FINISHED, or FAILED if the body raises (KILLED on Ctrl-C or SIGTERM)."""
    client, run_id = _open_run(settings, tags)
    try:
        yield Tracker(client, run_id)
    except (KeyboardInterrupt, Interrupted):
        try:
            client.set_terminated(run_id, KILLED)
            # pgsweep's own line says so (Ctrl-C prints one line); the run id for a debug log
            log.debug("MLflow run %s interrupted: marked KILLED", run_id)
        except Exception as error:  # the interrupt, not this, decides the exit status
            log.warning("MLflow run %s interrupted, but marking it KILLED failed: %s", run_id, error)
        raise
    except BaseException:
        client.set_terminated(run_id, FAILED)
        raise
    client.set_terminated(run_id, FINISHED)


def provenance_tags(facts: RunFacts) -> dict[str, str]:
    """A run's tags for what made it: pgsweep.code (the fingerprint resumable stores key on),
    pgsweep.version, MLflow's source tags (the git commit where pgsweep is a checkout), the
    libraries' versions (pgsweep.lib.NAME), the device and the thread count."""
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

    tags = {"pgsweep.code": facts.code, "pgsweep.version": facts.version, MLFLOW_SOURCE_NAME: "pgsweep",
            MLFLOW_SOURCE_TYPE: "LOCAL", **{f"pgsweep.lib.{name}": version for name, version in facts.libraries.items()}}
    if facts.device is not None:
        tags["pgsweep.device"], tags["pgsweep.threads"] = facts.device, str(facts.threads)
    if facts.git_commit:
        tags[MLFLOW_GIT_COMMIT] = facts.git_commit
    return tags


# ---------------------------------------------------------------- multiruns: a parent run

def start_parent_run(settings: TrackingSettings, tags: Mapping[str, str], params: Mapping[str, object]) -> str:
    """The run a multirun's jobs nest under. Creating it also creates a new local store,
    once, before any job starts: concurrent first use of a new SQLite store fails in
    MLflow's schema migrations."""
    client, run_id = _open_run(settings, tags)
    Tracker(client, run_id).log_params(params)
    return run_id


def child_runs(settings: TrackingSettings, parent_run_id: str) -> list:
    client = store_client(settings.uri)
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

    client = store_client(settings.uri)
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

