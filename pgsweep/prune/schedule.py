"""The pruning schedule: the criteria's names, and the number of filters each step removes.

No torch here: pgsweep.settings reads the `prune` config section against these names, and a
bad value answers in one line before anything heavy loads. What a schedule removes depends
only on the layers' widths, so a schedule that would empty a layer is refused before any
work (`check_widths`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pgsweep.errors import ConfigError

# criterion -> what it scores a filter by (lowest first out)
CRITERIA = {
    "pg_softmax": "class-averaged PG of the softmax output, filter norm; classes combined by normalize_classes",
    "pg_logit": "class-averaged PG of the logit, filter norm; classes combined by normalize_classes",
    "taylor": "mean |mean over positions of a * dL/da| (first-order Taylor, Molchanov et al. 2017)",
    "loss_gradient": "class-averaged d L / d a, filter norm",
    "activation": "mean filter norm of the activation",
    "taylor_abs": "the same as taylor",
    "taylor_signed": "mean -mean over positions of a * dL/da (the first-order rise in loss when the map is zeroed)",
    "grad_x_activation": "mean over images of the sum over the map of a * PG of the softmax, signed",
    "grad_x_activation_l2": "mean over images of the L2 over the map of a * PG of the softmax",
    "integrated_pg": "mean over images of the norm of PG of the softmax integrated from prune.baseline",
    "conductance": "mean over images of Captum's LayerConductance of the softmax, summed over the map",
    "deeplift": "mean over images of Captum's LayerDeepLift of the logit, summed over the map",
    "gradcam": "mean over images of Captum's per-map Grad-CAM weight x mean activation, softmax",
    "ablation": "mean over images of the drop in the softmax when the filter alone is zeroed",
    "magnitude": "L1 norm of the filter's weights (Torch-Pruning's MagnitudeImportance)",
    "random": "a random order, drawn from the task's seed",
}
MODES = ("iterative", "one_shot")
SCORE_SPLITS = ("train", "test", "all")


def fractions(step_fraction: float, final_fraction: float) -> tuple[float, ...]:
    """The fraction of each layer removed after each step: step_fraction, 2 x, ... up to final_fraction."""
    steps = math.ceil(final_fraction / step_fraction - 1e-9)
    return tuple(round(min(step_fraction * k, final_fraction), 10) for k in range(1, steps + 1))


def removed_count(width: int, fraction: float) -> int:
    """Filters of a `width`-filter layer removed at `fraction`: fraction x width, rounded half up."""
    return int(math.floor(fraction * width + 0.5 + 1e-9))


def removal_counts(widths: Mapping[str, int], fractions: Sequence[float]) -> list[dict[str, int]]:
    """For each step, how many filters of each layer are gone in all (cumulative)."""
    return [{layer: removed_count(width, f) for layer, width in widths.items()} for f in fractions]


def check_widths(widths: Mapping[str, int], final_fraction: float) -> None:
    """Every layer keeps at least one filter at the final fraction, else one ConfigError line."""
    for layer, width in widths.items():
        gone = removed_count(width, final_fraction)
        if gone >= width:
            raise ConfigError(
                f"prune: final_fraction={final_fraction} would remove all {width} filters of {layer} "
                f"({gone} of {width}); a layer keeps at least one: lower prune.final_fraction or leave "
                f"{layer} out of prune.layers"
            )
