"""pgsweep: prediction gradients (Lo 2016) for trained convnets, swept at scale.

    from pgsweep import prediction_gradients, load_model
    model = load_model("RUN_ID")                      # or a path to pgsweep-model.pt
    pg = prediction_gradients(model.network, images, ["act1", "act4", "input"])
    pg.gradients["act1"]        # (classes, images, 5, 56, 56): d p_c / d act1
    pg.filter_scores("act1")    # (classes, images, 5): the convolutional gradient
"""

from pgsweep.data import ImageSet, load_dataset, stratified_split
from pgsweep.errors import ConfigError, DataError, ModelError, PgsweepError, QueryError
from pgsweep.models.checkpoint import TrainedModel
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet
from pgsweep.pg import (
    INPUT,
    PredictionGradients,
    class_average,
    class_filter_scores,
    filter_scores,
    prediction_gradients,
    saliency,
)


def load_model(ref: str, tracking_uri: str = "sqlite:///mlflow.db") -> TrainedModel:
    """A trained model by MLflow run id, runs:/ URI, or pgsweep-model.pt path."""
    from pgsweep.tracking import resolve_model  # MLflow is imported only when asked for

    return resolve_model(ref, tracking_uri)


__all__ = [
    "ConfigError", "ConvNetSpec", "DataError", "INPUT", "ImageSet", "ModelError", "PgsweepError",
    "PredictionGradients", "QueryError", "ThesisConvNet", "TrainedModel", "class_average",
    "class_filter_scores", "filter_scores", "load_dataset", "load_model", "prediction_gradients",
    "saliency", "stratified_split",
]
