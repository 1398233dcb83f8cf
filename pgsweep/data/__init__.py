"""Datasets: the bundled digits default, the Yale faces, and folders of class images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pgsweep.data.digits import digits_file, load_digits
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
                 equalize: bool = False, channels: int = 1) -> ImageSet:
    """Load a dataset by name (`digits`, `yale`, `folder`) at image_size x image_size;
    equalize: histogram-equalize each image (off in the thesis setup); channels: 1 (gray)
    or 3 (RGB: a folder's colour images; the gray datasets' one channel repeated)."""
    if name not in LOADERS:
        raise ConfigError(f"unknown data.name '{name}'; choose one of {', '.join(LOADERS)}")
    if channels not in (1, 3):
        raise ConfigError(f"data.channels must be 1 or 3, got {channels}")
    if name == "folder":
        images = load_folder(root=root, image_size=image_size, channels=channels)
    else:
        images = LOADERS[name](root=root, image_size=image_size)
        if channels == 3:
            images = ImageSet(images.images.repeat(1, 3, 1, 1), images.labels, images.class_names,
                              images.sources, images.content_ids)
    return equalize_histograms(images) if equalize else images


def source_path(name: str, root: str | Path | None) -> str:
    """Where a dataset's images are read from: its folder, or scikit-learn's digits file."""
    return str(Path(root).expanduser().resolve()) if root else str(digits_file())


__all__ = ["ImageSet", "Split", "LOADERS", "equalize_histograms", "load_dataset", "load_digits", "load_folder",
           "load_yale", "source_path", "stratified_split"]
