"""The thesis's claims, one section each: its statement, pgsweep's numbers per model with
mean and range, a verdict and the rule that decided it. Every number is read from the
jobs' logged tables and metrics (pgsweep.report.results); the thesis's own numbers are
quoted from it (THESIS_TABLE_4_2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pgsweep import plots
from pgsweep.report.document import Document, Figure, png
from pgsweep.report.results import Job

THESIS_TEST_ERROR = 2 / 41  # "an error rate of 4.88% on the data set": 2 of 41 test images (or 8 of 164)
# Thesis Table 4.2 (quoted): identity -> [(layer, unit, PG) highest x3], [(layer, unit, PG) lowest x3]
THESIS_TABLE_4_2 = {
    "subject15": ([(1, 5, 0.25153), (2, 3, 0.23269), (3, 8, 0.21675)], [(3, 2, 0.03227), (3, 6, 0.03676), (3, 3, 0.09039)]),
    "subject14": ([(3, 5, 0.00202), (3, 7, 0.00167), (3, 10, 0.00158)], [(3, 2, 0.00025), (3, 6, 0.00052), (2, 4, 0.00055)]),
    "subject07": ([(1, 5, 0.02247), (3, 1, 0.02029), (1, 3, 0.01951)], [(3, 6, 0.00728), (3, 2, 0.00951), (3, 9, 0.00977)]),
    "subject10": ([(3, 1, 0.00369), (1, 5, 0.00328), (3, 7, 0.00316)], [(3, 6, 0.00071), (3, 2, 0.00072), (2, 4, 0.00114)]),
    "subject12": ([(1, 5, 0.08089), (1, 2, 0.07403), (1, 4, 0.06849)], [(3, 6, 0.01925), (3, 2, 0.01964), (2, 4, 0.03013)]),
}
REPRODUCED, PARTLY, NOT = "reproduced", "partly", "not reproduced"


@dataclass(frozen=True)
class Claim:
    """One row of the summary: a claim, what pgsweep measured, the verdict and its rule."""

    key: str
    thesis: str
    measured: str
    verdict: str
    rule: str


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def spread(values, digits: int = 3) -> str:
    """`mean (range min-max, n)` of some numbers."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(values):
        return "n/a"
    return f"{values.mean():.{digits}f} (range {values.min():.{digits}f} to {values.max():.{digits}f}, n={len(values)})"


def share(flags) -> str:
    flags = np.asarray(list(flags), dtype=bool)
    return f"{flags.mean():.2f} ({int(flags.sum())} of {len(flags)})" if len(flags) else "n/a"


def verdict_line(doc: Document, claim: Claim) -> None:
    doc.paragraph(f"**Verdict ({claim.key}): {claim.verdict}.** Rule: {claim.rule}")


def figure(name: str, drawn, caption: str) -> Figure:
    return Figure(name, png(drawn), caption)


def thesis_five(jobs: list[Job]) -> list[str]:
    names = list(dict.fromkeys(jobs[0].table("rank/class_scores.parquet")["class_name"]))
    return [names[i] for i in plots.thesis_classes(names)]


# ---------------------------------------------------------------- 1. the error rate

def error_rate(doc: Document, jobs: list[Job]) -> list[Claim]:
    doc.heading(2, "1. Error rate")
    doc.quote("Training was done for 250 epochs, after which the network achieved an error rate of 4.88% on "
              "the data set. (thesis 4.1)")
    doc.paragraph("4.88% is 2 of 41 test images, or 8 of 164 images of the whole set. Both readings per model "
                  "(`final_test_*` and `final_all_*` metrics of each job), for both readings of the split: "
                  "*grouped* keeps the 9 byte-identical pairs of the Yale set on one side, *naive* splits "
                  "without looking, as the thesis did. The best epoch is the one with the lowest test error "
                  "on the per-epoch curve (`test_error`).")
    rows = []
    for job in jobs:
        m, history = job.metrics, job.test_error_history
        best = history.loc[history["test_error"].idxmin()] if len(history) else None
        test_images = int(m.get("final_test_images", 0))
        rows.append([job.label, job.epochs,
                     f"{int(m['final_test_misclassified'])}/{test_images}", fmt(m["final_test_error"]),
                     f"{int(m['final_all_misclassified'])}/{int(m['final_all_images'])}", fmt(m["final_all_error"]),
                     fmt(m["final_train_error"]),
                     "n/a" if best is None else f"{fmt(best.test_error)} ({round(best.test_error * test_images)}"
                                                f"/{test_images}) at epoch {int(best.epoch)}"])
    for name, members in (("grouped", [j for j in jobs if j.grouped]), ("naive", [j for j in jobs if not j.grouped]),
                          ("all models", jobs)):
        if members:
            rows.append([f"**mean, {name}**", "", "", spread([j.metrics["final_test_error"] for j in members]), "",
                         spread([j.metrics["final_all_error"] for j in members]),
                         spread([j.metrics["final_train_error"] for j in members]), ""])
    doc.table(["model", "epochs", "test wrong", "test error", "whole set wrong", "whole-set error", "train error",
               "best epoch: test error"], rows)
    distance = {job.label: abs(job.metrics["final_test_error"] - THESIS_TEST_ERROR) for job in jobs}
    closest = min(distance.values())
    names = [label for label, d in distance.items() if d == closest]
    reached = []
    for job in jobs:
        history = job.test_error_history
        hits = history[history["test_error"] <= THESIS_TEST_ERROR + 1e-9]
        if len(hits):
            reached.append(f"{job.label} (first at epoch {int(hits['epoch'].iloc[0])})")
    nearest = next(j for j in jobs if j.label == names[0])
    doc.paragraph(f"The model closest to 2/41 after its last epoch: {', '.join(names)} "
                  f"({int(nearest.metrics['final_test_misclassified'])}/{int(nearest.metrics['final_test_images'])}"
                  f" wrong). Models whose test error reached 2/41 or less at some "
                  f"epoch: {', '.join(reached) if reached else 'none'}.")
    history = pd.concat([job.test_error_history.assign(split=job.split_name, seed=job.seed) for job in jobs])
    if len(history):
        doc.figure(figure("error_curves.png", plots.error_curves(history, "split", "seed", THESIS_TEST_ERROR,
                                                                 "thesis: 2/41 = 4.88%"),
                          "Test error after each epoch, per model; dotted: the thesis's 2/41."))
    doc.paragraph("Histogram equalization of each image is a data option, `data.equalize=true`, off in the "
                  "thesis setup (the thesis does not mention it): "
                  "`pgsweep -m +sweep=thesis data.root=PATH data.equalize=true` runs the same report with it.")
    tests = np.array([j.metrics["final_test_error"] for j in jobs])
    whole = np.array([j.metrics["final_all_error"] for j in jobs])
    limit = THESIS_TEST_ERROR + 1 / 41
    if tests.mean() <= limit:
        verdict = REPRODUCED
    elif whole.mean() <= limit or (tests <= THESIS_TEST_ERROR + 1e-9).any():
        verdict = PARTLY
    else:
        verdict = NOT
    claim = Claim("1", "4.88% error (2/41 test, or 8/164 whole set)",
                  f"test error {fmt(tests.mean())}, whole set {fmt(whole.mean())} (means of {len(jobs)} models; "
                  f"best model {fmt(tests.min())})", verdict,
                  f"reproduced when the mean test error over the models is within one test image of 4.88% (at "
                  f"most {fmt(limit)}); partly when only the whole-set reading is (its training images are "
                  f"nearly all right, so it is the easy reading), or when at least one model's test error is "
                  f"4.88% or less; not otherwise")
    verdict_line(doc, claim)
    return [claim]


# ---------------------------------------------------------------- 2. Table 4.2

def _layer_number(filter_name: str) -> int:
    return int(str(filter_name).split("-")[0])


def table_4_2(doc: Document, jobs: list[Job]) -> list[Claim]:
    doc.heading(2, "2. Strongest and weakest filters (Table 4.2)")
    doc.quote("In Table 4.2, we show the top 3 highest and lowest scores for five identities. (thesis 4.2.2)")
    five = thesis_five(jobs)
    first = next((j for j in jobs if not j.grouped), jobs[0])
    top = first.table("rank/strongest_weakest.parquet")
    top = top[top["output"] == first.pg_score.removeprefix("pg_")]
    doc.paragraph(f"Class-averaged PG of the softmax, L2 norm over each map, on the test images of {first.label} "
                  "(a naive split, as the thesis's), beside the thesis's own table. Filters are named "
                  "`layer-unit`, both from 1, as in the thesis; which physical filter a number is differs "
                  "between any two trainings, so only the layers and the scales compare.")
    rows = []
    for name in five:
        mine = top[top["class_name"] == name]
        high = mine[mine["kind"] == "strongest"].sort_values("rank")
        low = mine[mine["kind"] == "weakest"].sort_values("rank")
        theirs = THESIS_TABLE_4_2.get(name, ([], []))
        for i in range(3):
            h, w = high.iloc[i], low.iloc[i]
            th = theirs[0][i] if theirs[0] else None
            tw = theirs[1][i] if theirs[1] else None
            rows.append([name if i == 0 else "", h["filter"], f"{h['score']:.5f}", w["filter"], f"{w['score']:.5f}",
                         f"{th[0]}-{th[1]}" if th else "", f"{th[2]:.5f}" if th else "",
                         f"{tw[0]}-{tw[1]}" if tw else "", f"{tw[2]:.5f}" if tw else ""])
    doc.table(["ID", "pgsweep highest", "PG", "pgsweep lowest", "PG", "thesis highest", "PG", "thesis lowest", "PG"],
              rows)

    # which layers the top and bottom 3 fall in, over every model and every class
    sizes = None
    per_model = []
    for job in jobs:
        table = job.table("rank/strongest_weakest.parquet")
        table = table[table["output"] == job.pg_score.removeprefix("pg_")]
        scores = job.table("rank/class_scores.parquet")
        units = scores[scores["class"] == scores["class"].iloc[0]]
        sizes = units["filter"].map(_layer_number).value_counts().sort_index()
        layers = table["filter"].map(_layer_number)
        per_model.append({kind: layers[table["kind"] == kind].value_counts(normalize=True).reindex(sizes.index,
                                                                                                    fill_value=0.0)
                          for kind in ("strongest", "weakest")})
    chance = sizes / sizes.sum()
    thesis_layers = {kind: pd.Series([entry[0] for name in THESIS_TABLE_4_2 for entry in THESIS_TABLE_4_2[name][i]])
                     .value_counts(normalize=True).reindex(sizes.index, fill_value=0.0)
                     for i, kind in enumerate(("strongest", "weakest"))}
    rows, shares = [], []
    for layer in sizes.index:
        strongest = [m["strongest"][layer] for m in per_model]
        weakest = [m["weakest"][layer] for m in per_model]
        rows.append([f"layer {layer} ({sizes[layer]} filters)", fmt(chance[layer], 2),
                     fmt(thesis_layers["strongest"][layer], 2), fmt(thesis_layers["weakest"][layer], 2),
                     spread(strongest, 2), spread(weakest, 2)])
        shares += [{"kind": "strongest", "layer": layer, "share": float(np.mean(strongest)), "chance": chance[layer]},
                   {"kind": "weakest", "layer": layer, "share": float(np.mean(weakest)), "chance": chance[layer]}]
    doc.paragraph("Where the 3 strongest and 3 weakest filters of every class fall, as a share of those listed, "
                  "against chance (the layer's share of the filters). Thesis: its five identities (15 filters each "
                  "way); pgsweep: all 15 classes of each model, mean and range over the models.")
    doc.table(["layer", "chance", "thesis strongest", "thesis weakest", "pgsweep strongest", "pgsweep weakest"], rows)
    doc.figure(figure("layer_shares.png", plots.layer_shares(pd.DataFrame(shares)),
                      "Layers of the 3 strongest and 3 weakest filters of every class (mean over models) against "
                      "chance."))

    rows = []
    for job in jobs:
        table = job.table("rank/strongest_weakest.parquet")
        table = table[(table["output"] == job.pg_score.removeprefix("pg_")) & (table["kind"] == "weakest")]
        counts = table["filter"].value_counts()
        most = counts[counts == counts.max()]
        classes = table["class"].nunique()
        rows.append([job.label, ", ".join(sorted(most.index)), f"{int(counts.max())} of {classes}",
                     ", ".join(f"{f} ({n})" for f, n in counts.items() if n >= classes / 2) or "none"])
    doc.paragraph("Filters that are among the 3 weakest for the most classes (the thesis's 3-2 and 3-6 are among "
                  "the weakest of all five of its identities):")
    doc.table(["model", "weakest for the most classes", "classes", "weakest for half the classes or more"], rows)

    ratios, five_ratios = [], []
    for job in jobs:
        ratios.append(job.metrics.get(f"rank/{job.pg_score}/class_scale_ratio", np.nan))
        scores = job.table("rank/class_scores.parquet")
        tops = scores[scores["class_name"].isin(five)].groupby("class_name")[job.pg_score].max()
        five_ratios.append(float(tops.max() / tops.min()))
    thesis_tops = [THESIS_TABLE_4_2[n][0][0][2] for n in THESIS_TABLE_4_2]
    thesis_ratio = max(thesis_tops) / min(thesis_tops)
    doc.paragraph(f"How far apart the classes' score scales are: the thesis's five identities' top scores span "
                  f"{thesis_ratio:.0f}x (0.25153 for subject15 against 0.00202 for subject14). pgsweep, per model: "
                  f"the same ratio for the five, {spread(five_ratios, 0)}; over all 15 classes "
                  f"(`rank/{jobs[0].pg_score}/class_scale_ratio`, the largest class mean score over the smallest), "
                  f"{spread(ratios, 0)}. Confident classes have a saturated softmax and tiny PGs (section 7).")

    weakest_layer3 = float(np.mean([m["weakest"][sizes.index.max()] for m in per_model]))
    deepest = int(sizes.index.max())
    if weakest_layer3 > 0.5:
        verdict = REPRODUCED
    elif weakest_layer3 > chance[deepest]:
        verdict = PARTLY
    else:
        verdict = NOT
    claim_layers = Claim("2a", f"the weakest filters are mostly in layer {deepest} "
                         f"({int(round(thesis_layers['weakest'][deepest] * 15))} of 15)",
                         f"layer {deepest} holds {fmt(weakest_layer3, 2)} of the weakest (chance "
                         f"{fmt(chance[deepest], 2)}); layers: "
                         + ", ".join(f"{layer}: {np.mean([m['weakest'][layer] for m in per_model]):.2f}"
                                     for layer in sizes.index), verdict,
                         f"reproduced when more than half of the 3 weakest filters of every class (mean over the "
                         f"models) are in layer {deepest}; partly when layer {deepest}'s share is above chance "
                         "(its share of the filters); not otherwise")
    verdict_line(doc, claim_layers)
    median = float(np.nanmedian(ratios))
    verdict = REPRODUCED if median >= 100 else PARTLY if median >= 10 else NOT
    claim_scale = Claim("2b", f"class score scales {thesis_ratio:.0f}x apart",
                        f"median {median:.0f}x over all classes ({spread(ratios, 0)})", verdict,
                        "reproduced when the median over the models of the ratio of the largest to the smallest "
                        "class mean score is at least 100 (the thesis's five span 125x); partly when it is at "
                        "least 10; not otherwise")
    verdict_line(doc, claim_scale)
    return [claim_layers, claim_scale]


# ---------------------------------------------------------------- 3. Table 4.1

def table_4_1(doc: Document, jobs: list[Job]) -> list[Claim]:
    doc.heading(2, "3. PG patterns are consistent within a class (Table 4.1)")
    doc.quote("As shown in Figure 4.1, PG patterns for units in a neural net stay consistent across different "
              "images of the same class. (thesis 4.2.1; the figure meant is Table 4.1)")
    doc.paragraph("Each test image's own-class PG per filter is a vector of 23 scores (each filter standardized "
                  "over the images). Within: the mean Pearson correlation between two images of one class; "
                  "between: of two images of different classes. The p-value is a permutation test of "
                  "within - between, shuffling the class labels (`diagrams/consistency_p_value`).")
    rows, passed = [], []
    for job in jobs:
        m = job.metrics
        within, between = m["diagrams/within_class_correlation"], m["diagrams/between_class_correlation"]
        p = m.get("diagrams/consistency_p_value", np.nan)
        passed.append(within > between and p < 0.05)
        rows.append([job.label, int(m.get("diagrams/images", 0)), fmt(within), fmt(between), fmt(within - between),
                     f"{p:.4f}" if np.isfinite(p) else "n/a", int(m.get("diagrams/consistency_permutations", 0))])
    rows.append(["**mean**", "", spread([j.metrics["diagrams/within_class_correlation"] for j in jobs]),
                 spread([j.metrics["diagrams/between_class_correlation"] for j in jobs]), "", "", ""])
    doc.table(["model", "images", "within", "between", "within - between", "p", "permutations"], rows)
    first = jobs[0]
    if first.has("diagrams/network_pg.png"):
        doc.figure(Figure("network_pg.png", first.file("diagrams/network_pg.png"),
                          f"Table 4.1 as pgsweep draws it ({first.label}): three test images each of three classes "
                          "and their own-class PG per filter."))
    count = int(np.sum(passed))
    verdict = REPRODUCED if count == len(jobs) else PARTLY if count >= len(jobs) / 2 else NOT
    claim = Claim("3", "PG patterns consistent within a class",
                  f"within {fmt(np.mean([j.metrics['diagrams/within_class_correlation'] for j in jobs]))} vs between "
                  f"{fmt(np.mean([j.metrics['diagrams/between_class_correlation'] for j in jobs]))}; "
                  f"p < 0.05 in {count} of {len(jobs)} models", verdict,
                  "reproduced when within-class correlation exceeds between-class correlation with permutation "
                  "p < 0.05 in every model; partly in at least half of them; not otherwise")
    verdict_line(doc, claim)
    return [claim]


# ---------------------------------------------------------------- 4. knockout

AFTER, AFTER_MORE = 10, 15


def _at(curves: pd.DataFrame, score: str, direction: str, step: int) -> pd.DataFrame:
    rows = curves[(curves["score"] == score) & (curves["direction"] == direction) & (curves["step"] == step)]
    return rows.set_index("class")


def knockout_pairs(jobs: list[Job]) -> pd.DataFrame:
    """One row per (model, class): the PG orderings' numbers the thesis's claims are about,
    and the random orders' (each random order of the model is one more row, direction random)."""
    rows = []
    for job in jobs:
        curves, pg = job.curves, job.pg_score
        for direction in ("strongest", "weakest"):
            at10, at15 = _at(curves, pg, direction, AFTER), _at(curves, pg, direction, AFTER_MORE)
            by_class = curves[(curves["score"] == pg) & (curves["direction"] == direction)].groupby("class")
            area = by_class["class_error"].mean()  # mean over the steps 0..23 (a Riemann area)
            for c in at10.index:
                rows.append({"run": job.run_id, "model": job.label, "class": c, "class_name": at10.loc[c, "class_name"],
                             "direction": direction, "seed": -1, "area": area[c],
                             "class_error_10": at10.loc[c, "class_error"],
                             "class_error_all_10": at10.loc[c].get("class_error_all", np.nan),
                             "overall_error_10": at10.loc[c, "overall_error"],
                             "overall_error_15": at15.loc[c, "overall_error"],
                             "collapsed_10": bool(at10.loc[c, "collapsed"]), "collapsed_15": bool(at15.loc[c, "collapsed"]),
                             "emptied_10": at10.loc[c, "emptied_layers"], "emptied_15": at15.loc[c, "emptied_layers"],
                             "class_images": int(at10.loc[c, "class_images"]),
                             "class_images_all": int(at10.loc[c].get("class_images_all", 0))})
        randoms = curves[curves["score"] == "random"]
        for (c, seed), g in randoms.groupby(["class", "seed"]):
            g = g.set_index("step")
            rows.append({"run": job.run_id, "model": job.label, "class": c, "class_name": g["class_name"].iloc[0],
                         "direction": "random", "seed": seed, "area": g["class_error"].mean(),
                         "class_error_10": g.loc[AFTER, "class_error"],
                         "class_error_all_10": g.loc[AFTER].get("class_error_all", np.nan),
                         "overall_error_10": g.loc[AFTER, "overall_error"],
                         "overall_error_15": g.loc[AFTER_MORE, "overall_error"],
                         "collapsed_10": bool(g.loc[AFTER, "collapsed"]), "collapsed_15": bool(g.loc[AFTER_MORE, "collapsed"]),
                         "emptied_10": g.loc[AFTER, "emptied_layers"], "emptied_15": g.loc[AFTER_MORE, "emptied_layers"],
                         "class_images": int(g["class_images"].iloc[0]),
                         "class_images_all": int(g["class_images_all"].iloc[0]) if "class_images_all" in g else 0})
    return pd.DataFrame(rows)


def _knockout_verdict(fraction: float, any_model: bool, needed: float) -> str:
    if fraction >= needed:
        return REPRODUCED
    return PARTLY if fraction >= 0.2 or any_model else NOT


def knockout(doc: Document, jobs: list[Job]) -> list[Claim]:
    doc.heading(2, "4. Knockout (Figures 4.1, 4.2; sections 4.2.2-4.2.5)")
    doc.quote("Figure 4.1 shows that the ability of the network is affected much sooner when we remove "
              "highest-scoring filters first, compared to lowest-scoring filters. (4.2.2)\n"
              "The network almost completely fails after removing the top 10 strong features for any identity. "
              "In contrast, after removing 10 weak features, the network still achieves less than 25% error. "
              "Even after removing 15 weak features, overall error for many of the weak feature sets is below "
              "50%. (4.2.5)")
    five = thesis_five(jobs)
    pairs = knockout_pairs(jobs)
    pg_rows = pairs[pairs["direction"] != "random"]
    strongest = pg_rows[pg_rows["direction"] == "strongest"].set_index(["run", "class"])
    weakest = pg_rows[pg_rows["direction"] == "weakest"].set_index(["run", "class"])
    randoms = pairs[pairs["direction"] == "random"]
    n_test = sorted(set(pg_rows["class_images"]))
    n_all = sorted(set(pg_rows["class_images_all"]))
    test_images = sorted({int(j.curves["images"].iloc[0]) for j in jobs})
    doc.paragraph(
        f"Each model's filters are knocked out one at a time (the map after the activation is zeroed) in the "
        f"order of the class-averaged softmax PG, strongest first and weakest first, and in "
        f"{randoms.groupby('run')['seed'].nunique().iloc[0]} random orders, for each of its 15 classes: "
        f"{len(strongest)} (model, identity) pairs. Class error is over the identity's test images "
        f"({'/'.join(map(str, n_test))} of them) and over all its images ({'/'.join(map(str, n_all))}: the "
        f"Figure 4.1 caption, \"images with the given subject ID\"); overall error is over all "
        f"{'/'.join(map(str, test_images))} test images. A pair meets a claim by the test in the table; the "
        "same test on the random orders (each random order of a model, for each identity) gives the fraction "
        "to expect by chance.")

    area_between = (strongest["area"] - weakest["area"])
    random_between = []
    for (run, c), g in randoms.groupby(["run", "class"]):
        areas = g.sort_values("seed")["area"].to_numpy()
        random_between += list(areas - np.roll(areas, 1))  # pairs of random orders, same model and class
    at_least = lambda limit: (lambda v: v >= limit)  # noqa: E731
    below = lambda limit: (lambda v: v < limit)  # noqa: E731
    # key, the thesis, the test in words, the pairs' values, the random orders' values, the test, flags, needed
    tests = [
        ("4a", "strongest-first breaks the class much sooner than weakest-first",
         "mean class error over the 23 steps at least 0.10 higher strongest-first than weakest-first",
         area_between, pd.Series(random_between), at_least(0.10), None, 0.8),
        ("4b", "after the 10 strongest the class almost completely fails",
         "class error after 10 strongest-first knockouts at least 0.90 (test images)",
         strongest["class_error_10"], randoms["class_error_10"], at_least(0.90), strongest, 0.8),
        ("4b'", "... measured on all of the identity's images",
         "class error on all the identity's images after 10 strongest at least 0.90",
         strongest["class_error_all_10"], randoms["class_error_all_10"], at_least(0.90), strongest, 0.8),
        ("4c", "after the 10 weakest, overall error stays under 25%",
         "overall test error after 10 weakest-first knockouts below 0.25",
         weakest["overall_error_10"], randoms["overall_error_10"], below(0.25), weakest, 0.8),
        ("4d", "after 15 weakest, overall error below 50% for many identities",
         "overall test error after 15 weakest-first knockouts below 0.50 (\"many\": half the pairs)",
         weakest["overall_error_15"], randoms["overall_error_15"], below(0.50), weakest, 0.5),
    ]
    five_classes = set(strongest.reset_index().query("class_name in @five")["class"])
    if strongest["class_error_all_10"].isna().all():  # analysis.knockout.all_images was off
        tests = [t for t in tests if t[0] != "4b'"]
    claims, rows = [], []
    for key, thesis, test, values, random_values, passes, frame, needed in tests:
        met = passes(values)
        in_five = met[met.index.get_level_values("class").isin(five_classes)]
        step = "15" if key == "4d" else "10"
        if frame is not None:
            emptied = frame[f"emptied_{step}"] != ""
            kept = met[~emptied.reindex(met.index).to_numpy()]
            collapsed = frame[f"collapsed_{step}"].reindex(met.index)
            kept_text, collapsed_text = share(kept), f"{int((collapsed & met).sum())} of {int(met.sum())}"
        else:
            kept_text, collapsed_text = "", ""
        # "on average": the model's mean over its identities passes the test
        by_model = passes(values.groupby(level="run").mean())
        verdict = _knockout_verdict(float(met.mean()), bool(by_model.any()), needed)
        rows.append([key, test, share(met), share(in_five), kept_text, share(passes(random_values)), collapsed_text,
                     f"{int(by_model.sum())} of {len(by_model)}", verdict])
        claims.append(Claim(key, thesis, f"{share(met)} of (model, identity) pairs; random orders "
                                         f"{share(passes(random_values))}", verdict,
                            f"reproduced when at least {needed:.0%} of the (model, identity) pairs meet it ({test}); "
                            "partly when at least 20% do, or when one model meets it on average over its "
                            "identities; not otherwise"))
    doc.table(["claim", "a pair meets it when", "all pairs", "thesis's five identities",
               "pairs whose ordering empties no layer", "random orders", "collapsed nets among those meeting it",
               "models meeting it on average over their identities", "verdict"], rows)
    doc.paragraph("Verdict rule for each knockout claim: reproduced when at least 80% of the (model, identity) "
                  "pairs meet it (50% for \"many\" in 4d); partly when at least 20% do, or when one model meets it "
                  "on average over its identities; not reproduced otherwise. The random orders are the same "
                  f"{randoms['seed'].nunique()} orders for every model and identity (`analysis.knockout.seed`).")
    doc.paragraph("*Collapsed*: the knocked-out net gives one class to at least half the test images, so a class "
                  "error near 0 (or a class's precision) means nothing there. *Empties a layer*: by that step the "
                  "ordering has knocked out every filter of a layer, which cuts the network in two whatever the "
                  "rest of the order.")

    rows = []
    for job in jobs:
        s_rows = strongest.loc[job.run_id]
        w_rows = weakest.loc[job.run_id]
        rows.append([job.label, fmt(job.metrics.get("final_test_error", np.nan)),
                     fmt((s_rows["area"] - w_rows["area"]).mean()),
                     f"{fmt(s_rows['class_error_10'].mean())} / {fmt(s_rows['class_error_all_10'].mean())}",
                     fmt(w_rows["overall_error_10"].mean()), fmt(w_rows["overall_error_15"].mean()),
                     share(w_rows["emptied_10"].str.split(",").apply(lambda layers: "1" in layers))])
    doc.paragraph("Per model, means over its 15 identities:")
    doc.table(["model", "test error", "area between (class error)", "class error after 10 strongest (test / all)",
               "overall error after 10 weakest", "overall error after 15 weakest",
               "10 weakest empty layer 1"], rows)

    emptied = weakest["emptied_10"].str.split(",").apply(lambda layers: "1" in layers)
    random_emptied = randoms["emptied_10"].str.split(",").apply(lambda layers: "1" in layers)
    doc.paragraph(
        "What decides the weak-side claims: whether the 10 weakest filters include every filter of layer 1 "
        f"(all 5 of them). Overall error after the 10 weakest when they do: "
        f"{spread(weakest.loc[emptied, 'overall_error_10'], 3)}; when they do not: "
        f"{spread(weakest.loc[~emptied, 'overall_error_10'], 3)}. Random orders that empty layer 1 by step 10: "
        f"{spread(randoms.loc[random_emptied, 'overall_error_10'], 3) if random_emptied.any() else 'none of them does'}.")

    curves = pd.concat([j.curves.assign(run=j.run_id) for j in jobs], ignore_index=True)
    names = list(dict.fromkeys(jobs[0].curves.sort_values("class")["class_name"]))
    classes = plots.thesis_classes(names)
    pg = jobs[0].pg_score
    for column, name, caption in (
            ("class_error", "figure_4_1.png", "Figure 4.1: class error on the identity's test images"),
            ("class_error_all", "figure_4_1_all_images.png", "Figure 4.1 on all of the identity's images"),
            ("overall_error", "figure_4_2.png", "Figure 4.2: overall test error")):
        if curves[column].isna().all():
            continue
        doc.figure(figure(name, plots.thesis_knockout(curves, pg, column, classes),
                          f"{caption}, the thesis's five identities, mean over {len(jobs)} models; gray: random "
                          "orders (mean, and the middle half of them)."))

    # where a filter is zeroed does not matter for this network
    zeroing = pd.concat([j.table("knockout/zeroing.parquet").assign(run=j.run_id) for j in jobs])
    rows = [[how, group["what"].iloc[0], fmt(group["agreement"].min()), fmt(group["agreement"].max()),
             int(group["predictions"].sum())] for how, group in zeroing.groupby("zeroing", sort=False)]
    doc.paragraph("Where a filter is zeroed: the same knockouts (each model's first class, its PG orderings and "
                  "a random one, every step) replayed four ways; agreement is the share of predictions equal to "
                  "pgsweep's, which zeroes the map after the activation (`knockout/zeroing.parquet`). With tanh "
                  "(tanh(0) = 0) and max pooling all four are the same network.")
    doc.table(["zeroing", "what", "agreement (min over models)", "max", "predictions compared"], rows)

    # PG against the baselines
    scores = ["pg_softmax", "pg_logit", "loss_gradient", "activation", "taylor", "oracle"]
    rows = []
    pg_rho = np.array([j.metrics.get(f"knockout/{pg}/spearman_oracle/mean", np.nan) for j in jobs])
    for score in scores + ["random"]:
        rho = np.array([j.metrics.get(f"knockout/{score}/spearman_oracle/mean", np.nan) for j in jobs])
        auc = [j.metrics.get(f"knockout/{score}/auc_strongest/mean", np.nan) for j in jobs] if score != "random" else \
            [j.table("knockout/summary.parquet").set_index(["score", "class"]).loc[("random", -1), "auc_random_class_error"]
             for j in jobs]
        between = [j.metrics.get(f"knockout/{score}/area_between/mean", np.nan) for j in jobs]
        better = "" if score in (pg, "oracle", "random") else \
            f"{int(np.sum(pg_rho > rho))} of {int(np.sum(np.isfinite(rho)))}"
        rows.append([plots.SCORE_STYLE.get(score, (score,))[0], spread(rho), spread(auc), spread(between), better])
    doc.paragraph("PG against the baselines (each model's means over its classes): Spearman correlation of each "
                  "score's filter ranking with the oracle (each filter's own knockout's rise in the class's test "
                  "loss), the area under the strongest-first class-error curve (higher: breaks the class sooner), "
                  "and the area between strongest- and weakest-first.")
    doc.table(["score", "Spearman with the oracle", "area, strongest first", "area between", "PG's Spearman higher in"],
              rows)
    return claims


# ---------------------------------------------------------------- 5. features

def features(doc: Document, jobs: list[Job]) -> list[Claim]:
    doc.heading(2, "5. Characteristic and look-alike features (Figures 4.3, 4.4)")
    doc.quote("The highest PG indicates which filter and region contributes most to classification. (4.3.1)\n"
              "If we take the PG of some other label y != t, we can see what makes the input seem most like some "
              "other class y. (4.3.2)")
    first = next((j for j in jobs if not j.grouped), jobs[0])
    if not first.has("features/faces.parquet"):
        doc.paragraph("No feature figures were logged (analysis.features.classes).")
        return [Claim("5", "the top filter and region for the own and the runner-up class", "not logged", NOT,
                      "reproduced when every chosen identity gets a filter and position for its own class and for "
                      "its runner-up class")]
    faces = first.table("features/faces.parquet")
    table = first.table("features/features.parquet")
    names = list(dict.fromkeys(first.table("rank/class_scores.parquet").sort_values("class")["class_name"]))
    rows, found = [], 0
    for face in faces.itertuples():
        mine = table[table["image"] == face.image]
        own = mine[mine["own_class"]]
        other = mine[mine["target"] == mine["runner_up"]]
        if not len(own) or not len(other):
            continue
        own, other = own.iloc[0], other.iloc[0]
        found += 1
        rows.append([face.class_name, face.source,
                     f"{own['filter_name']} at ({int(own['row'])}, {int(own['col'])}), PG {own['score']:.2e}",
                     names[int(other["target"])],
                     f"{other['filter_name']} at ({int(other['row'])}, {int(other['col'])}), PG {other['score']:.2e}"])
    doc.paragraph(f"For the first test image of each of the thesis's five identities ({first.label}): the "
                  "first-layer filter and position with the highest PG for the image's own class, and for the "
                  "class the model ranks next (its look-alike). Positions are (row, column) of the 56x56 map; "
                  "the red box in the figures is what that position sees of the face.")
    doc.table(["identity", "image", "own class: filter, position", "runner-up class", "runner-up: filter, position"],
              rows)
    doc.figure(figure("feature_boxes.png", plots.feature_boxes(faces, table, names),
                      f"The five identities ({first.label}): the receptive field of the highest-PG position for the "
                      "own class (red, top) and for the runner-up class (blue, bottom)."))
    for kind, caption in (("characteristic", "Figure 4.3: the most characteristic feature"),
                          ("lookalike", "Figure 4.4: what makes the face look like its runner-up")):
        if first.has(f"features/{kind}_0.png"):
            doc.figure(Figure(f"{kind}_0.png", first.file(f"features/{kind}_0.png"),
                              f"{caption} ({faces['class_name'].iloc[0]}, {first.label})."))
    verdict = REPRODUCED if found == len(faces) else PARTLY
    claim = Claim("5", "the top filter and region for the own class and for another class",
                  f"found for {found} of {len(faces)} identities, own and runner-up class", verdict,
                  "reproduced when every chosen identity gets a filter and position for its own class and for its "
                  "runner-up; the thesis gives one example of each and no number to compare (which filter wins "
                  "depends on the training: filter numbers are arbitrary between trainings)")
    verdict_line(doc, claim)
    return [claim]


# ---------------------------------------------------------------- 6. perturbations

def perturbations(doc: Document, jobs: list[Job]) -> list[Claim]:
    doc.heading(2, "6. Perturbations (Figures 4.5-4.7)")
    doc.quote("Some targets are easier to fool the classifier into believing than others. (4.4)\n"
              "Previous works on adversarial images only focus on inducing this error, not targeting classes. "
              "These results show that the former is easier than the latter. (4.4)")
    names = list(dict.fromkeys(jobs[0].table("rank/class_scores.parquet").sort_values("class")["class_name"]))
    per_target = pd.concat([j.table("adversarial/per_target.parquet").assign(run=j.run_id) for j in jobs])
    means = per_target.groupby(["run", "target"])["success"].mean().unstack("target")  # (models, targets)
    n = len(means)
    rows = []
    for target in means.columns:
        values = means[target].to_numpy()
        half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
        rows.append({"target": int(target), "mean": values.mean(), "low": values.mean() - half,
                     "high": values.mean() + half, "models": n})
    spread_table = pd.DataFrame(rows).sort_values("mean", ascending=False)
    easiest, hardest = spread_table.iloc[0], spread_table.iloc[-1]
    doc.paragraph(f"Every test image is perturbed toward every other class, x' = x + s dy_t/dx, over 10 raw step "
                  f"sizes picked so pixels move by 0.01 to 0.5 RMS. Success: the argmax becomes the target; "
                  f"induced error: the argmax is no longer the true class. Mean success over the steps per target, "
                  f"with a 95% confidence interval over the {n} models (t distribution):")
    doc.table(["target", "mean success", "95% CI"],
              [[names[int(r.target)], fmt(r.mean), f"{fmt(r.low)} - {fmt(r.high)}"] for r in spread_table.itertuples()])
    doc.figure(figure("target_spread.png", plots.target_spread(spread_table, names),
                      f"Mean targeted success per target class, 95% CI over {n} models."))
    if np.isfinite(easiest.low) and easiest.low > hardest.high:
        verdict = REPRODUCED
    elif easiest["mean"] >= 2 * hardest["mean"]:
        verdict = PARTLY
    else:
        verdict = NOT
    claim_targets = Claim("6a", "some targets are much easier than others",
                          f"easiest {names[int(easiest.target)]} {fmt(easiest['mean'])} [{fmt(easiest.low)}, "
                          f"{fmt(easiest.high)}], hardest {names[int(hardest.target)]} {fmt(hardest['mean'])} "
                          f"[{fmt(hardest.low)}, {fmt(hardest.high)}]", verdict,
                          "reproduced when the easiest target's 95% CI over the models lies wholly above the "
                          "hardest's; partly when its mean success is at least twice the hardest's; not otherwise")
    verdict_line(doc, claim_targets)

    per_step = pd.concat([j.table("adversarial/per_step.parquet").assign(run=j.run_id) for j in jobs])
    easier = per_step["induced_error"] > per_step["success"]
    by_step = per_step.groupby("step_index")
    rows = [[int(k), fmt(g["pixel_rms"].mean()) if "pixel_rms" in g else "", spread(g["success"]),
             spread(g["induced_error"]), share(g["induced_error"] > g["success"])] for k, g in by_step]
    doc.paragraph("Inducing an error against hitting the target, at every step (means over the models):")
    doc.table(["step", "RMS pixel change", "targeted success", "induced error", "models where error > success"], rows)
    fraction = float(easier.mean())
    verdict = REPRODUCED if easier.all() else PARTLY if fraction >= 0.8 else NOT
    claim_easier = Claim("6b", "inducing an error is easier than hitting a chosen target",
                         f"induced error > success at {share(easier)} of (model, step)", verdict,
                         "reproduced when the induced error exceeds the targeted success at every step of every "
                         "model; partly at 80% of them; not otherwise")
    verdict_line(doc, claim_easier)

    kinds = [j for j in jobs if j.has("adversarial/step_kinds.parquet")]
    if kinds:
        table = pd.concat([j.table("adversarial/step_kinds.parquet").assign(run=j.run_id) for j in kinds])
        wide = table.groupby(["step_index", "step_kind"])[["pixel_rms", "success", "induced_error"]].mean().unstack()
        rows = []
        for k, row in wide.iterrows():
            rows.append([int(k), fmt(row[("pixel_rms", "raw")]) if ("pixel_rms", "raw") in row else ""]
                        + [fmt(row[(column, kind)]) for kind in sorted(table["step_kind"].unique())
                           for column in ("success", "induced_error")])
        doc.paragraph("The sign-step variant beside the thesis's raw steps, at the same RMS pixel changes (means over "
                      f"{len(kinds)} models): a sign step moves every pixel by the same amount, a raw step moves "
                      "each in proportion to its gradient.")
        doc.table(["step", "RMS pixel change"] + [f"{kind} {column}" for kind in sorted(table["step_kind"].unique())
                                                  for column in ("success", "induced error")], rows)
        doc.figure(figure("step_kinds.png", plots.step_kinds(table),
                          "Raw (thesis) against sign steps: success (dashed) and induced error (solid) against the "
                          "pixel change; band: range over the models."))
    first = jobs[0]
    for name, caption in (("fig4_6_success.png", "Figure 4.6: targeted success per target"),
                          ("fig4_7_induced_error.png", "Figure 4.7: induced error per target")):
        if first.has(f"adversarial/{name}"):
            doc.figure(Figure(name, first.file(f"adversarial/{name}"), f"{caption} ({first.label})."))
    return [claim_targets, claim_easier]


# ---------------------------------------------------------------- 7. beyond the thesis

def beyond(doc: Document, jobs: list[Job]) -> None:
    doc.heading(2, "7. Beyond the thesis")
    pg = jobs[0].pg_score
    rho = {score: np.array([j.metrics.get(f"knockout/{score}/spearman_oracle/mean", np.nan) for j in jobs])
           for score in ("pg_softmax", "pg_logit", "loss_gradient", "activation", "taylor")}
    saturation = [j.metrics.get("final_train_median_true_probability", np.nan) for j in jobs]
    doc.items([
        f"PG against the baselines (section 4): Spearman with the oracle, PG (softmax) {spread(rho['pg_softmax'])}, "
        f"PG (logit) {spread(rho['pg_logit'])}, loss gradient {spread(rho['loss_gradient'])}, activation "
        f"{spread(rho['activation'])}, Taylor {spread(rho['taylor'])}. PG's ranking is better than the "
        f"activation's in {int(np.sum(rho[pg] > rho['activation']))} of {len(jobs)} models and than the loss "
        f"gradient's in {int(np.sum(rho[pg] > rho['loss_gradient']))}.",
        f"Softmax saturation: the median probability a model gives each training image's own class is "
        f"{spread(saturation)} (`final_train_median_true_probability`). Near 1 the softmax is flat, so its "
        "gradients, and with them the softmax PG, shrink by orders of magnitude for the most confident classes: "
        "the class scale ratios of section 2.",
        "Why a local derivative ranks filters only weakly for a knockout: PG is the slope of the class score at "
        "the image, a first-order prediction of the change for a small nudge of a filter's map. Knocking a "
        "filter out is no small nudge: the whole map goes to zero, later layers saturate or recover, and after a "
        "few knockouts the network is far from where the slope was measured. A filter with a small slope can "
        "still carry a large map whose removal moves everything (and the reverse), which is what the oracle "
        "measures directly.",
    ])


# ---------------------------------------------------------------- the whole report

def thesis_report(jobs: list[Job], parent_run_id: str) -> tuple[Document, list[Claim]]:
    """The report of a thesis multirun: a summary table of verdicts, then a section per claim."""
    body = Document()
    claims = []
    claims += error_rate(body, jobs)
    claims += table_4_2(body, jobs)
    claims += table_4_1(body, jobs)
    claims += knockout(body, jobs)
    claims += features(body, jobs)
    claims += perturbations(body, jobs)
    beyond(body, jobs)
    doc = Document()
    doc.heading(1, "Querying Deep Neural Networks with Gradients (Lo 2016): the thesis on the Yale faces")
    seeds = sorted({j.seed for j in jobs})
    splits = sorted({j.split_name for j in jobs})
    epochs = sorted({j.epochs for j in jobs})
    doc.paragraph(f"Multirun `{parent_run_id}`: {len(jobs)} models (seeds {', '.join(map(str, seeds))} x "
                  f"{' and '.join(splits)} split; {'/'.join(map(str, epochs))} epochs). Every number below is read "
                  "from the jobs' logged metrics and tables; regenerate this report with "
                  f"`python -m pgsweep.report {parent_run_id}`.")
    doc.heading(2, "Summary")
    doc.table(["claim", "the thesis", "pgsweep", "verdict"], summary_rows(claims))
    doc.blocks += body.blocks
    return doc, claims


def summary_rows(claims: list[Claim]) -> list[list[str]]:
    return [[c.key, c.thesis, c.measured, f"**{c.verdict}**"] for c in claims]
