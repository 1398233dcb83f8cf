"""A folder of class subfolders (`root/CLASS/*.png`), any image format Pillow reads."""

from __future__ import annotations

import logging
from pathlib import Path

from pgsweep.data.images import ImageSet, existing_folder, image_set, is_ignorable, read_grayscale, read_rgb
from pgsweep.errors import DataError

log = logging.getLogger(__name__)


def load_folder(root: str | Path | None, image_size: int = 60, channels: int = 1) -> ImageSet:
    """One subfolder per class, named by the class; classes are sorted by name.

    channels: 1 reads every image as grayscale, 3 as RGB."""
    read = read_rgb if channels == 3 else read_grayscale
    folder = existing_folder(root, "image")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"no class subfolders in {folder} (expected {folder}/CLASS/IMAGE)")
    arrays, labels, sources, skipped = [], [], [], []
    for label, class_dir in enumerate(class_dirs):
        entries = sorted(p for p in class_dir.iterdir() if p.is_file())
        skipped += [f"{class_dir.name}/{p.name}" for p in entries if is_ignorable(p)]
        files = [p for p in entries if not is_ignorable(p)]
        if not files:
            raise DataError(f"class folder has no images: {class_dir}")
        for path in files:
            arrays.append(read(path))
            labels.append(label)
            sources.append(f"{class_dir.name}/{path.name}")
    if skipped:  # one line for all of them, so a stray file is seen but does not flood the log
        log.info("skipped %d file%s that %s not images: %s", len(skipped), "" if len(skipped) == 1 else "s",
                 "is" if len(skipped) == 1 else "are", ", ".join(skipped))
    return image_set(arrays, labels, [d.name for d in class_dirs], sources, image_size)
