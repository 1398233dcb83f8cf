"""What the claim modules share: the Claim row, number formatting, and the verdict line."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgsweep import plots
from pgsweep.report.document import Document, Figure, png
from pgsweep.report.results import Job, setup_departures
from pgsweep.report.rules import Rules
from pgsweep.report.verdicts import Verdict


# the statistics rules every bootstrap interval reads
INTERVAL_RULES = ("statistics.confidence", "statistics.bootstrap", "statistics.seed", "statistics.min_models",
                  "statistics.max_interval_width", "statistics.partly_fraction")


@dataclass(frozen=True)
class Claim:
    """One row of the summary: a claim, what pgsweep measured, the verdict, its rules and the
    ways the run departs from the thesis's setup."""

    key: str
    thesis: str
    measured: str
    verdict: Verdict
    rules: str
    setup: str = ""

    @property
    def outcome(self) -> str:
        return self.verdict.outcome if self.verdict.counted else f"{self.verdict.outcome} (demonstration)"


def claim(key: str, thesis: str, measured: str, verdict: Verdict, rules: Rules, sections: tuple[str, ...],
          jobs: list[Job]) -> Claim:
    return Claim(key, thesis, measured, verdict, rules.text(*sections), setup_departures(jobs, rules.thesis_setup))


def verdict_line(doc: Document, c: Claim) -> None:
    """The verdict, why, its rule, the rules' values and the setup it was judged on."""
    why = f" ({c.verdict.reason})" if c.verdict.reason else ""
    used = f" Rules used: `{c.rules}`." if c.rules else ""
    doc.paragraph(f"**Verdict ({c.key}): {c.outcome}.**{why} Rule: {c.verdict.rule}.{used}")
    if c.setup:
        doc.paragraph(f"*Setup departs from the thesis's:* {c.setup}.")


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def spread(values, digits: int = 3) -> str:
    """`mean (range min to max, n)` of some numbers."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(values):
        return "n/a"
    return f"{values.mean():.{digits}f} (range {values.min():.{digits}f} to {values.max():.{digits}f}, n={len(values)})"


def share(flags) -> str:
    flags = np.asarray(list(flags), dtype=bool)
    return f"{flags.mean():.2f} ({int(flags.sum())} of {len(flags)})" if len(flags) else "n/a"


def figure(name: str, drawn, caption: str) -> Figure:
    return Figure(name, png(drawn), caption)


def class_names(job: Job) -> list[str]:
    scores = job.table("rank/class_scores.parquet").sort_values("class")
    return list(dict.fromkeys(scores["class_name"]))


def thesis_five(job: Job) -> list[str]:
    """The thesis's five identities of Table 4.2 and Figures 4.1-4.2, as this data names them."""
    names = class_names(job)
    return [names[i] for i in plots.thesis_classes(names)]


def first_naive(jobs: list[Job]) -> Job:
    """The first model trained on the naive split (as the thesis's), else the first model."""
    return next((j for j in jobs if not j.grouped), jobs[0])
