"""The prediction-gradient engine: pure tensor math, no tracking, no orchestration."""

from pgsweep.pg.engine import INPUT, PredictionGradients, prediction_gradients
from pgsweep.pg.reductions import class_average, class_filter_scores, filter_scores, saliency

__all__ = [
    "INPUT", "PredictionGradients", "prediction_gradients",
    "class_average", "class_filter_scores", "filter_scores", "saliency",
]
