"""What the analysis stages share: the `analysis` config group, checks, and the images they query.

All four stages (rank, knockout, diagrams, features) read the one `analysis` section,
so any of them validates the whole group: a mistyped key anywhere in it fails before
a run starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

from pgsweep.analyses.units import Units, default_layers, find_units
from pgsweep.config import build
from pgsweep.errors import ConfigError, QueryError
from pgsweep.models.convnet import ThesisConvNet
from pgsweep.pg.engine import OUTPUTS
from pgsweep.pg.reductions import NORMS

ALL_CLASSES = "all"
FIRST_CLASSES = "first"
CONV_LAYERS = "conv"
SPLITS = ("test", "train", "all")


@dataclass(frozen=True)
class QuerySettings:
    output: str = "softmax"
    norm: str = "l2"
    layers: tuple[str, ...] = (CONV_LAYERS,)
    image_chunk: int = 128

    def validate(self) -> None:
        if self.output not in OUTPUTS:
            raise ConfigError(f"analysis.output must be one of {', '.join(OUTPUTS)}, got '{self.output}'")
        if self.norm not in NORMS:
            raise ConfigError(f"analysis.norm must be one of {', '.join(NORMS)}, got '{self.norm}'")
        if not self.layers:
            raise ConfigError("analysis.layers must name at least one layer (conv: every conv map)")
        if len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"analysis.layers lists a layer twice: {list(self.layers)}")
        if self.image_chunk < 1:
            raise ConfigError(f"analysis.image_chunk must be >= 1, got {self.image_chunk}")


@dataclass(frozen=True)
class RankSettings:
    split: str = "test"
    k: int = 3
    fc_units: bool = False

    def validate(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"analysis.rank.split must be one of {', '.join(SPLITS)}, got '{self.split}'")
        if self.k < 1:
            raise ConfigError(f"analysis.rank.k must be >= 1, got {self.k}")


@dataclass(frozen=True)
class KnockoutSettings:
    classes: tuple[str, ...] = (ALL_CLASSES,)
    random_orderings: int = 10
    seed: int = 0
    after: int = 10

    def validate(self) -> None:
        if not self.classes:
            raise ConfigError("analysis.knockout.classes must name classes, or be [all]")
        if self.random_orderings < 0:
            raise ConfigError(f"analysis.knockout.random_orderings must be >= 0, got {self.random_orderings}")
        if self.after < 1:
            raise ConfigError(f"analysis.knockout.after must be >= 1, got {self.after}")


@dataclass(frozen=True)
class DiagramSettings:
    classes: tuple[str, ...] = (FIRST_CLASSES,)
    class_count: int = 3
    images_per_class: int = 3

    def validate(self) -> None:
        if not self.classes:
            raise ConfigError("analysis.diagrams.classes must name classes, or be [first]")
        if self.class_count < 1 or self.images_per_class < 1:
            raise ConfigError("analysis.diagrams.class_count and images_per_class must be >= 1")


@dataclass(frozen=True)
class FeatureSettings:
    layer: str = "act1"
    images: int = 3

    def validate(self) -> None:
        if self.images < 0:
            raise ConfigError(f"analysis.features.images must be >= 0, got {self.images}")


@dataclass(frozen=True)
class AnalysisSettings:
    """The whole `analysis` config group, checked."""

    query: QuerySettings
    rank: RankSettings
    knockout: KnockoutSettings
    diagrams: DiagramSettings
    features: FeatureSettings


_SUBSECTIONS = {"rank": RankSettings, "knockout": KnockoutSettings, "diagrams": DiagramSettings,
                "features": FeatureSettings}


def read_config(section: Mapping) -> AnalysisSettings:
    """The `analysis` section -> AnalysisSettings; one-line ConfigError for any bad key or value."""
    shared = {k: v for k, v in section.items() if k not in _SUBSECTIONS}
    parts = {}
    for name, kind in _SUBSECTIONS.items():
        values = section.get(name, {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"analysis.{name} must be a mapping of settings")
        parts[name] = build(kind, values, f"analysis.{name}")
    try:
        query = build(QuerySettings, shared, "analysis")
    except ConfigError as error:
        if "unknown config key" in str(error):  # name the subsections among the valid keys
            raise ConfigError(f"{error}, {', '.join(_SUBSECTIONS)}") from None
        raise
    return AnalysisSettings(query=query, **parts)


# ---------------------------------------------------------------- checks against model and data

def network_for_checks(ctx) -> torch.nn.Module:
    """The model's network, or (train runs first in this command) an untrained one of the same shape."""
    if ctx.model is not None:
        return ctx.model.network
    spec = replace(ctx.settings.architecture, num_classes=len(ctx.images.class_names))
    return ThesisConvNet(spec)


def resolve_layers(network: torch.nn.Module, layers: tuple[str, ...]) -> list[str]:
    """`conv` expands to the network's conv maps; other names are taken as given."""
    names: list[str] = []
    for layer in layers:
        names.extend(default_layers(network) if layer == CONV_LAYERS else [layer])
    if len(set(names)) != len(names):
        raise ConfigError(f"analysis.layers names a layer twice once conv is expanded: {names}")
    return names


def analysis_units(ctx, settings: AnalysisSettings, network=None) -> Units:
    """The units the stages score, checked on one image: an unknown layer fails here."""
    network = network if network is not None else network_for_checks(ctx)
    layers = resolve_layers(network, settings.query.layers)
    # the knockout replays layers in forward order, whatever order the config lists them in
    position = {name: i for i, (name, _) in enumerate(network.named_modules())}
    layers.sort(key=lambda name: position.get(name, -1))
    try:
        return find_units(network, layers, ctx.images.images[:1])
    except QueryError as error:
        raise ConfigError(f"analysis.layers: {error}") from None


def class_indices(names: tuple[str, ...], class_names: tuple[str, ...], key: str, everything: str) -> list[int]:
    """Config class names -> indices; `everything` (all / first) is resolved by the caller."""
    if names == (everything,):
        return list(range(len(class_names)))
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [name for name in names if name not in index]
    if unknown:
        shown = ", ".join(class_names[:6]) + (", ..." if len(class_names) > 6 else "")
        raise ConfigError(f"{key}: unknown class '{unknown[0]}'; the classes are {shown}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{key} lists a class twice: {list(names)}")
    return [index[name] for name in names]


def split_indices(ctx, which: str) -> np.ndarray:
    """Image indices of the model's own test/train split, or every image."""
    split = ctx.query_split()
    if which == "all":
        return np.arange(len(ctx.images))
    return getattr(split, which)


def require_images(ctx, classes: list[int], key: str, which: str = "test") -> None:
    """Every chosen class needs images on that side of the split."""
    labels = ctx.images.labels[split_indices(ctx, which)].numpy()
    for c in classes:
        if not (labels == c).any():
            raise ConfigError(f"{key}: class '{ctx.images.class_names[c]}' has no {which} images")


def images_of(ctx, which: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(images, labels, indices into ctx.images) of one side of the model's split."""
    indices = split_indices(ctx, which)
    return ctx.images.images[indices], ctx.images.labels[indices], indices


def metric_name(name: str) -> str:
    """A class name made safe for an MLflow metric key."""
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in str(name))
