"""Filter scores for pruning: one number per filter, the lowest pruned first.

The data-driven criteria reuse the ranking's class-wise scores (pgsweep.analyses.ranking:
class_scores, the same numbers the `rank` and `knockout` stages use), which are per class.
A filter needs one number, so the classes are combined by `normalize_classes`: each class's
row is divided by its own sum over the filters, then the rows are averaged. The classes'
PG scales differ by 100x and more (the softmax saturates on well-fit classes), and a plain
mean would rank the filters by the one or two classes with the largest gradients; after the
normalization each class has the same total weight, 1/K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pgsweep.analyses.ranking import class_scores
from pgsweep.prune.schedule import CRITERIA
from pgsweep.prune.surgery import magnitude_scores, producing_conv

# the ranking's class scores; the per-image ones (grad_x_activation ...) of each image's own class,
# for the softmax (deeplift: the logit), as in pgsweep.pg.scores
DATA_CRITERIA = tuple(c for c in CRITERIA if c not in ("magnitude", "random"))


def normalize_classes(scores: np.ndarray) -> np.ndarray:
    """(K, U) per-class scores -> (U,): mean over classes of each class's row / its sum.

    Classes without images (NaN rows) and rows that are all zero (a class no filter
    moves) carry no weight. Every class that counts weighs the same, whatever its scale.
    """
    scores = np.asarray(scores, dtype=np.float64)
    totals = np.nansum(np.abs(scores), axis=1)
    usable = ~np.isnan(scores).any(axis=1) & (totals > 0)
    if not usable.any():
        return np.zeros(scores.shape[1])
    return (scores[usable] / totals[usable, None]).mean(axis=0)


def filter_scores(
    network: nn.Module,
    criterion: str,
    layers: Sequence[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    seed: int = 0,
    norm: str = "l2",
    image_chunk: int = 128,
    baseline: str = "zeros",
    train_mean: torch.Tensor | None = None,
    path_steps: int = 32,
) -> dict[str, np.ndarray]:
    """{layer: (filters,) score} for every activation layer in `layers` (lowest: prune first).

    images (N, *input) and labels (N,) feed the data-driven criteria; `seed` draws random's
    order; magnitude reads the weights of the conv that makes each layer's maps. baseline,
    train_mean and path_steps: the path of integrated_pg, conductance and deeplift.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion '{criterion}'")
    example = images[:1]
    if criterion == "magnitude":
        convs = {layer: producing_conv(network, layer) for layer in layers}
        by_conv = magnitude_scores(network, list(convs.values()), example)
        return {layer: by_conv[conv] for layer, conv in convs.items()}
    if criterion == "random":
        rng = np.random.default_rng(seed)
        modules = dict(network.named_modules())
        return {layer: rng.random(modules[producing_conv(network, layer)].out_channels) for layer in layers}
    got = class_scores(network, images, labels, class_names, list(layers), norm, image_chunk, scores=[criterion],
                       baseline=baseline, train_mean=train_mean, path_steps=path_steps)
    combined = normalize_classes(got.scores[criterion])  # (U,)
    ends = np.cumsum(got.units.sizes)
    return {layer: combined[end - size : end] for layer, size, end in zip(got.units.layers, got.units.sizes, ends)}


def lowest(scores: np.ndarray, count: int) -> list[int]:
    """The `count` lowest-scored filters (ties: lower index first), as sorted indices."""
    return sorted(int(i) for i in np.argsort(np.asarray(scores), kind="stable")[:count])
