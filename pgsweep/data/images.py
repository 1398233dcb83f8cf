"""Reading image files into grayscale arrays, and what every loader shares."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pgsweep.errors import DataError

# Files that sit beside images in real dataset folders and are not images.
_NON_IMAGE_SUFFIXES = {
    ".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".yaml", ".yml", ".ini",
    ".db", ".pdf", ".html", ".htm", ".xml", ".zip", ".tar", ".gz", ".sha256", ".md5",
}
_NON_IMAGE_NAMES = {"readme", "license", "sha256sums", "md5sums", "thumbs.db", "checksums"}


def is_ignorable(path: Path) -> bool:
    """True for hidden files and documentation/checksum files that live beside images."""
    name = path.name.lower()
    return (
        name.startswith(".")
        or name in _NON_IMAGE_NAMES
        or name.split(".")[0] in _NON_IMAGE_NAMES
        or path.suffix.lower() in _NON_IMAGE_SUFFIXES
    )


def is_image_file(path: Path) -> bool:
    """True when Pillow recognises the file's content as an image (reads the header only)."""
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


def read_grayscale(path: Path, mode: str = "L") -> np.ndarray:
    """Decode an image file to a (H, W) uint8 array (mode "RGB": (H, W, 3)); fail with one line naming the file."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not later
            return np.asarray(image.convert(mode), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DataError(f"cannot read image {path}: {error}") from None


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to a (H, W, 3) uint8 RGB array (a gray image's one channel repeated)."""
    return read_grayscale(path, "RGB")


def resize_unit(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 or float array -> (image_size, image_size[, 3]) float32 in [0, 1]."""
    if pixels.dtype != np.uint8:
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="RGB" if pixels.ndim == 3 else "L").resize(
        (image_size, image_size), Image.Resampling.BILINEAR
    )
    return np.asarray(image, dtype=np.float32) / 255.0


def content_id(pixels: np.ndarray) -> str:
    """Hash of the decoded pixels: equal for identical images, even if the files differ."""
    digest = hashlib.sha256()
    digest.update(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled image collection, all in memory (the datasets here are small).

    images:      (N, C, S, S) float32 in [0, 1]; C is 1 (gray) or 3 (RGB)
    labels:      (N,) int64 class index into class_names
    class_names: name of each class, index order
    sources:     where each image came from (file name, or dataset[index])
    content_ids: hash of the decoded pixels; identical images share one
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    sources: tuple[str, ...]
    content_ids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


def image_set(
    arrays: list[np.ndarray],
    labels: list[int],
    class_names: list[str],
    sources: list[str],
    image_size: int,
) -> ImageSet:
    """Build an ImageSet from decoded (H, W) arrays at their original resolution."""
    if image_size < 8:
        raise DataError(f"data.image_size must be at least 8 pixels, got {image_size}")
    resized = np.stack([resize_unit(a, image_size) for a in arrays])  # (N, S, S) or (N, S, S, 3)
    pixels = torch.from_numpy(resized)
    pixels = pixels.permute(0, 3, 1, 2).contiguous() if pixels.dim() == 4 else pixels.unsqueeze(1)
    return ImageSet(
        images=pixels,  # (N, C, S, S)
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=tuple(class_names),
        sources=tuple(sources),
        content_ids=tuple(content_id(a) for a in arrays),
    )


def equalize_histograms(images: ImageSet) -> ImageSet:
    """Histogram-equalize every image, each channel on its own: 8-bit level v becomes
    (cdf(v) - cdf(darkest)) / (pixels - cdf(darkest)), so each image's brightness spreads over
    the whole [0, 1] range and lighting matters less (the Yale faces' left/right light).
    Content ids stay those of the files."""
    levels = (images.images.numpy() * 255.0).round().clip(0, 255).astype(np.int64)  # (N, C, S, S)
    flat = levels.reshape(-1, levels.shape[-2] * levels.shape[-1])  # one row per image channel
    out = np.empty(flat.shape, dtype=np.float32)
    for row, values in enumerate(flat):
        cdf = np.bincount(values, minlength=256).cumsum()
        darkest = cdf[values.min()]
        span = len(values) - darkest
        out[row] = (cdf[values] - darkest) / span if span > 0 else values / 255.0
    return ImageSet(torch.from_numpy(out.reshape(levels.shape)), images.labels, images.class_names,
                    images.sources, images.content_ids)


def existing_folder(root: str | Path | None, what: str) -> Path:
    """The dataset root as a Path, or one clear error if it is unset, missing or empty."""
    if root is None or str(root).strip() in ("", "???"):
        raise DataError(f"data.root is not set: pass data.root=PATH to the {what} folder")
    path = Path(str(root)).expanduser()
    if not path.exists():
        raise DataError(f"data.root: folder not found: {path}")
    if not path.is_dir():
        raise DataError(f"data.root: not a folder: {path}")
    if not any(path.iterdir()):
        raise DataError(f"data.root: folder is empty: {path}")
    return path
