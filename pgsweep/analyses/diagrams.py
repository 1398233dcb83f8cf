"""Network PG diagrams (thesis 4.2.1, Table 4.1): each image's PG per filter, and how
consistent those patterns are within a class.

The thesis justifies class averaging by the patterns staying alike across images of
one class; `consistency` puts a number on it: the mean correlation of the per-image
filter-score vectors between images of the same class, against different classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from pgsweep.analyses.units import Units, find_units
from pgsweep.errors import QueryError
from pgsweep.pg.engine import image_class_gradients
from pgsweep.pg.reductions import filter_scores


def image_filter_scores(
    network: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    layers: Sequence[str],
    output: str = "softmax",
    norm: str = "l2",
    image_chunk: int = 128,
) -> tuple[np.ndarray, Units]:
    """(N, U): every image's PG for class classes[n], collapsed per filter, all layers side by side."""
    if len(images) == 0:
        raise QueryError("no images to draw diagrams for")
    units = find_units(network, layers, images[:1])
    classes = torch.as_tensor(classes, dtype=torch.int64)
    parts = []
    for start in range(0, len(images), image_chunk):
        got = image_class_gradients(network, images[start : start + image_chunk], units.layers,
                                    classes[start : start + image_chunk], [output])
        grads = got.gradients[output]
        parts.append(torch.cat([filter_scores(grads[layer], ndim, norm)
                                for layer, ndim in zip(units.layers, units.ndims)], dim=1).cpu())
    return torch.cat(parts).numpy(), units


def consistency(
    vectors: np.ndarray, labels: np.ndarray, class_names: Sequence[str], standardize: bool = True,
) -> pd.DataFrame:
    """Mean Pearson correlation of image score vectors within each class and to other classes.

    vectors: (N, U); labels: (N,). standardize: first z-score each unit over the images, so
    what every image shares (deep filters score higher than shallow ones) does not make
    every pair look alike. Returns one row per class with at least 2 images
    (class, class_name, images, within, between) and a last row class=-1, "all": the means
    over every within-class pair and every between-class pair of images.
    """
    labels = np.asarray(labels)
    corr = _correlations(vectors, standardize)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    rows = []
    for c, name in enumerate(class_names):
        members = labels == c
        if members.sum() < 2:
            continue
        within = corr[np.ix_(members, members)][off_diagonal[np.ix_(members, members)]]
        between = corr[np.ix_(members, ~members)]
        rows.append({"class": c, "class_name": name, "images": int(members.sum()),
                     "within": float(within.mean()),
                     "between": float(between.mean()) if between.size else float("nan")})
    rows.append({"class": -1, "class_name": "all", "images": len(labels),
                 "within": float(corr[same & off_diagonal].mean()) if (same & off_diagonal).any() else float("nan"),
                 "between": float(corr[~same].mean()) if (~same).any() else float("nan")})
    return pd.DataFrame(rows)


def _correlations(vectors: np.ndarray, standardize: bool) -> np.ndarray:
    """(N, N) Pearson correlations between the rows of `vectors` (N, U)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if standardize:
        spread = vectors.std(axis=0)
        vectors = (vectors - vectors.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    centered = vectors - vectors.mean(axis=1, keepdims=True)
    lengths = np.linalg.norm(centered, axis=1, keepdims=True)
    unit = np.divide(centered, lengths, out=np.zeros_like(centered), where=lengths > 0)
    return unit @ unit.T


def consistency_test(vectors: np.ndarray, labels: np.ndarray, permutations: int = 1000, seed: int = 0,
                     standardize: bool = True) -> dict[str, float]:
    """Is PG consistent within a class? A permutation test of (within - between) correlation.

    The statistic is the mean correlation over same-class pairs of images minus that over
    different-class pairs (as in `consistency`); the labels are shuffled `permutations`
    times, and p = (1 + shuffles at least as large) / (1 + permutations), one-sided.
    Returns within, between, difference, p_value, permutations, images.
    """
    labels = np.asarray(labels)
    corr = _correlations(vectors, standardize)
    off = ~np.eye(len(labels), dtype=bool)
    upper = np.triu(off)  # each pair once

    def statistic(lab: np.ndarray) -> tuple[float, float]:
        same = (lab[:, None] == lab[None, :])[upper]
        values = corr[upper]
        return float(values[same].mean()), float(values[~same].mean())

    within, between = statistic(labels)
    rng = np.random.default_rng(seed)
    shuffled = np.array([np.subtract(*statistic(rng.permutation(labels))) for _ in range(permutations)])
    exceed = int((shuffled >= within - between).sum())
    return {"within": within, "between": between, "difference": within - between,
            "p_value": (1 + exceed) / (1 + permutations), "permutations": float(permutations),
            "images": float(len(labels))}


def choose_images(labels: np.ndarray, classes: Sequence[int], per_class: int) -> np.ndarray:
    """Indices of the first `per_class` images of each class, class by class."""
    labels = np.asarray(labels)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            raise QueryError(f"class {c} has no images to draw")
        chosen.extend(members[:per_class].tolist())
    return np.asarray(chosen, dtype=np.int64)
