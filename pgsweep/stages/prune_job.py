"""One (criterion, seed) run of the pruning schedule: the work a Ray task does.

`PruneJob` is a pgsweep.sweep.Job, like the adversarial sweep's SweepJob: plain data put
in Ray's object store once, `network()` built once per worker, and `run(task, network)`
returning one table (a row per step). Workers compute and return;
the driver saves each task's table as it arrives (resumable) and logs everything.

A step, from the network the step starts from:
  score the filters (iterative: this network; one_shot: the trained network, once),
  remove the lowest-scored ones with Torch-Pruning until each layer has lost the step's
  fraction, measure the test error (before fine-tuning), fine-tune `finetune_epochs`
  epochs with the training settings (pgsweep's ClassifierModule, SGD), measure again,
  count parameters and MACs, and time a batch on the CPU.
iterative: each step starts from the previous step's fine-tuned network. one_shot: each
step prunes the trained network to its fraction at once, so every point of the curve is
one-shot pruning at that fraction.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import signal
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from pgsweep.analyses.units import default_layers, unit_label
from pgsweep.errors import Interrupted, QueryError
from pgsweep.stages.common import error_report
from pgsweep.models.checkpoint import TrainedModel
from pgsweep.prune.criteria import filter_scores, lowest
from pgsweep.prune.schedule import removal_counts
from pgsweep.models.pruning import PruningRecord, remove_filters
from pgsweep.prune.surgery import producing_conv, size
from pgsweep.progress import piece_bar
from pgsweep.settings import PruneSettings, TrainSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneTask:
    """One unit of work: a criterion with a seed (fine-tuning's shuffling; random's draws)."""

    index: int
    criterion: str
    seed: int


def finetune(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: TrainSettings,
             epochs: int, seed: int) -> torch.nn.Module:
    """`epochs` of SGD on (images, labels) with pgsweep's training module; in place, returns eval mode."""
    if epochs < 1:
        return network.eval()
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from pgsweep.models.lightning import ClassifierModule
    from pgsweep.stages.common import determinism_restored, quiet_lightning

    quiet_lightning()
    warnings.filterwarnings("ignore", message=".*val_dataloader.*")
    pl.seed_everything(seed, workers=True, verbose=False)
    module = ClassifierModule(network, learning_rate=settings.learning_rate, momentum=settings.momentum,
                              weight_decay=settings.weight_decay)
    with determinism_restored():  # as in pgsweep.stages.train
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, deterministic=True, logger=False,
                             enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                             num_sanity_val_steps=0, limit_val_batches=0)
        loader = DataLoader(TensorDataset(images, labels), batch_size=settings.batch_size, shuffle=True, num_workers=0)
        network.train()
        try:
            trainer.fit(module, train_dataloaders=loader)
        except SIGTERMException:  # as in pgsweep.stages.train: Lightning would exit 0 on SIGTERM
            raise Interrupted(signal.SIGTERM) from None
        except SystemExit:
            if trainer.interrupted:  # Lightning swallows Ctrl-C and exits 1
                raise KeyboardInterrupt from None
            raise
    return network.eval()


@dataclass(frozen=True)
class PruneJob:
    """Everything a worker needs. model: the trained model (a pruned one too); *_images (N, C, H, W)."""

    model: TrainedModel
    layers: tuple[str, ...]          # activation maps whose filters may go, in forward order
    train_images: torch.Tensor       # fine-tuning
    train_labels: torch.Tensor
    score_images: torch.Tensor       # the data-driven criteria
    score_labels: torch.Tensor
    test_images: torch.Tensor        # the errors
    test_labels: torch.Tensor
    test_sources: tuple[str, ...]
    settings: PruneSettings
    trainer: TrainSettings
    tasks: tuple[PruneTask, ...]
    show_progress: bool = False      # each task's steps (scoring, fine-tuning) as a bar; not in the key

    label = "prune"

    def pieces(self) -> tuple[PruneTask, ...]:
        return self.tasks

    def gather(self, tables) -> pd.DataFrame:
        """Every task's rows, in task order."""
        return pd.concat(tables, ignore_index=True)

    def network(self) -> torch.nn.Module:
        return copy.deepcopy(self.model.network).eval()

    # ------------------------------------------------------------ identity (the resumable folder)

    def describe(self) -> dict:
        settings = asdict(self.settings)
        for key in ("output_dir", "progress_bar", "latency_batch", "latency_repeats"):  # not the tasks' work
            settings.pop(key)
        return {"recipe": self.model.recipe.to_dict(), "pruning": self.model.pruning, "layers": list(self.layers),
                "settings": settings,  # of the trainer, only what fine-tuning uses
                "trainer": {k: getattr(self.trainer, k) for k in ("learning_rate", "batch_size", "momentum",
                                                                  "weight_decay")},
                "tasks": [asdict(t) for t in self.tasks], "test_sources": list(self.test_sources)}

    def key(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        for tensor in (self.train_images, self.train_labels, self.score_images, self.score_labels,
                       self.test_images, self.test_labels):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(json.dumps(self.describe(), sort_keys=True).encode())
        return digest.hexdigest()

    # ------------------------------------------------------------ the work

    def run(self, task: PruneTask, network: torch.nn.Module | None = None) -> pd.DataFrame:
        """The task's table: step 0 (the trained network) and one row per step of the schedule.

        Every row carries its step's network as a model file's bytes (`model_file`): the
        driver times them all side by side (`latency_ms`) and logs the last step's.
        """
        settings = self.settings
        base = copy.deepcopy(network if network is not None else self.network()).cpu().eval()
        example = self.test_images[:1]
        convs = {layer: producing_conv(base, layer) for layer in self.layers}
        modules = dict(base.named_modules())
        widths = {layer: modules[conv].out_channels for layer, conv in convs.items()}
        total = sum(widths.values())
        base_record = PruningRecord.from_dict(self.model.pruning) if self.model.pruning else \
            PruningRecord(tuple(example.shape))
        fractions = settings.fractions()
        counts = removal_counts(widths, fractions)
        number = _layer_numbers(base, self.layers, example)  # filters are named `layer-unit` as in the analyses

        train_mean = self.train_images.mean(0) if settings.baseline == "mean" else None

        def scores_of(net, step) -> dict[str, np.ndarray]:  # {layer: score of each channel it has now}
            return filter_scores(net, task.criterion, self.layers, self.score_images, self.score_labels,
                                 self.model.class_names, seed=task.seed * 1000 + step, norm=settings.norm,
                                 image_chunk=settings.image_chunk, baseline=settings.baseline,
                                 train_mean=train_mean, path_steps=settings.path_steps)

        def row(step, fraction, net, alive, removed_now, before, seconds) -> dict:
            after = error_report(net, self.test_images, self.test_labels, self.test_sources, "test")
            macs, params = size(net, example)
            gone = {layer: sorted(set(range(widths[layer])) - set(alive[layer])) for layer in self.layers}
            names = [unit_label(number[layer], c) for layer in self.layers for c in gone[layer]]
            return {
                "criterion": task.criterion, "seed": task.seed, "step": step, "mode": settings.mode,
                "fraction": fraction, "filters_removed": len(names), "filters_total": total,
                "removed_fraction": len(names) / total,
                "test_error_before": before.error if before is not None else after.error,
                "test_error": after.error, "test_loss": after.loss,
                "params": params, "macs": macs,
                "removed_filters": ",".join(names), "removed_now": ",".join(removed_now),
                "widths": json.dumps({layer: len(alive[layer]) for layer in self.layers}),
                "seconds": seconds,
                # the network as a model file: the driver times every step's network side by side
                "model_file": _model_bytes(TrainedModel(copy.deepcopy(net), self.model.class_names,
                                                        self._provenance(task), self.model.recipe,
                                                        step_record.to_dict())),
            }

        step_record = base_record
        rows = [row(0, 0.0, base, {layer: list(range(w)) for layer, w in widths.items()}, [], None, 0.0)]
        current, alive, record = copy.deepcopy(base), {layer: list(range(w)) for layer, w in widths.items()}, base_record
        ranked_once = scores_of(base, 0) if settings.mode == "one_shot" else None
        bar = piece_bar(2 * len(fractions), f"prune {task.criterion} seed {task.seed} (score, fine-tune)",
                        self.show_progress)
        try:
            for step, (fraction, count) in enumerate(zip(fractions, counts), start=1):
                started = time.perf_counter()
                if settings.mode == "one_shot":  # from the trained network, by the one ranking
                    current, record = copy.deepcopy(base), base_record
                    alive = {layer: list(range(w)) for layer, w in widths.items()}
                    scores = ranked_once
                else:
                    scores = scores_of(current, step)
                bar.update(1)
                removal, removed_now = {}, []
                for layer in self.layers:
                    # the filters this layer still has to lose to reach the step's count
                    need = count[layer] - (widths[layer] - len(alive[layer]))
                    picked = lowest(scores[layer], need) if need > 0 else []
                    removal[convs[layer]] = picked
                    removed_now += [unit_label(number[layer], alive[layer][i]) for i in picked]
                    alive[layer] = [c for i, c in enumerate(alive[layer]) if i not in set(picked)]
                remove_filters(current, removal, example)
                record = record.then({conv: channels for conv, channels in removal.items() if channels})
                step_record = record
                before = error_report(current, self.test_images, self.test_labels, self.test_sources, "test")
                finetune(current, self.train_images, self.train_labels, self.trainer, settings.finetune_epochs,
                         task.seed * 1000 + step)
                bar.update(1)
                rows.append(row(step, fraction, current, alive, removed_now, before, time.perf_counter() - started))
        finally:
            bar.close()
        return pd.DataFrame(rows)

    def _provenance(self, task: PruneTask) -> dict:
        provenance = dict(self.model.provenance)
        provenance["pruned"] = {"criterion": task.criterion, "seed": task.seed, "mode": self.settings.mode,
                                "final_fraction": self.settings.final_fraction,
                                "finetune_epochs": self.settings.finetune_epochs, "layers": list(self.layers)}
        return provenance


def _layer_numbers(network: torch.nn.Module, layers: tuple[str, ...], example: torch.Tensor) -> dict[str, int]:
    """Each layer's place (from 0) among the network's conv maps, so act2's 5th filter is `2-5`
    whichever layers are pruned; a network without default conv maps numbers the layers given."""
    try:
        maps = default_layers(network, example)
    except QueryError:
        maps = []
    if not set(layers) <= set(maps):
        maps = list(layers)
    return {layer: maps.index(layer) for layer in layers}


def _model_bytes(model: TrainedModel) -> bytes:
    """The model file TrainedModel.save writes, as bytes (a task returns it; the driver logs it)."""
    with tempfile.TemporaryDirectory() as folder:
        return model.save(Path(folder) / "pgsweep-model.pt").read_bytes()


def read_model(data: bytes) -> TrainedModel:
    """A model from a task's `model_file` bytes, through TrainedModel.load (the pruning replayed)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pgsweep-model.pt"
        path.write_bytes(data)
        return TrainedModel.load(path)

