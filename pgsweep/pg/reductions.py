"""Collapsing prediction gradients: per filter, per position, per class.

Shapes: a PG tensor is (..., *activation_shape) where the activation of a conv
layer is (filters, rows, cols) and of a fully connected layer is (units,).
`activation_ndim` says how many trailing dims are the activation's.
"""

from __future__ import annotations

import torch

from pgsweep.errors import QueryError
from pgsweep.pg.choices import FILTER_NORMS

NORMS = FILTER_NORMS
ORDERS = ("average_then_norm", "norm_then_average")


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise QueryError(f"unknown norm '{norm}'; choose one of {', '.join(NORMS)}")


def _collapse(values: torch.Tensor, dims: tuple[int, ...], norm: str) -> torch.Tensor:
    _check_norm(norm)
    if not dims:  # nothing to collapse: a unit's score is its magnitude
        return values.abs()
    if norm == "l2":
        return torch.linalg.vector_norm(values, ord=2, dim=dims)
    if norm == "l1":
        return values.abs().sum(dim=dims)
    return values.abs().amax(dim=dims)


def filter_scores(pg: torch.Tensor, activation_ndim: int, norm: str = "l2") -> torch.Tensor:
    """The "convolutional gradient": one score per filter (or unit), over space.

    (..., F, H, W) -> (..., F) for conv maps; (..., U) -> (..., U) as |PG| for FC units.
    norm: "l2" (Frobenius, the thesis), "l1", or "max" of the absolute value.
    """
    spatial = tuple(range(-activation_ndim + 1, 0))
    return _collapse(pg, spatial, norm)


def saliency(pg: torch.Tensor, activation_ndim: int, norm: str = "l2") -> torch.Tensor:
    """One score per position, over filters: (..., F, H, W) -> (..., H, W)."""
    if activation_ndim < 2:
        raise QueryError("saliency needs a spatial layer (filters, rows, cols); this one has units only")
    return _collapse(pg, (-activation_ndim,), norm)


def class_average(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean over the images of each class: (T, B, ...) -> (T, K, ...); NaN for absent classes."""
    labels = labels.to(values.device)
    one_hot = torch.nn.functional.one_hot(labels, num_classes).to(values.dtype)  # (B, K)
    counts = one_hot.sum(dim=0)  # (K,)
    flat = values.reshape(values.shape[0], values.shape[1], -1)  # (T, B, D)
    sums = torch.einsum("tbd,bk->tkd", flat, one_hot)  # (T, K, D)
    means = sums / counts.clamp_min(1)[None, :, None]
    means[:, counts == 0] = float("nan")
    return means.reshape(values.shape[0], num_classes, *values.shape[2:])


def class_filter_scores(
    pg: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    activation_ndim: int,
    norm: str = "l2",
    order: str = "average_then_norm",
) -> torch.Tensor:
    """Score each filter for each (target, class of images): (T, B, ...) -> (T, K, F).

    order "average_then_norm" (the thesis, 4.2.2): average the PG over the class's
    images, then take the filter norm. "norm_then_average": the mean of per-image scores.
    """
    if order == "average_then_norm":
        return filter_scores(class_average(pg, labels, num_classes), activation_ndim, norm)
    if order == "norm_then_average":
        return class_average(filter_scores(pg, activation_ndim, norm), labels, num_classes)
    raise QueryError(f"unknown order '{order}'; choose one of {', '.join(ORDERS)}")
