"""The thesis's questions of a trained network (Lo 2016, 4.2-4.3), as plain functions.

Each takes (network, images, labels, ...) for any nn.Module classifier the PG engine
supports, returns arrays and pandas tables, and logs nothing:

    from pgsweep.analyses import class_scores, find_units, knockout_predictions
    scores = class_scores(net, images, labels, class_names, ["act1", "act2", "act3"])
    scores.scores["pg_softmax"]     # (classes, 23): class-averaged PG per filter (Table 4.2)

The pipeline stages that run them and log their results live in pgsweep.analyses.stages.
"""

from pgsweep.analyses.diagrams import choose_images, consistency, image_filter_scores
from pgsweep.analyses.features import FeatureMaps, feature_maps, feature_table, receptive_field
from pgsweep.analyses.knockout import (
    KnockoutRun, area, class_orders, curve_table, knockout_predictions, knockout_predictions_loop,
    random_orders, single_knockouts, summarize,
)
from pgsweep.analyses.ranking import (
    SCORES, ClassScores, class_scores, strongest_first, strongest_weakest, thesis_table_markdown, weakest_first,
)
from pgsweep.analyses.units import Units, default_layers, find_units

__all__ = [
    "SCORES", "ClassScores", "FeatureMaps", "KnockoutRun", "Units", "area", "choose_images", "class_orders",
    "class_scores", "consistency", "curve_table", "default_layers", "feature_maps", "feature_table",
    "find_units", "image_filter_scores", "knockout_predictions", "knockout_predictions_loop", "random_orders",
    "receptive_field", "single_knockouts", "strongest_first", "strongest_weakest", "summarize",
    "thesis_table_markdown", "weakest_first",
]
