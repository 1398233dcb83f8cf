"""The thesis's questions of a trained network (Lo 2016, 4.2-4.3), as plain functions.

Each takes (network, images, labels, ...) for any nn.Module classifier the PG engine
supports, returns arrays and pandas tables, and logs nothing:

    from pgsweep.analyses import class_scores, find_units, knockout_predictions
    scores = class_scores(net, images, labels, class_names, ["act1", "act2", "act3"])
    scores.scores["pg_softmax"]     # (classes, 23): class-averaged PG per filter (Table 4.2)

The pipeline stages that run them and log their results live in pgsweep.stages.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers and the API reference (mkdocstrings) read; at run time, __getattr__
    from pgsweep.analyses.diagrams import choose_images, consistency, image_filter_scores
    from pgsweep.analyses.features import FeatureMaps, feature_maps, feature_table, receptive_field
    from pgsweep.analyses.knockout import (
        KnockoutRun, area, class_orders, curve_table, knockout_predictions, knockout_predictions_loop,
        random_orders, single_knockouts, summarize,
    )
    from pgsweep.analyses.ranking import (
        SCORES, ClassScores, class_scores, strongest_first, strongest_weakest, thesis_table_markdown,
        weakest_first,
    )
    from pgsweep.analyses.units import Units, default_layers, find_units

# where each public name lives; imported on first use, so the light modules of this package
# (choices: what config checks need) load without torch
_HOMES = {
    "choose_images": "diagrams", "consistency": "diagrams", "image_filter_scores": "diagrams",
    "FeatureMaps": "features", "feature_maps": "features", "feature_table": "features", "receptive_field": "features",
    **dict.fromkeys(("KnockoutRun", "area", "class_orders", "curve_table", "knockout_predictions",
                     "knockout_predictions_loop", "random_orders", "single_knockouts", "summarize"), "knockout"),
    **dict.fromkeys(("SCORES", "ClassScores", "class_scores", "strongest_first", "strongest_weakest",
                     "thesis_table_markdown", "weakest_first"), "ranking"),
    "Units": "units", "default_layers": "units", "find_units": "units",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'pgsweep.analyses' has no attribute '{name}'")
    return getattr(importlib.import_module(f"pgsweep.analyses.{_HOMES[name]}"), name)


__all__ = [
    "SCORES", "ClassScores", "FeatureMaps", "KnockoutRun", "Units", "area", "choose_images", "class_orders",
    "class_scores", "consistency", "curve_table", "default_layers", "feature_maps", "feature_table",
    "find_units", "image_filter_scores", "knockout_predictions", "knockout_predictions_loop", "random_orders",
    "receptive_field", "single_knockouts", "strongest_first", "strongest_weakest", "summarize",
    "thesis_table_markdown", "weakest_first",
]
