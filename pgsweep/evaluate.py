"""Classification error of a trained model on a set of images (plain torch, no Lightning)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------- the pipeline stage

def run(ctx) -> None:
    """Stage `evaluate`: error of the model on the train/val/test images it was split with.

    Logs eval_{split}_{error,loss,misclassified} and, like training, the list of
    misclassified images of each split (errors/{split}_misclassified.txt).
    """
    assert ctx.model is not None
    reports = split_reports(ctx.model.network, ctx.images, ctx.split)
    for report in reports.values():
        ctx.tracker.log_metrics(report.metrics("eval_"), step=0)
        log_misclassified(ctx.tracker, report)
        log.info("%s error %.4f (%d of %d)", report.split, report.error, report.misclassified, report.images)
    ctx.reports["evaluate"] = reports
