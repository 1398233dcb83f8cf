"""What the stages share: checks against the model and data, the images they query, the
classification error (plain torch, no Lightning), the Ray settings, a quiet Lightning.

All four analysis stages (rank, knockout, diagrams, features) read the one `analysis` section,
checked by pgsweep.settings.read_analysis_config (no torch), so any of them validates
the whole group: a mistyped key anywhere in it fails before a run starts.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pgsweep.analyses.units import Units, default_layers, find_units
from pgsweep.config import build, section
from pgsweep.errors import ConfigError, QueryError
from pgsweep.settings import ALL_CLASSES, CONV_LAYERS, FIRST_CLASSES, AnalysisSettings, RaySettings  # noqa: F401  (the stages' names)

# ---------------------------------------------------------------- checks against model and data

def network_for_checks(ctx) -> torch.nn.Module:
    """The model's network, or (train runs first in this command) an untrained one of the same shape."""
    return ctx.network_for_checks()


def resolve_layers(network: torch.nn.Module, layers: tuple[str, ...], example: torch.Tensor | None = None) -> list[str]:
    """`conv` expands to the network's conv maps (see default_layers); other names are taken as given."""
    names: list[str] = []
    for layer in layers:
        names.extend(default_layers(network, example) if layer == CONV_LAYERS else [layer])
    if len(set(names)) != len(names):
        raise ConfigError(f"analysis.layers names a layer twice once conv is expanded: {names}")
    return names


def analysis_units(ctx, settings: AnalysisSettings, network=None) -> Units:
    """The units the stages score, checked on one image: an unknown layer fails here."""
    network = network if network is not None else network_for_checks(ctx)
    try:
        layers = resolve_layers(network, settings.query.layers, ctx.images.images[:1])
    except QueryError as error:
        raise ConfigError(f"analysis.layers: {error}") from None
    # the knockout replays layers in forward order, whatever order the config lists them in
    position = {name: i for i, (name, _) in enumerate(network.named_modules())}
    layers.sort(key=lambda name: position.get(name, -1))
    try:
        return find_units(network, layers, ctx.images.images[:1])
    except QueryError as error:
        raise ConfigError(f"analysis.layers: {error}") from None


def class_indices(names: tuple[str, ...], class_names: tuple[str, ...], key: str, everything: str) -> list[int]:
    """Config class names -> indices; `everything` (all / first) is resolved by the caller."""
    if names == (everything,):
        return list(range(len(class_names)))
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [name for name in names if name not in index]
    if unknown:
        shown = ", ".join(class_names[:6]) + (", ..." if len(class_names) > 6 else "")
        raise ConfigError(f"{key}: unknown class '{unknown[0]}'; the classes are {shown}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{key} lists a class twice: {list(names)}")
    return [index[name] for name in names]


def split_indices(ctx, which: str) -> np.ndarray:
    """Image indices of the model's own test/train split, or every image."""
    if which == "all":
        return np.arange(len(ctx.images))
    return getattr(ctx.split, which)


def require_images(ctx, classes: list[int], key: str, which: str = "test") -> None:
    """Every chosen class needs images on that side of the split."""
    labels = ctx.images.labels[split_indices(ctx, which)].numpy()
    for c in classes:
        if not (labels == c).any():
            raise ConfigError(f"{key}: class '{ctx.images.class_names[c]}' has no {which} images")


def images_of(ctx, which: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(images, labels, indices into ctx.images) of one side of the model's split."""
    indices = split_indices(ctx, which)
    return ctx.images.images[indices], ctx.images.labels[indices], indices


def metric_name(name: str) -> str:
    """A class name made safe for an MLflow metric key."""
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in str(name))


def ray_settings(ctx) -> RaySettings:
    """The `ray` section, for the stages that fan out on Ray (adversarial, prune)."""
    return build(RaySettings, section(ctx.settings.resolved, "ray"), "ray")


def quiet_lightning() -> None:
    """Lightning's start-up chatter and the warnings that do not apply to in-memory tensors, off."""
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


@contextmanager
def determinism_restored() -> Iterator[None]:
    """Lightning's `deterministic=True` turns torch's deterministic algorithms on for the whole
    process and leaves them on; the stages after training need the process as it was (Captum's
    DeepLift unpools max pools, which has no deterministic kernel)."""
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


# ---------------------------------------------------------------- classification error

@dataclass(frozen=True)
class ErrorReport:
    """Error and loss on one split; `wrong` names the misclassified images.

    median_true_probability: the median softmax probability of each image's own class; near
    1 on the training images, the softmax is saturated and softmax PGs are tiny.
    """

    split: str
    images: int
    misclassified: int
    error: float
    loss: float
    wrong: tuple[str, ...]
    median_true_probability: float = float("nan")

    def metrics(self, prefix: str = "") -> dict[str, float]:
        name = f"{prefix}{self.split}"
        return {
            f"{name}_error": self.error,
            f"{name}_loss": self.loss,
            f"{name}_misclassified": float(self.misclassified),
            f"{name}_images": float(self.images),
            f"{name}_median_true_probability": self.median_true_probability,
        }


@torch.no_grad()
def predict_logits(network: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, C, H, W) images -> (N, num_classes) logits, in eval mode, on the network's device."""
    network.eval()
    parameter = next(network.parameters())
    chunks = [
        network(images[start : start + batch_size].to(parameter.device, parameter.dtype)).cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0)


def error_report(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    sources: tuple[str, ...] | list[str],
    split: str,
) -> ErrorReport:
    """Top-1 error and mean cross-entropy of `network` on (images, labels)."""
    if len(labels) == 0:
        return ErrorReport(split, 0, 0, float("nan"), float("nan"), ())
    logits = predict_logits(network, images)  # (N, num_classes)
    wrong = (logits.argmax(dim=1) != labels).numpy()
    return ErrorReport(
        split=split,
        images=len(labels),
        misclassified=int(wrong.sum()),
        error=float(wrong.mean()),
        loss=float(F.cross_entropy(logits.float(), labels)),
        wrong=tuple(np.asarray(sources, dtype=object)[wrong].tolist()),
        median_true_probability=float(torch.softmax(logits.float(), 1).gather(1, labels[:, None]).median()),
    )


def split_reports(network: nn.Module, images, split) -> dict[str, ErrorReport]:
    """An ErrorReport for each non-empty side of a Split of an ImageSet: train, val, test, and
    `all` the images (the thesis's "error rate ... on the data set" may mean either)."""
    reports = {}
    for name in ("train", "val", "test", "all"):
        indices = np.arange(len(images)) if name == "all" else getattr(split, name)
        if len(indices):
            sources = [images.sources[i] for i in indices]
            reports[name] = error_report(network, images.images[indices], images.labels[indices], sources, name)
    return reports


def log_misclassified(tracker, report: ErrorReport) -> None:
    """The names of the images `report` got wrong, one a line, as errors/{split}_misclassified.txt."""
    tracker.log_text("".join(f"{name}\n" for name in report.wrong), f"errors/{report.split}_misclassified.txt")
