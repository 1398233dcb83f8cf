"""Stage `features` (thesis Figures 4.3, 4.4): the highest-PG filter and position per image and target.

Logs under features/: features.parquet (every test image x every target class: layer, filter
(thesis numbering), row, col, score, receptive field, the image's runner-up class),
characteristic_<i>.png (own class) and lookalike_<i>.png (the class the model ranks next) for
the first test image of each of `classes` (or the first `images` test images), and the data
those figures draw: maps.parquet (their activation and PG maps) and faces.parquet (the images).
"""

from __future__ import annotations

import logging

import torch

from pgsweep import plots
from pgsweep.analyses.features import feature_maps, feature_table
from pgsweep.stages.common import (
    FIRST_CLASSES, AnalysisSettings, class_indices, images_of, network_for_checks,
)
from pgsweep.analyses.units import default_layers, find_units, unit_label
from pgsweep.errors import ConfigError, QueryError
from pgsweep.settings import AUTO_LAYER
from pgsweep.stages.common import predict_logits

__all__ = ["check", "run"]

log = logging.getLogger(__name__)


def feature_layer(ctx, settings: AnalysisSettings, network=None) -> str:
    """analysis.features.layer, with `auto` as the first of the network's default conv layers (act1)."""
    if settings.features.layer != AUTO_LAYER:
        return settings.features.layer
    try:
        return default_layers(network if network is not None else network_for_checks(ctx), ctx.images.images[:1])[0]
    except QueryError as error:
        raise ConfigError(f"analysis.features.layer: {error}") from None


def check(ctx) -> None:
    settings: AnalysisSettings = ctx.stage_settings["features"]
    layer = feature_layer(ctx, settings)
    try:
        units = find_units(network_for_checks(ctx), [layer], ctx.images.images[:1])
    except QueryError as error:
        raise ConfigError(f"analysis.features.layer: {error}") from None
    if units.ndims[0] != 3:
        raise ConfigError(f"analysis.features.layer '{layer}' has no spatial maps; choose a conv layer")
    _figure_images(ctx, settings)  # an unknown class, or one without test images, fails here


def _figure_images(ctx, settings: AnalysisSettings) -> list[int]:
    """Positions among the test images to draw: the first of each chosen class, else the first N."""
    labels = ctx.images.labels[ctx.split.test].numpy()
    chosen = settings.features.classes
    if chosen == (FIRST_CLASSES,):
        return list(range(min(settings.features.images, len(labels))))
    positions = []
    for c, name in zip(class_indices(chosen, ctx.images.class_names, "analysis.features.classes", FIRST_CLASSES), chosen):
        members = (labels == c).nonzero()[0]
        if not len(members):
            raise ConfigError(f"analysis.features.classes: class '{name}' has no test images")
        positions.append(int(members[0]))
    return positions


def _layer_number(ctx, layer: str) -> int:
    """The layer's number in the thesis's `layer-unit` names: its place among the default conv
    layers (act2 -> 2 on the thesis convnet), else 1."""
    try:
        layers = default_layers(ctx.model.network, ctx.images.images[:1])
    except QueryError:
        return 1
    return layers.index(layer) + 1 if layer in layers else 1


def run(ctx) -> None:
    import numpy as np
    import pandas as pd

    settings: AnalysisSettings = ctx.stage_settings["features"]
    network, names = ctx.model.network, ctx.images.class_names
    layer = feature_layer(ctx, settings, network)
    spec = ctx.model.spec  # the thesis convnet: a 2x2 max pool follows each conv activation
    max_pool_after = spec is not None and spec.pooling == "max" and spec.pool_size == 2 and layer.startswith("act")
    images, labels, indices = images_of(ctx, "test")
    number = _layer_number(ctx, layer)
    table = feature_table(network, images, layer, "all", settings.query.output, settings.query.image_chunk)
    logits = predict_logits(network, images)
    own = labels.numpy()
    ranked = torch.argsort(logits, dim=1, descending=True).numpy()
    # the class each image most looks like besides its own
    runner_up = np.array([next(c for c in row if c != own[i]) for i, row in enumerate(ranked)])
    table["label"] = own[table["image"]]
    table["own_class"] = table["label"] == table["target"]
    table["runner_up"] = runner_up[table["image"]]
    table["filter_name"] = [unit_label(number - 1, f) for f in table["filter"]]
    table["source"] = [ctx.images.sources[indices[i]] for i in table["image"]]
    table["image"] = indices[table["image"]]  # index into the whole dataset
    ctx.tracker.log_table(table, "features/features.parquet")
    maps_rows, faces = [], []
    for figure_index, i in enumerate(_figure_images(ctx, settings)):
        c, other = int(own[i]), int(runner_up[i])
        source = ctx.images.sources[indices[i]]
        faces.append({"figure": figure_index, "image": int(indices[i]), "source": source, "label": c,
                      "class_name": names[c], "channels": int(images.shape[1]), "size": int(images.shape[-1]),
                      "pixels": images[i].numpy().astype(np.float32).ravel().tolist()})
        for kind, target in (("characteristic", c), ("lookalike", other)):
            title = plots.feature_title(kind, int(indices[i]), names[c], names[target])
            maps = feature_maps(network, images[i], target, layer, settings.query.output)
            ctx.tracker.log_figure(plots.characteristic_feature(images[i].numpy(), maps, title, number,
                                                                max_pool_after, runner_up=kind == "lookalike"),
                                   f"features/{kind}_{figure_index}.png")
            for f in range(maps.activation.shape[0]):
                maps_rows.append({
                    "figure": figure_index, "kind": kind, "image": int(indices[i]), "label": c, "target": target,
                    "target_name": names[target], "layer": layer, "filter": f, "filter_name": unit_label(number - 1, f),
                    "peak_filter": maps.filter, "row": maps.row, "col": maps.col, "score": maps.score,
                    "top": maps.box[0], "left": maps.box[1], "bottom": maps.box[2], "right": maps.box[3],
                    "height": maps.activation.shape[1], "width": maps.activation.shape[2],
                    "activation": maps.activation[f].astype(np.float32).ravel().tolist(),
                    "pg": maps.pg[f].astype(np.float32).ravel().tolist()})
    if faces:
        ctx.tracker.log_table(pd.DataFrame(faces), "features/faces.parquet")
        ctx.tracker.log_table(pd.DataFrame(maps_rows), "features/maps.parquet")
    log.info("features: %d rows for %d test images; %d figure pairs", len(table), len(images), len(faces))
    ctx.reports["features"] = table
