"""Claim 3 (Table 4.1): PG patterns stay consistent across images of one class.

Each image's own-class PG shares the output unit with every image of its class and no other,
so within > between is expected without any consistent pattern. The claim is judged on
vectors that share no output unit: a fixed class's PG for every image (an image-scores table
with a `target` column), with a label-shuffle permutation test per model and a sign-flip
test across models. Without such a table the verdict is inconclusive."""

from __future__ import annotations

from itertools import product

import numpy as np
import pandas as pd

from pgsweep.report.claims.common import INTERVAL_RULES, Claim, claim, fmt, spread, verdict_line
from pgsweep.report.document import Document, Figure
from pgsweep.report.results import Job
from pgsweep.report.rules import Rules
from pgsweep.report.verdicts import INCONCLUSIVE, Verdict, bootstrap_mean, effect_rule, effect_verdict

RULES = ("consistency", *INTERVAL_RULES, "statistics.alpha")
IMAGE_SCORES = "diagrams/image_scores.parquet"
_ID_COLUMNS = ("image", "source", "class", "class_name", "target")


def correlations(vectors: np.ndarray) -> np.ndarray:
    """(N, F) vectors -> (N, N) Pearson correlations of the images (features standardized over
    the images first)."""
    z = (vectors - vectors.mean(0)) / np.where(vectors.std(0) > 0, vectors.std(0), 1)
    return np.corrcoef(z)


def _within_and_between(corr: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    return float(corr[same & off].mean()), float(corr[~same].mean())


def within_and_between(vectors: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(N, F) vectors, (N,) labels -> the mean Pearson correlation of same-label pairs and that of
    different-label pairs (features standardized over the images first)."""
    return _within_and_between(correlations(vectors), labels)


def within_between(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Within minus between (within_and_between): the statistic claim 3 judges."""
    within, between = within_and_between(vectors, labels)
    return within - between


def permutation_p(vectors: np.ndarray, labels: np.ndarray, permutations: int, seed: int) -> float:
    """One-sided p of within - between against label shuffles (valid: one output unit for all).
    A shuffle moves labels, not vectors: the correlations are computed once, and every
    shuffle's statistic comes from one batched product."""
    corr = correlations(vectors)
    rng = np.random.default_rng(seed)
    classes, codes = np.unique(labels, return_inverse=True)  # a shuffle draws the same for any values
    shuffles = np.stack([codes] + [rng.permutation(codes) for _ in range(permutations)])
    statistics = _within_minus_between(corr, shuffles, len(classes))
    hits = int((statistics[1:] >= statistics[0]).sum())
    return (hits + 1) / (permutations + 1)


def _within_minus_between(corr: np.ndarray, labellings: np.ndarray, classes: int) -> np.ndarray:
    """(N, N) correlations, (P, N) labellings in 0..classes-1 -> (P,) within - between means of
    each labelling. The sum over same-label pairs is sum_k 1_k' C 1_k less the diagonal; the
    pair counts and the total do not change under a shuffle."""
    onehot = np.eye(classes)[labellings]  # (P, N, K)
    same_sum = np.einsum("pik,ij,pjk->p", onehot, corr, onehot, optimize=True) - np.trace(corr)
    counts = onehot[0].sum(0)
    n = labellings.shape[1]
    same_pairs = float((counts ** 2).sum() - n)
    other_pairs = float(n * n - n - same_pairs)
    other_sum = corr.sum() - np.trace(corr) - same_sum
    return same_sum / same_pairs - other_sum / other_pairs


def sign_flip_p(differences) -> float:
    """One-sided p that the mean of per-model differences is above 0 (exact sign flips)."""
    values = np.asarray(differences, dtype=float)
    observed = values.mean()
    means = [np.mean(values * np.array(signs)) for signs in product((1, -1), repeat=len(values))] \
        if len(values) <= 16 else [np.mean(values * np.random.default_rng(0).choice((1, -1), len(values)))
                                   for _ in range(20000)]
    return float(np.mean(np.asarray(means) >= observed - 1e-12))


def measure(jobs: list[Job], rules: Rules) -> pd.DataFrame:
    """One row per model (and fixed target when logged): within - between and its permutation p."""
    stats = rules.statistics
    rows = []
    for job in jobs:
        m = job.metrics
        base = {"model": job.label, "own_within": m["diagrams/within_class_correlation"],
                "own_between": m["diagrams/between_class_correlation"],
                "own_p": m.get("diagrams/consistency_p_value", np.nan)}
        scores = job.table(IMAGE_SCORES)
        if "target" not in scores.columns:
            rows.append({**base, "vectors": "own class", "target": -1, "within": np.nan, "between": np.nan,
                         "difference": np.nan, "p": np.nan})
            continue
        features = [c for c in scores.columns if c not in _ID_COLUMNS]
        for target, group in scores.groupby("target"):
            vectors, labels = group[features].to_numpy(float), group["class"].to_numpy()
            within, between = within_and_between(vectors, labels)
            rows.append({**base, "vectors": "fixed class", "target": int(target), "within": within,
                         "between": between, "difference": within - between,
                         "p": permutation_p(vectors, labels, stats.permutations, stats.seed)})
    return pd.DataFrame(rows)


def verdict(table: pd.DataFrame, rules: Rules) -> Verdict:
    stats, margin = rules.statistics, rules["consistency"]["margin"]
    fixed = table[table["vectors"] == "fixed class"]
    rule = effect_rule("within - between correlation of fixed-class PG vectors (mean over targets)", margin, stats,
                       f"the sign-flip test across models gives p < {stats.alpha}")
    if not len(fixed):
        return Verdict(INCONCLUSIVE, rule, "only own-class PG vectors are logged (diagrams/image_scores.parquet has "
                                           "no target column): same-class images share the output unit, so "
                                           "within > between needs no consistent pattern")
    per_model = fixed.groupby("model", sort=False)["difference"].mean()
    interval = bootstrap_mean(per_model, stats)
    across = sign_flip_p(per_model)
    outcome, reason = effect_verdict(interval, margin, stats, across < stats.alpha,
                                     f"across-model p = {across:.4f}, not below {stats.alpha}")
    return Verdict(outcome, rule, "; ".join(p for p in (f"interval {interval.text()}", reason) if p))


def section(doc: Document, jobs: list[Job], rules: Rules) -> list[Claim]:
    doc.heading(2, "3. PG patterns are consistent within a class (Table 4.1)")
    doc.quote("As shown in Figure 4.1, PG patterns for units in a neural net stay consistent across different "
              "images of the same class. (thesis 4.2.1; the figure meant is Table 4.1)")
    table = measure(jobs, rules)
    per_model = table.drop_duplicates("model")
    own_difference = per_model.own_within - per_model.own_between
    own_across = sign_flip_p(own_difference)
    doc.paragraph("Own-class PG vectors (each test image's PG for its own class, one score per filter): within is "
                  "the mean Pearson correlation of two images of one class, between of two images of different "
                  "classes, p a label-shuffle permutation test (`diagrams/consistency_p_value`). Not judged: "
                  "same-class images share the output unit whose gradient is taken, which alone makes them "
                  f"alike. Across the {len(per_model)} models, a sign-flip test of within - between gives "
                  f"one-sided p = {own_across:.4f}.")
    doc.table(["model", "within (own class)", "between (own class)", "within - between", "p"],
              [[r.model, fmt(r.own_within), fmt(r.own_between), fmt(r.own_within - r.own_between),
                f"{r.own_p:.4f}" if np.isfinite(r.own_p) else "n/a"] for r in per_model.itertuples()])
    fixed = table[table["vectors"] == "fixed class"]
    if len(fixed):
        doc.paragraph("Fixed-class PG vectors (judged): every test image's PG for one fixed class, one target at a "
                      "time; within, between and within - between per model are means over the fixed targets "
                      "(`diagrams/fixed_class_within_correlation`, `diagrams/fixed_class_between_correlation`), "
                      f"then the number of targets whose label-shuffle permutation test ({rules.statistics.permutations} "
                      f"shuffles) gives p below {rules.statistics.alpha}:")
        doc.table(["model", "within (fixed class)", "between (fixed class)", "within - between",
                   f"targets with p < {rules.statistics.alpha}"],
                  [[model, fmt(g.within.mean()), fmt(g.between.mean()), fmt(g.difference.mean()),
                    f"{int((g.p < rules.statistics.alpha).sum())} of {len(g)}"]
                   for model, g in fixed.groupby("model", sort=False)])
    first = jobs[0]
    if first.has("diagrams/network_pg.png"):
        doc.figure(Figure("network_pg.png", first.file("diagrams/network_pg.png"),
                          f"Table 4.1 as pgsweep draws it ({first.label}): test images of the first classes and "
                          "each one's own-class PG per filter, one box per filter, colour: the PG."))
    result = verdict(table, rules)
    measured = (f"own class (not judged): within - between {spread(own_difference)}, across-model p = "
                f"{own_across:.4f}" + (f"; fixed class: {spread(fixed.groupby('model').difference.mean())}"
                                       if len(fixed) else ""))
    c = claim("3", "PG patterns consistent within a class", measured, result, rules, RULES, jobs)
    verdict_line(doc, c)
    return [c]
