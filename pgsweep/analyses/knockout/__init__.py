"""Knockout curves (thesis 4.2.2, Figures 4.1 and 4.2): zero filters one by one, watch the error.

    replay   what the network predicts after each step of each ordering: the Sequential
             fast path, the traced-graph path and the hook loop, equal bit for bit
    curves   the orderings (oracle, strongest-, weakest-first, random), the curve table
             and its summaries
    faithfulness  per score: Spearman with the oracle, errors after N against random orders
    zeroing  whether zeroing a filter elsewhere (before the activation, after the pooling,
             its weights) changes the answer
"""

from pgsweep.analyses.knockout.curves import (
    COLLAPSE_SHARE, area, class_errors, class_orders, curve_table, emptied_layers, random_orders,
    single_knockouts, summarize,
)
from pgsweep.analyses.knockout.faithfulness import faithfulness_table, mean_interval
from pgsweep.analyses.knockout.replay import KnockoutRun, knockout_predictions, knockout_predictions_loop
from pgsweep.analyses.knockout.zeroing import ZEROINGS, zeroing_agreement, zeroing_predictions

__all__ = [
    "COLLAPSE_SHARE", "ZEROINGS", "KnockoutRun", "area", "class_errors", "class_orders", "curve_table",
    "emptied_layers", "faithfulness_table", "knockout_predictions", "knockout_predictions_loop", "mean_interval", "random_orders", "single_knockouts",
    "summarize", "zeroing_agreement", "zeroing_predictions",
]
