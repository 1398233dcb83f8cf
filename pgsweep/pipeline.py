"""The pipeline behind the `pgsweep` command: config -> data -> stages -> one MLflow run.

Everything is checked before the run starts (config values, each stage's own config
section, data, the model reference), so bad input fails with one line and leaves no
half-written run. A stage is a module of pgsweep.stages (see pgsweep.context),
registered in STAGES by name and imported only when chosen, so a command loads only
the heavy libraries its stages need.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from types import ModuleType
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from pgsweep.config import build, chose, section
from pgsweep.errors import ConfigError
from pgsweep.models.spec import ConvNetSpec, ModelSettings, read_model_config
from pgsweep.settings import DataSettings, TrackingSettings, TrainSettings

if TYPE_CHECKING:  # torch and MLflow load only when a run starts, not for config checks
    from pgsweep.models.checkpoint import TrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: the module that runs it, and what it needs.

    module:      defines run(ctx), and optionally check(ctx)
    needs_model: queries a trained model (model_ref, or `train` earlier in the list)
    section:     the top-level config section it reads (None: it has none)
    config:      "module:function" reading that section into checked settings; a light
                 module (pgsweep.settings), so config errors answer before torch loads
    """

    module: str
    needs_model: bool = True
    section: str | None = None
    config: str | None = None

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def read_config(self, section: Mapping) -> object:
        module, function = self.config.split(":")
        return getattr(importlib.import_module(module), function)(section)


_ANALYSIS_CONFIG = "pgsweep.settings:read_analysis_config"
STAGES: dict[str, Stage] = {
    "train": Stage("pgsweep.stages.train", needs_model=False),
    "evaluate": Stage("pgsweep.stages.evaluate"),
    "adversarial": Stage("pgsweep.stages.adversarial", section="adversarial",
                         config="pgsweep.settings:read_adversarial_config"),
    "rank": Stage("pgsweep.stages.rank", section="analysis", config=_ANALYSIS_CONFIG),
    "knockout": Stage("pgsweep.stages.knockout", section="analysis", config=_ANALYSIS_CONFIG),
    "diagrams": Stage("pgsweep.stages.diagrams", section="analysis", config=_ANALYSIS_CONFIG),
    "features": Stage("pgsweep.stages.features", section="analysis", config=_ANALYSIS_CONFIG),
    "prune": Stage("pgsweep.stages.prune", section="prune", config="pgsweep.settings:read_prune_config"),
}


@dataclass(frozen=True)
class Settings:
    """The validated, plain-Python form of the composed config."""

    data: DataSettings
    architecture: ConvNetSpec | None  # the thesis convnet's layer choices; None for another net
    trainer: TrainSettings
    tracking: TrackingSettings
    stages: tuple[str, ...]
    model_ref: str | None
    stage_settings: dict[str, object]  # each chosen stage's checked config section
    resolved: dict  # the whole resolved config, for params and the YAML artifact
    model: ModelSettings | None = None  # model.net (any net by _target_), model.weights, input_mean/std
    recompute: bool = False  # resumable stages recompute every piece instead of resuming
    threads: int | None = None  # torch's intra-op threads for the run (None: torch's default)


@dataclass(frozen=True)
class PipelineResult:
    run_id: str
    model: "TrainedModel"
    model_uri: str | None
    reports: dict[str, object]


# ---------------------------------------------------------------- config -> settings

def _stage_list(resolved: dict) -> tuple[str, ...]:
    stages = resolved.get("stages") or []
    if isinstance(stages, str):
        stages = [stages]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        problem = f"unknown stage '{unknown[0]}'" if unknown else "no stage given"
        raise ConfigError(f"stages: {problem}; choose from {', '.join(STAGES)}")
    if len(set(stages)) != len(stages):
        raise ConfigError(f"stages: a stage is listed twice in {list(stages)}")
    if "train" in stages and any(STAGES[s].needs_model for s in stages[: stages.index("train")]):
        raise ConfigError(f"stages {list(stages)}: a stage that queries the model comes before train")
    return tuple(stages)


def read_settings(cfg: DictConfig) -> Settings:
    """Validate the composed config and turn it into plain dataclasses."""
    # the job's own part, as Hydra hands it to a job (a composed config may carry Hydra's node)
    cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as error:  # an interpolation that does not resolve
        raise ConfigError(f"config does not resolve: {error}".splitlines()[0]) from None
    seed = resolved.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    recompute = resolved.get("recompute", False)
    if not isinstance(recompute, bool):
        raise ConfigError(f"recompute must be true or false, got {recompute!r}")
    threads = resolved.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1 or null, got {threads!r}")
    data = build(DataSettings, section(resolved, "data"), "data")
    # the classes, channels and pixel statistics come from the data at train time
    model = read_model_config(section(resolved, "model"), data.image_size, need_net=not resolved.get("model_ref"))
    trainer = build(TrainSettings, section(resolved, "trainer"), "trainer", seed=seed)
    tracking = build(TrackingSettings, section(resolved, "tracking"), "tracking")

    stages = _stage_list(resolved)
    stage_settings: dict[str, object] = {}
    for name in stages:
        stage = STAGES[name]
        if stage.section is not None and stage.config is not None:
            stage_settings[name] = stage.read_config(section(resolved, stage.section))
    model_ref = resolved.get("model_ref")
    if "train" in stages and model_ref:
        raise ConfigError("model_ref is set but stages include train: drop one of them")
    if model.weights and ("train" in stages or model_ref):
        raise ConfigError("model.weights are queried as they are: drop train (and model_ref) from this command")
    if "train" not in stages and not model_ref and not model.weights:
        raise ConfigError(f"stages {list(stages)} query a trained model: set model_ref=RUN_ID or a model path "
                          "(or model.weights=PATH with model.net)")
    return Settings(
        data=data,
        architecture=model.thesis,
        model=model,
        trainer=trainer,
        tracking=tracking,
        stages=stages,
        model_ref=str(model_ref) if model_ref else None,
        stage_settings=stage_settings,
        resolved=resolved,
        recompute=recompute,
        threads=threads,
    )


# ---------------------------------------------------------------- the whole run

def with_model_data(settings: Settings, model: "TrainedModel", chosen: Collection[str]) -> Settings:
    """Settings for querying `model`: its recorded data where the user chose none, its architecture.

    The params a run logs come from `resolved`, so it is updated too: a query run
    records the data and split settings it used, not the config's defaults.
    """
    from pgsweep.context import model_data

    data = model_data(model, settings.data, chosen)
    resolved = dict(settings.resolved)
    resolved["data"] = asdict(data)
    recipe = model.recipe
    model_section = resolved.get("model") or {}
    section = recipe.config_section() if recipe is not None else {}
    resolved["model"] = {k: v for k, v in section.items() if k in model_section or k == "net"}
    used = ModelSettings(section.get("net", {}), None, recipe.input_mean if recipe else None,
                         recipe.input_std if recipe else None, model.spec)
    return replace(settings, data=data, architecture=model.spec, model=used, resolved=resolved)


def model_from_weights(settings: Settings, images, split) -> "TrainedModel":
    """model.net with model.weights loaded (weights only), checked against the data, ready to query.

    Its pixel standardisation is model.input_mean / input_std (none when unset), and it records
    the data it is queried on as its provenance, so the model file the run logs works as model_ref.
    """
    from pathlib import Path

    from pgsweep.context import data_provenance
    from pgsweep.models.build import (
        build_network, check_network, load_weights, read_weights, standardize_input, takes_input_standardization,
    )
    from pgsweep.models.checkpoint import TrainedModel

    model = settings.model
    classes = len(images.class_names)
    recipe = model.recipe(classes, int(images.images.shape[1]), images.image_size, 0.0, 1.0)
    network = build_network(recipe, standardize=False)
    load_weights(network, read_weights(model.weights), f"model.weights {model.weights}")
    if not takes_input_standardization(recipe):
        standardize_input(network, recipe)
    check_network(network, images.images[:2], classes, recipe.target)
    provenance = data_provenance(settings.data, images, split)
    provenance["weights"] = str(Path(model.weights).expanduser().resolve())
    return TrainedModel(network, images.class_names, provenance, recipe)


def beside_model(settings: Settings, chosen: Collection[str], origins: dict | None = None) -> tuple[Settings, str | None]:
    """A query run goes into the experiment of the run that logged its model, unless the user
    chose tracking.experiment; returns the settings and that run's id (None: a model file).

    origins: a cache of pgsweep.tracking.model_origin answers, for many jobs of one multirun.
    """
    if not settings.model_ref:
        return settings, None
    from pgsweep.tracking import model_origin

    key = (settings.model_ref, settings.tracking.uri)
    origins = {} if origins is None else origins
    if key not in origins:
        origins[key] = model_origin(*key)
    origin = origins[key]
    if origin is None:
        return settings, None
    if not chose(chosen, "tracking.experiment") and origin.experiment != settings.tracking.experiment:
        resolved = {**settings.resolved, "tracking": {**settings.resolved["tracking"], "experiment": origin.experiment}}
        settings = replace(settings, tracking=replace(settings.tracking, experiment=origin.experiment),
                           resolved=resolved)
    return settings, origin.run_id


def _log_datasets(tracker, data, images, split) -> None:
    """The split's parts as MLflow datasets of the run, each with its context (training, validation, test)."""
    from pgsweep.data import source_path

    source = source_path(data.name, data.root)
    for part, context in (("train", "training"), ("val", "validation"), ("test", "test")):
        indices = getattr(split, part)
        if len(indices):
            tracker.log_dataset(f"{data.name}-{part}", images.images[indices].numpy(),
                                images.labels[indices].numpy(), source, context)


def run_pipeline(cfg: DictConfig, chosen: Collection[str] = ()) -> PipelineResult:
    """Check everything, then run the configured stages inside one MLflow run.

    chosen: the config keys the user set explicitly (`data`, `data.root`, ... as from
    pgsweep.config.override_keys). With model_ref, every data setting not chosen comes
    from what the model records, so querying a model needs no data options.
    """
    settings = read_settings(cfg)  # first: a config error answers before torch or MLflow load
    with torch_threads(settings.threads):  # before anything computes: results depend on the count
        return _run(settings, chosen)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count for the run (None: as it is), put back afterwards.

    A CPU result depends on it (how sums are split across threads), so a job gives the same
    tables whether it runs alone with every core or beside others with one each.
    """
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(settings: Settings, chosen: Collection[str]) -> PipelineResult:
    from pgsweep.context import Context, check_compatible, model_split
    from pgsweep.data import load_dataset, stratified_split
    from pgsweep.provenance import run_facts
    from pgsweep.tracking import MODEL_RUN_TAG, flatten, provenance_tags, resolve_model, tracked_run

    model, model_run_id = None, None
    if settings.model_ref:
        model = resolve_model(settings.model_ref, settings.tracking.uri)
        settings = with_model_data(settings, model, chosen)
        settings, model_run_id = beside_model(settings, chosen)
    data = settings.data
    images = load_dataset(data.name, data.root, data.image_size, data.equalize, data.channels)
    split = stratified_split(
        images.labels.numpy(), images.content_ids, images.class_names,
        data.test_fraction, data.val_fraction, data.split_seed, data.group_duplicates,
    )
    split_source = "config"
    if model is not None:
        check_compatible(model, images)
        recorded = model_split(model, images, split)
        if recorded is not split:  # query the model on its own test images
            split, split_source = recorded, "model"
    log.info(
        "%s: %d images, %d classes; split %s (from the %s); %d duplicate groups (%d images) kept on one side",
        data.name, len(images), len(images.class_names), split.sizes(), split_source,
        split.duplicate_groups, split.duplicate_images,
    )
    if settings.model is not None and settings.model.weights:
        model = model_from_weights(settings, images, split)
    ctx = Context(settings, images, split, model=model, model_uri=settings.model_ref,
                  stage_settings=dict(settings.stage_settings))
    modules = {name: STAGES[name].load() for name in settings.stages}
    for name, module in modules.items():  # each stage's own checks, before the run exists
        check = getattr(module, "check", None)
        if check is not None:
            check(ctx)

    tags = {"pgsweep.stages": ",".join(settings.stages), "pgsweep.data": data.name, **provenance_tags(run_facts())}
    if settings.model_ref:
        tags["pgsweep.model_ref"] = settings.model_ref
    if model_run_id:
        tags[MODEL_RUN_TAG] = model_run_id
    with tracked_run(settings.tracking, tags) as tracker:
        ctx.tracker = tracker
        tracker.log_params(flatten(settings.resolved))
        tracker.log_params({f"split.{k}": v for k, v in split.sizes().items()})
        tracker.log_params({"split.duplicate_groups": split.duplicate_groups,
                            "split.duplicate_images": split.duplicate_images,
                            "split.source": split_source,
                            "split.heldout_curve": "val" if len(split.val) else "test"})
        tracker.log_text(OmegaConf.to_yaml(OmegaConf.create(settings.resolved)), "config.yaml")
        _log_datasets(tracker, data, images, split)
        if settings.model is not None and settings.model.weights:  # so model_ref works on it afterwards
            ctx.model_uri = tracker.log_model(model, example=images.images[:2].numpy(),
                                              registered_name=settings.tracking.register_model)
            tracker.set_tags({"pgsweep.model_uri": ctx.model_uri})
        for name, module in modules.items():
            log.info("stage %s", name)
            module.run(ctx)
    assert ctx.model is not None
    log.info("done: MLflow run %s", tracker.run_id)
    return PipelineResult(tracker.run_id, ctx.model, ctx.model_uri, ctx.reports)
