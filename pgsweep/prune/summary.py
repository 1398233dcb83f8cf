"""The comparison of criteria, computed from prune/curves.parquet and nothing else.

    python -m pgsweep.prune.summary RUN_ID [--tracking-uri URI]

prints the same summary the `prune` stage logged (prune/summary.md), read back from
the run's curves table, so the numbers quoted anywhere come from a command.

The verdict of a PG criterion against another (magnitude, Taylor, random), on the test
error at the last step, after its fine-tuning and (a second verdict) just before it, over
the seeds:
  beats:        PG's worst seed is better than the other's best seed (the spreads do not overlap)
  lower mean:   PG's mean error is lower, the spreads overlap
  ties:         equal means
  does not beat: PG's mean error is higher
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

PG_CRITERIA = ("pg_softmax", "pg_logit")
BASELINES = ("magnitude", "taylor", "random")


def summarize(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per criterion: the last step's errors over seeds, the mean over steps, size and speed."""
    last = curves.step.max()
    rows = []
    for criterion, part in curves.groupby("criterion", sort=False):
        final = part[part.step == last]
        steps = part[part.step > 0].groupby("seed").test_error.mean()
        intact = part[part.step == 0]
        rows.append({
            "criterion": criterion, "seeds": int(final.seed.nunique()),
            "removed_fraction": float(final.removed_fraction.mean()),
            "test_error_mean": float(final.test_error.mean()), "test_error_sd": float(final.test_error.std(ddof=1))
            if len(final) > 1 else 0.0,
            "test_error_min": float(final.test_error.min()), "test_error_max": float(final.test_error.max()),
            "before_finetune_mean": float(final.test_error_before.mean()),
            "before_finetune_min": float(final.test_error_before.min()),
            "before_finetune_max": float(final.test_error_before.max()),
            "mean_over_steps": float(steps.mean()),
            "intact_test_error": float(intact.test_error.mean()),
            "params": float(final.params.mean()), "intact_params": float(intact.params.mean()),
            "macs": float(final.macs.mean()), "intact_macs": float(intact.macs.mean()),
            "latency_ms": float(final.latency_ms.mean()), "intact_latency_ms": float(intact.latency_ms.mean()),
        })
    return pd.DataFrame(rows)


def verdict(pg: pd.Series, other: pd.Series, column: str = "test_error") -> str:
    """column: test_error (after fine-tuning) or before_finetune, at the last step."""
    if pg[f"{column}_max"] < other[f"{column}_min"]:
        return "beats"
    if np.isclose(pg[f"{column}_mean"], other[f"{column}_mean"]):
        return "ties"
    return "lower mean" if pg[f"{column}_mean"] < other[f"{column}_mean"] else "does not beat"


def comparisons(summary: pd.DataFrame) -> pd.DataFrame:
    """Each PG criterion against magnitude, Taylor and random, where both ran."""
    by = summary.set_index("criterion")
    rows = []
    for pg in PG_CRITERIA:
        for other in BASELINES:
            if pg in by.index and other in by.index:
                rows.append({"pg": pg, "other": other,
                             "difference": float(by.loc[pg, "test_error_mean"] - by.loc[other, "test_error_mean"]),
                             "verdict": verdict(by.loc[pg], by.loc[other]),
                             "difference_before": float(by.loc[pg, "before_finetune_mean"]
                                                        - by.loc[other, "before_finetune_mean"]),
                             "verdict_before": verdict(by.loc[pg], by.loc[other], "before_finetune")})
    return pd.DataFrame(rows, columns=["pg", "other", "difference", "verdict", "difference_before", "verdict_before"])


def _spread(row) -> str:
    if row.seeds == 1:  # no spread to show
        return f"{row.test_error_mean:.3f} (one seed)"
    return (f"{row.test_error_mean:.3f} ± {row.test_error_sd:.3f} "
            f"[{row.test_error_min:.3f}, {row.test_error_max:.3f}]")


def markdown(curves: pd.DataFrame) -> str:
    """The summary as Markdown: the setup, the table per criterion, the PG verdicts."""
    summary = summarize(curves)
    first = curves.iloc[0]
    last = curves.step.max()
    seeds = sorted(curves.seed.unique())
    intact = curves[curves.step == 0]
    lines = [
        f"Pruning ({first['mode']}): {last} steps to {curves[curves.step == last].removed_fraction.mean():.2f} "
        f"of the {int(first.filters_total)} filters, fine-tuned after each step; test error over seeds "
        f"{', '.join(map(str, seeds))}; intact network: test error {intact.test_error.mean():.3f}, "
        f"{intact.params.mean():,.0f} parameters, {intact.macs.mean():,.0f} MACs, "
        f"{intact.latency_ms.mean():.2f} ms per batch of {int(first.latency_batch)}.",
        "",
        f"| criterion | test error after step {last} (mean ± sd [min, max]) | before its fine-tuning "
        f"(mean [min, max]) | after, mean over steps | parameters | MACs | latency (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in summary.sort_values("test_error_mean").itertuples():
        before = f"{row.before_finetune_mean:.3f} [{row.before_finetune_min:.3f}, {row.before_finetune_max:.3f}]"
        lines.append(f"| {row.criterion} | {_spread(row)} | {before} | {row.mean_over_steps:.3f} "
                     f"| {row.params:,.0f} ({row.params / row.intact_params:.0%}) "
                     f"| {row.macs:,.0f} ({row.macs / row.intact_macs:.0%}) "
                     f"| {row.latency_ms:.2f} ({row.latency_ms / row.intact_latency_ms:.0%}) |")
    compared = comparisons(summary)
    if len(compared):
        lines += ["", f"At step {last}, test error of PG minus the other's (mean over seeds):", "",
                  "| PG criterion | against | after fine-tuning | verdict | before fine-tuning | verdict |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r.pg} | {r.other} | {r.difference:+.3f} | {r.verdict} | {r.difference_before:+.3f} "
                  f"| {r.verdict_before} |" for r in compared.itertuples()]
        lines += ["", "beats: PG's worst seed is better than the other's best; lower mean: lower on average, "
                      "the seeds' spreads overlap."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgsweep.prune.summary", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the MLflow run that ran the prune stage")
    parser.add_argument("--tracking-uri", default=None, help="default: tracking.uri's default (sqlite:///mlflow.db)")
    args = parser.parse_args(argv)
    from pgsweep.errors import PgsweepError
    from pgsweep.tracking import StoreReader, default_tracking_uri

    try:
        reader = StoreReader(args.tracking_uri or default_tracking_uri())
        curves = reader.table(args.run_id, "prune/curves.parquet")
    except PgsweepError as error:
        print(f"pgsweep: error: {error}", file=sys.stderr)
        return 2
    print(markdown(curves), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
