"""Stage `diagrams` (thesis Table 4.1): per-image PG per filter drawn as the network, beside the image.

Logs under diagrams/: image_scores.parquet (every test image's PG per filter for every class as
`target`, one row per (image, target); target == class is the own-class PG),
consistency.parquet (within- vs between-class correlation of the own-class vectors),
fixed_class_consistency.parquet (the same over all images, one fixed target's PG at a time,
one row per target), network_pg.png; metrics diagrams/within_class_correlation,
diagrams/between_class_correlation and diagrams/consistency_p_value (own class, with a
permutation test of within - between), and diagrams/fixed_class_within_correlation and
diagrams/fixed_class_between_correlation (means over the fixed targets: what claim 3 judges).
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from pgsweep import plots
from pgsweep.analyses.diagrams import choose_images, consistency, consistency_test, image_filter_scores
from pgsweep.stages.common import (
    FIRST_CLASSES, AnalysisSettings, analysis_units, class_indices, images_of, require_images,
)

__all__ = ["check", "run"]

log = logging.getLogger(__name__)
PERMUTATIONS = 2000  # label shuffles of the consistency test: p-values down to 1/2001


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
    # every class's PG for every image too: own-class vectors share the output unit within a
    # class, so claim 3 compares images on one fixed class's PG at a time (target column)
    fixed, fixed_agreement = [], []
    for target in range(len(names)):
        target_vectors, _ = image_filter_scores(network, images, torch.full_like(labels, target), units.layers,
                                                settings.query.output, settings.query.norm, settings.query.image_chunk)
        fixed.append(scores.assign(target=target).assign(**dict(zip(units.names(), target_vectors.T))))
        every_pair = consistency(target_vectors, labels.numpy(), names).iloc[-1]
        fixed_agreement.append({"target": target, "target_name": names[target], "images": int(every_pair["images"]),
                                "within": every_pair["within"], "between": every_pair["between"]})
    ctx.tracker.log_table(pd.concat(fixed, ignore_index=True), "diagrams/image_scores.parquet")
    fixed_agreement = pd.DataFrame(fixed_agreement)
    ctx.tracker.log_table(fixed_agreement, "diagrams/fixed_class_consistency.parquet")
    agreement = consistency(vectors, labels.numpy(), names)
    ctx.tracker.log_table(agreement, "diagrams/consistency.parquet")
    overall = agreement[agreement["class"] == -1].iloc[0]
    # "consistent within a class" as a number with a p-value: shuffle the labels
    test = consistency_test(vectors, labels.numpy(), PERMUTATIONS)
    ctx.tracker.log_metrics({"diagrams/within_class_correlation": overall["within"],
                             "diagrams/between_class_correlation": overall["between"],
                             "diagrams/consistency_p_value": test["p_value"],
                             "diagrams/consistency_permutations": test["permutations"],
                             "diagrams/images": test["images"],
                             "diagrams/fixed_class_within_correlation": fixed_agreement["within"].mean(),
                             "diagrams/fixed_class_between_correlation": fixed_agreement["between"].mean()})
    chosen = choose_images(labels.numpy(), _classes(ctx, settings), settings.diagrams.images_per_class)
    figure = plots.network_diagrams(images[chosen].numpy(), vectors[chosen], labels.numpy()[chosen], names,
                                    units.layer_index, units.layers)
    ctx.tracker.log_figure(figure, "diagrams/network_pg.png")
    log.info("diagrams: within-class correlation %.3f, between %.3f (permutation p = %.4f); fixed-class PG, "
             "mean over targets: within %.3f, between %.3f", overall["within"], overall["between"], test["p_value"],
             fixed_agreement["within"].mean(), fixed_agreement["between"].mean())
    ctx.reports["diagrams"] = {"scores": scores, "consistency": agreement, "chosen": indices[chosen]}
