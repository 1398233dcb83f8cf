"""Claims 6a and 6b (Figures 4.5-4.7): some targets are much easier than others, and inducing
an error is easier than hitting a chosen target.

6a chooses the easiest and the hardest target on one half of the models and measures their
gap on the other half (and the reverse), so the choice after the fact does not make the gap.
6b compares, at the same actual pixel RMS of each point (the sweep's `pixel_rms` column),
how often a step induces an error against how often it hits its target; success implies an
induced error, so the claim is the gap, which must clear a margin."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pgsweep import plots
from pgsweep.report.claims.common import (
    INTERVAL_RULES, Claim, class_names, claim, figure, fmt, verdict_line,
)
from pgsweep.report.document import Document, Figure
from pgsweep.report.results import Job
from pgsweep.report.rules import Rules
from pgsweep.report.verdicts import INCONCLUSIVE, Verdict, bootstrap_mean, effect_rule, effect_verdict

POINTS = "adversarial/results.parquet"
PIXEL_RMS = "pixel_rms"


def measure_targets(jobs: list[Job]) -> pd.DataFrame:
    """(models, targets): each model's mean targeted success over the steps, per target."""
    per_target = pd.concat([j.table("adversarial/per_target.parquet").assign(model=j.label) for j in jobs])
    return per_target.groupby(["model", "target"], sort=False)["success"].mean().unstack("target")


def cross_fitted_gaps(success: pd.DataFrame) -> pd.Series:
    """Per model: success of the easiest minus the hardest target, both chosen on the other half
    of the models (halves: alternate rows)."""
    halves = [success.iloc[0::2], success.iloc[1::2]]
    gaps = {}
    for chosen_on, tested_on in ((halves[0], halves[1]), (halves[1], halves[0])):
        if not len(chosen_on) or not len(tested_on):
            continue
        means = chosen_on.mean()
        easiest, hardest = means.idxmax(), means.idxmin()
        for model, row in tested_on.iterrows():
            gaps[model] = float(row[easiest] - row[hardest])
    return pd.Series(gaps, dtype=float).reindex(success.index)


def verdict_targets(success: pd.DataFrame, rules: Rules) -> Verdict:
    stats, margin = rules.statistics, rules["targets"]["margin"]
    rule = effect_rule("targeted success of the easiest minus the hardest target, both chosen on the other half of "
                       "the models", margin, stats)
    interval = bootstrap_mean(cross_fitted_gaps(success).dropna(), stats)
    outcome, why = effect_verdict(interval, margin, stats)
    return Verdict(outcome, rule, "; ".join(p for p in (f"gap {interval.text()}", why) if p))


def measure_induced(jobs: list[Job], rules: Rules) -> pd.DataFrame:
    """One row per (model, pixel-RMS bin) of off-target points: induced-error rate and success
    rate; empty (with attrs["missing"]) when the point tables have no pixel_rms column."""
    points = []
    for job in jobs:
        table = job.table(POINTS)
        if PIXEL_RMS not in table.columns:
            out = pd.DataFrame()
            out.attrs["missing"] = job.label
            return out
        off = table[table["target"] != table["label"]]
        points.append(off[[PIXEL_RMS, "success", "induced_error"]].assign(model=job.label))
    points = pd.concat(points, ignore_index=True)
    points["rms_bin"] = pd.qcut(points[PIXEL_RMS], rules["induced"]["rms_bins"], duplicates="drop")
    return points.groupby(["model", "rms_bin"], observed=True, sort=False).agg(
        pixel_rms=(PIXEL_RMS, "median"), induced_error=("induced_error", "mean"), success=("success", "mean"),
        points=("success", "size")).reset_index()


def verdict_induced(table: pd.DataFrame, rules: Rules) -> Verdict:
    stats, margin = rules.statistics, rules["induced"]["margin"]
    rule = effect_rule(f"induced-error rate minus targeted success at the same actual pixel RMS ({PIXEL_RMS} of each "
                       f"point, {rules['induced']['rms_bins']} quantile bins), mean over the bins", margin, stats)
    if not len(table):
        model = table.attrs.get("missing", "")
        return Verdict(INCONCLUSIVE, rule, f"the sweep's point table ({POINTS}) has no {PIXEL_RMS} column"
                       + (f" ({model})" if model else "") + ": a raw step's actual pixel change differs between "
                       "(image, target) pairs, so the points cannot be compared at the same pixel change")
    gaps = (table["induced_error"] - table["success"]).groupby(table["model"], sort=False).mean()
    interval = bootstrap_mean(gaps, stats)
    outcome, why = effect_verdict(interval, margin, stats)
    return Verdict(outcome, rule, "; ".join(p for p in (f"gap {interval.text()}", why) if p))


def section(doc: Document, jobs: list[Job], rules: Rules) -> list[Claim]:
    doc.heading(2, "6. Perturbations (Figures 4.5-4.7)")
    doc.quote("Some targets are easier to fool the classifier into believing than others. (4.4)\n"
              "Previous works on adversarial images only focus on inducing this error, not targeting classes. "
              "These results show that the former is easier than the latter. (4.4)")
    names = class_names(jobs[0])
    p = jobs[0].params
    success = measure_targets(jobs)
    doc.paragraph(f"Every test image is perturbed toward every other class, x' = x + s dy_t/dx, over "
                  f"{p.get('adversarial.step_count', '?')} {p.get('adversarial.step_kind', '?')} step sizes, chosen "
                  f"so that the RMS pixel change at the median gradient norm runs from {p.get('adversarial.rms_min', '?')}"
                  f" to {p.get('adversarial.rms_max', '?')}. Success: the argmax becomes the target; induced error: "
                  "the argmax is no longer the true class. Mean success over the steps per target and model:")
    overall = success.mean().sort_values(ascending=False)
    doc.table(["target", "mean success over models", "range over models"],
              [[names[int(t)], fmt(v), f"{fmt(success[t].min())} to {fmt(success[t].max())}"]
               for t, v in overall.items()])
    n = len(success)
    spread_table = pd.DataFrame([{"target": int(t), "mean": success[t].mean(), "low": success[t].min(),
                                  "high": success[t].max(), "models": n} for t in success.columns])
    drawn = plots.target_spread(spread_table, names)
    for ax in drawn.axes:
        ax.set_xlabel("targeted success, mean over steps and test images (bar: range over models)")
        ax.set_title("Targeted success per target class", fontsize=10)
    doc.figure(figure("target_spread.png", drawn,
                      f"x: targeted success per target class, mean over the steps and test images, point: mean over "
                      f"{n} models, bar: their range; y: the target class."))
    gaps = cross_fitted_gaps(success)
    result = verdict_targets(success, rules)
    claims = [claim("6a", "some targets are much easier than others",
                    f"easiest minus hardest (chosen on the other half): {fmt(gaps.mean())} mean over {gaps.notna().sum()} "
                    "models", result, rules, ("targets", *INTERVAL_RULES), jobs)]
    verdict_line(doc, claims[0])

    induced = measure_induced(jobs, rules)
    if len(induced):
        binned = induced.groupby("rms_bin", observed=True, sort=True).agg(
            pixel_rms=("pixel_rms", "median"), induced_error=("induced_error", "mean"), success=("success", "mean"))
        doc.paragraph(f"At the same actual pixel change (bins of each point's `{PIXEL_RMS}`, means over the models):")
        doc.table(["pixel RMS bin", "median pixel RMS", "induced error", "targeted success"],
                  [[str(b), fmt(r.pixel_rms, 4), fmt(r.induced_error), fmt(r.success)] for b, r in binned.iterrows()])
    result = verdict_induced(induced, rules)
    claims.append(claim("6b", "inducing an error is easier than hitting a chosen target",
                        "induced error minus success at the same pixel RMS: "
                        + (fmt((induced.induced_error - induced.success).mean()) if len(induced) else
                           f"not measurable (no {PIXEL_RMS} per point)"),
                        result, rules, ("induced", *INTERVAL_RULES), jobs))
    verdict_line(doc, claims[1])

    kinds = [j for j in jobs if j.has("adversarial/step_kinds.parquet")]
    if kinds:
        table = pd.concat([j.table("adversarial/step_kinds.parquet").assign(run=j.run_id) for j in kinds])
        drawn = plots.step_kinds(table)
        doc.paragraph(f"The sign-step variant beside the thesis's raw steps ({len(kinds)} models), not judged, "
                      f"compared at the same actual pixel change: each point's `{PIXEL_RMS}`, binned.")
        doc.figure(figure("step_kinds.png", drawn,
                          f"x: the actual RMS pixel change of x' - x (`{PIXEL_RMS}`), median of each quarter-decade "
                          "bin; y: share of off-target (image, target, step) points in the bin; dashed: targeted "
                          "success, solid: induced error; band: range over the models."))
    first = jobs[0]
    for name, caption in (("fig4_6_success.png", "Figure 4.6: targeted success per target"),
                          ("fig4_7_induced_error.png", "Figure 4.7: induced error per target")):
        if first.has(f"adversarial/{name}"):
            doc.figure(Figure(name, first.file(f"adversarial/{name}"), f"{caption} ({first.label}), as the "
                              "adversarial stage draws it."))
    return claims
