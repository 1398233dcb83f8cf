"""Fit a classifier (the thesis convnet, or any net by `_target_`) on an ImageSet split with Lightning; returns the model in eval mode."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, TensorDataset

from pgsweep.context import Context, data_provenance
from pgsweep.data import ImageSet, Split
from pgsweep.errors import ConfigError, Interrupted
from pgsweep.stages.common import ErrorReport, determinism_restored, log_misclassified, quiet_lightning, split_reports
from pgsweep.models.checkpoint import TrainedModel
from pgsweep.models.build import build_network
from pgsweep.models.spec import THESIS_TARGET, ConvNetSpec, ModelRecipe, ModelSettings
from pgsweep.models.lightning import ClassifierModule
from pgsweep.settings import TrainSettings  # noqa: F401  (its home is light, for fast config checks)

log = logging.getLogger(__name__)

EpochSink = Callable[[dict[str, float], int], None]
BatchSink = Callable[[list[tuple[dict[str, float], int]]], None]


@dataclass(frozen=True)
class TrainReport:
    epochs: int
    seconds: float
    train: ErrorReport
    test: ErrorReport
    val: ErrorReport | None
    all: ErrorReport | None = None  # every image of the data set, train and test together


class _EpochMetrics(pl.Callback):
    """Hands each epoch's aggregated metrics to a sink (the tracker), step = epoch number.

    The epochs are handed on in batches, every `every_seconds` and when training stops: an
    MLflow store call per epoch (a database commit each) took about a sixth of the thesis
    net's training time, and the curves still grow in the MLflow UI as it trains.
    """

    def __init__(self, sink: BatchSink, every_seconds: float = 5.0) -> None:
        self.sink, self.every_seconds = sink, every_seconds
        self.pending: list[tuple[dict[str, float], int]] = []
        self.last = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        self.pending.append((metrics, trainer.current_epoch + 1))
        if time.monotonic() - self.last >= self.every_seconds:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.sink(self.pending)
            self.pending = []
        self.last = time.monotonic()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.flush()  # the epochs done before an interruption stay in the run


def _epoch_callbacks(on_epoch_end: EpochSink | None, on_epochs: BatchSink | None) -> list[pl.Callback]:
    callbacks = [_EpochMetrics(on_epochs)] if on_epochs else []
    if on_epoch_end:  # called as each epoch ends
        callbacks.append(_EpochMetrics(lambda epochs: [on_epoch_end(*epoch) for epoch in epochs], every_seconds=0.0))
    return callbacks


def _loader(images: ImageSet, indices, batch_size: int, shuffle: bool) -> DataLoader:
    dataset = TensorDataset(images.images[indices], images.labels[indices])
    # in-memory tensors: worker processes would only add start-up time
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)


def trains_channels_last(settings: TrainSettings, is_thesis: bool) -> bool:
    """trainer.channels_last: auto is the thesis convnet on the CPU (measured there,
    benchmarks/bench_train.py; a custom net may reshape with .view, which channels-last refuses)."""
    word = str(settings.channels_last).lower()
    if word != "auto":
        return word == "true"
    on_cpu = settings.accelerator == "cpu" or (settings.accelerator == "auto" and not torch.cuda.is_available())
    return is_thesis and on_cpu


def train_model(
    images: ImageSet,
    split: Split,
    architecture: ConvNetSpec | ModelSettings,
    settings: TrainSettings,
    on_epoch_end: EpochSink | None = None,
    on_epochs: BatchSink | None = None,
    provenance: dict | None = None,
) -> tuple[TrainedModel, TrainReport]:
    """Train from scratch, seeded and deterministic on CPU; test error measured at the end.

    architecture: the thesis convnet's layer choices (a ConvNetSpec), or the `model` config
    section (any net by `_target_`). The data-dependent parts (classes, channels, input size,
    the training split's pixel mean/std, unless model.input_mean/input_std are given) are
    filled in here. The per-epoch held-out curve runs on the val split, or on the test
    split when there is none (no model selection is done on it). on_epoch_end(metrics, epoch)
    is called as each epoch ends; on_epochs([(metrics, epoch), ...]) gets the same in batches,
    every few seconds and when training stops (the tracker's: one store call per batch).
    """
    settings.validate()
    quiet_lightning()
    train_pixels = images.images[split.train]
    if isinstance(architecture, ConvNetSpec):
        architecture = ModelSettings({"_target_": THESIS_TARGET, **ModelRecipe.thesis(architecture).arguments},
                                     thesis=architecture)
    recipe = architecture.recipe(
        num_classes=len(images.class_names),
        in_channels=int(images.images.shape[1]),
        input_size=images.image_size,
        input_mean=float(train_pixels.mean()),
        input_std=float(train_pixels.std().clamp_min(1e-6)),
    )
    if recipe.is_thesis:
        recipe.spec().validate()
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    network = build_network(recipe)
    channels_last = trains_channels_last(settings, recipe.is_thesis)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    heldout_name, heldout = ("val", split.val) if len(split.val) else ("test", split.test)
    module = ClassifierModule(
        network,
        learning_rate=settings.learning_rate,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        heldout_name=heldout_name,
        channels_last=channels_last,
    )
    # Lightning's deterministic=True switches torch's deterministic algorithms on for the process
    with determinism_restored():
        trainer = pl.Trainer(
            max_epochs=settings.max_epochs,
            accelerator=settings.accelerator,
            devices=1,
            deterministic=True,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=settings.show_progress_bar(),
            callbacks=_epoch_callbacks(on_epoch_end, on_epochs),
            num_sanity_val_steps=0,
            log_every_n_steps=1,
        )
        started = time.perf_counter()
        try:
            trainer.fit(
                module,
                train_dataloaders=_loader(images, split.train, settings.batch_size, shuffle=True),
                val_dataloaders=_loader(images, heldout, 256, shuffle=False),
            )
        except SIGTERMException:
            # Lightning turns SIGTERM into an exit with status 0: a scheduler would record success
            raise Interrupted(signal.SIGTERM) from None
        except SystemExit:
            if trainer.interrupted:  # Lightning swallows Ctrl-C and exits 1; let the caller see it
                raise KeyboardInterrupt from None
            raise
    seconds = time.perf_counter() - started
    network = network.to(memory_format=torch.contiguous_format).cpu().eval()  # later stages: as built

    reports = split_reports(network, images, split)
    result = TrainReport(
        epochs=trainer.current_epoch,
        seconds=seconds,
        train=reports["train"],
        test=reports["test"],
        val=reports.get("val"),
        all=reports.get("all"),
    )
    log.info(
        "trained %d epochs in %.1fs: train error %.4f, test error %.4f (%d of %d)",
        result.epochs, seconds, result.train.error, result.test.error,
        result.test.misclassified, result.test.images,
    )
    return TrainedModel(network, images.class_names, dict(provenance or {}), recipe), result


# ---------------------------------------------------------------- the pipeline stage

def accelerator_problem(accelerator: str) -> str | None:
    """Why trainer.accelerator cannot run on this machine, or None when it can."""
    if accelerator == "cuda" and not torch.cuda.is_available():
        return "trainer.accelerator=cuda, but no CUDA GPU is available here; use trainer.accelerator=cpu or auto"
    if accelerator == "gpu" and not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        return "trainer.accelerator=gpu, but no GPU is available here; use trainer.accelerator=cpu or auto"
    return None


def check(ctx: Context) -> None:
    """Before the run exists: the accelerator asked for must be on this machine, and the net
    (model.net) must build, read the data's images and return (N, classes) logits."""
    problem = accelerator_problem(ctx.settings.trainer.accelerator)
    if problem:
        raise ConfigError(problem)
    ctx.network_for_checks()


def run(ctx: Context) -> None:
    """Stage `train`: fit the convnet; log its per-epoch curves, final errors and the model file.

    Curves (step = epoch): train_loss/train_error (mean over the epoch's batches) and
    val_loss/val_error, or test_loss/test_error when there is no val split. After
    training, in eval mode: final_{train,val,test,all}_{error,loss,misclassified,images,
    median_true_probability} (all: every image of the data set).
    """
    settings, tracker = ctx.settings, ctx.tracker
    model, report = train_model(
        ctx.images,
        ctx.split,
        settings.model,
        settings.trainer,
        on_epochs=tracker.log_metric_steps,
        provenance=data_provenance(settings.data, ctx.images, ctx.split),
    )
    for split_report in (report.train, report.val, report.test, report.all):
        if split_report is not None:
            tracker.log_metrics(split_report.metrics("final_"), step=report.epochs)
    tracker.log_metrics({"train_seconds": report.seconds}, step=report.epochs)
    log_misclassified(tracker, report.test)
    ctx.model = model
    ctx.model_uri = tracker.log_model(model, example=ctx.images.images[:2].numpy(),
                                      registered_name=settings.tracking.register_model)
    tracker.set_tags({"pgsweep.model_uri": ctx.model_uri})
    ctx.reports["train"] = report
