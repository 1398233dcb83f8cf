"""Stage `rank` (thesis Table 4.2): class-averaged PG per filter; strongest and weakest per class.

Logs under rank/: class_scores.parquet (class x filter, every score), strongest_weakest.parquet,
thesis_table.md (softmax and logit PG side by side), heatmap.png, and the same for FC units
when analysis.rank.fc_units is set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pgsweep import plots
from pgsweep.analyses.ranking import (
    ClassScores, check_rank_scores, class_scores, merge_scores, pick_scores, strongest_weakest,
    thesis_table_markdown,
)
from pgsweep.stages.common import (
    AnalysisSettings, analysis_units, images_of, network_for_checks, require_images,
)
from pgsweep.analyses.units import activation_layers
from pgsweep.errors import ConfigError
from pgsweep.progress import progress_bar

__all__ = ["check", "run", "scores_for", "RankReport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class RankReport:
    scores: ClassScores
    top: pd.DataFrame  # strongest/weakest by the configured output's PG
    fc_scores: ClassScores | None = None


def check(ctx) -> None:
    settings: AnalysisSettings = ctx.stage_settings["rank"]
    units = analysis_units(ctx, settings)
    if settings.rank.k > units.total:
        raise ConfigError(f"analysis.rank.k={settings.rank.k} is larger than the {units.total} filters of {', '.join(units.layers)}")
    check_rank_scores(settings.rank.scores, units)
    if settings.rank.fc_units:
        _fc_layers(ctx)
    require_images(ctx, list(range(len(ctx.images.class_names))), "analysis.rank", settings.rank.split)


def _fc_layers(ctx) -> list[str]:
    spec = ctx.settings.architecture if ctx.model is None else ctx.model.spec
    if spec is not None:
        first = len(spec.conv_channels) + 1
        layers = [f"act{first + i}" for i in range(len(spec.hidden_units))]
    else:  # any other net: its activation modules with (units,) outputs
        layers = activation_layers(network_for_checks(ctx), ctx.images.images[:1], ndim=1)
    if not layers:
        raise ConfigError("analysis.rank.fc_units: the model has no hidden fully connected layer")
    return layers


def scores_for(ctx, settings: AnalysisSettings, names=None) -> ClassScores:
    """The class scores `names` (default: analysis.rank.scores): those the rank stage computed in
    this run are reused, the others computed now (same images and settings)."""
    names = tuple(settings.rank.scores if names is None else names)
    report = ctx.reports.get("rank")
    done = report.scores if isinstance(report, RankReport) else None
    missing = [n for n in names if done is None or n not in done.scores]
    if missing:
        units = analysis_units(ctx, settings, ctx.model.network)
        images, labels, _ = images_of(ctx, settings.rank.split)
        q = settings.query
        train_mean = images_of(ctx, "train")[0].mean(0) if q.baseline == "mean" else None
        with progress_bar(len(images), "rank", q.show_progress_bar(), unit="image") as bar:
            new = class_scores(ctx.model.network, images, labels, ctx.images.class_names, units.layers, q.norm,
                               q.image_chunk, missing, q.output, q.baseline, train_mean, q.path_steps,
                               progress=bar.update)
        done = new if done is None else merge_scores(done, new)
    return pick_scores(done, names)


def _log_ranking(tracker, scores: ClassScores, output: str, k: int, prefix: str) -> pd.DataFrame:
    table = scores.table()
    tracker.log_table(table, f"rank/{prefix}class_scores.parquet")
    tops = {o: strongest_weakest(scores.scores[f"pg_{o}"], scores.units, scores.class_names, k)
            for o in ("softmax", "logit")}
    top = pd.concat([t.assign(output=o) for o, t in tops.items()], ignore_index=True)
    tracker.log_table(top, f"rank/{prefix}strongest_weakest.parquet")
    text = [f"# Strongest and weakest {'units' if prefix else 'filters'} per class (thesis Table 4.2)\n",
            f"Class-averaged PG, {scores.norm} norm over each map, over {int(scores.counts.sum())} images. "
            "Layers and units are numbered from 1 as in the thesis "
            f"(layer 1 = {scores.units.layers[0]}).\n"]
    for o in ("softmax", "logit"):
        text.append(f"\n## PG of the {o}{' (used for the knockout ordering)' if o == output else ''}\n\n")
        text.append(thesis_table_markdown(tops[o], scores.units.layers))
    tracker.log_text("".join(text), f"rank/{prefix}thesis_table.md")
    shown = [s for s in ("pg_softmax", "pg_logit", "loss_gradient", "activation") if s in table]
    figure = plots.ranking_heatmap(table, tuple(shown))
    tracker.log_figure(figure, f"rank/{prefix}heatmap.png")
    return tops[output]


def run(ctx) -> None:
    settings: AnalysisSettings = ctx.stage_settings["rank"]
    tracker = ctx.tracker
    scores = scores_for(ctx, settings)
    top = _log_ranking(tracker, scores, settings.query.output, settings.rank.k, "")
    metrics = {"rank/images": float(scores.counts.sum()), "rank/filters": float(scores.units.total)}
    for o in ("softmax", "logit"):
        per_class = np.nanmean(scores.scores[f"pg_{o}"], axis=1)  # each class's mean filter score
        # how far apart classes' score scales are: softmax saturation makes this large
        metrics[f"rank/pg_{o}/class_scale_ratio"] = float(np.nanmax(per_class) / np.nanmin(per_class))
    tracker.log_metrics(metrics)
    fc_scores = None
    if settings.rank.fc_units:
        images, labels, _ = images_of(ctx, settings.rank.split)
        with progress_bar(len(images), "rank: fc units", settings.query.show_progress_bar(), unit="image") as bar:
            fc_scores = class_scores(ctx.model.network, images, labels, ctx.images.class_names, _fc_layers(ctx),
                                     settings.query.norm, settings.query.image_chunk, progress=bar.update)
        _log_ranking(tracker, fc_scores, settings.query.output, min(settings.rank.k, fc_scores.units.total), "fc_")
    log.info("ranked %d filters for %d classes on %d images", scores.units.total, len(scores.class_names),
             int(scores.counts.sum()))
    ctx.reports["rank"] = RankReport(scores, top, fc_scores)
