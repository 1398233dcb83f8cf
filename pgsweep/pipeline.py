"""The pipeline behind the `pgsweep` command: config -> data -> stages -> one MLflow run.

Everything is checked before the run starts (config values, data, the model
reference), so bad input fails with one line and leaves no half-written run.
Stages are plain functions over a shared context; later stages (PG queries,
knockout, adversarial sweeps) register here the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pgsweep.data import ImageSet, Split, load_dataset, stratified_split
from pgsweep.errors import ConfigError, ModelError
from pgsweep.evaluate import ErrorReport, split_reports
from pgsweep.models.checkpoint import TrainedModel
from pgsweep.models.convnet import ConvNetSpec
from pgsweep.tracking import Tracker, TrackingSettings, flatten, resolve_model, tracked_run
from pgsweep.train import TrainReport, TrainSettings, train_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSettings:
    name: str = "digits"
    root: str | None = None
    image_size: int = 60
    test_fraction: float = 0.25
    val_fraction: float = 0.0
    group_duplicates: bool = True
    split_seed: int = 0


@dataclass(frozen=True)
class Settings:
    """The validated, plain-Python form of the composed config."""

    data: DataSettings
    architecture: ConvNetSpec
    trainer: TrainSettings
    tracking: TrackingSettings
    stages: tuple[str, ...]
    model_ref: str | None
    resolved: dict  # the whole resolved config, for params and the YAML artifact


@dataclass
class Context:
    """What stages share: the data, the split, the model, the run, and their reports."""

    settings: Settings
    images: ImageSet
    split: Split
    tracker: Tracker
    model: TrainedModel | None = None
    model_uri: str | None = None
    reports: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineResult:
    run_id: str
    model: TrainedModel
    model_uri: str | None
    reports: dict[str, object]


# ---------------------------------------------------------------- config -> settings

def _section(resolved: Mapping, name: str) -> Mapping:
    section = resolved.get(name)
    if not isinstance(section, Mapping):
        raise ConfigError(f"config section '{name}' is missing or not a mapping")
    return section


def _build(kind: type, section: Mapping, prefix: str, **fixed: object):
    """Make dataclass `kind` from a config section, converting and checking each type.

    Fields given in `fixed` come from elsewhere (the data, the seed) and are not config keys.
    """
    known = {f.name: f for f in fields(kind) if f.name not in fixed}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key {prefix}.{unknown[0]}; valid keys: {', '.join(known)}")
    values: dict[str, object] = dict(fixed)
    for name, value in section.items():
        default = known[name].default
        try:
            if value is None or value == "???":
                if default is not None:  # only optional keys may be left unset
                    raise ConfigError(f"{prefix}.{name} is required")
                values[name] = None
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError
                values[name] = value
            elif isinstance(default, int):
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError
                values[name] = int(value)
            elif isinstance(default, float):
                values[name] = float(value)
            elif isinstance(default, tuple):
                values[name] = tuple(int(v) for v in value)
            else:
                values[name] = str(value)
        except (TypeError, ValueError, OverflowError):
            expected = type(default).__name__ if default is not None else "text"
            raise ConfigError(f"{prefix}.{name} must be {expected}, got {value!r}") from None
    return kind(**values)


STAGES: dict[str, Callable[[Context], None]] = {}


def read_settings(cfg: DictConfig) -> Settings:
    """Validate the composed config and turn it into plain dataclasses."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as error:  # an interpolation that does not resolve
        raise ConfigError(f"config does not resolve: {error}".splitlines()[0]) from None
    resolved = {k: v for k, v in resolved.items() if k != "hydra"}
    seed = resolved.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    data = _build(DataSettings, _section(resolved, "data"), "data")
    # the classes, channels and pixel statistics come from the data at train time
    architecture = _build(
        ConvNetSpec, _section(resolved, "model"), "model",
        num_classes=2, input_size=data.image_size, in_channels=1, input_mean=0.0, input_std=1.0,
    )
    architecture.validate()
    trainer = _build(TrainSettings, _section(resolved, "trainer"), "trainer", seed=seed)
    trainer.validate()
    tracking = _build(TrackingSettings, _section(resolved, "tracking"), "tracking")
    tracking.validate()

    stages = resolved.get("stages") or []
    if isinstance(stages, str):
        stages = [stages]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        problem = f"unknown stage '{unknown[0]}'" if unknown else "no stage given"
        raise ConfigError(f"stages: {problem}; choose from {', '.join(STAGES)}")
    model_ref = resolved.get("model_ref")
    if "train" in stages and model_ref:
        raise ConfigError("model_ref is set but stages include train: drop one of them")
    if "train" not in stages and not model_ref:
        raise ConfigError(f"stages {list(stages)} query a trained model: set model_ref=RUN_ID or a model path")
    return Settings(
        data=data,
        architecture=architecture,
        trainer=trainer,
        tracking=tracking,
        stages=tuple(stages),
        model_ref=str(model_ref) if model_ref else None,
        resolved=resolved,
    )


# ---------------------------------------------------------------- stages

def _log_reports(tracker: Tracker, reports: list[ErrorReport | None], prefix: str, step: int) -> None:
    for report in reports:
        if report is not None:
            tracker.log_metrics(report.metrics(prefix), step=step)


def train_stage(ctx: Context) -> None:
    """Fit the convnet; log its per-epoch curves, its final errors and the model file.

    Curves (step = epoch): train_loss/train_error (mean over the epoch's batches) and
    val_loss/val_error, or test_loss/test_error when there is no val split. After
    training, in eval mode: final_{train,val,test}_{error,loss,misclassified}.
    """
    settings = ctx.settings
    model, report = train_model(
        ctx.images,
        ctx.split,
        settings.architecture,
        settings.trainer,
        on_epoch_end=ctx.tracker.log_metrics,
        provenance=data_provenance(settings.data, ctx.images, ctx.split),
    )
    _log_reports(ctx.tracker, [report.train, report.val, report.test], "final_", step=report.epochs)
    ctx.tracker.log_metrics({"train_seconds": report.seconds}, step=report.epochs)
    ctx.tracker.log_text("\n".join(report.test.wrong) + "\n", "errors/test_misclassified.txt")
    ctx.model = model
    ctx.model_uri = ctx.tracker.log_model(model)
    ctx.tracker.set_tags({"pgsweep.model_uri": ctx.model_uri})
    ctx.reports["train"] = report


def evaluate_stage(ctx: Context) -> None:
    """Error of the model on the train/val/test images it was split with."""
    assert ctx.model is not None
    split = model_split(ctx.model, ctx.images, ctx.split)
    reports = split_reports(ctx.model.network, ctx.images, split)
    _log_reports(ctx.tracker, list(reports.values()), "eval_", step=0)
    for r in reports.values():
        log.info("%s error %.4f (%d of %d)", r.split, r.error, r.misclassified, r.images)
    ctx.reports["evaluate"] = reports


STAGES.update({"train": train_stage, "evaluate": evaluate_stage})


# ---------------------------------------------------------------- data <-> model

def data_provenance(data: DataSettings, images: ImageSet, split: Split) -> dict:
    """What a saved model records of its data, so later stages reuse the same test set."""
    return {
        "dataset": data.name,
        "image_size": data.image_size,
        "split_seed": data.split_seed,
        "test_fraction": data.test_fraction,
        "val_fraction": data.val_fraction,
        "group_duplicates": data.group_duplicates,
        "test_sources": [images.sources[i] for i in split.test],
        "val_sources": [images.sources[i] for i in split.val],
    }


def check_compatible(model: TrainedModel, images: ImageSet) -> None:
    if tuple(model.class_names) != tuple(images.class_names):
        shown = ", ".join(model.class_names[:4])
        raise ModelError(
            f"the model's {len(model.class_names)} classes ({shown}, ...) differ from the data's "
            f"{len(images.class_names)} classes ({', '.join(images.class_names[:4])}, ...)"
        )
    if model.spec.input_size != images.image_size:
        raise ModelError(
            f"the model takes {model.spec.input_size}x{model.spec.input_size} images; "
            f"set data.image_size={model.spec.input_size}"
        )


def model_split(model: TrainedModel, images: ImageSet, fallback: Split) -> Split:
    """The model's own val/test images when they are all in `images`, else `fallback`."""
    recorded_test = model.provenance.get("test_sources") or []
    recorded_val = model.provenance.get("val_sources") or []
    index_of = {source: i for i, source in enumerate(images.sources)}
    if not recorded_test or any(s not in index_of for s in [*recorded_test, *recorded_val]):
        log.warning("the model's test images are not all in this dataset: using this config's split")
        return fallback
    test = np.array(sorted(index_of[s] for s in recorded_test), dtype=np.int64)
    val = np.array(sorted(index_of[s] for s in recorded_val), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(images)), np.concatenate([test, val]))
    return Split(train, val, test, fallback.duplicate_groups, fallback.duplicate_images)


# ---------------------------------------------------------------- the whole run

def run_pipeline(cfg: DictConfig) -> PipelineResult:
    """Check everything, then run the configured stages inside one MLflow run."""
    settings = read_settings(cfg)
    data = settings.data
    images = load_dataset(data.name, data.root, data.image_size)
    split = stratified_split(
        images.labels.numpy(), images.content_ids, images.class_names,
        data.test_fraction, data.val_fraction, data.split_seed, data.group_duplicates,
    )
    log.info(
        "%s: %d images, %d classes; split %s; %d duplicate groups (%d images) kept on one side",
        data.name, len(images), len(images.class_names), split.sizes(),
        split.duplicate_groups, split.duplicate_images,
    )
    model = None
    if settings.model_ref:
        model = resolve_model(settings.model_ref, settings.tracking.uri)
        check_compatible(model, images)

    tags = {"pgsweep.stages": ",".join(settings.stages), "pgsweep.data": data.name}
    with tracked_run(settings.tracking, tags) as tracker:
        tracker.log_params(flatten(settings.resolved))
        tracker.log_params({f"split.{k}": v for k, v in split.sizes().items()})
        tracker.log_params({"split.duplicate_groups": split.duplicate_groups,
                            "split.duplicate_images": split.duplicate_images,
                            "split.heldout_curve": "val" if len(split.val) else "test"})
        tracker.log_text(OmegaConf.to_yaml(OmegaConf.create(settings.resolved)), "config.yaml")
        ctx = Context(settings, images, split, tracker, model=model, model_uri=settings.model_ref)
        for stage in settings.stages:
            log.info("stage %s", stage)
            STAGES[stage](ctx)
    assert ctx.model is not None
    log.info("done: MLflow run %s", tracker.run_id)
    return PipelineResult(tracker.run_id, ctx.model, ctx.model_uri, ctx.reports)
