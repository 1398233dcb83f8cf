"""Stage `diagrams` (thesis Table 4.1): per-image PG per filter drawn as the network, beside the image.

Logs under diagrams/: image_scores.parquet (every test image's own-class PG per filter),
consistency.parquet (within- vs between-class correlation of those vectors), network_pg.png;
metrics diagrams/within_class_correlation and diagrams/between_class_correlation.
"""

from __future__ import annotations

import logging

import pandas as pd

from pgsweep import plots
from pgsweep.analyses.diagrams import choose_images, consistency, image_filter_scores
from pgsweep.analyses.stages.common import (
    FIRST_CLASSES, AnalysisSettings, analysis_units, class_indices, images_of, require_images,
)

__all__ = ["check", "run"]

log = logging.getLogger(__name__)


def _classes(ctx, settings: AnalysisSettings) -> list[int]:
    chosen = class_indices(settings.diagrams.classes, ctx.images.class_names,
                           "analysis.diagrams.classes", FIRST_CLASSES)
    if settings.diagrams.classes == (FIRST_CLASSES,):
        chosen = chosen[: settings.diagrams.class_count]
    return chosen


def check(ctx) -> None:
    settings: AnalysisSettings = ctx.stage_settings["diagrams"]
    analysis_units(ctx, settings)
    require_images(ctx, _classes(ctx, settings), "analysis.diagrams.classes")


def run(ctx) -> None:
    settings: AnalysisSettings = ctx.stage_settings["diagrams"]
    network, names = ctx.model.network, ctx.images.class_names
    units = analysis_units(ctx, settings, network)
    images, labels, indices = images_of(ctx, "test")
    vectors, units = image_filter_scores(network, images, labels, units.layers, settings.query.output,
                                         settings.query.norm, settings.query.image_chunk)
    frame = {"image": indices, "source": [ctx.images.sources[i] for i in indices],
             "class": labels.numpy(), "class_name": [names[c] for c in labels.tolist()]}
    scores = pd.concat([pd.DataFrame(frame), pd.DataFrame(vectors, columns=units.names())], axis=1)
    ctx.tracker.log_table(scores, "diagrams/image_scores.parquet")
    agreement = consistency(vectors, labels.numpy(), names)
    ctx.tracker.log_table(agreement, "diagrams/consistency.parquet")
    overall = agreement[agreement["class"] == -1].iloc[0]
    ctx.tracker.log_metrics({"diagrams/within_class_correlation": overall["within"],
                             "diagrams/between_class_correlation": overall["between"]})
    chosen = choose_images(labels.numpy(), _classes(ctx, settings), settings.diagrams.images_per_class)
    figure = plots.network_diagrams(images[chosen, 0].numpy(), vectors[chosen], labels.numpy()[chosen], names,
                                    units.layer_index, units.layers)
    ctx.tracker.log_figure(figure, "diagrams/network_pg.png")
    log.info("diagrams: within-class correlation %.3f, between %.3f", overall["within"], overall["between"])
    ctx.reports["diagrams"] = {"scores": scores, "consistency": agreement, "chosen": indices[chosen]}
