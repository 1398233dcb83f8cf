"""What the analysis stages share: checks against the model and data, and the images they query.

All four stages (rank, knockout, diagrams, features) read the one `analysis` section,
checked by pgsweep.settings.read_analysis_config (no torch), so any of them validates
the whole group: a mistyped key anywhere in it fails before a run starts.
"""

from __future__ import annotations

import numpy as np
import torch

from pgsweep.analyses.units import Units, default_layers, find_units
from pgsweep.errors import ConfigError, QueryError
from pgsweep.settings import ALL_CLASSES, CONV_LAYERS, FIRST_CLASSES, AnalysisSettings  # noqa: F401  (the stages' names)

# ---------------------------------------------------------------- checks against model and data

def network_for_checks(ctx) -> torch.nn.Module:
    """The model's network, or (train runs first in this command) an untrained one of the same shape."""
    return ctx.network_for_checks()


def resolve_layers(network: torch.nn.Module, layers: tuple[str, ...], example: torch.Tensor | None = None) -> list[str]:
    """`conv` expands to the network's conv maps (see default_layers); other names are taken as given."""
    names: list[str] = []
    for layer in layers:
        names.extend(default_layers(network, example) if layer == CONV_LAYERS else [layer])
    if len(set(names)) != len(names):
        raise ConfigError(f"analysis.layers names a layer twice once conv is expanded: {names}")
    return names


def analysis_units(ctx, settings: AnalysisSettings, network=None) -> Units:
    """The units the stages score, checked on one image: an unknown layer fails here."""
    network = network if network is not None else network_for_checks(ctx)
    try:
        layers = resolve_layers(network, settings.query.layers, ctx.images.images[:1])
    except QueryError as error:
        raise ConfigError(f"analysis.layers: {error}") from None
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
    if which == "all":
        return np.arange(len(ctx.images))
    return getattr(ctx.split, which)


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
