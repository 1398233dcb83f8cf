"""The Yale Face Database as distributed: 165 files `subjectNN.CONDITION`, GIF, 320x243.

Accepted quirks of the original archive and its mirrors: a `.gif` suffix on every
name, `subject01.gif` standing for `subject01.centerlight`, and a stray second copy
of an image under the suffixed name (`subject01.glasses.gif` beside
`subject01.glasses`), which is ignored. README and checksum files are ignored; any
other file whose content is an image but whose name is not a Yale name is an error,
so no image is left out unnoticed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pgsweep.data.images import (
    ImageSet, existing_folder, image_set, is_ignorable, is_image_file, read_grayscale,
)
from pgsweep.errors import DataError

log = logging.getLogger(__name__)

CONDITIONS = (
    "centerlight", "glasses", "happy", "leftlight", "noglasses", "normal",
    "rightlight", "sad", "sleepy", "surprised", "wink",
)
_IMAGE_SUFFIXES = {".gif", ".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff"}
_NAME = re.compile(r"^subject(?P<subject>\d{2})(?:\.(?P<condition>[a-z]+))?$")


def parse_yale_name(name: str) -> tuple[int, str, bool] | None:
    """`subject07.happy[.gif]` -> (7, "happy", has_gif_suffix); None if not a Yale name."""
    name = name.lower()
    has_gif = name.endswith(".gif")
    match = _NAME.match(name[: -len(".gif")] if has_gif else name)
    if not match or not (match["condition"] or has_gif):
        return None
    # the original archive called subject01's centre-light image plain `subject01.gif`
    condition = match["condition"] or "centerlight"
    if condition not in CONDITIONS:
        return None
    return int(match["subject"]), condition, has_gif


def find_yale_files(root: Path) -> dict[tuple[int, str], Path]:
    """Map (subject, condition) -> file, resolving the archive's duplicate names."""
    chosen: dict[tuple[int, str], tuple[Path, bool]] = {}
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        parsed = parse_yale_name(path.name)
        if parsed is None:
            if path.name.lower().startswith("subject") or path.suffix.lower() in _IMAGE_SUFFIXES:
                raise DataError(
                    f"unknown Yale file name {path} (expected subjectNN.CONDITION, "
                    f"CONDITION one of {', '.join(CONDITIONS)})"
                )
            if is_ignorable(path):
                continue
            if is_image_file(path):  # Yale names have no suffix: only the content tells
                raise DataError(
                    f"{path} is an image but not a Yale name (expected subjectNN.CONDITION, "
                    f"CONDITION one of {', '.join(CONDITIONS)}): rename or remove it"
                )
            log.info("ignoring non-image file %s", path)
            continue
        subject, condition, has_gif = parsed
        if subject < 1:
            raise DataError(f"unknown Yale file name {path}: subject numbers start at 01")
        key = (subject, condition)
        if key in chosen:
            # keep the plain name; the .gif-suffixed one is the archive's stray copy
            kept, kept_gif = chosen[key]
            if kept_gif and not has_gif:
                chosen[key] = (path, has_gif)
                log.info("ignoring %s: duplicate of %s", kept.name, path.name)
            else:
                log.info("ignoring %s: duplicate of %s", path.name, kept.name)
            continue
        chosen[key] = (path, has_gif)
    if not chosen:
        raise DataError(f"no Yale images (subjectNN.CONDITION) in {root}")
    return {key: path for key, (path, _) in sorted(chosen.items())}


def load_yale(root: str | Path | None, image_size: int = 60) -> ImageSet:
    """Load the Yale faces under `root`; labels are the subject numbers, in order."""
    folder = existing_folder(root, "Yale faces")
    files = find_yale_files(folder)
    subjects = sorted({subject for subject, _ in files})
    class_names = [f"subject{subject:02d}" for subject in subjects]
    index_of = {subject: i for i, subject in enumerate(subjects)}
    arrays, labels, sources = [], [], []
    for (subject, _condition), path in files.items():
        arrays.append(read_grayscale(path))
        labels.append(index_of[subject])
        sources.append(path.name)
    return image_set(arrays, labels, class_names, sources, image_size)
