"""What a model_ref names: the model file it loads (a path, a run id, an artifact URI) and
the run that logged it."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pgsweep.errors import ModelError
from pgsweep.models.checkpoint import MODEL_FILE, TrainedModel
from pgsweep.tracking.store import (
    MODEL_ARTIFACT_DIR, LifecycleStage, MlflowClient, check_reachable, client, default_tracking_uri, local_db_path,
    mlflow, served_uri,
)

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_RUN_TAG = "pgsweep.model_run_id"  # on a query run: the run that logged the model it queried


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
    db = local_db_path(tracking_uri)
    if db is not None and not db.is_file():
        return None
    try:
        store = client(tracking_uri)
        run = store.get_run(run_id)
        experiment = store.get_experiment(run.info.experiment_id)
    except Exception:  # MLflow raises several types for a missing run; unreachable servers too
        return None
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        return None
    return ModelOrigin(run.info.run_id, experiment.name)


def resolve_model(ref: str, tracking_uri: str | None = None) -> TrainedModel:
    """Load a model from a file path, an MLflow run id, or any MLflow artifact URI.

    `0123...cdef` (run id) and `runs:/ID` mean `runs:/ID/model/pgsweep-model.pt`; a logged or
    registered MLflow model (`models:/NAME/VERSION`, `models:/m-...`) loads the model file inside it.
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
    check_reachable(tracking_uri)
    db = local_db_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ModelError(
            f"cannot fetch model '{ref}': no MLflow store at {db.resolve()} ({tracking_uri}); run where "
            "the store is, or pass its URI (tracking.uri=, tracking_uri=, or MLFLOW_TRACKING_URI)"
        )
    with tempfile.TemporaryDirectory() as folder:
        try:
            if ref.startswith("models:/"):
                ref = _model_location(ref, tracking_uri)
            downloaded = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=folder,
                                                    tracking_uri=served_uri(tracking_uri))
            )
        except Exception as error:  # MLflow raises several types for a missing run or path
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelError(f"cannot fetch model '{ref}' from {tracking_uri}: {message}") from None
        if downloaded.is_dir():  # a folder with the file, or an MLflow model with it in extra_files/
            downloaded = next(iter(sorted(downloaded.rglob(MODEL_FILE))), downloaded / MODEL_FILE)
        return TrainedModel.load(downloaded)


def _model_location(ref: str, tracking_uri: str) -> str:
    """Where a models:/ URI's files are in this store: a logged model (models:/m-ID) or a
    registered version (models:/NAME/VERSION, models:/NAME@ALIAS). MLflow's own download reads
    the registry of the default store, not of tracking_uri."""
    served = served_uri(tracking_uri)
    client = MlflowClient(tracking_uri=served, registry_uri=served)
    path = ref[len("models:/"):].strip("/")
    if re.fullmatch(r"m-[0-9a-f]{32}", path):
        return client.get_logged_model(path).artifact_location
    if "@" in path:
        name, alias = path.split("@", 1)
        return client.get_model_version_download_uri(name, client.get_model_version_by_alias(name, alias).version)
    name, _, version = path.rpartition("/")
    if not name or not version.isdigit():
        raise ModelError(f"model_ref '{ref}': use models:/NAME/VERSION, models:/NAME@ALIAS or models:/m-ID")
    return client.get_model_version_download_uri(name, version)
