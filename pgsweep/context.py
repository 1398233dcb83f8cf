"""What the pipeline's stages share: the checked settings, the data, the model, the run.

A stage is a module of pgsweep.stages with `run(ctx: Context)`, registered by name in
`pgsweep.pipeline.STAGES`. It may also define
  check(ctx: Context) -> None                 data/model checks, before the MLflow run is created
and its STAGES entry may name a config reader, `section -> settings`, in a light module
(pgsweep.settings), which checks its config section before anything heavy loads.
A stage logs through `ctx.tracker` only (tables as Parquet, figures as PNG, under a
folder named after the stage) and leaves its plain results in `ctx.reports[name]`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pgsweep.config import chose
from pgsweep.data import ImageSet, Split
from pgsweep.errors import DataError, ModelError
from pgsweep.models.checkpoint import TrainedModel

if TYPE_CHECKING:  # the tracker's module imports MLflow; stages only use the object
    from pgsweep.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What stages share: the data, the split, the model, the run, and their reports.

    settings:       pgsweep.pipeline.Settings (data, trainer, tracking, stage sections ...)
    split:          the split the model was trained with: a queried model's own recorded
                    test images (see model_split), or the one `train` fits on
    stage_settings: each chosen stage's checked config section, by stage name
    model:          the model queried: from model_ref, or the one `train` just fitted
    tracker:        the MLflow run; None while stages' `check` runs, before it exists
    """

    settings: Any
    images: ImageSet
    split: Split
    tracker: "Tracker | None" = None
    model: TrainedModel | None = None
    model_uri: str | None = None
    stage_settings: dict[str, object] = field(default_factory=dict)
    reports: dict[str, object] = field(default_factory=dict)
    _untrained: Any = None

    def network_for_checks(self):
        """The model's network, or (train runs first in this command) an untrained one built from
        the config for this data, checked once: it reads the images and returns (N, classes) logits."""
        if self.model is not None:
            return self.model.network
        if self._untrained is None:
            from pgsweep.models.build import build_network, check_network

            model = self.settings.model
            recipe = model.recipe(len(self.images.class_names), int(self.images.images.shape[1]),
                                  self.images.image_size, 0.0, 1.0)
            network = build_network(recipe)
            check_network(network, self.images.images[:2], len(self.images.class_names), recipe.target)
            self._untrained = network.eval()
        return self._untrained


def data_provenance(data, images: ImageSet, split: Split) -> dict:
    """What a saved model records of its data, so later stages reuse the same test set."""
    return {
        "dataset": data.name,
        # absolute, so a later query from another folder finds the images again
        "root": str(Path(data.root).expanduser().resolve()) if data.root else None,
        "image_size": data.image_size,
        "split_seed": data.split_seed,
        "test_fraction": data.test_fraction,
        "val_fraction": data.val_fraction,
        "group_duplicates": data.group_duplicates,
        "equalize": data.equalize,
        "channels": int(images.images.shape[1]),
        "test_sources": [images.sources[i] for i in split.test],
        "val_sources": [images.sources[i] for i in split.val],
    }


# DataSettings field -> the key a model's provenance records it under
_RECORDED_DATA = {
    "name": "dataset", "root": "root", "image_size": "image_size", "test_fraction": "test_fraction",
    "val_fraction": "val_fraction", "group_duplicates": "group_duplicates", "split_seed": "split_seed",
    "equalize": "equalize", "channels": "channels",
}


def model_data(model: TrainedModel, data, chosen: Collection[str]):
    """The data settings to query `model` with: what it records, except the keys in `chosen`.

    `data` holds the config's values (a DataSettings); `chosen` the keys the user set
    explicitly (`data` for the whole group, or `data.root`, ...), which win.
    """
    recorded = model.provenance
    if "dataset" not in recorded:  # a model file without a record of its data
        return data
    values = {
        field: recorded[key] for field, key in _RECORDED_DATA.items()
        if key in recorded and not chose(chosen, f"data.{field}")
    }
    used = replace(data, **values)
    if values.get("root") and not Path(values["root"]).is_dir():
        raise DataError(
            f"the model was trained on {used.name} images in {used.root}, which is not there: "
            f"pass data.root=PATH to a copy"
        )
    if values:
        log.info("data from the model's record: %s", ", ".join(f"data.{k}={v}" for k, v in values.items()))
    return used


def check_compatible(model: TrainedModel, images: ImageSet) -> None:
    """The model must have been trained on these classes, at this image size and channel count."""
    if tuple(model.class_names) != tuple(images.class_names):
        shown = ", ".join(model.class_names[:4])
        raise ModelError(
            f"the model's {len(model.class_names)} classes ({shown}, ...) differ from the data's "
            f"{len(images.class_names)} classes ({', '.join(images.class_names[:4])}, ...)"
        )
    recipe = model.recipe
    if recipe is None:
        return
    if recipe.input_size != images.image_size:
        raise ModelError(
            f"the model takes {recipe.input_size}x{recipe.input_size} images; "
            f"set data.image_size={recipe.input_size}"
        )
    channels = int(images.images.shape[1])
    if recipe.in_channels != channels:
        raise ModelError(f"the model takes {recipe.in_channels}-channel images, the data has {channels}: "
                         f"set data.channels={recipe.in_channels}")


def model_split(model: TrainedModel, images: ImageSet, fallback: Split) -> Split:
    """The model's own val/test images when they are all in `images`, else `fallback`."""
    recorded_test = model.provenance.get("test_sources") or []
    recorded_val = model.provenance.get("val_sources") or []
    index_of = {source: i for i, source in enumerate(images.sources)}
    if not recorded_test or any(s not in index_of for s in [*recorded_test, *recorded_val]):
        log.warning("the model's test images are not all in this dataset: using this config's split")
        return fallback
    test = np.array(sorted(index_of[s] for s in recorded_test), dtype=np.int64)
    val = np.array(sorted(index_of[s] for s in recorded_val), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(images)), np.concatenate([test, val]))
    return Split(train, val, test, fallback.duplicate_groups, fallback.duplicate_images)
