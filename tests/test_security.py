"""Nothing unpickles untrusted data: a model file that would run code on load is refused."""

from __future__ import annotations

import pytest
import torch

from pgsweep.errors import ModelError
from pgsweep.models.checkpoint import TrainedModel


class _RunsCodeOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (str(self.marker), "w"))


def test_model_files_load_with_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "pgsweep-model.pt"
    torch.save({"format": "pgsweep-model", "payload": _RunsCodeOnLoad(marker)}, path)
    with pytest.raises(ModelError, match="cannot read model file"):
        TrainedModel.load(path)
    assert not marker.exists()
