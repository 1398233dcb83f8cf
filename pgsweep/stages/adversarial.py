"""Stage `adversarial`: the targeted perturbation sweep of thesis section 4.4, on Ray.

Every (test image, target class, step size): x' = x + s * direction(d y_t / d x), and the
prediction on x'. The grid is cut into shards (images x targets); each shard is a Ray
task; the driver saves each shard's table as it arrives (resumable), then logs the full
table, per-step and per-target summaries and Figures 4.5-4.7 to MLflow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pgsweep.analyses import adversarial as math_
from pgsweep.errors import ConfigError, QueryError
from pgsweep.logs import counted
from pgsweep.settings import AdversarialSettings, RaySettings, check_optimize
from pgsweep.stages.common import predict_logits, ray_settings
from pgsweep.sweep.grid import SweepJob
from pgsweep.sweep.runner import SweepStats, check_address, ray_session, run_sweep
from pgsweep.sweep.store import ShardStore, open_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdversarialReport:
    results: pd.DataFrame      # one row per (image, target, step)
    per_step: pd.DataFrame
    per_target: pd.DataFrame
    easiest: pd.DataFrame
    steps: tuple[float, ...]
    affine_prefix: str | None
    folder: Path
    stats: SweepStats


def check(ctx) -> None:
    """Targets within the model's classes, a usable affine prefix, a reachable cluster."""
    settings: AdversarialSettings = ctx.stage_settings["adversarial"]
    classes = len(ctx.model.class_names) if ctx.model is not None else len(ctx.images.class_names)
    bad = [t for t in settings.targets if not 0 <= t < classes]
    if bad:
        raise ConfigError(f"adversarial.targets: class {bad[0]} is outside the model's {classes} classes (0..{classes - 1})")
    if ctx.model is not None and settings.affine_prefix not in ("auto", "none"):
        try:
            math_.split_at(ctx.model.network, settings.affine_prefix)
        except QueryError as error:
            raise ConfigError(f"adversarial.affine_prefix: {error}") from None
    ray = ray_settings(ctx)
    if ray.enabled:
        check_address(ray.address)


def _image_indices(ctx, settings: AdversarialSettings) -> np.ndarray:
    if settings.images == "all":
        indices = np.arange(len(ctx.images))
    else:
        indices = np.asarray(getattr(ctx.split, settings.images), dtype=np.int64)
    if settings.max_images:
        indices = indices[: settings.max_images]
    if not len(indices):
        raise ConfigError(f"adversarial.images: the model's {settings.images} split is empty")
    return indices


def _sweep(ctx, settings: AdversarialSettings, ray: RaySettings, images, labels, indices, targets,
           norms: pd.DataFrame, step_kind: str, log_params: bool):
    """One sweep of the grid with one step kind: (job, its shards' results, stats, folder)."""
    model, tracker, network = ctx.model, ctx.tracker, ctx.model.network
    perturbation = replace(settings.perturbation(), step_kind=step_kind)
    steps = settings.fixed_steps() or math_.steps_from_norms(
        norms, step_kind, int(np.prod(images.shape[1:])), settings.rms_min, settings.rms_max, settings.step_count)
    prefix = {"auto": math_.find_affine_prefix(network, images[:1]), "none": None}.get(settings.affine_prefix,
                                                                              settings.affine_prefix)
    job = SweepJob(
        model=model, images=images.contiguous(), labels=labels, image_ids=tuple(int(i) for i in indices),
        targets=tuple(targets), steps=steps, perturbation=perturbation,
        affine_prefix=None if perturbation.clip else prefix,
        images_per_shard=settings.images_per_shard, targets_per_shard=settings.targets_per_shard or len(targets),
        batch_size=settings.batch_size, optimize=check_optimize(settings.optimize, "adversarial.optimize"),
    )
    shards = job.pieces()
    store = open_store(settings.output_dir, job, ctx.settings.recompute)
    folder = store.folder
    log.info("adversarial sweep (%s steps): %s x %s x %s = %s in %s -> %s", step_kind,
             counted(len(indices), "image"), counted(len(targets), "target"), counted(len(steps), "step"),
             counted(len(indices) * len(targets) * len(steps), "point"), counted(len(shards), "shard"), folder)
    if log_params:
        tracker.log_params({"adversarial.steps_used": [round(s, 8) for s in steps],
                            "adversarial.affine_prefix_used": job.affine_prefix,
                            "adversarial.shard_folder": str(folder.resolve()),
                            "adversarial.shards": len(shards)})
    stats = run_sweep(job, store, ray, progress=settings.show_progress_bar())
    if log_params:
        tracker.log_params({"adversarial.inference_copy_used": _copy_used(store)})
    return job, job.gather(store.tables(shards)), stats, folder


def _copy_used(store: ShardStore) -> bool | str:
    """Whether the shards ran on the inference copy: true, false, or "some" (every shard checks
    the copy on the same images and targets, but a resumed sweep may hold shards that another
    machine, rounding otherwise, computed)."""
    used = {record["inference_copy_used"] for record in store.finished().values() if "inference_copy_used" in record}
    return used.pop() if len(used) == 1 else ("some" if used else "unknown")


def run(ctx) -> None:
    settings: AdversarialSettings = ctx.stage_settings["adversarial"]
    ray = ray_settings(ctx)
    model, tracker = ctx.model, ctx.tracker
    network = model.network.eval()
    indices = _image_indices(ctx, settings)
    images, labels = ctx.images.images[indices], ctx.images.labels[indices]
    targets = settings.targets or tuple(range(len(model.class_names)))
    norms = math_.gradient_norms(network, images[:64], labels[:64], targets, settings.output, indices[:64])
    tracker.log_table(norms, "adversarial/gradient_norms.parquet")
    kinds = [settings.step_kind] + ([settings.compare_step_kind] if settings.compare_step_kind != "none" else [])
    by_kind = []
    # one Ray for every sweep of the stage (and, in a multirun, for every job: see keep_ray_between_jobs)
    with ray_session(ray) if ray.enabled else nullcontext():
        for kind in kinds:
            job, results, stats, folder = _sweep(ctx, settings, ray, images, labels, indices, targets, norms,
                                                 kind, log_params=kind == settings.step_kind)
            per_step, per_target = math_.summaries(results)
            if kind == settings.step_kind:
                main = (job, results, per_step, per_target, stats, folder)
            else:
                tracker.log_table(per_target, f"adversarial/{kind}_per_target.parquet")
                tracker.log_metrics({f"adversarial/{kind}/mean_success": float(per_step.success.mean()),
                                     f"adversarial/{kind}/mean_induced_error": float(per_step.induced_error.mean())})
            by_kind.append(math_.by_pixel_rms(results).assign(step_kind=kind))
    job, results, per_step, per_target, stats, folder = main
    easiest = math_.easiest_targets(per_target)
    _log(ctx, settings, results, per_step, per_target, easiest, stats, job)
    if len(by_kind) > 1:
        from pgsweep import plots

        table = pd.concat(by_kind, ignore_index=True)
        tracker.log_table(table, "adversarial/step_kinds.parquet")
        tracker.log_figure(plots.step_kinds(table), "adversarial/step_kinds.png")
    ctx.reports["adversarial"] = AdversarialReport(
        results, per_step, per_target, easiest, job.steps, job.affine_prefix, folder, stats)


def _log(ctx, settings, results, per_step, per_target, easiest, stats: SweepStats, job: SweepJob) -> None:
    from pgsweep import plots

    tracker, model = ctx.tracker, ctx.model
    names = pd.DataFrame({"image": list(job.image_ids),
                          "source": [ctx.images.sources[i] for i in job.image_ids],
                          "label": job.labels.numpy(),
                          "class_name": [model.class_names[int(c)] for c in job.labels]})
    easiest = easiest.assign(class_name=[model.class_names[int(t)] for t in easiest.target])
    for name, table in (("results", results), ("per_step", per_step), ("per_target", per_target),
                        ("easiest_targets", easiest), ("images", names)):
        tracker.log_table(table, f"adversarial/{name}.parquet")
    for row in per_step.itertuples():
        tracker.log_metrics({"adversarial/success": row.success, "adversarial/induced_error": row.induced_error,
                             "adversarial/step_size": row.step}, step=int(row.step_index))
    tracker.log_metrics({
        "adversarial/points": float(len(results)),
        "adversarial/shards_computed": float(stats.computed),
        "adversarial/shards_resumed": float(stats.resumed),
        "adversarial/nodes": float(len(stats.nodes)),
        "adversarial/seconds": stats.seconds,
        "adversarial/points_per_second": stats.points_per_second,
        "adversarial/mean_success": float(per_step.success.mean()),
        "adversarial/mean_induced_error": float(per_step.induced_error.mean()),
    })
    names_of = model.class_names
    tracker.log_figure(plots.adversarial_success(per_target, per_step, names_of), "adversarial/fig4_6_success.png")
    tracker.log_figure(plots.adversarial_induced_error(per_target, per_step, names_of),
                       "adversarial/fig4_7_induced_error.png")
    examples = _examples(model.network, job, results, settings, model.class_names) if settings.examples else None
    if examples is not None:
        examples, pixels, titles, rows = examples
        tracker.log_table(examples, "adversarial/examples.parquet")
        tracker.log_figure(plots.adversarial_examples(pixels, titles, rows), "adversarial/fig4_5_examples.png")
    log.info("%s", summary_line(per_step, easiest, model.class_names))


def summary_line(per_step: pd.DataFrame, easiest: pd.DataFrame, class_names: Sequence[str]) -> str:
    """The stage's last log line: mean success and induced error, the easiest targets by name."""
    return (f"adversarial: mean success {per_step.success.mean():.3f}, mean induced error "
            f"{per_step.induced_error.mean():.3f} over {counted(len(per_step), 'step')}; easiest targets "
            + ", ".join(class_names[int(t)] for t in easiest.target[:3]))


def _examples(network, job: SweepJob, results: pd.DataFrame, settings, class_names):
    """Figure 4.5's data: a few images, each toward the target it reaches at the smallest step
    (step_index -1 is the original image); images whose only target is their own class are
    skipped, and None is returned when no image has another target."""
    step_columns = sorted(set(np.linspace(0, len(job.steps) - 1, settings.example_steps).round().astype(int)))
    rows, pixels, titles, labels = [], [], [], []
    for position in range(len(job.image_ids)):
        if len(labels) == settings.examples:
            break
        image_id = job.image_ids[position]
        own = results[(results.image == image_id) & (results.target != results.label)]
        if own.empty:  # its only target is its own class: nothing to show it moved toward
            continue
        hits = own[own.success]
        target = int(hits.sort_values(["step_index", "target"]).target.iloc[0]) if len(hits) else int(own.target.iloc[0])
        image = job.images[position : position + 1]
        moved = math_.perturbed_images(network, image, [target],
                                       [job.steps[k] for k in step_columns], job.perturbation)[0, 0]  # (K, 1, H, W)
        original = torch.softmax(predict_logits(network, image), 1)[0]
        label = int(job.labels[position])
        rows.append({"image": image_id, "target": target, "step_index": -1, "step": 0.0,
                     "true_confidence": float(original[label]), "target_confidence": float(original[target]),
                     "prediction": int(original.argmax()),
                     "pixels": image[0].numpy().astype(np.float32).ravel().tolist()})
        image_titles = [f"original\nt={original[label]:.2f} y={original[target]:.2f}"]
        for column, k in enumerate(step_columns):
            point = own[(own.target == target) & (own.step_index == k)].iloc[0]
            rows.append({"image": image_id, "target": target, "step_index": int(k), "step": job.steps[k],
                         "true_confidence": float(point.true_confidence),
                         "target_confidence": float(point.target_confidence),
                         "prediction": int(point.prediction),
                         "pixels": moved[column].numpy().astype(np.float32).ravel().tolist()})
            image_titles.append(f"s={job.steps[k]:.3g}\nt={point.true_confidence:.2f} y={point.target_confidence:.2f}")
        pixels.append(torch.cat([image, moved.clamp(0, 1)]).numpy())  # (1 + K, C, H, W)
        titles.append(image_titles)
        labels.append(f"{class_names[label]} -> {class_names[target]}")
    if not pixels:  # every image's only target was its own class
        return None
    return pd.DataFrame(rows), np.stack(pixels), titles, labels
