"""pgsweep: prediction gradients (Lo 2016) for trained convnets, swept at scale.

    from pgsweep import prediction_gradients, load_model
    model = load_model("RUN_ID")                      # or a path to pgsweep-model.pt
    pg = prediction_gradients(model.network, images, ["act1", "act4", "input"])
    pg.gradients["act1"]        # (classes, images, 5, 56, 56): d p_c / d act1
    pg.filter_scores("act1")    # (classes, images, 5): the convolutional gradient
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> the module it lives in; imported on first use, so `pgsweep --help` and a config
# error never pay for torch (the names are the same as `from pgsweep import X` always gave)
_EXPORTS = {
    "ImageSet": "pgsweep.data", "load_dataset": "pgsweep.data", "stratified_split": "pgsweep.data",
    "ConfigError": "pgsweep.errors", "DataError": "pgsweep.errors", "ModelError": "pgsweep.errors",
    "PgsweepError": "pgsweep.errors", "QueryError": "pgsweep.errors",
    "TrainedModel": "pgsweep.models.checkpoint",
    "ConvNetSpec": "pgsweep.models.spec", "ThesisConvNet": "pgsweep.models.convnet",
    "INPUT": "pgsweep.pg", "PredictionGradients": "pgsweep.pg", "class_average": "pgsweep.pg",
    "class_filter_scores": "pgsweep.pg", "filter_scores": "pgsweep.pg",
    "prediction_gradients": "pgsweep.pg", "saliency": "pgsweep.pg",
}

if TYPE_CHECKING:
    from pgsweep.data import ImageSet, load_dataset, stratified_split
    from pgsweep.errors import ConfigError, DataError, ModelError, PgsweepError, QueryError
    from pgsweep.models.checkpoint import TrainedModel
    from pgsweep.models.convnet import ThesisConvNet
    from pgsweep.models.spec import ConvNetSpec
    from pgsweep.pg import (
        INPUT, PredictionGradients, class_average, class_filter_scores, filter_scores,
        prediction_gradients, saliency,
    )


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pgsweep' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_model(ref: str, tracking_uri: str | None = None) -> TrainedModel:
    """A trained model by MLflow run id, runs:/ URI, or pgsweep-model.pt path.

    tracking_uri: the MLflow store that holds the run; default MLFLOW_TRACKING_URI, else
    sqlite:///mlflow.db in the current folder. A store that is not there is an error
    (a read never creates one).
    """
    from pgsweep.tracking import resolve_model  # MLflow is imported only when asked for

    return resolve_model(ref, tracking_uri)


__all__ = [
    "ConfigError", "ConvNetSpec", "DataError", "INPUT", "ImageSet", "ModelError", "PgsweepError",
    "PredictionGradients", "QueryError", "ThesisConvNet", "TrainedModel", "class_average",
    "class_filter_scores", "filter_scores", "load_dataset", "load_model", "prediction_gradients",
    "saliency", "stratified_split",
]
