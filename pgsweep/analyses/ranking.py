"""Which filters matter for a class (thesis 4.2.2, Table 4.2), and the scores to compare.

Class-averaged PG per filter: average each image's own-class PG over the images of a
class, then collapse each filter's map with a norm (the thesis: L2). Beside it, the
scores the knockout compares against: the same average for the logit and for the loss
gradient (thesis 3.2.1), the mean activation magnitude, and activation x loss gradient
(first-order Taylor, Molchanov et al. 2017), absolute and signed. On request, the
per-image scores of pgsweep.pg.scores (gradient x activation, integrated PG, Captum's
layer attributions), each image scored for its own class and averaged over the class.

Everything streams: images go through in chunks and only per-class running sums are
kept, so memory does not grow with the number of images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from pgsweep.analyses.units import Units, find_units
from pgsweep.errors import ConfigError, QueryError
from pgsweep.pg.engine import image_class_gradients
from pgsweep.pg.reductions import NORMS, filter_scores
from pgsweep.pg.scores import SCORES as UNIT_SCORES
from pgsweep.pg.scores import check_score_layer, unit_scores
from pgsweep.analyses.choices import DEFAULT_RANK_SCORES, RANK_SCORES

# score name -> what it is; the pg_* and loss_gradient scores average first, then take the norm;
# every other score is the mean over the class's images of each image's own-class score
SCORES = {
    "pg_softmax": "class-averaged PG of the softmax output, filter norm",
    "pg_logit": "class-averaged PG of the logit, filter norm",
    "loss_gradient": "class-averaged d L / d a (cross-entropy), filter norm",
    "activation": "mean over the class's images of the activation's filter norm",
    "taylor": "the same as taylor_abs (its older name)",
    "taylor_abs": "mean over the class's images of |mean over positions of a * dL/da|",
    "taylor_signed": "mean over the class's images of -mean over positions of a * dL/da "
                     "(the first-order rise in loss when the map is zeroed, per position)",
    **{name: f"mean over the class's images of the {UNIT_SCORES[name]}, for the analysis output"
       for name in ("grad_x_activation", "grad_x_activation_l2", "integrated_pg",
                    "conductance", "deeplift", "gradcam", "ablation")},
}
assert tuple(SCORES) == RANK_SCORES
_GRADIENT_SCORES = {"pg_softmax": "softmax", "pg_logit": "logit", "loss_gradient": "loss"}
_TAYLOR_SCORES = ("taylor", "taylor_abs", "taylor_signed")
_PER_IMAGE_SCORES = tuple(s for s in SCORES if s in UNIT_SCORES)  # computed by pgsweep.pg.scores


@dataclass(frozen=True, eq=False)
class ClassScores:
    """Per-class scores of every unit.

    scores[name]: (K, U) array, one row per class; NaN rows for classes with no images
    counts:       (K,) images of each class that went in
    units:        which layer and channel each column is
    """

    scores: dict[str, np.ndarray]
    counts: np.ndarray
    units: Units
    class_names: tuple[str, ...]
    norm: str

    def table(self) -> pd.DataFrame:
        """Long form: one row per (class, unit), a column per score."""
        units = self.units.table()
        rows = []
        for k, name in enumerate(self.class_names):
            part = units.copy()
            part.insert(0, "class_name", name)
            part.insert(0, "class", k)
            part["images"] = int(self.counts[k])
            for score, values in self.scores.items():
                part[score] = values[k]
            rows.append(part)
        return pd.concat(rows, ignore_index=True)


def _class_sum(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, ...) -> (K, ...): sum of the rows of each class."""
    out = values.new_zeros(num_classes, *values.shape[1:])
    return out.index_add_(0, labels.to(values.device), values)


def class_scores(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    layers: Sequence[str],
    norm: str = "l2",
    image_chunk: int = 128,
    scores: Sequence[str] = DEFAULT_RANK_SCORES,
    output: str = "softmax",
    baseline: str | torch.Tensor = "zeros",
    train_mean: torch.Tensor | None = None,
    path_steps: int = 32,
    progress: Callable[[int], None] | None = None,
) -> ClassScores:
    """Score every unit of `layers` for every class, streaming `images` in chunks.

    images: (N, *input) with labels (N,) in 0..K-1, K = len(class_names).
    output: the y of the per-image scores (grad_x_activation ... ablation); the pg_* name theirs.
    baseline, train_mean, path_steps: the path of integrated_pg, conductance and deeplift
    (see pgsweep.pg.scores.unit_scores).
    Memory: one chunk's activations and gradients plus (K, *activation) sums per layer.
    progress(n): n more images scored.
    """
    if norm not in NORMS:
        raise QueryError(f"unknown norm '{norm}'; choose one of {', '.join(NORMS)}")
    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise QueryError(f"unknown score '{unknown[0]}'; choose from {', '.join(SCORES)}")
    if image_chunk < 1:
        raise QueryError(f"image_chunk must be a positive integer, got {image_chunk}")
    if len(images) == 0:
        raise QueryError("no images to score filters on")
    num_classes = len(class_names)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    units = find_units(network, layers, images[:1])
    for score in scores:
        if score in _PER_IMAGE_SCORES:
            for layer, ndim in zip(units.layers, units.ndims):
                check_score_layer(score, layer, ndim)
    outputs = [o for s, o in _GRADIENT_SCORES.items() if s in scores]
    if any(s in scores for s in _TAYLOR_SCORES) and "loss" not in outputs:
        outputs.append("loss")
    counts = torch.zeros(num_classes, dtype=torch.float64)
    gradient_sums: dict[str, dict[str, torch.Tensor]] = {o: {} for o in outputs}
    unit_sums = {s: {} for s in ("activation", *_TAYLOR_SCORES, *_PER_IMAGE_SCORES) if s in scores}
    for start in range(0, len(images), image_chunk):
        x, y = images[start : start + image_chunk], labels[start : start + image_chunk]
        got = image_class_gradients(network, x, units.layers, y, outputs or ["logit"])
        y = y.to(got.logits.device)
        counts += torch.bincount(y.cpu(), minlength=num_classes).double()
        for gradient_of in outputs:
            for layer in units.layers:
                # a chunk sums in float32; the running total over chunks is float64
                total = _class_sum(got.gradients[gradient_of][layer], y, num_classes).double()
                sums = gradient_sums[gradient_of]
                sums[layer] = total if layer not in sums else sums[layer] + total
        for layer, ndim in zip(units.layers, units.ndims):
            a = got.activations[layer]  # (B, F, H, W) or (B, U)
            per_image = {}
            if "activation" in unit_sums:
                per_image["activation"] = filter_scores(a, ndim, norm)  # (B, F)
            if any(s in unit_sums for s in _TAYLOR_SCORES):
                product = a * got.gradients["loss"][layer]
                term = product.flatten(2).mean(2) if ndim == 3 else product  # (B, F)
                for name in ("taylor", "taylor_abs"):
                    if name in unit_sums:
                        per_image[name] = term.abs()
                if "taylor_signed" in unit_sums:
                    per_image["taylor_signed"] = -term  # zeroing a map changes the loss by about -a * dL/da
            for score, values in per_image.items():
                total = _class_sum(values, y, num_classes).double()
                sums = unit_sums[score]
                sums[layer] = total if layer not in sums else sums[layer] + total
        for score in _PER_IMAGE_SCORES:
            if score not in unit_sums:
                continue
            per_layer = unit_scores(network, x, units.layers, score, classes=y, output=output, norm=norm,
                                    baseline=baseline, train_mean=train_mean, path_steps=path_steps)
            for layer, values in per_layer.items():  # (B, F)
                total = _class_sum(values, y, num_classes).double()
                sums = unit_sums[score]
                sums[layer] = total if layer not in sums else sums[layer] + total
        if progress is not None:
            progress(len(x))
    present = counts > 0
    divisor = counts.clamp_min(1)

    def per_class_mean(total: torch.Tensor) -> torch.Tensor:
        mean = total / divisor.view(-1, *[1] * (total.dim() - 1)).to(total.device)
        mean[~present.to(total.device)] = float("nan")
        return mean

    result: dict[str, np.ndarray] = {}
    for score in scores:
        if score in _GRADIENT_SCORES:
            sums = gradient_sums[_GRADIENT_SCORES[score]]
            parts = [filter_scores(per_class_mean(sums[layer]), ndim, norm)
                     for layer, ndim in zip(units.layers, units.ndims)]
        else:
            parts = [per_class_mean(unit_sums[score][layer]) for layer in units.layers]
        result[score] = torch.cat(parts, dim=1).cpu().numpy()  # (K, U)
    return ClassScores(result, counts.numpy().astype(np.int64), units, tuple(class_names), norm)


def check_rank_scores(scores: Sequence[str], units: Units, key: str = "analysis.rank.scores") -> None:
    """ConfigError naming `key` when a score cannot be computed on one of the layers."""
    for score in scores:
        if score in _PER_IMAGE_SCORES:
            for layer, ndim in zip(units.layers, units.ndims):
                try:
                    check_score_layer(score, layer, ndim)
                except QueryError as error:
                    raise ConfigError(f"{key}: {error}") from None


def merge_scores(first: ClassScores, second: ClassScores) -> ClassScores:
    """Both score sets of the same units and images in one ClassScores (the first's on a name in both)."""
    if first.units.names() != second.units.names() or not np.array_equal(first.counts, second.counts):
        raise QueryError("class scores of different units or images cannot be merged")
    return ClassScores({**second.scores, **first.scores}, first.counts, first.units, first.class_names, first.norm)


def pick_scores(scores: ClassScores, names: Sequence[str]) -> ClassScores:
    """The same ClassScores with only `names`, in that order."""
    return ClassScores({name: scores.scores[name] for name in names}, scores.counts, scores.units,
                       scores.class_names, scores.norm)


def strongest_weakest(scores: np.ndarray, units: Units, class_names: Sequence[str], k: int) -> pd.DataFrame:
    """The k highest- and k lowest-scoring units of every class (ties: lower unit first).

    scores: (K, U). Returns rows (class, class_name, kind, rank, unit, layer, channel, filter, score),
    kind "strongest" or "weakest", rank 1..k.
    """
    if not 1 <= k <= units.total:
        raise QueryError(f"k={k} must be between 1 and the number of units ({units.total})")
    table = units.table()
    rows = []
    for c, name in enumerate(class_names):
        if np.isnan(scores[c]).any():
            continue
        for kind, order in (("strongest", strongest_first(scores[c])), ("weakest", weakest_first(scores[c]))):
            for rank, unit in enumerate(order[:k], start=1):
                rows.append({
                    "class": c, "class_name": name, "kind": kind, "rank": rank, "unit": int(unit),
                    "layer": table.layer[unit], "channel": int(table.channel[unit]), "filter": table["filter"][unit],
                    "score": float(scores[c, unit]),
                })
    return pd.DataFrame(rows)


def strongest_first(scores: np.ndarray) -> np.ndarray:
    """Unit indices by decreasing score; equal scores keep unit order (stable)."""
    return np.argsort(-scores, kind="stable")


def weakest_first(scores: np.ndarray) -> np.ndarray:
    """Unit indices by increasing score; equal scores keep unit order (stable)."""
    return np.argsort(scores, kind="stable")


def thesis_table_markdown(top: pd.DataFrame, layers: Sequence[str], score_label: str = "PG") -> str:
    """Table 4.2's layout: per class, k rows of (Layer, Unit, PG) highest | lowest.

    Layers and units are numbered from 1 as in the thesis (layer 1 = the first listed).
    """
    number = {name: i for i, name in enumerate(layers, start=1)}
    lines = [
        f"| class | highest: layer | unit | {score_label} | lowest: layer | unit | {score_label} |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (_, name), rows in top.groupby(["class", "class_name"], sort=True):
        high = rows[rows.kind == "strongest"].sort_values("rank")
        low = rows[rows.kind == "weakest"].sort_values("rank")
        for i, (h, w) in enumerate(zip(high.itertuples(), low.itertuples())):
            label = name if i == 0 else ""
            lines.append(
                f"| {label} | {number[h.layer]} | {h.channel + 1} | {h.score:.5g} "
                f"| {number[w.layer]} | {w.channel + 1} | {w.score:.5g} |"
            )
    return "\n".join(lines) + "\n"
