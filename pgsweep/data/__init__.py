"""Datasets: the bundled digits default, the Yale faces, and folders of class images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pgsweep.data.digits import load_digits
from pgsweep.data.folder import load_folder
from pgsweep.data.images import ImageSet, equalize_histograms
from pgsweep.data.split import Split, stratified_split
from pgsweep.data.yale import load_yale
from pgsweep.errors import ConfigError

LOADERS: dict[str, Callable[..., ImageSet]] = {
    "digits": load_digits,
    "yale": load_yale,
    "folder": load_folder,
}


def load_dataset(name: str, root: str | Path | None = None, image_size: int = 60,
                 equalize: bool = False) -> ImageSet:
    """Load a dataset by name (`digits`, `yale`, `folder`) at image_size x image_size;
    equalize: histogram-equalize each image (off in the thesis setup)."""
    if name not in LOADERS:
        raise ConfigError(f"unknown data.name '{name}'; choose one of {', '.join(LOADERS)}")
    images = LOADERS[name](root=root, image_size=image_size)
    return equalize_histograms(images) if equalize else images


__all__ = ["ImageSet", "Split", "LOADERS", "equalize_histograms", "load_dataset", "load_digits", "load_folder",
           "load_yale", "stratified_split"]
