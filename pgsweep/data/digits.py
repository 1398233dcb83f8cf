"""scikit-learn's bundled 8x8 digits: ships inside the wheel, so it runs offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sklearn.datasets
from sklearn.datasets import load_digits as _sklearn_digits

from pgsweep.data.images import ImageSet, image_set


def load_digits(root: object = None, image_size: int = 60) -> ImageSet:
    """1797 handwritten digits, 10 classes, upsampled to image_size; `root` is unused."""
    bunch = _sklearn_digits()
    # pixel values are 0..16; stretch to the 0..255 range the image loaders produce
    arrays = [np.rint(image * (255.0 / 16.0)).astype(np.uint8) for image in bunch.images]
    labels = [int(label) for label in bunch.target]
    sources = [f"digits[{i}]" for i in range(len(arrays))]
    class_names = [str(name) for name in bunch.target_names]
    return image_set(arrays, labels, class_names, sources, image_size)


def digits_file() -> Path:
    """Where scikit-learn keeps the digits (a run's dataset source)."""
    return Path(sklearn.datasets.__file__).resolve().parent / "data" / "digits.csv.gz"
