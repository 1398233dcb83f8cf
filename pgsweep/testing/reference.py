"""The obvious per-point loop for the adversarial sweep: a reference for tests and a
baseline for benchmarks. One (image, target, step) at a time, the gradient recomputed
at every point with plain autograd; no engine, no batching, no affine prefix."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from pgsweep.analyses.adversarial import RESULT_COLUMNS, Perturbation


def per_point_loop(network: nn.Module, images: torch.Tensor, labels: torch.Tensor, image_ids: Sequence[int],
                   targets: Sequence[int], steps: Sequence[float], p: Perturbation = Perturbation()) -> pd.DataFrame:
    network.eval()
    rows = []
    for b, image_id in enumerate(image_ids):
        label = int(labels[b])
        for t in targets:
            for k, s in enumerate(steps):
                x = images[b : b + 1].clone().requires_grad_(True)
                logits = network(x)
                y = torch.softmax(logits, 1)[0, t] if p.output == "softmax" else logits[0, t]
                (g,) = torch.autograd.grad(y, x)
                d = {"raw": g, "sign": g.sign(), "l2": g / g.norm()}[p.step_kind]
                moved = x.detach() + s * d
                if p.clip:
                    moved = moved.clamp(p.clip_min, p.clip_max)
                with torch.no_grad():
                    probs = torch.softmax(network(moved), 1)[0]
                pred = int(probs.argmax())
                rms = float((moved - x.detach()).double().pow(2).mean().sqrt())  # the pixel change, measured
                rows.append((int(image_id), label, int(t), k, float(s), rms, float(probs[t]), float(probs[label]),
                             pred, pred == t and t != label, pred != label))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
