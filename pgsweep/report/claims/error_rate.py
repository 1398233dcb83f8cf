"""Claim 1: "an error rate of 4.88% on the data set" (thesis 4.1), judged on the test images
(the whole-set reading, whose training images are nearly all right, shown beside it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pgsweep import plots
from pgsweep.report.claims.common import INTERVAL_RULES, Claim, claim, figure, fmt, spread, verdict_line
from pgsweep.report.document import Document
from pgsweep.report.results import Job
from pgsweep.report.rules import Rules
from pgsweep.report.verdicts import INCONCLUSIVE, NOT, PARTLY, REPRODUCED, Verdict, bootstrap_mean, too_few

RULES = ("error_rate", *INTERVAL_RULES)


def measure(jobs: list[Job]) -> pd.DataFrame:
    """One row per model: its final test, whole-set and train errors and its best epoch."""
    rows = []
    for job in jobs:
        m, history = job.metrics, job.test_error_history
        best = history.loc[history["test_error"].idxmin()] if len(history) else None
        rows.append({"model": job.label, "epochs": job.epochs, "grouped": job.grouped,
                     "test_wrong": int(m["final_test_misclassified"]), "test_images": int(m["final_test_images"]),
                     "test_error": m["final_test_error"], "all_wrong": int(m["final_all_misclassified"]),
                     "all_images": int(m["final_all_images"]), "all_error": m["final_all_error"],
                     "train_error": m["final_train_error"],
                     "best_error": np.nan if best is None else best.test_error,
                     "best_epoch": -1 if best is None else int(best.epoch)})
    return pd.DataFrame(rows)


def limits(table: pd.DataFrame, rules: Rules) -> tuple[float, float, float]:
    """(the thesis's rate, the reproduced limit, the partly limit) on this run's test set size."""
    r = rules["error_rate"]
    thesis = r["thesis_errors"] / r["thesis_images"]
    images = float(table["test_images"].median())
    return thesis, thesis + r["tolerance_images"] / images, thesis + r["partly_images"] / images


def verdict(table: pd.DataFrame, rules: Rules) -> Verdict:
    stats = rules.statistics
    thesis, limit, partly = limits(table, rules)
    interval = bootstrap_mean(table["test_error"], stats)
    rule = (f"the mean test error over the models, {stats.confidence:.0%} bootstrap interval: reproduced when its "
            f"high end is at most {fmt(limit)} (the thesis's {fmt(thesis)} plus "
            f"{rules['error_rate']['tolerance_images']} test image(s)); partly when it is at most {fmt(partly)} "
            f"({rules['error_rate']['partly_images']} images); not reproduced otherwise")
    reason = too_few(interval, stats)
    if reason:
        return Verdict(INCONCLUSIVE, rule, reason)
    where = f"interval {interval.text()}"
    if interval.high <= limit:
        return Verdict(REPRODUCED, rule, where)
    return Verdict(PARTLY if interval.high <= partly else NOT, rule, where)


def section(doc: Document, jobs: list[Job], rules: Rules) -> list[Claim]:
    doc.heading(2, "1. Error rate")
    doc.quote("Training was done for 250 epochs, after which the network achieved an error rate of 4.88% on "
              "the data set. (thesis 4.1)")
    table = measure(jobs)
    thesis, limit, _ = limits(table, rules)
    r = rules["error_rate"]
    doc.paragraph(f"The thesis's rate is {r['thesis_errors']} of {r['thesis_images']} test images "
                  f"({fmt(thesis)}). The verdict uses the test images; the whole-set reading (test and training "
                  "images together, the training ones nearly all right) is shown beside it and not judged. "
                  "*grouped* keeps byte-identical images on one side of the split, *naive* splits without "
                  "looking, as the thesis did. The best epoch has the lowest test error on the per-epoch curve.")
    rows = [[row.model, row.epochs, f"{row.test_wrong}/{row.test_images}", fmt(row.test_error),
             f"{row.all_wrong}/{row.all_images}", fmt(row.all_error), fmt(row.train_error),
             "n/a" if row.best_epoch < 0 else f"{fmt(row.best_error)} at epoch {row.best_epoch}"]
            for row in table.itertuples()]
    for name, members in (("grouped", table[table.grouped]), ("naive", table[~table.grouped]), ("all models", table)):
        if len(members):
            rows.append([f"**mean, {name}**", "", "", spread(members.test_error), "", spread(members.all_error),
                         spread(members.train_error), ""])
    doc.table(["model", "epochs", "test wrong", "test error", "whole set wrong", "whole-set error (not judged)",
               "train error", "best epoch: test error"], rows)
    history = pd.concat([job.test_error_history.assign(split=job.split_name, seed=job.seed) for job in jobs])
    if len(history):
        doc.figure(figure("error_curves.png",
                          plots.error_curves(history, "split", "seed", thesis, f"thesis: {fmt(thesis)}"),
                          "x: epoch; y: test error (share of the test images misclassified), one line per seed, "
                          f"one panel per split reading; dotted: the thesis's {fmt(thesis)}."))
    result = verdict(table, rules)
    c = claim("1", f"{fmt(thesis)} test error ({r['thesis_errors']}/{r['thesis_images']})",
              f"test error {fmt(table.test_error.mean())} (mean of {len(table)} models; whole set, not judged: "
              f"{fmt(table.all_error.mean())})", result, rules, RULES, jobs)
    verdict_line(doc, c)
    return [c]
