"""Results -> matplotlib figures. No I/O: the driver logs what these return.

One module per thesis figure family, each drawing from the table its stage logs, so a
report can redraw any figure from the MLflow store without recomputing:

  common       blank figures, input images (gray or RGB), the thesis's five identities
  training     test error over epochs
  ranking      Table 4.2 as heatmaps; layers of the strongest and weakest filters
  knockout     Figures 4.1 and 4.2; each class's curves by every score
  faithfulness which score predicts knockout: correlation with the oracle, errors against random
  diagrams     Table 4.1: PG per filter drawn as the network
  features     Figures 4.3 and 4.4: characteristic and look-alike features
  adversarial  Figures 4.5-4.7; raw vs sign steps; the spread of targets
"""

from pgsweep.plots.adversarial import (
    adversarial_examples, adversarial_induced_error, adversarial_success, step_kinds, target_spread,
)
from pgsweep.plots.common import (
    IDENTITY_COLOURS, THESIS_IDENTITIES, image_pixels, legend_below, new_figure, show_image, thesis_classes,
)
from pgsweep.plots.diagrams import network_diagrams
from pgsweep.plots.faithfulness import faithfulness
from pgsweep.plots.features import characteristic_feature, feature_boxes, feature_title
from pgsweep.plots.knockout import SCORE_STYLE, knockout_curves, thesis_knockout
from pgsweep.plots.ranking import layer_shares, ranking_heatmap
from pgsweep.plots.training import error_curves

__all__ = [
    "IDENTITY_COLOURS", "SCORE_STYLE", "THESIS_IDENTITIES", "adversarial_examples", "adversarial_induced_error",
    "adversarial_success", "characteristic_feature", "error_curves", "faithfulness", "feature_boxes", "feature_title", "image_pixels", "knockout_curves",
    "layer_shares", "legend_below", "network_diagrams", "new_figure", "ranking_heatmap", "show_image",
    "step_kinds", "target_spread", "thesis_classes", "thesis_knockout",
]
