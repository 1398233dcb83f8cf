"""Stage `knockout` (thesis Figures 4.1, 4.2, and beyond): error curves as filters are zeroed.

For each chosen class, filters are knocked out strongest-first and weakest-first by every
score of analysis.knockout.scores (by default PG of softmax and logit, loss gradient,
activation, Taylor; any score of analysis.rank.scores), by the oracle (each filter's own
single-knockout loss increase), and in random orders. Error on the class's
test images and overall test error after every step.

With analysis.knockout.all_images, the PG and random orderings are also replayed on every
image of the data set, for the class error on all of a class's images (the thesis's
Figure 4.1 caption).

Logs under knockout/: curves.parquet (every step of every ordering, with the image counts,
class precision, collapsed-net flag and emptied layers), oracle.parquet, zeroing.parquet
(where a filter is zeroed: four ways, same predictions?), summary.parquet and summary.md
(areas, area between directions, errors after `after` knockouts, Spearman with the oracle),
faithfulness.parquet and faithfulness.png (per score: Spearman with the oracle, class error after
`after` strongest, overall error after `after` weakest, each against random orders, with 95%
intervals over classes; pgsweep.analyses.knockout.faithfulness),
class_<name>.png per class, thesis_class_error.png and thesis_overall_error.png; metrics
knockout/<score>/<summary>/<class> and knockout/zeroing_agreement/<way>.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pgsweep import plots
from pgsweep.analyses.knockout import (
    COLLAPSE_SHARE, ZEROINGS, KnockoutRun, class_errors, class_orders, curve_table, knockout_predictions,
    random_orders, single_knockouts, summarize, zeroing_agreement,
)
from pgsweep.analyses.knockout.seeds import weights_seed
from pgsweep.settings import MODEL_SEED
from pgsweep.stages.common import (
    ALL_CLASSES, AnalysisSettings, analysis_units, class_indices, images_of, metric_name,
    require_images,
)
from pgsweep.analyses.knockout.faithfulness import faithfulness_table
from pgsweep.analyses.ranking import check_rank_scores
from pgsweep.stages.rank import scores_for
from pgsweep.errors import ConfigError
from pgsweep.logs import counted
from pgsweep.progress import progress_bar

__all__ = ["check", "run", "KnockoutReport"]

log = logging.getLogger(__name__)
# the zeroing check replays 3 orderings 4 ways with the plain loop: on the first this many
# test images (all 41 Yale faces; on the 449 digits it was half the stage's time)
ZEROING_IMAGES = 128

SUMMARY_METRICS = (  # summary column -> metric name; class error unless the name says overall
    ("auc_strongest_class_error", "auc_strongest"),
    ("auc_weakest_class_error", "auc_weakest"),
    ("area_between_class_error", "area_between"),
    ("area_between_overall_error", "area_between_overall"),
    ("spearman_oracle", "spearman_oracle"),
)


@dataclass(frozen=True, eq=False)
class KnockoutReport:
    curves: pd.DataFrame
    summary: pd.DataFrame
    oracle: pd.DataFrame
    intact_error: float


def _classes(ctx, settings: AnalysisSettings) -> list[int]:
    return class_indices(settings.knockout.classes, ctx.images.class_names, "analysis.knockout.classes", ALL_CLASSES)


def check(ctx) -> None:
    settings: AnalysisSettings = ctx.stage_settings["knockout"]
    units = analysis_units(ctx, settings)
    if settings.knockout.after > units.total:
        raise ConfigError(
            f"analysis.knockout.after={settings.knockout.after} is larger than the {units.total} filters"
        )
    check_rank_scores(settings.knockout.scores, units, "analysis.knockout.scores")
    classes = _classes(ctx, settings)
    require_images(ctx, classes, "analysis.knockout.classes")
    require_images(ctx, list(range(len(ctx.images.class_names))), "analysis.rank", settings.rank.split)


def knockout_analysis(network, test_images, test_labels, scores, classes, settings: AnalysisSettings,
                      all_images=None, all_labels=None):
    """Every class's curves, the summaries, the oracle, and whether the replay ran on the
    network's inference copy; plain tables, nothing logged.

    With all_images/all_labels (every image of the data set), the PG orderings and the random
    ones are also replayed on them, for the class error on all of a class's images
    (`class_error_all`, the thesis's Figure 4.1 caption: "images with the given subject ID").
    """
    units, names = scores.units, scores.class_names
    chunk = settings.query.image_chunk
    labels = np.asarray(test_labels)
    optimize = settings.knockout.optimize
    steps = knockout_steps(units.total, settings)
    seed = settings.knockout.seed
    randoms = random_orders(units.total, settings.knockout.random_orderings,
                            weights_seed(network) if seed == MODEL_SEED else int(seed))
    orderings = len(classes) * (2 * (len(scores.scores) + 1) + len(randoms))  # + 1: the oracle
    # the estimate: one step timed (first-layer filters: the whole net reruns), times the distinct
    # orderings' steps (the random orders are every class's)
    seconds = _step_seconds(network, test_images, test_labels, units, chunk, optimize, steps)
    distinct = orderings - (len(classes) - 1) * len(randoms)
    # on all images: PG's orderings on their class's images (about a class's share), the random ones on all
    images_all = (2 + len(randoms)) * len(all_images) if all_images is not None else 0
    estimate = seconds * (units.total + distinct * steps + images_all * steps / len(test_images))
    log.info("knockout: %s x %s x %s on %s, after %s; the replay about %s (one step took %.2f ms, times the steps)",
             counted(len(classes), "class", "classes"), counted(orderings // len(classes), "ordering"),
             counted(steps, "step") + ("" if steps == units.total else f" of {units.total} (analysis.knockout."
                                        "max_steps)"), counted(len(test_images), "test image"),
             counted(units.total, "single knockout")
             + (f"; on all {len(all_images)} images, PG's {2 * len(classes)} orderings (each on its class's) "
                f"and the {len(randoms)} random ones" if all_images is not None else ""),
             _duration(estimate), seconds * 1000)
    show = settings.query.show_progress_bar()
    with progress_bar(units.total, "knockout: single knockouts", show) as bar:
        oracle = single_knockouts(network, test_images, test_labels, units, len(names), chunk, optimize, bar.update)
    oracle["class_name"] = [names[c] for c in oracle["class"]]
    per_class = []
    for c in classes:
        oracle_c = oracle[oracle["class"] == c].sort_values("unit")["loss_increase"].to_numpy()
        class_scores = {name: values[c] for name, values in scores.scores.items()}
        class_scores["oracle"] = oracle_c
        per_class.append((c, class_scores, oracle_c, *class_orders(class_scores, randoms)))
    # one replay of every class's orderings: states reached by one ordering (the random
    # ones every class shares, the intact network) are computed once, not once per class
    everything = np.concatenate([orders for *_, orders, _ in per_class])
    with progress_bar(len(everything) * steps, "knockout: orderings", show) as bar:
        run = knockout_predictions(network, test_images, test_labels, units, everything, steps, chunk, optimize,
                                   bar.update)
    pg = f"pg_{settings.query.output}"
    # on all images, only the orderings the thesis's claims are about: PG's, and the random ones
    on_all = _class_errors_on_all(network, all_images, all_labels, units, per_class, randoms, pg, steps, chunk,
                                  optimize, show) if all_images is not None else {}
    curves, summaries, start = [], [], 0
    for c, class_scores, oracle_c, orders, keys in per_class:
        rows = slice(start, start + len(orders))
        class_run = KnockoutRun(run.predictions[rows], run.losses[rows])
        table = curve_table(class_run, keys, orders, labels, c, names[c], units)
        table["class_error_all"] = np.nan
        table["class_images_all"] = int((np.asarray(all_labels) == c).sum()) if all_images is not None else 0
        for i, errors in on_all.get(c, {}).items():  # the table: each ordering's steps 0..S in turn
            table.loc[table.index[i * len(errors):(i + 1) * len(errors)], "class_error_all"] = errors
        start += len(orders)
        curves.append(table)
        summaries.append(summarize(table, class_scores, oracle_c, settings.knockout.after))
    curves_table = pd.concat(curves, ignore_index=True)
    summary = pd.concat(summaries, ignore_index=True)
    return curves_table, summary, oracle, run.inference_copy_used


def _class_errors_on_all(network, all_images, all_labels, units, per_class, randoms, pg: str, steps: int,
                         chunk: int, optimize: str, show: bool) -> dict[int, dict[int, np.ndarray]]:
    """class -> {row of its orderings: (S + 1,) error on all of the class's images} for PG's and
    the random orderings. A class's PG orderings need only its own images; the random orders,
    every class's, are replayed once on all of them."""
    all_labels = np.asarray(all_labels)
    mine = [[i for i, key in enumerate(keys) if key[0] == pg] for *_, keys in per_class]
    out: dict[int, dict[int, np.ndarray]] = {}
    with progress_bar((sum(map(len, mine)) + len(randoms)) * steps, "knockout: all images", show) as bar:
        shared = knockout_predictions(network, all_images, all_labels, units, randoms, steps, chunk, optimize,
                                      bar.update) if len(randoms) else None
        for (c, _, _, orders, keys), rows in zip(per_class, mine):
            members = np.flatnonzero(all_labels == c)
            own = knockout_predictions(network, all_images[members], all_labels[members], units, orders[rows],
                                       steps, chunk, optimize, bar.update) if rows else None
            out[c] = {row: errors for row, errors in zip(rows, class_errors(own, all_labels[members], c))} \
                if own is not None else {}
            if shared is not None:  # a random row's key names its order: ("random", "random", seed index)
                errors = class_errors(shared, all_labels, c)
                out[c].update({row: errors[key[2]] for row, key in enumerate(keys) if key[0] == "random"})
    return out


def knockout_steps(filters: int, settings: AnalysisSettings) -> int:
    """Knockouts replayed per ordering: every filter, or the first analysis.knockout.max_steps."""
    return min(filters, settings.knockout.max_steps)


def _step_seconds(network, images, labels, units, chunk: int, optimize: str, steps: int) -> float:
    """Seconds of one knockout step on the images: replaying one ordering k steps and 1 step,
    the difference over k - 1 (so a call's fixed costs, tracing and the intact pass, cancel).
    A first call makes and checks the inference copy, which the stage then reuses."""
    order = np.arange(units.total, dtype=np.int64)[None, :]  # first-layer filters first: the whole net reruns
    k = min(steps, 8)

    def seconds(count: int) -> float:  # the fastest of 3: a busy machine only adds time
        times = []
        for _ in range(3):
            started = time.perf_counter()
            knockout_predictions(network, images, labels, units, order, count, chunk, optimize)
            times.append(time.perf_counter() - started)
        return min(times)

    seconds(1)
    one = seconds(1)
    return one if k < 2 else max(seconds(k) - one, 0.0) / (k - 1)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _mean_rows(summary: pd.DataFrame) -> pd.DataFrame:
    numeric = summary.drop(columns=["class", "class_name"]).groupby("score", sort=False).mean(numeric_only=True)
    return numeric.reset_index().assign(**{"class": -1, "class_name": "mean"})


def _markdown(summary: pd.DataFrame, after: int, output: str, images: int, all_images: int,
              zeroing: pd.DataFrame) -> str:
    pg = f"pg_{output}"
    lines = [
        "# Knockout summary\n",
        f"Error after knocking out the {after} strongest / {after} weakest filters, ordered by the "
        f"class-averaged PG of the {output} ({pg}); the thesis reports near-complete failure for the "
        "strongest and under 25% overall error for the weakest. Class error on the class's test "
        f"images (n = how many)" + (f" and on all of its images ({all_images} in the data set)" if all_images else
                                      " (analysis.knockout.all_images: also on all of them)") + "; overall error "
        f"on the {images} test images. `collapsed`: the knocked-out net gives one class to at least "
        f"{COLLAPSE_SHARE:.0%} of the test images, so a class error near 0 means nothing; `layer emptied`: "
        "the ordering has knocked out every filter of a layer by then.\n",
        "| class | n test / all | class error, strongest (test / all) | class error, weakest (test / all) "
        "| overall error, strongest | overall error, weakest | collapsed (strongest / weakest) "
        "| layer emptied (strongest / weakest) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def cell(d, name):
        value = d.get(name, np.nan)
        return "" if pd.isna(value) else f"{value:.3f}"

    def flag(d, name):
        value = d.get(name, np.nan)
        return "?" if pd.isna(value) else ("yes" if value > 0 else "no")

    for row in summary[(summary.score == pg) & (summary["class"] >= 0)].itertuples():
        d = row._asdict()
        lines.append(
            f"| {row.class_name} | {d.get('class_images', '')} / {d.get('class_images_all', '')} "
            f"| {cell(d, f'class_error_after_{after}_strongest')} / {cell(d, f'class_error_all_after_{after}_strongest')} "
            f"| {cell(d, f'class_error_after_{after}_weakest')} / {cell(d, f'class_error_all_after_{after}_weakest')} "
            f"| {cell(d, f'overall_error_after_{after}_strongest')} | {cell(d, f'overall_error_after_{after}_weakest')} "
            f"| {flag(d, f'collapsed_after_{after}_strongest')} / {flag(d, f'collapsed_after_{after}_weakest')} "
            f"| {flag(d, f'emptied_after_{after}_strongest')} / {flag(d, f'emptied_after_{after}_weakest')} |")
    means = summary[summary["class"] == -1].set_index("score")
    lines += ["", "Mean over classes, per score (area = the area under the error curve over 0..N knockouts, "
              "trapezoid rule, divided by N; between = strongest - weakest; "
              "Spearman with the oracle's single-knockout loss increase):", "",
              "| score | area strongest | area weakest | area between | area between (overall) | Spearman with oracle |",
              "| --- | --- | --- | --- | --- | --- |"]
    for score, row in means.iterrows():
        values = [row.get(c, np.nan) for c in ("auc_strongest_class_error", "auc_weakest_class_error",
                                               "area_between_class_error", "area_between_overall_error",
                                               "spearman_oracle")]
        if score == "random":  # one direction: its mean curve's area goes in both area columns
            values[:2] = [row.get("auc_random_class_error", np.nan)] * 2
        lines.append(f"| {score} | " + " | ".join("" if pd.isna(v) else f"{v:.3f}" for v in values) + " |")
    lines += ["", "Where a filter is zeroed (the same knockouts replayed each way; agreement = share of "
              "predictions equal to pgsweep's):", "", "| zeroing | what | agreement |", "| --- | --- | --- |"]
    for row in zeroing.itertuples():
        lines.append(f"| {row.zeroing} | {row.what} | "
                     f"{'n/a (no such layer)' if pd.isna(row.agreement) else f'{row.agreement:.3f}'} |")
    return "\n".join(lines) + "\n"


def run(ctx) -> None:
    settings: AnalysisSettings = ctx.stage_settings["knockout"]
    tracker, network = ctx.tracker, ctx.model.network
    scores = scores_for(ctx, settings, settings.knockout.scores)
    images, labels, _ = images_of(ctx, "test")
    classes = _classes(ctx, settings)
    everything = (ctx.images.images, ctx.images.labels) if settings.knockout.all_images else (None, None)
    curves, summary, oracle, copy_used = knockout_analysis(network, images, labels, scores, classes, settings,
                                                           *everything)
    tracker.log_params({"analysis.knockout.inference_copy_used": copy_used,
                        "analysis.knockout.steps_used": int(curves.step.max())})
    counts = curves.groupby("class")[["class_images", "class_images_all"]].first()
    summary = summary.join(counts, on="class")
    summary = pd.concat([summary, _mean_rows(summary)], ignore_index=True)
    intact = float(curves.loc[curves.step == 0, "overall_error"].iloc[0])
    pg = f"pg_{settings.query.output}"
    # the same knockouts zeroed four ways: the first class's PG orderings and one random order
    first = curves[(curves["class"] == classes[0]) & (curves.score.isin([pg, "random"]))]
    probe = [first[(first.score == pg) & (first.direction == d)] for d in ("strongest", "weakest")]
    probe.append(first[(first.score == "random") & (first.seed == first.seed.max())])
    by_name = {name: u for u, name in enumerate(scores.units.names())}
    orders = np.array([[by_name[k] for k in table.sort_values("step").knocked.iloc[1:]] for table in probe if len(table)])
    zeroing = zeroing_agreement(network, images[:ZEROING_IMAGES], labels[:ZEROING_IMAGES], scores.units, orders)
    tracker.log_table(curves, "knockout/curves.parquet")
    tracker.log_table(summary, "knockout/summary.parquet")
    tracker.log_table(oracle, "knockout/oracle.parquet")
    tracker.log_table(zeroing, "knockout/zeroing.parquet")
    faithful = faithfulness_table(summary, settings.knockout.after).assign(
        # the model by its weights (the hash its random orders are seeded from): the same model
        # gets the same name in every run, so the table is the same too
        output=settings.query.output, norm=settings.query.norm, model=f"weights {weights_seed(network):016x}")
    tracker.log_table(faithful, "knockout/faithfulness.parquet")
    tracker.log_figure(plots.faithfulness(faithful), "knockout/faithfulness.png")
    after = settings.knockout.after
    tracker.log_text(_markdown(summary, after, settings.query.output, len(labels),
                               len(ctx.images) if settings.knockout.all_images else 0, zeroing),
                     "knockout/summary.md")

    metrics = {"knockout/intact_test_error": intact, "knockout/test_images": float(len(labels))}
    if settings.knockout.all_images:
        metrics["knockout/all_images"] = float(len(ctx.images))
    for row in zeroing.itertuples():
        if not pd.isna(row.agreement):
            metrics[f"knockout/zeroing_agreement/{row.zeroing}"] = row.agreement
    for row in summary.to_dict("records"):
        label = "mean" if row["class"] == -1 else f"class_{metric_name(row['class_name'])}"
        for column, name in SUMMARY_METRICS:
            if column in row and not pd.isna(row[column]):
                metrics[f"knockout/{row['score']}/{name}/{label}"] = row[column]
        for curve in ("class_error", "overall_error", "class_error_all"):
            for direction in ("strongest", "weakest"):
                column = f"{curve}_after_{after}_{direction}"
                if column in row and not pd.isna(row[column]):
                    metrics[f"knockout/{row['score']}/{curve}_after_{after}_{direction}/{label}"] = row[column]
    tracker.log_metrics(metrics)

    shown = plots.thesis_classes(ctx.images.class_names, classes)
    drawn = {"all": classes, "thesis": shown, "none": []}[settings.knockout.class_figures]
    for c in drawn:
        figure = plots.knockout_curves(curves[curves["class"] == c], pg)
        tracker.log_figure(figure, f"knockout/class_{metric_name(ctx.images.class_names[c])}.png")
    tracker.log_figure(plots.thesis_knockout(curves, pg, "class_error", shown), "knockout/thesis_class_error.png")
    tracker.log_figure(plots.thesis_knockout(curves, pg, "overall_error", shown),
                       "knockout/thesis_overall_error.png")
    mean = summary[(summary["class"] == -1) & (summary.score == pg)].iloc[0]
    log.info("knockout: %d classes; after %d strongest/weakest (%s): overall error %.3f / %.3f", len(classes),
             after, pg, mean[f"overall_error_after_{after}_strongest"], mean[f"overall_error_after_{after}_weakest"])
    ctx.reports["knockout"] = KnockoutReport(curves, summary, oracle, intact)
