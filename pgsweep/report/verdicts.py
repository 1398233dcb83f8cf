"""Verdicts and the statistics they share: a bootstrap interval over models, and the one
rule most claims use (an effect per model against a margin). Pure functions on numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REPRODUCED, PARTLY, NOT, INCONCLUSIVE = "reproduced", "partly", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, PARTLY, NOT, INCONCLUSIVE)


@dataclass(frozen=True)
class Verdict:
    """A claim's outcome: the verdict, the rule that decided it (with its numbers), and why."""

    outcome: str
    rule: str
    reason: str = ""
    counted: bool = True  # False: a demonstration, shown but not counted as reproduced

    def __post_init__(self) -> None:
        if self.outcome not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.outcome!r}")


@dataclass(frozen=True)
class Interval:
    """A statistic's point estimate and its bootstrap interval over the models."""

    estimate: float
    low: float
    high: float
    models: int
    level: float = 0.95

    @property
    def width(self) -> float:
        return self.high - self.low

    def text(self, digits: int = 3) -> str:
        if not np.isfinite(self.estimate):
            return "n/a"
        return (f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}] "
                f"({self.level:.0%} bootstrap interval over {self.models} models)")


@dataclass(frozen=True)
class Statistics:
    """The rules every interval follows (conf/report_rules/default.yaml: statistics)."""

    confidence: float = 0.95
    bootstrap: int = 2000
    seed: int = 0
    min_models: int = 3
    partly_fraction: float = 0.5
    max_interval_width: float = 0.5
    alpha: float = 0.05
    permutations: int = 2000


def bootstrap_mean(per_model, stats: Statistics) -> Interval:
    """The mean over models and its percentile bootstrap interval, resampling the models."""
    values = np.asarray([v for v in per_model if np.isfinite(v)], dtype=float)
    if not len(values):
        return Interval(np.nan, np.nan, np.nan, 0, stats.confidence)
    rng = np.random.default_rng(stats.seed)
    draws = rng.integers(0, len(values), size=(stats.bootstrap, len(values)))
    means = values[draws].mean(axis=1)
    tail = (1 - stats.confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(values.mean()), float(low), float(high), len(values), stats.confidence)


def too_few(interval: Interval, stats: Statistics) -> str:
    """Why an interval cannot decide ('' when it can)."""
    if interval.models < stats.min_models:
        return f"{interval.models} models, fewer than statistics.min_models={stats.min_models}"
    if interval.width > stats.max_interval_width:
        return (f"interval width {interval.width:.3f} above statistics.max_interval_width="
                f"{stats.max_interval_width}")
    return ""


def effect_verdict(interval: Interval, margin: float, stats: Statistics, holds: bool = True,
                   holds_text: str = "") -> tuple[str, str]:
    """The shared rule: (outcome, reason) for an effect (positive = the claim's direction).

    reproduced: interval low end >= margin and the thesis's own statement holds (holds);
    partly: low end > 0 and mean >= partly_fraction x margin (a real effect of some size, short
    of the margin or of the thesis's number); not reproduced: otherwise; inconclusive: too few
    models or too wide an interval.
    """
    reason = too_few(interval, stats)
    if reason:
        return INCONCLUSIVE, reason
    if interval.low >= margin and holds:
        return REPRODUCED, ""
    if interval.low > 0 and interval.estimate >= stats.partly_fraction * margin:
        short = [] if interval.low >= margin else [f"interval low end {interval.low:.3f} below the margin {margin}"]
        short += [] if holds else [holds_text or "the thesis's own number does not hold"]
        return PARTLY, "; ".join(short)
    if interval.low > 0:
        return NOT, f"mean {interval.estimate:.3f} below {stats.partly_fraction} x the margin {margin}"
    return NOT, f"interval low end {interval.low:.3f} at or below 0"


def effect_rule(effect: str, margin: float, stats: Statistics, statement: str = "") -> str:
    """The shared rule in words, with its numbers."""
    also = f" and {statement}" if statement else ""
    return (f"effect = {effect}, per model, mean over models with a {stats.confidence:.0%} bootstrap interval "
            f"({stats.bootstrap} resamples of the models, seed {stats.seed}); reproduced when the interval's low "
            f"end is at least {margin}{also}; partly when it is above 0 and the mean at least "
            f"{stats.partly_fraction * margin:g}; not reproduced otherwise; inconclusive "
            f"with fewer than {stats.min_models} models or an interval wider than {stats.max_interval_width}")
