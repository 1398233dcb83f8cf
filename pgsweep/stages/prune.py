"""Stage `prune`: every criterion x seed runs the pruning schedule as a Ray task; the driver logs.

Fan-out: the (criterion, seed) tasks are independent and each takes seconds, so they go
through the adversarial sweep's machinery (pgsweep.sweep.run_sweep): one job in Ray's
object store, one task per (criterion, seed), each task's table saved as it arrives in a
folder named by a hash of the model, the data and the settings, so the same command
resumes after an interruption. A Hydra multirun of the criteria would start a job (and a
model load, a data load, an MLflow run) per criterion and seed; this is one run.

Logged under prune/: curves.parquet (a row per criterion, seed and step), summary.parquet
and summary.md (the comparison), error_vs_fraction.png and error_vs_latency.png, and the
final pruned model of every criterion and seed, models/<criterion>_seed<k>/pgsweep-model.pt,
which load_model loads and every stage queries (model_ref=runs:/RUN_ID/prune/models/...).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pgsweep.stages.common import network_for_checks, ray_settings, split_indices
from pgsweep.analyses.units import default_layers, find_units
from pgsweep.errors import ConfigError, ModelError, QueryError
from pgsweep.logs import counted
from pgsweep.models.checkpoint import MODEL_FILE
from pgsweep.prune import plots
from pgsweep.stages.prune_job import PruneJob, PruneTask, read_model
from pgsweep.prune.schedule import check_widths
from pgsweep.prune.summary import comparisons, markdown, summarize
from pgsweep.prune.surgery import coupled_convs, latencies, producing_conv
from pgsweep.settings import CONV_LAYERS, PruneSettings
from pgsweep.sweep.runner import check_address, run_sweep
from pgsweep.sweep.store import open_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneReport:
    curves: pd.DataFrame     # one row per (criterion, seed, step)
    summary: pd.DataFrame    # one row per criterion
    comparisons: pd.DataFrame
    model_uris: dict[tuple[str, int], str]  # (criterion, seed) -> the final pruned model's URI
    folder: Path


def prune_layers(network, settings: PruneSettings, example, say: bool = True) -> dict[str, int]:
    """{activation layer: filters}, in forward order, checked: ConfigError names what is wrong.
    say: log the layers left out (the check before the run passes false: said once, by the run)."""
    layers: list[str] = []
    for layer in settings.layers:
        try:
            layers.extend(default_layers(network, example) if layer == CONV_LAYERS else [layer])
        except QueryError as error:
            raise ConfigError(f"prune.layers: {error}") from None
    if len(set(layers)) != len(layers):
        raise ConfigError(f"prune.layers names a layer twice once conv is expanded: {layers}")
    position = {name: i for i, (name, _) in enumerate(network.named_modules())}
    layers.sort(key=lambda name: position.get(name, -1))
    try:
        units = find_units(network, layers, example)
    except QueryError as error:
        raise ConfigError(f"prune.layers: {error}") from None
    for layer, ndim in zip(units.layers, units.ndims):
        if ndim != 3:
            raise ConfigError(f"prune.layers: {layer} has units, not filter maps; name conv maps (conv: all)")
        try:
            conv = producing_conv(network, layer)
        except ModelError as error:
            raise ConfigError(f"prune.layers: {error}") from None
        if dict(network.named_modules())[conv].out_channels != units.sizes[units.layers.index(layer)]:
            raise ConfigError(f"prune.layers: {layer}'s maps are not the output channels of {conv}")
    sizes = dict(zip(units.layers, units.sizes))
    convs = {layer: producing_conv(network, layer) for layer in sizes}
    tied = coupled_convs(network, list(convs.values()), example)
    layer_of = {conv: layer for layer, conv in convs.items()}
    for layer in list(sizes):
        if convs[layer] not in tied:
            continue
        earlier = layer_of[tied[convs[layer]]]
        if CONV_LAYERS not in settings.layers:  # the user named both
            raise ConfigError(f"prune.layers: {layer} and {earlier} share their channels (a residual connection "
                              f"adds them), so they cannot be pruned as two layers; name one of them")
        if say:
            log.info("prune.layers=[conv]: leaving out %s, whose channels are %s's (a residual connection adds "
                     "them)", layer, earlier)
        del sizes[layer]
    return sizes


def check(ctx) -> None:
    """Layers that exist and are conv maps, a schedule that leaves every layer a filter, images."""
    settings: PruneSettings = ctx.stage_settings["prune"]
    widths = prune_layers(network_for_checks(ctx), settings, ctx.images.images[:1], say=False)
    check_widths(widths, settings.final_fraction)
    for name, which in (("the training", "train"), ("prune.score_split's", settings.score_split), ("the test", "test")):
        if not len(split_indices(ctx, which)):
            raise ConfigError(f"prune: {name} split has no images")
    ray = ray_settings(ctx)
    if ray.enabled:
        check_address(ray.address)


def run(ctx) -> None:
    settings: PruneSettings = ctx.stage_settings["prune"]
    model, tracker = ctx.model, ctx.tracker
    network = model.network.eval()
    widths = prune_layers(network, settings, ctx.images.images[:1])
    check_widths(widths, settings.final_fraction)
    images, labels = ctx.images.images, ctx.images.labels
    train, score, test = (split_indices(ctx, w) for w in ("train", settings.score_split, "test"))
    tasks = tuple(PruneTask(i, criterion, seed) for i, (criterion, seed) in
                  enumerate((c, s) for c in settings.criteria for s in settings.seeds))
    job = PruneJob(model=model, layers=tuple(widths), train_images=images[train], train_labels=labels[train],
                   score_images=images[score], score_labels=labels[score], test_images=images[test],
                   test_labels=labels[test], test_sources=tuple(ctx.images.sources[i] for i in test),
                   settings=settings, trainer=ctx.settings.trainer, tasks=tasks,
                   show_progress=settings.show_progress_bar())
    store = open_store(settings.output_dir, job, ctx.settings.recompute)
    folder = store.folder
    fractions = settings.fractions()
    log.info("prune: %s x %s = %s, %s to %.2f of %s (%s), %s per step -> %s",
             counted(len(settings.criteria), "criterion", "criteria"), counted(len(settings.seeds), "seed"),
             counted(len(tasks), "task"), counted(len(fractions), "step"), settings.final_fraction,
             ", ".join(f"{k} ({v})" for k, v in widths.items()), settings.mode,
             counted(settings.finetune_epochs, "fine-tuning epoch"), folder)
    tracker.log_params({"prune.layers_used": list(widths), "prune.fractions": list(fractions),
                        "prune.task_folder": str(folder.resolve()), "prune.tasks": len(tasks)})
    ray = ray_settings(ctx)
    stats = run_sweep(job, store, ray, progress=settings.show_progress_bar())
    curves = job.gather(store.tables(job.pieces()))
    curves = _timed(curves, job.test_images, settings)
    last = curves.step.max()
    model_files = {(r.criterion, int(r.seed)): r.model_file for r in curves.itertuples() if r.step == last}
    curves = curves.drop(columns="model_file")
    uris = _log_models(tracker, model_files, job.test_images[:2].numpy())
    summary = summarize(curves)
    compared, text = comparisons(summary), markdown(curves)
    tracker.log_table(curves, "prune/curves.parquet")
    tracker.log_table(summary, "prune/summary.parquet")
    tracker.log_text(text, "prune/summary.md")
    tracker.log_figure(plots.error_vs_fraction(curves), "prune/error_vs_fraction.png")
    tracker.log_figure(plots.error_vs_latency(curves), "prune/error_vs_latency.png")
    means = curves.groupby(["criterion", "step"], sort=False).mean(numeric_only=True).reset_index()
    for row in means.itertuples():
        tracker.log_metrics({f"prune/{row.criterion}/test_error": row.test_error,
                             f"prune/{row.criterion}/test_error_before": row.test_error_before,
                             f"prune/{row.criterion}/latency_ms": row.latency_ms}, step=int(row.step))
    for row in summary.itertuples():
        tracker.log_metrics({f"prune/{row.criterion}/final_test_error_mean": row.test_error_mean,
                             f"prune/{row.criterion}/final_test_error_sd": row.test_error_sd,
                             f"prune/{row.criterion}/mean_over_steps": row.mean_over_steps})
    tracker.log_metrics({"prune/tasks_computed": float(stats.computed), "prune/tasks_resumed": float(stats.resumed),
                         "prune/seconds": stats.seconds})
    log.info("prune: %d tasks (%d computed, %d resumed) in %.1fs\n%s", len(tasks), stats.computed, stats.resumed,
             stats.seconds, text)
    ctx.reports["prune"] = PruneReport(curves, summary, compared, uris, folder)


def _timed(curves: pd.DataFrame, test_images, settings: PruneSettings) -> pd.DataFrame:
    """latency_ms of every row's network, all timed here side by side after the tasks (on one
    thread, interleaved rounds), so no task's number depends on what ran beside it."""
    started = time.perf_counter()
    repeat = -(-settings.latency_batch // len(test_images))
    batch = test_images.repeat(repeat, 1, 1, 1)[: settings.latency_batch].contiguous()
    networks = [read_model(data).network for data in curves.model_file]
    seconds = latencies(networks, batch, settings.latency_repeats)
    log.info("prune: timed %d networks x %d rounds in %.1fs", len(networks), settings.latency_repeats,
             time.perf_counter() - started)
    return curves.assign(latency_ms=[1000 * t for t in seconds], latency_batch=settings.latency_batch)


def _log_models(tracker, model_files: dict[tuple[str, int], bytes], example) -> dict[tuple[str, int], str]:
    """Each final pruned model as prune/models/<criterion>_seed<k>/pgsweep-model.pt, and as the
    MLflow model pruned_<criterion>_seed<k> (each loaded once already, when it was timed)."""
    uris = {}
    for (criterion, seed), data in model_files.items():
        name = f"{criterion}_seed{seed}"
        uris[(criterion, seed)] = tracker.log_model(read_model(data), example, artifact_dir=f"prune/models/{name}",
                                                    name=f"pruned_{name}")
    return uris
