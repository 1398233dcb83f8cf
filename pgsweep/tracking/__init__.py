"""Everything MLflow: runs, params, metrics, artifacts, and finding saved models.

This is the only package that imports mlflow, apart from pgsweep/mlflow_ui.py, the MLflow
server app (`mlflow ui --app-name pgsweep`), which the server loads without this
package's torch and logging settings. Workers compute and return; the
driver logs through a Tracker. A local SQLite store takes one writer at a time;
an MLflow tracking server (tracking.uri=http://host:port) takes many.

    writer     Tracker: params, metrics, tags, files, tables, figures, the model
    runs       a run's start and end (tracked_run), parent runs of multiruns
    model_ref  a model_ref -> the model file (resolve_model), the run that logged it
    reader     StoreReader: logged runs read back for reports
    store      the MLflow import (quietened) and where a store is
    server     a local MLflow server in front of a SQLite store, for a multirun's jobs side by side
"""

from pgsweep.settings import TrackingSettings
from pgsweep.tracking.model_ref import MODEL_RUN_TAG, ModelOrigin, model_origin, resolve_model
from pgsweep.tracking.reader import RunRecord, StoreReader
from pgsweep.tracking.runs import (
    EXPERIMENT_KIND_TAG, FAILED, FINISHED, KILLED, MODEL_TRAINING_KIND, RUNNING, SUMMARY_TABLE, UI_VIEW,
    child_runs, finish_parent_run, provenance_tags, start_parent_run, tracked_run,
)
from pgsweep.tracking.store import MODEL_ARTIFACT_DIR, PARENT_TAG, default_tracking_uri
from pgsweep.tracking.writer import Tracker, flatten, log_files

__all__ = [
    "EXPERIMENT_KIND_TAG", "FAILED", "FINISHED", "KILLED", "MODEL_ARTIFACT_DIR", "MODEL_RUN_TAG",
    "MODEL_TRAINING_KIND", "PARENT_TAG", "RUNNING", "SUMMARY_TABLE", "UI_VIEW", "ModelOrigin", "RunRecord",
    "StoreReader", "Tracker", "TrackingSettings", "child_runs", "default_tracking_uri", "finish_parent_run",
    "flatten", "log_files", "model_origin", "provenance_tags", "resolve_model", "start_parent_run", "tracked_run",
]
