"""The one module of pgsweep.tracking that imports MLflow (quietened first), and where a store is.

The package's other modules take MLflow's names from here, so MLflow is always imported
after the environment that quietens it is set. Names shared by the writer, the run
lifecycle, model resolution and the reader live here too.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from pgsweep.errors import ConfigError
from pgsweep.settings import TrackingSettings
from pgsweep.tracking.server import served_uri


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

__all__ = [
    "MODEL_ARTIFACT_DIR", "PARENT_TAG", "LifecycleStage", "Metric", "MlflowClient", "MlflowException", "Param",
    "RunStatus", "check_reachable", "client", "default_tracking_uri", "local_db_path", "mlflow", "served_uri",
]

MODEL_ARTIFACT_DIR = "model"
PARENT_TAG = "mlflow.parentRunId"  # the tag the MLflow UI nests runs by


def client(uri: str) -> MlflowClient:
    """A client of the store at `uri` (through the local server in front of it while a
    multirun's jobs run side by side: pgsweep.tracking.server)."""
    return MlflowClient(tracking_uri=served_uri(uri))


def local_db_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_reachable(uri: str) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, if a server is down."""
    uri = served_uri(uri)
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        raise ConfigError(f"cannot reach the MLflow server at tracking.uri={uri}: {error}") from None


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the default local store (mlflow.db here)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or TrackingSettings.uri
