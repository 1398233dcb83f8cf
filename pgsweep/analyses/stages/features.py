"""Stage `features` (thesis Figures 4.3, 4.4): the highest-PG filter and position per image and target.

Logs under features/: features.parquet (every test image x every target class: layer, filter,
row, col, score, receptive field), characteristic_<i>.png (own class) and lookalike_<i>.png
(the class the model ranks next) for the first `images` test images.
"""

from __future__ import annotations

import logging

import torch

from pgsweep import plots
from pgsweep.analyses.features import feature_maps, feature_table
from pgsweep.analyses.stages.common import AnalysisSettings, images_of, network_for_checks
from pgsweep.analyses.units import find_units
from pgsweep.errors import ConfigError, QueryError
from pgsweep.evaluate import predict_logits

__all__ = ["check", "run"]

log = logging.getLogger(__name__)


def check(ctx) -> None:
    settings: AnalysisSettings = ctx.stage_settings["features"]
    try:
        units = find_units(network_for_checks(ctx), [settings.features.layer], ctx.images.images[:1])
    except QueryError as error:
        raise ConfigError(f"analysis.features.layer: {error}") from None
    if units.ndims[0] != 3:
        raise ConfigError(f"analysis.features.layer '{settings.features.layer}' has no spatial maps; choose a conv layer")


def run(ctx) -> None:
    settings: AnalysisSettings = ctx.stage_settings["features"]
    network, names, layer = ctx.model.network, ctx.images.class_names, settings.features.layer
    images, labels, indices = images_of(ctx, "test")
    table = feature_table(network, images, layer, "all", settings.query.output, settings.query.image_chunk)
    table["label"] = labels.numpy()[table["image"]]
    table["own_class"] = table["label"] == table["target"]
    table["source"] = [ctx.images.sources[indices[i]] for i in table["image"]]
    table["image"] = indices[table["image"]]  # index into the whole dataset
    ctx.tracker.log_table(table, "features/features.parquet")
    count = min(settings.features.images, len(images))
    logits = predict_logits(network, images[:count])
    for i in range(count):
        own = int(labels[i])
        ranked = torch.argsort(logits[i], descending=True).tolist()
        other = next(c for c in ranked if c != own)  # the class it most looks like besides its own
        for kind, target, title in (
            ("characteristic", own, f"{ctx.images.sources[indices[i]]}: most characteristic feature of {names[own]}"),
            ("lookalike", other, f"{ctx.images.sources[indices[i]]}: what makes it look like {names[other]}"),
        ):
            maps = feature_maps(network, images[i], target, layer, settings.query.output)
            ctx.tracker.log_figure(plots.characteristic_feature(images[i, 0].numpy(), maps, title),
                                   f"features/{kind}_{i}.png")
    log.info("features: %d rows for %d test images", len(table), len(images))
    ctx.reports["features"] = table
