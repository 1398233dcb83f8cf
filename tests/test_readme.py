"""The README's Python example runs as written (with a model file for RUN_ID)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from pgsweep.models.checkpoint import TrainedModel
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs(tmp_path):
    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    path = TrainedModel(ThesisConvNet(ConvNetSpec(num_classes=15)), tuple(f"subject{i:02d}" for i in range(1, 16))).save(
        tmp_path / "pgsweep-model.pt"
    )
    namespace: dict = {}
    exec(code.replace("RUN_ID", str(path)), namespace)  # noqa: S102
    pg = namespace["pg"]
    assert pg.gradients["act1"].shape == (15, 8, 5, 56, 56)
    assert pg.filter_scores("act1").shape == (15, 8, 5)
    assert pg.saliency("act1").shape == (15, 8, 56, 56)
    assert pg.gradients["input"].shape == (15, 8, 1, 60, 60)
    assert pg.class_filter_scores("act2", namespace["labels"]).shape == (15, 15, 8)
    assert torch.allclose(pg.predictions.sum(dim=1), torch.ones(8))
