"""The config's plain dataclasses: data, trainer and tracking settings.

Kept free of heavy imports (no torch, Lightning, MLflow or Ray), so that reading and
checking a config answers in a fraction of a second, stage sections included; the modules
that use them (pgsweep.stages.train, pgsweep.tracking, the stages) re-export them.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pgsweep.config import build
from pgsweep.analyses.choices import (  # noqa: F401  (the stages' names)
    OPTIMIZE_CHOICES, STEP_KINDS, Perturbation, check_optimize, check_steps,
)
from pgsweep.errors import ConfigError, QueryError
from pgsweep.analyses.choices import (  # noqa: F401  (the stages' names)
    DEFAULT_KNOCKOUT_SCORES, DEFAULT_RANK_SCORES, KNOCKOUT_BASELINES, RANK_SCORES,
)
from pgsweep.pg.choices import (  # noqa: F401  (the stages' names)
    CAPTUM_SCORES, ENGINE_SCORES, FILTER_NORMS, PATH_BASELINES, PG_OUTPUTS,
)
from pgsweep.prune import schedule
from pgsweep.prune.schedule import CRITERIA, MODES, SCORE_SPLITS



@dataclass(frozen=True)
class DataSettings:
    name: str = "digits"
    root: str | None = None
    image_size: int = 60
    test_fraction: float = 0.25
    val_fraction: float = 0.0
    group_duplicates: bool = True
    split_seed: int = 0
    equalize: bool = False  # histogram-equalize every image (the thesis did not)
    channels: int = 1  # 1: grayscale; 3: RGB (data=folder reads colour; digits and yale repeat gray)

    def validate(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")


_PROGRESS_BAR = {"auto": None, "true": True, "false": False}


def check_progress_bar(value: str, key: str) -> None:
    if str(value).lower() not in _PROGRESS_BAR:
        raise ConfigError(f"{key} must be auto, true or false, got '{value}'")


def show_progress_bar(value: str, stream) -> bool:
    """auto: only when the bar's stream is a terminal, never into a log file or pipe."""
    choice = _PROGRESS_BAR[str(value).lower()]
    return stream.isatty() if choice is None else choice


@dataclass(frozen=True)
class TrainSettings:
    max_epochs: int = 250
    batch_size: int = 16
    learning_rate: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    accelerator: str = "cpu"
    # auto: only when the bar's stream (stdout) is a terminal, not into a log file or pipe
    progress_bar: str = "auto"
    # train in channels-last memory: auto (the thesis convnet on the CPU), true or false
    channels_last: str = "auto"

    def validate(self) -> None:
        check_optimize(self.channels_last, "trainer.channels_last")
        if self.max_epochs < 1:
            raise ConfigError(f"trainer.max_epochs must be >= 1, got {self.max_epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"trainer.batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"trainer.learning_rate must be a finite number > 0, got {self.learning_rate}")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"trainer.{name} must be a finite number >= 0, got {value}")
        if self.accelerator not in ("cpu", "gpu", "cuda", "auto"):
            raise ConfigError(f"trainer.accelerator must be cpu, gpu or auto, got '{self.accelerator}'")
        check_progress_bar(self.progress_bar, "trainer.progress_bar")

    def show_progress_bar(self) -> bool:
        return show_progress_bar(self.progress_bar, sys.stdout)  # Lightning's bar writes to stdout


@dataclass(frozen=True)
class TrackingSettings:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "pgsweep"
    artifact_location: str | None = None  # default: mlartifacts/ beside a local SQLite store
    run_name: str | None = None
    # A multirun's parent: each job's run nests under it (set by pgsweep.multirun)
    parent_run_id: str | None = None
    # a Model Registry name: the trained model is registered under it (a new version each run)
    register_model: str | None = None

    def validate(self) -> None:
        if not self.uri or "://" not in self.uri and not self.uri.startswith("databricks"):
            raise ConfigError(
                f"tracking.uri '{self.uri}' is not a URI; use sqlite:///PATH.db or http://HOST:PORT"
            )
        if not self.experiment:
            raise ConfigError("tracking.experiment must be a non-empty name")
        if self.parent_run_id is not None and not re.fullmatch(r"[0-9a-f]{32}", self.parent_run_id):
            raise ConfigError(f"tracking.parent_run_id '{self.parent_run_id}' is not an MLflow run id")
        if self.register_model is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(self.register_model)):
            raise ConfigError(f"tracking.register_model '{self.register_model}' is not a model name "
                              "(letters, digits, '_', '.', '-')")

    @property
    def is_server(self) -> bool:
        """Many processes may log at once only to a tracking server, not to a local SQLite file."""
        return self.uri.startswith(("http://", "https://"))


# ---------------------------------------------------------------- the analysis stages (conf/analysis)

ALL_CLASSES = "all"
FIRST_CLASSES = "first"
CONV_LAYERS = "conv"
AUTO_LAYER = "auto"  # analysis.features.layer: the first of the conv layers (act1 on the thesis convnet)
SPLITS = ("test", "train", "all")


@dataclass(frozen=True)
class QuerySettings:
    output: str = "softmax"
    norm: str = "l2"
    layers: tuple[str, ...] = (CONV_LAYERS,)
    image_chunk: int = 128
    baseline: str = "zeros"  # the path's start for integrated_pg, conductance and deeplift
    path_steps: int = 32     # points on that path (Gauss-Legendre, as Captum's default)
    progress_bar: str = "auto"  # the ranking's and the knockout's bars: auto (on a terminal), true, false

    def show_progress_bar(self) -> bool:
        return show_progress_bar(self.progress_bar, sys.stderr)

    def validate(self) -> None:
        check_progress_bar(self.progress_bar, "analysis.progress_bar")
        if self.baseline not in PATH_BASELINES:
            raise ConfigError(f"analysis.baseline must be one of {', '.join(PATH_BASELINES)}, got '{self.baseline}'")
        if self.path_steps < 1:
            raise ConfigError(f"analysis.path_steps must be >= 1, got {self.path_steps}")
        if self.output not in PG_OUTPUTS:
            raise ConfigError(f"analysis.output must be one of {', '.join(PG_OUTPUTS)}, got '{self.output}'")
        if self.norm not in FILTER_NORMS:
            raise ConfigError(f"analysis.norm must be one of {', '.join(FILTER_NORMS)}, got '{self.norm}'")
        if not self.layers:
            raise ConfigError("analysis.layers must name at least one layer (conv: every conv map)")
        if len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"analysis.layers lists a layer twice: {list(self.layers)}")
        if self.image_chunk < 1:
            raise ConfigError(f"analysis.image_chunk must be >= 1, got {self.image_chunk}")


@dataclass(frozen=True)
class RankSettings:
    split: str = "test"
    k: int = 3
    fc_units: bool = False
    scores: tuple[str, ...] = DEFAULT_RANK_SCORES  # one column per score in rank/class_scores.parquet

    def validate(self) -> None:
        unknown = [s for s in self.scores if s not in RANK_SCORES]
        if unknown:
            raise ConfigError(f"analysis.rank.scores: unknown score '{unknown[0]}'; choose from {', '.join(RANK_SCORES)}")
        if not {"pg_softmax", "pg_logit"} <= set(self.scores):
            raise ConfigError("analysis.rank.scores must keep pg_softmax and pg_logit (the thesis table shows both)")
        if len(set(self.scores)) != len(self.scores):
            raise ConfigError(f"analysis.rank.scores lists a score twice: {list(self.scores)}")
        if self.split not in SPLITS:
            raise ConfigError(f"analysis.rank.split must be one of {', '.join(SPLITS)}, got '{self.split}'")
        if self.k < 1:
            raise ConfigError(f"analysis.rank.k must be >= 1, got {self.k}")


MODEL_SEED = "model"


CLASS_FIGURES = ("all", "thesis", "none")


@dataclass(frozen=True)
class KnockoutSettings:
    classes: tuple[str, ...] = (ALL_CLASSES,)
    random_orderings: int = 40
    seed: str = MODEL_SEED  # of the random orders: "model" (from the weights: each model its own) or an integer
    after: int = 10
    all_images: bool = False  # also the class error on all of a class's images (PG and random orderings)
    optimize: str = "auto"  # replay on the network's inference copy: auto (on the CPU), true, false
    scores: tuple[str, ...] = DEFAULT_KNOCKOUT_SCORES  # each one's strongest- and weakest-first orders
    max_steps: int = 64  # knockouts replayed per ordering: the first N (the thesis convnet's 23 in full)
    class_figures: str = "all"  # a knockout/class_<name>.png for: all (each class), thesis (Figures 4.1-4.2's), none

    def validate(self) -> None:
        check_optimize(self.optimize, "analysis.knockout.optimize")
        if self.class_figures not in CLASS_FIGURES:
            raise ConfigError(f"analysis.knockout.class_figures must be one of {', '.join(CLASS_FIGURES)}, "
                              f"got '{self.class_figures}'")
        if self.max_steps < 1:
            raise ConfigError(f"analysis.knockout.max_steps must be >= 1, got {self.max_steps}")
        if self.after > self.max_steps:
            raise ConfigError(f"analysis.knockout.after={self.after} is larger than "
                              f"analysis.knockout.max_steps={self.max_steps}")
        baselines = [s for s in self.scores if s in KNOCKOUT_BASELINES]
        if baselines:
            raise ConfigError(f"analysis.knockout.scores: '{baselines[0]}' is always replayed; list scores only")
        unknown = [s for s in self.scores if s not in RANK_SCORES]
        if unknown:
            raise ConfigError(f"analysis.knockout.scores: unknown score '{unknown[0]}'; "
                              f"choose from {', '.join(RANK_SCORES)}")
        if len(set(self.scores)) != len(self.scores):
            raise ConfigError(f"analysis.knockout.scores lists a score twice: {list(self.scores)}")
        if not self.classes:
            raise ConfigError("analysis.knockout.classes must name classes, or be [all]")
        if self.random_orderings < 0:
            raise ConfigError(f"analysis.knockout.random_orderings must be >= 0, got {self.random_orderings}")
        if self.seed != MODEL_SEED and not re.fullmatch(r"\d+", self.seed):
            raise ConfigError(f"analysis.knockout.seed must be '{MODEL_SEED}' or an integer >= 0, got '{self.seed}'")
        if self.after < 1:
            raise ConfigError(f"analysis.knockout.after must be >= 1, got {self.after}")


@dataclass(frozen=True)
class DiagramSettings:
    classes: tuple[str, ...] = (FIRST_CLASSES,)
    class_count: int = 3
    images_per_class: int = 3

    def validate(self) -> None:
        if not self.classes:
            raise ConfigError("analysis.diagrams.classes must name classes, or be [first]")
        if self.class_count < 1 or self.images_per_class < 1:
            raise ConfigError("analysis.diagrams.class_count and images_per_class must be >= 1")


@dataclass(frozen=True)
class FeatureSettings:
    layer: str = AUTO_LAYER
    images: int = 3
    classes: tuple[str, ...] = (FIRST_CLASSES,)  # the first test image of each class; first: the first `images`

    def validate(self) -> None:
        if self.images < 0:
            raise ConfigError(f"analysis.features.images must be >= 0, got {self.images}")
        if not self.classes:
            raise ConfigError("analysis.features.classes must name classes, or be [first]")


@dataclass(frozen=True)
class AnalysisSettings:
    """The whole `analysis` config group, checked."""

    query: QuerySettings
    rank: RankSettings
    knockout: KnockoutSettings
    diagrams: DiagramSettings
    features: FeatureSettings


_SUBSECTIONS = {"rank": RankSettings, "knockout": KnockoutSettings, "diagrams": DiagramSettings,
                "features": FeatureSettings}


def read_analysis_config(section: Mapping) -> AnalysisSettings:
    """The `analysis` section -> AnalysisSettings; one-line ConfigError for any bad key or value."""
    shared = {k: v for k, v in section.items() if k not in _SUBSECTIONS}
    parts = {}
    for name, kind in _SUBSECTIONS.items():
        values = section.get(name, {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"analysis.{name} must be a mapping of settings")
        parts[name] = build(kind, values, f"analysis.{name}")
    try:
        query = build(QuerySettings, shared, "analysis")
    except ConfigError as error:
        if "unknown config key" in str(error):  # name the subsections among the valid keys
            raise ConfigError(f"{error}, {', '.join(_SUBSECTIONS)}") from None
        raise
    pg = f"pg_{query.output}"
    if pg not in parts["knockout"].scores:  # the thesis's figures and the summary are drawn from it
        raise ConfigError(f"analysis.knockout.scores must keep {pg} (the PG of analysis.output={query.output})")
    return AnalysisSettings(query=query, **parts)


# ---------------------------------------------------------------- the adversarial stage (conf/adversarial, conf/ray)

STEP_RANGES = ("list", "linear", "log", "norms")
IMAGE_SETS = ("test", "val", "train", "all")


@dataclass(frozen=True)
class AdversarialSettings:
    """conf/adversarial: the grid, how images are perturbed, and how it is sharded."""

    images: str = "test"            # the model's split to perturb: test | val | train | all
    max_images: int = 0             # the first N of them (0: all)
    targets: tuple[int, ...] = (0,)  # class indices; [] means every class
    output: str = "softmax"         # y: softmax or logit
    step_kind: str = "raw"          # raw gradient, l2 (unit norm) or sign
    clip: bool = False              # clip x' to [clip_min, clip_max]
    clip_min: float = 0.0
    clip_max: float = 1.0
    step_range: str = "norms"       # list | linear | log | norms (picked from the gradients' norms)
    steps: tuple[float, ...] = (0.0,)  # step_range=list
    step_min: float = 0.0           # linear / log
    step_max: float = 1.0
    step_count: int = 10            # linear / log / norms
    rms_min: float = 0.01           # norms: per-pixel RMS change of the smallest step
    rms_max: float = 0.5            # ... and of the largest
    affine_prefix: str = "auto"     # auto | none | a top-level layer name
    batch_size: int = 64            # perturbed images per forward pass
    optimize: str = "auto"          # run on the network's inference copy: auto (on the CPU), true, false
    images_per_shard: int = 16
    targets_per_shard: int = 0      # 0: all targets in one shard
    output_dir: str = "outputs/adversarial"  # finished shards, one folder per (model, grid)
    progress_bar: str = "auto"      # auto: only on a terminal (stderr); true; false
    examples: int = 3               # Figure 4.5: images shown ...
    example_steps: int = 4          # ... at this many of the steps
    compare_step_kind: str = "none"  # also sweep this step kind over the same pixel changes (none: off)

    def validate(self) -> None:
        if self.images not in IMAGE_SETS:
            raise ConfigError(f"adversarial.images must be one of {', '.join(IMAGE_SETS)}, got '{self.images}'")
        if self.compare_step_kind not in ("none", *STEP_KINDS) or self.compare_step_kind == self.step_kind:
            raise ConfigError(f"adversarial.compare_step_kind must be none or a step kind other than "
                              f"step_kind={self.step_kind} ({', '.join(STEP_KINDS)}), got '{self.compare_step_kind}'")
        if self.compare_step_kind != "none" and self.step_range != "norms":
            raise ConfigError("adversarial.compare_step_kind needs step_range=norms: the kinds are "
                              "compared at the same pixel changes")
        if self.step_range not in STEP_RANGES:
            raise ConfigError(f"adversarial.step_range must be one of {', '.join(STEP_RANGES)}, "
                              f"got '{self.step_range}'")
        try:
            self.perturbation().validate()
            if self.step_range == "list":
                check_steps(self.steps)
        except QueryError as error:
            raise ConfigError(f"adversarial: {error}") from None
        for name in ("max_images", "targets_per_shard", "examples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"adversarial.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "images_per_shard", "step_count", "example_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"adversarial.{name} must be >= 1, got {getattr(self, name)}")
        if self.step_range in ("linear", "log"):
            low = 0.0 if self.step_range == "linear" else math.nextafter(0.0, 1.0)
            if not (math.isfinite(self.step_max) and low <= self.step_min <= self.step_max):
                kind = ">= 0" if self.step_range == "linear" else "> 0"
                raise ConfigError(f"adversarial: need {kind} step_min <= step_max, got "
                                  f"step_min={self.step_min}, step_max={self.step_max}")
        if self.step_range == "norms" and not 0 < self.rms_min <= self.rms_max:
            raise ConfigError(f"adversarial: need 0 < rms_min <= rms_max, got {self.rms_min}, {self.rms_max}")
        check_progress_bar(self.progress_bar, "adversarial.progress_bar")
        check_optimize(self.optimize, "adversarial.optimize")

    def show_progress_bar(self) -> bool:
        return show_progress_bar(self.progress_bar, sys.stderr)  # the sweep's bar writes to stderr

    def perturbation(self) -> Perturbation:
        return Perturbation(self.output, self.step_kind, self.clip, self.clip_min, self.clip_max)

    def fixed_steps(self) -> tuple[float, ...] | None:
        """The step sizes, unless they are picked from the model's gradients (norms)."""
        if self.step_range == "list":
            return check_steps(self.steps)
        import numpy as np  # only when steps are computed, not for config checks

        if self.step_range == "linear":
            return tuple(float(s) for s in np.linspace(self.step_min, self.step_max, self.step_count))
        if self.step_range == "log":
            return tuple(float(s) for s in np.geomspace(self.step_min, self.step_max, self.step_count))
        return None


def read_adversarial_config(values: Mapping) -> AdversarialSettings:
    return build(AdversarialSettings, values, "adversarial")


@dataclass(frozen=True)
class RaySettings:
    """conf/ray: where the tasks run and what each one asks for."""

    enabled: bool = True        # false: run the shards in this process (same tables)
    address: str | None = None  # None: start a local Ray; "auto", HOST:PORT or ray://HOST:PORT: join one
    num_cpus: int = 0           # CPUs of a local Ray (0: all of this machine's)
    task_cpus: float = 1.0      # per task; also the torch threads a task uses
    task_gpus: float = 0.0      # per task; > 0 runs the shard on the worker's GPU
    max_retries: int = 3        # retries of a task whose worker or node dies
    scheduling: str = "DEFAULT"  # or SPREAD: one shard per node in turn
    max_in_flight: int = 0      # shards submitted at once (0: all); bounds the driver's memory

    def validate(self) -> None:
        if self.num_cpus < 0:
            raise ConfigError(f"ray.num_cpus must be >= 0, got {self.num_cpus}")
        if self.task_cpus <= 0 or self.task_gpus < 0:
            raise ConfigError("ray.task_cpus must be > 0 and ray.task_gpus >= 0")
        if self.max_retries < -1:
            raise ConfigError(f"ray.max_retries must be >= -1 (-1: forever), got {self.max_retries}")
        if self.max_in_flight < 0:
            raise ConfigError(f"ray.max_in_flight must be >= 0, got {self.max_in_flight}")
        if self.scheduling not in ("DEFAULT", "SPREAD"):
            raise ConfigError(f"ray.scheduling must be DEFAULT or SPREAD, got '{self.scheduling}'")


@dataclass(frozen=True)
class PruneSettings:
    """conf/prune: which criteria, the schedule, the fine-tuning, what is measured.

    No defaults here: conf/prune/default.yaml is the one place they are written."""

    criteria: tuple[str, ...]
    seeds: tuple[int, ...]      # each criterion runs once per seed (fine-tuning order; random's draw)
    step_fraction: float        # filters removed per step, as a fraction of each layer's width
    final_fraction: float       # ... until this fraction is removed
    mode: str                   # iterative: re-score the fine-tuned network before each step;
                                # one_shot: rank once, prune each fraction from the trained network
    finetune_epochs: int        # SGD epochs on the training images after each step (0: none)
    layers: tuple[str, ...]     # activation maps whose filters may go; conv: every conv map
    score_split: str            # images the data-driven criteria are computed on
    norm: str                   # a filter's score from its map (the PG and loss-gradient criteria)
    image_chunk: int            # images per scoring pass (memory only)
    baseline: str               # the path's start for integrated_pg, conductance and deeplift
    path_steps: int             # points on that path
    latency_batch: int          # images per timed forward pass
    latency_repeats: int        # interleaved rounds timing every network once; the median is logged
    output_dir: str             # finished tasks, one folder per (model, settings): resumable
    progress_bar: str

    def validate(self) -> None:
        if not self.criteria:
            raise ConfigError(f"prune.criteria must name at least one of {', '.join(CRITERIA)}")
        unknown = [c for c in self.criteria if c not in CRITERIA]
        if unknown:
            raise ConfigError(f"prune.criteria: unknown criterion '{unknown[0]}'; choose from {', '.join(CRITERIA)}")
        if len(set(self.criteria)) != len(self.criteria):
            raise ConfigError(f"prune.criteria lists a criterion twice: {list(self.criteria)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"prune.seeds must be distinct integers, at least one, got {list(self.seeds)}")
        for name in ("step_fraction", "final_fraction"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value < 1):
                raise ConfigError(f"prune.{name} must be in [0, 1), got {value}")
        if self.final_fraction == 0:
            raise ConfigError("prune.final_fraction=0 removes no filter: give a fraction in (0, 1)")
        if not 0 < self.step_fraction <= self.final_fraction:
            raise ConfigError(f"prune.step_fraction must be > 0 and <= final_fraction={self.final_fraction}, "
                              f"got {self.step_fraction}")
        if self.mode not in MODES:
            raise ConfigError(f"prune.mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.finetune_epochs < 0:
            raise ConfigError(f"prune.finetune_epochs must be >= 0, got {self.finetune_epochs}")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"prune.layers must name distinct layers (conv: every conv map), got {list(self.layers)}")
        if self.score_split not in SCORE_SPLITS:
            raise ConfigError(f"prune.score_split must be one of {', '.join(SCORE_SPLITS)}, got '{self.score_split}'")
        if self.norm not in FILTER_NORMS:
            raise ConfigError(f"prune.norm must be one of {', '.join(FILTER_NORMS)}, got '{self.norm}'")
        if self.baseline not in PATH_BASELINES:
            raise ConfigError(f"prune.baseline must be one of {', '.join(PATH_BASELINES)}, got '{self.baseline}'")
        for name in ("image_chunk", "path_steps", "latency_batch", "latency_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"prune.{name} must be >= 1, got {getattr(self, name)}")
        check_progress_bar(self.progress_bar, "prune.progress_bar")

    def fractions(self) -> tuple[float, ...]:
        """The fraction of each layer removed after each step: step_fraction, 2 x, ... up to final_fraction."""
        return schedule.fractions(self.step_fraction, self.final_fraction)

    def show_progress_bar(self) -> bool:
        return show_progress_bar(self.progress_bar, sys.stderr)


def read_prune_config(values: Mapping) -> PruneSettings:
    return build(PruneSettings, values, "prune")


def read_prune_config(values: Mapping) -> PruneSettings:
    return build(PruneSettings, values, "prune")
