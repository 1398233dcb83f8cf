"""Claims 2a and 2b (Table 4.2): the weakest filters sit mostly in the last conv layer, and
the five identities' top scores span about two orders of magnitude."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pgsweep.report.claims.common import (
    INTERVAL_RULES, Claim, claim, figure, first_naive, fmt, spread, thesis_five, verdict_line,
)
from pgsweep.report.document import Document
from pgsweep.report.results import Job
from pgsweep.report.rules import Rules
from pgsweep.report.verdicts import INCONCLUSIVE, NOT, PARTLY, REPRODUCED, Verdict, bootstrap_mean, too_few

# Thesis Table 4.2 (quoted): identity -> [(layer, unit, PG) highest x3], [(layer, unit, PG) lowest x3]
THESIS_TABLE_4_2 = {
    "subject15": ([(1, 5, 0.25153), (2, 3, 0.23269), (3, 8, 0.21675)], [(3, 2, 0.03227), (3, 6, 0.03676), (3, 3, 0.09039)]),
    "subject14": ([(3, 5, 0.00202), (3, 7, 0.00167), (3, 10, 0.00158)], [(3, 2, 0.00025), (3, 6, 0.00052), (2, 4, 0.00055)]),
    "subject07": ([(1, 5, 0.02247), (3, 1, 0.02029), (1, 3, 0.01951)], [(3, 6, 0.00728), (3, 2, 0.00951), (3, 9, 0.00977)]),
    "subject10": ([(3, 1, 0.00369), (1, 5, 0.00328), (3, 7, 0.00316)], [(3, 6, 0.00071), (3, 2, 0.00072), (2, 4, 0.00114)]),
    "subject12": ([(1, 5, 0.08089), (1, 2, 0.07403), (1, 4, 0.06849)], [(3, 6, 0.01925), (3, 2, 0.01964), (2, 4, 0.03013)]),
}


def _layer(filter_name: str) -> int:
    return int(str(filter_name).split("-")[0])


def _thesis_ratio() -> float:
    tops = [THESIS_TABLE_4_2[name][0][0][2] for name in THESIS_TABLE_4_2]
    return max(tops) / min(tops)


def measure(jobs: list[Job], rules: Rules) -> pd.DataFrame:
    """One row per model: each layer's share of the k weakest filters of every class and its
    chance share; the five identities' top-score ratio and the all-class ratio."""
    k = rules["layers"]["weakest_count"]
    rows = []
    for job in jobs:
        output = job.pg_score.removeprefix("pg_")
        listed = job.table("rank/strongest_weakest.parquet")
        listed = listed[(listed["output"] == output) & (listed["rank"] <= k)]
        weakest, strongest = listed[listed["kind"] == "weakest"], listed[listed["kind"] == "strongest"]
        scores = job.table("rank/class_scores.parquet")
        units = scores[scores["class"] == scores["class"].iloc[0]]["filter"].map(_layer)
        deepest = int(units.max())
        tops = scores.groupby("class_name")[job.pg_score].max()
        five = tops.reindex(thesis_five(job)).dropna()
        all_ratio = job.metrics.get(f"rank/{job.pg_score}/class_scale_ratio", np.nan)
        row = {"model": job.label, "deepest": deepest, "listed_k": int(weakest["rank"].max()) if len(weakest) else 0,
               "deepest_share": float((weakest["filter"].map(_layer) == deepest).mean()) if len(weakest) else np.nan,
               "deepest_chance": float((units == deepest).mean()),
               "five_ratio": float(five.max() / five.min()) if len(five) == 5 else np.nan,
               "all_class_ratio": all_ratio}
        for layer in sorted(units.unique()):
            row[f"layer_{layer}_share"] = float((weakest["filter"].map(_layer) == layer).mean()) if len(weakest) else np.nan
            row[f"layer_{layer}_strongest"] = (float((strongest["filter"].map(_layer) == layer).mean())
                                               if len(strongest) else np.nan)
            row[f"layer_{layer}_chance"] = float((units == layer).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_layers(table: pd.DataFrame, rules: Rules) -> Verdict:
    stats, majority = rules.statistics, rules["layers"]["majority"]
    chance = float(table["deepest_chance"].mean())
    rule = (f"the last conv layer's share of each class's {rules['layers']['weakest_count']} weakest filters, mean "
            f"over models with a {stats.confidence:.0%} bootstrap interval: reproduced when the interval's low end "
            f"is above {majority} (\"mostly\"); partly when it is above chance (the layer's share of the filters, "
            f"{fmt(chance, 2)}); not reproduced otherwise")
    if (table["listed_k"] < rules["layers"]["weakest_count"]).any():
        return Verdict(INCONCLUSIVE, rule, "the rank stage listed fewer weakest filters per class than "
                                           "layers.weakest_count (analysis.rank.k)")
    interval = bootstrap_mean(table["deepest_share"], stats)
    reason = too_few(interval, stats)
    if reason:
        return Verdict(INCONCLUSIVE, rule, reason)
    where = f"interval {interval.text(2)}"
    if interval.low > majority:
        return Verdict(REPRODUCED, rule, where)
    return Verdict(PARTLY if interval.low > chance else NOT, rule, where)


def verdict_scales(table: pd.DataFrame, rules: Rules) -> Verdict:
    stats, r = rules.statistics, rules["scales"]
    rule = (f"log10 of the ratio of the largest to the smallest top score among Table 4.2's five identities, mean "
            f"over models with a {stats.confidence:.0%} bootstrap interval: reproduced when the interval's low end "
            f"is at least log10({r['ratio']}); partly when at least log10({r['partly_ratio']}); not reproduced "
            "otherwise")
    if table["five_ratio"].isna().all():
        return Verdict(INCONCLUSIVE, rule, "the data does not have the thesis's five identities")
    interval = bootstrap_mean(np.log10(table["five_ratio"]), stats)
    if interval.models < stats.min_models:
        return Verdict(INCONCLUSIVE, rule, too_few(interval, stats))
    where = (f"geometric mean ratio {10 ** interval.estimate:.0f}x, interval {10 ** interval.low:.0f}x to "
             f"{10 ** interval.high:.0f}x")
    if interval.low >= np.log10(r["ratio"]):
        return Verdict(REPRODUCED, rule, where)
    return Verdict(PARTLY if interval.low >= np.log10(r["partly_ratio"]) else NOT, rule, where)


def section(doc: Document, jobs: list[Job], rules: Rules) -> list[Claim]:
    from pgsweep import plots

    doc.heading(2, "2. Strongest and weakest filters (Table 4.2)")
    doc.quote("In Table 4.2, we show the top 3 highest and lowest scores for five identities. (thesis 4.2.2)")
    first = first_naive(jobs)
    five = thesis_five(first)
    listed = first.table("rank/strongest_weakest.parquet")
    listed = listed[listed["output"] == first.pg_score.removeprefix("pg_")]
    shown = int(min(3, listed["rank"].max()))
    doc.paragraph(f"Class-averaged PG ({first.pg_score}), the L2 norm over each map, on the test images of "
                  f"{first.label}, beside the thesis's table. Filters are `layer-unit`, from 1; which physical "
                  "filter a number is differs between trainings, so only the layers and the scales compare.")
    rows = []
    for name in five:
        mine = listed[listed["class_name"] == name]
        high = mine[mine["kind"] == "strongest"].sort_values("rank")
        low = mine[mine["kind"] == "weakest"].sort_values("rank")
        theirs = THESIS_TABLE_4_2.get(name, ([], []))
        for i in range(min(shown, len(high), len(low))):
            h, w = high.iloc[i], low.iloc[i]
            th = theirs[0][i] if theirs[0] else None
            tw = theirs[1][i] if theirs[1] else None
            rows.append([name if i == 0 else "", h["filter"], f"{h['score']:.5f}", w["filter"], f"{w['score']:.5f}",
                         f"{th[0]}-{th[1]}" if th else "", f"{th[2]:.5f}" if th else "",
                         f"{tw[0]}-{tw[1]}" if tw else "", f"{tw[2]:.5f}" if tw else ""])
    doc.table(["ID", "pgsweep highest", "PG", "pgsweep lowest", "PG", "thesis highest", "PG", "thesis lowest", "PG"],
              rows)

    table = measure(jobs, rules)
    layers = sorted(int(c.split("_")[1]) for c in table.columns if c.endswith("_chance") and c.startswith("layer_"))
    k = rules["layers"]["weakest_count"]
    thesis_weak = pd.Series([e[0] for n in THESIS_TABLE_4_2 for e in THESIS_TABLE_4_2[n][1]])
    thesis_strong = pd.Series([e[0] for n in THESIS_TABLE_4_2 for e in THESIS_TABLE_4_2[n][0]])
    doc.paragraph(f"Where the {k} strongest and {k} weakest filters of every class fall (all classes of each model; "
                  f"mean and range over models) against chance (the layer's share of the filters) and the thesis's "
                  f"five identities ({len(thesis_weak)} filters each way):")
    doc.table(["layer", "chance", "thesis strongest", "thesis weakest", "pgsweep strongest", "pgsweep weakest"],
              [[f"layer {layer}", fmt(table[f"layer_{layer}_chance"].mean(), 2),
                fmt(float((thesis_strong == layer).mean()), 2), fmt(float((thesis_weak == layer).mean()), 2),
                spread(table[f"layer_{layer}_strongest"], 2), spread(table[f"layer_{layer}_share"], 2)]
               for layer in layers])
    shares = pd.DataFrame([{"kind": kind, "layer": layer, "share": table[f"layer_{layer}_{column}"].mean(),
                            "chance": table[f"layer_{layer}_chance"].mean()}
                           for layer in layers for kind, column in (("strongest", "strongest"), ("weakest", "share"))])
    doc.figure(figure("layer_shares.png", plots.layer_shares(shares),
                      f"x: conv layer; y: share of each class's {k} strongest and {k} weakest filters in that layer "
                      f"(mean over {len(table)} models); black lines: chance (the layer's share of the filters)."))
    deepest = int(table["deepest"].iloc[0])
    result = verdict_layers(table, rules)
    claims = [claim("2a", f"the weakest filters are mostly in layer {deepest} "
                          f"({int((thesis_weak == deepest).sum())} of {len(thesis_weak)})",
                    f"layer {deepest} holds {fmt(table.deepest_share.mean(), 2)} of the weakest (chance "
                    f"{fmt(table.deepest_chance.mean(), 2)})", result, rules, ("layers", *INTERVAL_RULES), jobs)]
    verdict_line(doc, claims[0])

    thesis_ratio = _thesis_ratio()
    doc.paragraph(f"Score scales: the thesis's five identities' top scores span {thesis_ratio:.0f}x (its Table 4.2). "
                  f"pgsweep, the same statistic per model (judged): {spread(table.five_ratio, 0)}. Beside it, not "
                  f"judged, the ratio of the largest to the smallest class-mean score over all classes "
                  f"(`rank/{first.pg_score}/class_scale_ratio`): {spread(table.all_class_ratio, 0)}.")
    result = verdict_scales(table, rules)
    claims.append(claim("2b", f"the five identities' top scores span {thesis_ratio:.0f}x",
                        f"geometric mean {10 ** np.nanmean(np.log10(table.five_ratio)):.0f}x, median "
                        f"{np.nanmedian(table.five_ratio):.0f}x over {len(table)} models (all classes, not judged: "
                        f"median {np.nanmedian(table.all_class_ratio):.0f}x)", result, rules,
                        ("scales", "statistics.confidence", "statistics.bootstrap", "statistics.seed", "statistics.min_models"), jobs))
    verdict_line(doc, claims[1])
    return claims
