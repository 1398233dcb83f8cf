"""The `prune` config section, checked, and the number of filters each step removes.

No torch here (like pgsweep.settings): a bad value answers in one line before anything
heavy loads. What a schedule removes depends only on the layers' widths, so a schedule
that would empty a layer is refused before any work (`check_widths`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pgsweep.config import build
from pgsweep.errors import ConfigError
from pgsweep.pg.choices import FILTER_NORMS
from pgsweep.settings import CONV_LAYERS, check_progress_bar, show_progress_bar

# criterion -> what it scores a filter by (lowest first out)
CRITERIA = {
    "pg_softmax": "class-averaged PG of the softmax output, filter norm; classes combined by normalize_classes",
    "pg_logit": "class-averaged PG of the logit, filter norm; classes combined by normalize_classes",
    "taylor": "mean |mean over positions of a * dL/da| (first-order Taylor, Molchanov et al. 2017)",
    "loss_gradient": "class-averaged d L / d a, filter norm",
    "activation": "mean filter norm of the activation",
    "magnitude": "L1 norm of the filter's weights (Torch-Pruning's MagnitudeImportance)",
    "random": "a random order, drawn from the task's seed",
}
MODES = ("iterative", "one_shot")
SCORE_SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class PruneSettings:
    """conf/prune: which criteria, the schedule, the fine-tuning, what is measured."""

    criteria: tuple[str, ...] = tuple(CRITERIA)
    seeds: tuple[int, ...] = (0, 1, 2)   # each criterion runs once per seed (fine-tuning order; random's draw)
    step_fraction: float = 0.1           # filters removed per step, as a fraction of each layer's width
    final_fraction: float = 0.5          # ... until this fraction is removed
    mode: str = "iterative"              # iterative: re-score the fine-tuned network before each step;
                                         # one_shot: rank once, prune each fraction from the trained network
    finetune_epochs: int = 10            # SGD epochs on the training images after each step (0: none)
    layers: tuple[str, ...] = (CONV_LAYERS,)  # activation maps whose filters may go; conv: every conv map
    score_split: str = "train"           # images the data-driven criteria are computed on
    norm: str = "l2"                     # a filter's score from its map (the PG and loss-gradient criteria)
    image_chunk: int = 128               # images per scoring pass (memory only)
    latency_batch: int = 64              # images per timed forward pass
    latency_repeats: int = 10            # interleaved rounds timing every network once; the median is logged
    output_dir: str = "outputs/prune"    # finished tasks, one folder per (model, settings): resumable
    progress_bar: str = "auto"

    def validate(self) -> None:
        if not self.criteria:
            raise ConfigError(f"prune.criteria must name at least one of {', '.join(CRITERIA)}")
        unknown = [c for c in self.criteria if c not in CRITERIA]
        if unknown:
            raise ConfigError(f"prune.criteria: unknown criterion '{unknown[0]}'; choose from {', '.join(CRITERIA)}")
        if len(set(self.criteria)) != len(self.criteria):
            raise ConfigError(f"prune.criteria lists a criterion twice: {list(self.criteria)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"prune.seeds must be distinct integers, at least one, got {list(self.seeds)}")
        for name in ("step_fraction", "final_fraction"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value < 1):
                raise ConfigError(f"prune.{name} must be in [0, 1), got {value}")
        if self.final_fraction == 0:
            raise ConfigError("prune.final_fraction=0 removes no filter: give a fraction in (0, 1)")
        if not 0 < self.step_fraction <= self.final_fraction:
            raise ConfigError(f"prune.step_fraction must be > 0 and <= final_fraction={self.final_fraction}, "
                              f"got {self.step_fraction}")
        if self.mode not in MODES:
            raise ConfigError(f"prune.mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.finetune_epochs < 0:
            raise ConfigError(f"prune.finetune_epochs must be >= 0, got {self.finetune_epochs}")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"prune.layers must name distinct layers (conv: every conv map), got {list(self.layers)}")
        if self.score_split not in SCORE_SPLITS:
            raise ConfigError(f"prune.score_split must be one of {', '.join(SCORE_SPLITS)}, got '{self.score_split}'")
        if self.norm not in FILTER_NORMS:
            raise ConfigError(f"prune.norm must be one of {', '.join(FILTER_NORMS)}, got '{self.norm}'")
        for name in ("image_chunk", "latency_batch", "latency_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"prune.{name} must be >= 1, got {getattr(self, name)}")
        check_progress_bar(self.progress_bar, "prune.progress_bar")

    def fractions(self) -> tuple[float, ...]:
        """The fraction of each layer removed after each step: step_fraction, 2 x, ... up to final_fraction."""
        steps = math.ceil(self.final_fraction / self.step_fraction - 1e-9)
        return tuple(round(min(self.step_fraction * k, self.final_fraction), 10) for k in range(1, steps + 1))

    def show_progress_bar(self) -> bool:
        return show_progress_bar(self.progress_bar, sys.stderr)


def read_prune_config(values: Mapping) -> PruneSettings:
    return build(PruneSettings, values, "prune")


def removed_count(width: int, fraction: float) -> int:
    """Filters of a `width`-filter layer removed at `fraction`: fraction x width, rounded half up."""
    return int(math.floor(fraction * width + 0.5 + 1e-9))


def removal_counts(widths: Mapping[str, int], fractions: Sequence[float]) -> list[dict[str, int]]:
    """For each step, how many filters of each layer are gone in all (cumulative)."""
    return [{layer: removed_count(width, f) for layer, width in widths.items()} for f in fractions]


def check_widths(widths: Mapping[str, int], settings: PruneSettings) -> None:
    """Every layer keeps at least one filter at the final fraction, else one ConfigError line."""
    for layer, width in widths.items():
        gone = removed_count(width, settings.final_fraction)
        if gone >= width:
            raise ConfigError(
                f"prune: final_fraction={settings.final_fraction} would remove all {width} filters of {layer} "
                f"({gone} of {width}); a layer keeps at least one: lower prune.final_fraction or leave "
                f"{layer} out of prune.layers"
            )
