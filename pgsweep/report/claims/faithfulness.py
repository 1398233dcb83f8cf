"""Beyond the thesis: which filter score predicts what knocking out filters does, across the models.

Three questions, each judged by a stated rule (conf/report_rules/default.yaml: faithfulness) on every
score the models' knockouts ordered by (analysis.knockout.scores), against the oracle (each
filter's own single-knockout rise in the class's test loss) and the model's random orders:

    F1  does a score predict knockout better than PG? (Spearman correlation with the oracle)
    F2  does a score reproduce a knockout claim (4b, 4c) that PG does not? (claim 4's own rules)
    F3  does PG's weakness follow saturation (own-class probability)?  F4  ... or the sign?
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from pgsweep import plots
from pgsweep.report.claims import knockout
from pgsweep.report.claims.common import INTERVAL_RULES, Claim, claim, figure, fmt, verdict_line
from pgsweep.report.document import Document
from pgsweep.report.results import Job
from pgsweep.report.rules import Rules
from pgsweep.report.verdicts import (
    INCONCLUSIVE, NOT, PARTLY, REPRODUCED, Verdict, bootstrap_mean, effect_rule, effect_verdict,
)

ORACLE, RANDOM = "oracle", "random"
RESCUED = ("4b", "4c")  # the knockout claims a better score could reproduce where PG does not
# (signed, unsigned) forms of one score: the sign question compares each pair that was knocked out
SIGN_PAIRS = (("grad_x_activation", "grad_x_activation_l2"), ("taylor_signed", "taylor_abs"),
              ("taylor_signed", "taylor"))
RULES = {
    "F1": ("faithfulness.better_margin", "faithfulness.min_spearman"),
    "F2": ("knockout.after", "knockout.fail_margin", "knockout.fail_error", "knockout.weak_margin",
           "knockout.weak_error", "knockout.share"),
    "F3": ("faithfulness.saturation_margin",),
    "F4": ("faithfulness.sign_margin",),
}
_RANK = {REPRODUCED: 3, PARTLY: 2, NOT: 1, INCONCLUSIVE: 0}


# ---------------------------------------------------------------- measures (from the store)

def measure(jobs: list[Job]) -> pd.DataFrame:
    """One row per (model, class, score): the score's Spearman correlation with the oracle
    (knockout/summary.parquet) and the class's own-class probability on its test images before
    any knockout (the geometric mean, exp(-class loss) at step 0 of knockout/curves.parquet)."""
    rows = []
    for job in jobs:
        summary = job.table("knockout/summary.parquet")
        summary = summary[(summary["class"] >= 0) & ~summary["score"].isin([ORACLE, RANDOM])]
        curves = job.curves
        start = curves[curves["step"] == 0].groupby("class")["class_loss"].first()
        for row in summary.to_dict("records"):
            rows.append({"run": job.run_id, "model": job.label, "class": int(row["class"]), "score": row["score"],
                         "spearman_oracle": float(row["spearman_oracle"]),
                         "own_probability": float(np.exp(-start.get(row["class"], np.nan)))})
    return pd.DataFrame(rows, columns=["run", "model", "class", "score", "spearman_oracle", "own_probability"])


def knocked_scores(jobs: list[Job]) -> list[str]:
    """The scores every model's knockout ordered by (oracle and random left out), in the first's order."""
    common = None
    for job in jobs:
        scores = [s for s in dict.fromkeys(job.curves["score"]) if s not in (ORACLE, RANDOM)]
        common = scores if common is None else [s for s in common if s in scores]
    return common or []


def per_model(table: pd.DataFrame, score: str) -> pd.Series:
    """The score's Spearman with the oracle, mean over each model's classes (by run)."""
    rows = table[table["score"] == score]
    return rows.groupby("run", sort=False)["spearman_oracle"].mean()


# ---------------------------------------------------------------- verdicts (pure)

def verdict_better(table: pd.DataFrame, pg: str, rules: Rules) -> tuple[Verdict, str]:
    """F1: (verdict, the best score). The best score (highest mean Spearman over models, PG left
    out) against PG, model by model, by the shared effect rule; its own Spearman's interval must
    also reach faithfulness.min_spearman for 'reproduced'."""
    stats, r = rules.statistics, rules["faithfulness"]
    rule = effect_rule("the best score's Spearman with the oracle minus PG's, mean over the model's classes "
                       "(best: the highest mean over models among the knocked-out scores, chosen on the same models)",
                       r["better_margin"], stats, f"the best score's own Spearman interval low end at least "
                       f"{r['min_spearman']}")
    others = [s for s in dict.fromkeys(table["score"]) if s != pg]
    if pg not in set(table["score"]) or not others:
        return Verdict(INCONCLUSIVE, rule, "no score beside PG was knocked out (analysis.knockout.scores)"), ""
    best = max(others, key=lambda s: per_model(table, s).mean())
    gap = (per_model(table, best) - per_model(table, pg)).dropna()
    interval, own = bootstrap_mean(gap, stats), bootstrap_mean(per_model(table, best), stats)
    holds = own.low >= r["min_spearman"]
    outcome, why = effect_verdict(interval, r["better_margin"], stats, holds,
                                  f"{best}'s own Spearman {own.text()} below {r['min_spearman']}")
    return Verdict(outcome, rule, "; ".join(p for p in (f"{best}: effect {interval.text()}", why) if p)), best


def verdict_rescue(outcomes: dict[str, dict[str, str]], pg: str, rule: str) -> Verdict:
    """F2: outcomes[score][claim] are claim 4's verdicts judged on each score's orders.
    reproduced: a score reproduces a claim PG does not; partly: a score does better than PG on
    one (partly where PG's is not reproduced); not reproduced: no score does better than PG on
    any; inconclusive: PG's own verdicts are inconclusive, or PG reproduces every claim (nothing
    to rescue)."""
    mine = outcomes.get(pg, {})
    if not mine or any(mine.get(c, INCONCLUSIVE) == INCONCLUSIVE for c in RESCUED):
        return Verdict(INCONCLUSIVE, rule, f"PG's verdicts on {', '.join(RESCUED)} are inconclusive")
    if all(mine[c] == REPRODUCED for c in RESCUED):
        return Verdict(INCONCLUSIVE, rule, "PG reproduces every one of them: nothing to rescue")
    better = [(score, c, got[c]) for score, got in outcomes.items() if score != pg for c in RESCUED
              if _RANK[got.get(c, INCONCLUSIVE)] > _RANK[mine[c]]]
    found = "; ".join(f"{score} {c}: {outcome} (PG: {mine[c]})" for score, c, outcome in better)
    if any(outcome == REPRODUCED for *_, outcome in better):
        return Verdict(REPRODUCED, rule, found)
    if better:
        return Verdict(PARTLY, rule, found)
    return Verdict(NOT, rule, f"no score does better than PG ({', '.join(f'{c}: {mine[c]}' for c in RESCUED)})")


def saturation_effect(table: pd.DataFrame, pg: str) -> pd.Series:
    """Per model: minus the Spearman correlation, over its classes, between the own-class
    probability and PG's Spearman with the oracle (positive: PG ranks worse where saturated)."""
    rows = table[table["score"] == pg]
    effects = {}
    for run, g in rows.groupby("run", sort=False):
        g = g.dropna(subset=["own_probability", "spearman_oracle"])
        rho = spearmanr(g["own_probability"], g["spearman_oracle"]).statistic if len(g) > 2 else np.nan
        effects[run] = -float(rho) if np.isfinite(rho) else np.nan
    return pd.Series(effects, dtype=float)


def verdict_saturation(table: pd.DataFrame, pg: str, rules: Rules) -> Verdict:
    """F3: PG's weakness follows saturation when PG ranks worse on the classes the model is
    surer of (shared effect rule), and, where the logit's PG was knocked out too, it ranks
    better than the softmax's on average."""
    stats, margin = rules.statistics, rules["faithfulness"]["saturation_margin"]
    logit = "pg_logit" if pg != "pg_logit" else None
    rule = effect_rule("minus the Spearman correlation, over the model's classes, between the own-class probability "
                       "(before knockout) and PG's Spearman with the oracle", margin, stats,
                       "the logit's PG (no saturation) ranks better than the softmax's, mean over models")
    effect = saturation_effect(table, pg)
    if not len(effect.dropna()):
        return Verdict(INCONCLUSIVE, rule, "PG's per-class Spearman or the own-class probability is missing")
    interval = bootstrap_mean(effect, stats)
    holds, text = True, ""
    if logit and logit in set(table["score"]):
        gain = (per_model(table, logit) - per_model(table, pg)).mean()
        holds, text = bool(gain > 0), f"the logit's PG ranks no better than the softmax's ({gain:+.3f})"
    outcome, why = effect_verdict(interval, margin, stats, holds, text)
    return Verdict(outcome, rule, "; ".join(p for p in (f"effect {interval.text()}", why) if p))


def sign_effect(table: pd.DataFrame) -> tuple[pd.Series, list[tuple[str, str]]]:
    """Per model: the signed form's Spearman minus the unsigned form's, mean over the pairs
    knocked out (SIGN_PAIRS; a score counts in one pair only); and the pairs used."""
    present = set(table["score"])
    pairs, used = [], set()
    for signed, unsigned in SIGN_PAIRS:
        if signed in present and unsigned in present and signed not in used:
            pairs.append((signed, unsigned))
            used.add(signed)
    if not pairs:
        return pd.Series(dtype=float), []
    gaps = [per_model(table, s) - per_model(table, u) for s, u in pairs]
    return pd.concat(gaps, axis=1).mean(axis=1), pairs


def verdict_sign(table: pd.DataFrame, rules: Rules) -> Verdict:
    """F4: throwing the sign away is what costs, when a score's signed form ranks better than
    its unsigned form by the margin (shared effect rule)."""
    stats, margin = rules.statistics, rules["faithfulness"]["sign_margin"]
    rule = effect_rule("a score's signed form's Spearman with the oracle minus its unsigned form's (grad_x_activation "
                       "against grad_x_activation_l2, taylor_signed against taylor_abs), mean over the model's classes "
                       "and the pairs knocked out", margin, stats)
    effect, pairs = sign_effect(table)
    if not pairs:
        return Verdict(INCONCLUSIVE, rule, "no signed score was knocked out beside its unsigned form "
                                           "(e.g. analysis.knockout.scores with grad_x_activation and grad_x_activation_l2)")
    interval = bootstrap_mean(effect, stats)
    outcome, why = effect_verdict(interval, margin, stats)
    used = ", ".join(f"{s} - {u}" for s, u in pairs)
    return Verdict(outcome, rule, "; ".join(p for p in (f"{used}: effect {interval.text()}", why) if p))


# ---------------------------------------------------------------- the section

def _over_models(table: pd.DataFrame, scores: list[str], rules: Rules,
                 measured: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The faithfulness figure's table with intervals over models: per score, the mean over
    models of each model's class means (Spearman; errors after N against random orders)."""
    stats, rows = rules.statistics, []
    for score in [*scores, ORACLE]:
        pairs = measured[score]
        measures = {
            "spearman_oracle": per_model(table, score) if score != ORACLE else pd.Series(1.0, index=pairs["run"].unique()),
            "class_error_strongest_vs_random":
                (pairs.class_error_after_strongest - pairs.class_error_after_random).groupby(pairs["run"], sort=False).mean(),
            "overall_error_weakest_vs_random":
                (pairs.overall_error_after_weakest - pairs.overall_error_after_random).groupby(pairs["run"], sort=False).mean(),
        }
        row = {"score": score, "after": rules["knockout"]["after"]}
        for name, values in measures.items():
            interval = bootstrap_mean(values, stats)
            row[name], row[f"{name}_low"], row[f"{name}_high"] = interval.estimate, interval.low, interval.high
        rows.append(row)
    return pd.DataFrame(rows)


def section(doc: Document, jobs: list[Job], rules: Rules) -> list[Claim]:
    r, pg = rules["knockout"], jobs[0].pg_score
    doc.heading(2, "8. Which score predicts knockout (beyond the thesis)")
    scores = knocked_scores(jobs)
    table = measure(jobs)
    table = table[table["score"].isin(scores)]
    doc.paragraph(
        f"Every score the models' knockouts ordered filters by ({', '.join(scores) or 'none'}) against the oracle, "
        "each filter's own single knockout's rise in the class's test loss (Spearman correlation over the filters, per "
        f"class), and against the model's random orders after {r['after']} knockouts, with claim 4's rules applied "
        f"to each score's orders. {len(jobs)} models.")
    claims = []
    better, best = verdict_better(table, pg, rules)
    claims.append(claim("F1", "a score predicts knockout better than PG", better.reason, better, rules,
                        (*RULES["F1"], *INTERVAL_RULES), jobs))
    outcomes, rows = {}, []
    measured = knockout.measure_scores(jobs, rules, [*scores, ORACLE])
    for score in scores:
        pairs = measured[score]
        outcomes[score] = {key: knockout.verdict(key, pairs, rules).outcome for key in RESCUED}
        rho = bootstrap_mean(per_model(table, score), rules.statistics)
        rows.append([plots.SCORE_STYLE.get(score, (score,))[0], rho.text(),
                     fmt((pairs.class_error_after_strongest - pairs.class_error_after_random).mean()),
                     fmt((pairs.overall_error_after_random - pairs.overall_error_after_weakest).mean()),
                     *[outcomes[score][key] for key in RESCUED]])
    rescue_rule = (f"claim 4's rules for {' and '.join(RESCUED)} applied to each score's orders in place of PG's; "
                   "reproduced when a score reproduces a claim PG does not, partly when a score only does better "
                   "than PG on one, not reproduced when none does better, inconclusive when PG's own verdicts are "
                   "inconclusive or PG reproduces both")
    rescued = verdict_rescue(outcomes, pg, rescue_rule)
    claims.append(claim("F2", f"a score reproduces {' or '.join(RESCUED)} where PG does not", rescued.reason or
                        rescued.outcome, rescued, rules, (*RULES["F2"], "knockout.max_intact_error", *INTERVAL_RULES),
                        jobs))
    saturation = verdict_saturation(table, pg, rules)
    claims.append(claim("F3", "PG's weakness follows saturation (own-class probability)", saturation.reason,
                        saturation, rules, (*RULES["F3"], *INTERVAL_RULES), jobs))
    sign = verdict_sign(table, rules)
    claims.append(claim("F4", "a score's weakness follows the sign thrown away", sign.reason, sign, rules,
                        (*RULES["F4"], *INTERVAL_RULES), jobs))
    doc.table(["score", "Spearman with the oracle, mean over models [interval]",
               f"class error after {r['after']} strongest minus random",
               f"random minus overall error after {r['after']} weakest", *[f"{k} on its orders" for k in RESCUED]],
              rows)
    for c in claims:
        verdict_line(doc, c)
    if scores:
        doc.figure(figure("faithfulness.png", plots.faithfulness(_over_models(table, scores, rules, measured), "models"),
                          "Per score (rows; the oracle is the ceiling): left, the Spearman correlation of its filter "
                          "order with the oracle; middle, the class error after its strongest knockouts minus the "
                          "random orders'; right, the overall error after its weakest minus the random orders'. "
                          "Dot: mean over models of each model's class mean; bar: 95% bootstrap interval over models."))
    return claims
