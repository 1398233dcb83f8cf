"""The prediction-gradient engine: pure tensor math, no tracking, no orchestration."""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers and the API reference (mkdocstrings) read; at run time, __getattr__
    from pgsweep.pg.engine import INPUT, PredictionGradients, prediction_gradients
    from pgsweep.pg.reductions import class_average, class_filter_scores, filter_scores, saliency

# imported on first use, so pgsweep.pg.choices (what config checks need) loads without torch
_HOMES = {"INPUT": "engine", "PredictionGradients": "engine", "prediction_gradients": "engine",
          "class_average": "reductions", "class_filter_scores": "reductions", "filter_scores": "reductions",
          "saliency": "reductions"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'pgsweep.pg' has no attribute '{name}'")
    return getattr(importlib.import_module(f"pgsweep.pg.{_HOMES[name]}"), name)


__all__ = [
    "INPUT", "PredictionGradients", "prediction_gradients",
    "class_average", "class_filter_scores", "filter_scores", "saliency",
]
