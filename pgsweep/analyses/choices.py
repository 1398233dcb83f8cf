"""The analyses' choices and their checks, light (no torch), so config checks use them before
any heavy library loads: the adversarial perturbation, its step sizes, the inference copy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pgsweep.errors import ConfigError, QueryError
from pgsweep.pg.choices import CAPTUM_SCORES, PG_OUTPUTS

# the rank stage's columns: the class-averaged scores of pgsweep.analyses.ranking.SCORES
RANK_SCORES = ("pg_softmax", "pg_logit", "loss_gradient", "activation", "taylor", "taylor_abs", "taylor_signed",
               "grad_x_activation", "grad_x_activation_l2", "integrated_pg", *CAPTUM_SCORES)
DEFAULT_RANK_SCORES = ("pg_softmax", "pg_logit", "loss_gradient", "activation", "taylor")
# the knockout's orderings come from these scores (analysis.knockout.scores); its baselines, the
# oracle (single knockouts) and random orders, are replayed whatever is listed
DEFAULT_KNOCKOUT_SCORES = DEFAULT_RANK_SCORES
KNOCKOUT_BASELINES = ("oracle", "random")

OPTIMIZE_CHOICES = ("auto", "true", "false")


def check_optimize(value, key: str) -> str:
    """The knockout's and the sweep's `optimize` (run on the network's inference copy,
    pgsweep.analyses.inference): auto (on the CPU), true or false; YAML booleans accepted."""
    word = str(value).lower()
    if word not in OPTIMIZE_CHOICES:
        raise ConfigError(f"{key} must be auto, true or false, got '{value}'")
    return word


STEP_KINDS = ("raw", "l2", "sign")


@dataclass(frozen=True)
class Perturbation:
    """How images are perturbed: which y, which direction, clipping."""

    output: str = "softmax"          # y = softmax probability or logit of the target
    step_kind: str = "raw"           # raw | l2 | sign
    clip: bool = False               # clip x' to [clip_min, clip_max]
    clip_min: float = 0.0
    clip_max: float = 1.0

    def validate(self) -> None:
        if self.output not in PG_OUTPUTS:
            raise QueryError(f"output must be softmax or logit, got '{self.output}'")
        if self.step_kind not in STEP_KINDS:
            raise QueryError(f"step_kind must be one of {', '.join(STEP_KINDS)}, got '{self.step_kind}'")
        if self.clip and not self.clip_min < self.clip_max:
            raise QueryError(f"clip range [{self.clip_min}, {self.clip_max}] is empty")


def check_steps(steps: Sequence[float]) -> tuple[float, ...]:
    """Step sizes as floats: a non-empty list of finite numbers >= 0."""
    values = []
    for s in steps:
        try:
            value = float(s)
        except (TypeError, ValueError):
            raise QueryError(f"step size {s!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise QueryError(f"step sizes must be finite and >= 0, got {s!r}")
        values.append(value)
    if not values:
        raise QueryError("the step list is empty")
    return tuple(values)
