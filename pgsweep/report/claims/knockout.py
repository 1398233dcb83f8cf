"""Claims 4a-4f (Figures 4.1, 4.2; sections 4.2.2-4.2.5): knocking out filters in PG's order.

Every claim is judged per (model, identity) pair on PG's order against the same model's random
orders for that identity (however many the knockout table holds), averaged over each model's
identities, with a bootstrap interval over the models. Models whose intact test error is too
high cannot test a knockout claim: inconclusive."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pgsweep import plots
from pgsweep.report.claims.common import (
    INTERVAL_RULES, Claim, claim, figure, fmt, share, spread, verdict_line,
)
from pgsweep.report.document import Document
from pgsweep.report.results import Job
from pgsweep.report.rules import Rules
from pgsweep.report.verdicts import (
    INCONCLUSIVE, NOT, PARTLY, REPRODUCED, Verdict, bootstrap_mean, effect_rule, effect_verdict, too_few,
)

# the rules each claim reads (printed beside its verdict)
RULES = {
    "4a": ("knockout.area_margin", "knockout.share"),
    "4b": ("knockout.after", "knockout.fail_margin", "knockout.fail_error", "knockout.share"),
    "4c": ("knockout.after", "knockout.weak_margin", "knockout.weak_error", "knockout.share"),
    "4d": ("knockout.after_more", "knockout.weak_margin", "knockout.weak_more_error", "knockout.many_share"),
    "4e": ("knockout.after", "knockout.overall_margin"),
    "4f": ("knockout.few", "knockout.little"),
}
RANDOM = "random"


def area(steps: np.ndarray, errors: np.ndarray) -> float:
    """The trapezoid area under an error curve over steps 0..N, divided by N (a mean error)."""
    order = np.argsort(steps)
    steps, errors = np.asarray(steps, float)[order], np.asarray(errors, float)[order]
    return float(np.trapezoid(errors, steps) / (steps[-1] - steps[0])) if len(steps) > 1 else np.nan


def _curve(rows: pd.DataFrame, column: str, step: int) -> float:
    at = rows[rows["step"] == step]
    return float(at[column].mean()) if len(at) else np.nan


def _at(steps: np.ndarray, values: np.ndarray, step: int) -> float:
    """One ordering's value at `step` (_curve for a single curve, without pandas)."""
    hit = values[steps == step]
    return float(hit[0]) if len(hit) == 1 else (float(np.nanmean(hit)) if len(hit) else np.nan)


def measure(jobs: list[Job], rules: Rules, score: str | None = None) -> pd.DataFrame:
    """One row per (model, identity): PG's numbers (or another knocked-out `score`'s)
    strongest- and weakest-first and the mean of the model's random orders for that identity
    at the same steps."""
    return measure_scores(jobs, rules, [score])[score]


def measure_scores(jobs: list[Job], rules: Rules, scores: list[str | None]) -> dict[str | None, pd.DataFrame]:
    """measure() for each of `scores` (None: the job's PG), reading each job's curves once and
    its random orders' numbers once for all the scores."""
    r = rules["knockout"]
    after, more, few = r["after"], r["after_more"], r["few"]
    rows: dict[str | None, list[dict]] = {score: [] for score in scores}
    for job in jobs:
        curves = job.curves
        # one pass over the table (it holds every score's orderings): a lookup per ordering after it
        orderings = dict(tuple(curves.groupby(["class", "score", "direction"], sort=False)))
        for c, by_class in curves.groupby("class"):
            nothing = by_class.iloc[:0]
            randoms = orderings.get((c, RANDOM, RANDOM), nothing)
            random_areas = [area(g["step"].to_numpy(), g["class_error"].to_numpy()) for _, g in randoms.groupby("seed")]
            common = {
                "run": job.run_id, "model": job.label, "class": int(c), "class_name": by_class["class_name"].iloc[0],
                "intact_error": job.metrics.get("final_test_error", np.nan),
                "random_orders": int(randoms["seed"].nunique()), "steps": int(by_class["step"].max()),
                "area_random": float(np.mean(random_areas)) if random_areas else np.nan,
                "class_error_after_random": _curve(randoms, "class_error", after),
                "overall_error_after_random": _curve(randoms, "overall_error", after),
                "overall_error_more_random": _curve(randoms, "overall_error", more),
            }
            for score in scores:
                pg = score or job.pg_score
                strongest = orderings.get((c, pg, "strongest"), nothing)
                weakest = orderings.get((c, pg, "weakest"), nothing)
                s_steps, w_steps = strongest["step"].to_numpy(), weakest["step"].to_numpy()
                s_class, s_overall = strongest["class_error"].to_numpy(), strongest["overall_error"].to_numpy()
                w_overall = weakest["overall_error"].to_numpy()
                after_weak = weakest["emptied_layers"].to_numpy()[w_steps == after]
                rows[score].append({
                    **common,
                    "area_strongest": area(s_steps, s_class),
                    "area_weakest": area(w_steps, weakest["class_error"].to_numpy()),
                    "class_error_0": _at(s_steps, s_class, 0),
                    "class_error_few_strongest": _at(s_steps, s_class, few),
                    "class_error_after_strongest": _at(s_steps, s_class, after),
                    "overall_error_after_strongest": _at(s_steps, s_overall, after),
                    "overall_error_after_weakest": _at(w_steps, w_overall, after),
                    "overall_error_more_weakest": _at(w_steps, w_overall, more),
                    "weakest_empty_layer_1": bool(len(after_weak)) and "1" in str(after_weak[0]).split(","),
                })
    columns = ["run", "model", "class", "class_name", "intact_error", "random_orders", "steps", "area_strongest",
               "area_weakest", "area_random", "class_error_0", "class_error_few_strongest",
               "class_error_after_strongest", "class_error_after_random", "overall_error_after_strongest",
               "overall_error_after_random", "overall_error_after_weakest", "overall_error_more_weakest",
               "overall_error_more_random", "weakest_empty_layer_1"]
    return {score: pd.DataFrame(table, columns=columns) for score, table in rows.items()}


# each claim: (key, the thesis, the effect in words, per-pair effect, margin key, the thesis's number)
def _effects(table: pd.DataFrame, rules: Rules) -> dict[str, tuple]:
    r = rules["knockout"]
    a, m, f = r["after"], r["after_more"], r["few"]
    t = table
    return {
        "4a": ("strongest-first breaks the class much sooner than weakest-first",
               "area under the class-error curve strongest-first minus weakest-first (random orders: 0 in "
               "expectation)", t.area_strongest - t.area_weakest, "area_margin",
               ((t.area_strongest > t.area_random) & (t.area_weakest < t.area_random)).mean() >= r["share"],
               f"strongest-first above and weakest-first below the random orders' area for at least {r['share']} "
               "of the pairs"),
        "4b": (f"after the {a} strongest the class almost completely fails",
               f"class error after {a} strongest-first minus the random orders'",
               t.class_error_after_strongest - t.class_error_after_random, "fail_margin",
               (t.class_error_after_strongest >= r["fail_error"]).mean() >= r["share"],
               f"class error at least {r['fail_error']} for at least {r['share']} of the pairs"),
        "4c": (f"after the {a} weakest, overall error stays under {r['weak_error']:.0%}",
               f"the random orders' overall error after {a} knockouts minus weakest-first's",
               t.overall_error_after_random - t.overall_error_after_weakest, "weak_margin",
               (t.overall_error_after_weakest < r["weak_error"]).mean() >= r["share"],
               f"overall error below {r['weak_error']} for at least {r['share']} of the pairs"),
        "4d": (f"after {m} weakest, overall error below {r['weak_more_error']:.0%} for many identities",
               f"the random orders' overall error after {m} knockouts minus weakest-first's",
               t.overall_error_more_random - t.overall_error_more_weakest, "weak_margin",
               (t.overall_error_more_weakest < r["weak_more_error"]).mean() >= r["many_share"],
               f"overall error below {r['weak_more_error']} for at least {r['many_share']} of the pairs"),
        "4e": ("the filters important for a class are important overall (4.2.3.1)",
               f"overall error after {a} strongest-first (the class's order) minus the random orders'",
               t.overall_error_after_strongest - t.overall_error_after_random, "overall_margin", True, ""),
    }


def gate(table: pd.DataFrame, rules: Rules) -> str:
    """Why these models cannot test a knockout claim ('' when they can)."""
    limit = rules["knockout"]["max_intact_error"]
    if not len(table):
        return "no knockout curves"
    if (table["random_orders"] == 0).any():
        return "a model has no random orders to compare with (analysis.knockout.random_orderings)"
    steps = rules["knockout"]["after_more"]
    if (table["steps"] < steps).any():
        return f"the curves stop before step {steps}"
    intact = table.drop_duplicates("run")["intact_error"].mean()
    if intact > limit:
        return f"the intact models' mean test error {intact:.3f} is above knockout.max_intact_error={limit}"
    return ""


def verdict(key: str, table: pd.DataFrame, rules: Rules) -> Verdict:
    """4a-4e: PG's order against random by the claim's margin (and the thesis's number)."""
    stats = rules.statistics
    _, effect, per_pair, margin_key, holds, holds_text = _effects(table, rules)[key] if len(table) else (
        "", key, pd.Series(dtype=float), "area_margin", False, "")
    margin = rules["knockout"][margin_key]
    rule = effect_rule(effect + ", mean over the model's identities", margin, stats, holds_text)
    reason = gate(table, rules)
    if reason:
        return Verdict(INCONCLUSIVE, rule, reason)
    interval = bootstrap_mean(per_pair.groupby(table["run"], sort=False).mean(), stats)
    outcome, why = effect_verdict(interval, margin, stats, bool(holds), f"not {holds_text}")
    return Verdict(outcome, rule, "; ".join(p for p in (f"effect {interval.text()}", why) if p))


def verdict_robust(table: pd.DataFrame, rules: Rules) -> Verdict:
    """4f: removing one or two strong filters changes the class error little."""
    stats, r = rules.statistics, rules["knockout"]
    rule = (f"rise in class error after the {r['few']} strongest-first knockouts, mean over each model's identities "
            f"and over models with a {stats.confidence:.0%} bootstrap interval: reproduced when the interval's high "
            f"end is at most {r['little']}; partly when it is at most {2 * r['little']:.2f} (twice that); not "
            "reproduced otherwise")
    reason = gate(table, rules)
    if reason:
        return Verdict(INCONCLUSIVE, rule, reason)
    rise = table.class_error_few_strongest - table.class_error_0
    interval = bootstrap_mean(rise.groupby(table["run"], sort=False).mean(), stats)
    reason = too_few(interval, stats)
    if reason:
        return Verdict(INCONCLUSIVE, rule, reason)
    where = f"rise {interval.text()}"
    if interval.high <= r["little"]:
        return Verdict(REPRODUCED, rule, where)
    return Verdict(PARTLY if interval.high <= 2 * r["little"] else NOT, rule, where)


def section(doc: Document, jobs: list[Job], rules: Rules) -> list[Claim]:
    r = rules["knockout"]
    doc.heading(2, "4. Knockout (Figures 4.1, 4.2; sections 4.2.2-4.2.5)")
    doc.quote("Figure 4.1 shows that the ability of the network is affected much sooner when we remove "
              "highest-scoring filters first, compared to lowest-scoring filters. (4.2.2)\n"
              "The same filters which are important for class performance are also important for overall "
              "performance in the network (Figure 4.2). (4.2.3.1)\n"
              "Even for high-scoring filters, removing one or two does not seem to have a large impact on "
              "performance. (4.2.4)\n"
              "The network almost completely fails after removing the top 10 strong features for any identity. "
              "In contrast, after removing 10 weak features, the network still achieves less than 25% error. "
              "Even after removing 15 weak features, overall error for many of the weak feature sets is below "
              "50%. (4.2.5)")
    table = measure(jobs, rules)
    orders = sorted(table["random_orders"].unique())
    doc.paragraph(
        f"Each model's filters are knocked out one at a time (the map after the activation is zeroed) in the order "
        f"of the class-averaged PG ({jobs[0].pg_score}), strongest first and weakest first, and in the random orders "
        f"of its knockout table ({'/'.join(map(str, orders))} per identity), for each identity: {len(table)} "
        f"(model, identity) pairs. Class error is over the identity's test images, overall error over all test "
        f"images. Each claim's effect is PG's order against the mean of the same model's random orders for the same "
        f"identity; the area is the trapezoid area under the curve over steps 0 to "
        f"{'/'.join(map(str, sorted(table['steps'].unique())))}, divided by the step count.")
    claims, rows = [], []
    effects = _effects(table, rules)
    for key, (thesis, effect, per_pair, margin_key, holds, holds_text) in effects.items():
        result = verdict(key, table, rules)
        interval = bootstrap_mean(per_pair.groupby(table["run"], sort=False).mean(), rules.statistics)
        c = claim(key, thesis, f"effect {interval.text()}", result, rules,
                  (*RULES[key], "knockout.max_intact_error", *INTERVAL_RULES), jobs)
        claims.append(c)
        rows.append([key, effect, interval.text(), r[margin_key], holds_text or "(none)",
                     "yes" if holds else "no" if holds_text else "", c.outcome])
    result = verdict_robust(table, rules)
    rise = (table.class_error_few_strongest - table.class_error_0).groupby(table["run"], sort=False).mean()
    interval = bootstrap_mean(rise, rules.statistics)
    claims.append(claim("4f", f"removing {r['few']} strong filters changes little (4.2.4)",
                        f"class error rise {interval.text()}", result, rules,
                        (*RULES["4f"], "knockout.max_intact_error", *INTERVAL_RULES), jobs))
    rows.append(["4f", f"class error rise after {r['few']} strongest", interval.text(), r["little"],
                 "(the rise itself)", "", claims[-1].outcome])
    doc.table(["claim", "effect per pair (positive: the claim's direction)", "mean over models [interval]", "margin",
               "the thesis's number", "holds", "verdict"], rows)
    for c in claims:
        verdict_line(doc, c)

    per_model = table.groupby("model", sort=False)
    doc.paragraph("Per model, means over its identities (PG / the random orders' mean):")
    doc.table(["model", "intact test error", "area strongest / weakest / random",
               f"class error after {r['after']} strongest / random",
               f"overall error after {r['after']} weakest / random",
               f"overall error after {r['after_more']} weakest / random", f"{r['after']} weakest empty layer 1"],
              [[model, fmt(g.intact_error.iloc[0]),
                f"{fmt(g.area_strongest.mean())} / {fmt(g.area_weakest.mean())} / {fmt(g.area_random.mean())}",
                f"{fmt(g.class_error_after_strongest.mean())} / {fmt(g.class_error_after_random.mean())}",
                f"{fmt(g.overall_error_after_weakest.mean())} / {fmt(g.overall_error_after_random.mean())}",
                f"{fmt(g.overall_error_more_weakest.mean())} / {fmt(g.overall_error_more_random.mean())}",
                share(g.weakest_empty_layer_1)] for model, g in per_model])
    emptied = table["weakest_empty_layer_1"]
    layer_one = jobs[0].table("rank/class_scores.parquet")
    layer_one = layer_one[layer_one["class"] == layer_one["class"].iloc[0]]["filter"].str.startswith("1-").sum()
    doc.paragraph(f"What decides the weak-side claims: whether the {r['after']} weakest filters include every filter "
                  f"of layer 1 (all {layer_one} of them). Overall error after the {r['after']} weakest when they do: "
                  f"{spread(table.loc[emptied, 'overall_error_after_weakest'])}; when they do not: "
                  f"{spread(table.loc[~emptied, 'overall_error_after_weakest'])}.")

    curves = pd.concat([j.curves.assign(run=j.run_id) for j in jobs], ignore_index=True)
    classes = shown_classes(jobs[0])
    for column, name, what in (
            ("class_error", "figure_4_1.png", "class error (share of the identity's test images misclassified)"),
            ("class_error_all", "figure_4_1_all_images.png", "class error on all of the identity's images"),
            ("overall_error", "figure_4_2.png", "overall error (share of all test images misclassified)")):
        if column not in curves or curves[column].isna().all():
            continue
        doc.figure(figure(name, plots.thesis_knockout(curves, jobs[0].pg_score, column, classes),
                          f"x: filters knocked out; y: {what}. One panel per identity (the thesis's five); solid: "
                          f"PG strongest first, dashed: weakest first, mean over {len(jobs)} models; gray: the random "
                          "orders (mean line, middle half band)."))
    _baselines(doc, jobs)
    return claims


def shown_classes(job: Job) -> list[int]:
    """The classes Figures 4.1-4.2 show: the thesis's five identities where the knockout ran on
    all of them (analysis.knockout.classes), else the first five it ran on."""
    knocked = sorted(int(c) for c in job.curves["class"].unique())
    names = dict(zip(job.curves["class"].astype(int), job.curves["class_name"]))
    return plots.thesis_classes([names.get(c, "") for c in range(max(knocked) + 1)], knocked)


def _baselines(doc: Document, jobs: list[Job]) -> None:
    """PG against the other scores (logged knockout metrics; not judged)."""
    scores = ["pg_softmax", "pg_logit", "loss_gradient", "activation", "taylor", "oracle"]
    rows = []
    for score in scores:
        rho = [j.metrics.get(f"knockout/{score}/spearman_oracle/mean", np.nan) for j in jobs]
        auc = [j.metrics.get(f"knockout/{score}/auc_strongest/mean", np.nan) for j in jobs]
        between = [j.metrics.get(f"knockout/{score}/area_between/mean", np.nan) for j in jobs]
        rows.append([plots.SCORE_STYLE.get(score, (score,))[0], spread(rho), spread(auc), spread(between)])
    doc.paragraph("PG against the other scores (not judged; each model's means over its classes, from the logged "
                  "`knockout/SCORE/...` metrics): Spearman correlation of the score's filter ranking with the "
                  "oracle (each filter's own knockout's rise in the class's test loss), the area under the "
                  "strongest-first class-error curve, and the area between strongest- and weakest-first.")
    doc.table(["score", "Spearman with the oracle", "area, strongest first", "area between"], rows)
