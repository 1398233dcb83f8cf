"""A trained model with what travels with it: its spec, class names and data split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgsweep.errors import ModelError
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet

MODEL_FILE = "pgsweep-model.pt"
_FORMAT = "pgsweep-model"
_VERSION = 1


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A network in eval mode plus the class index <-> name mapping it was trained on.

    provenance records the data it saw: dataset name, image size, split settings and
    the source of every test image, so later stages can query the same test set.
    pruning: for a pruned network, the filters removed from the base network the spec
    describes (pgsweep.prune.surgery.PruningRecord as a dict), replayed when it loads.
    """

    network: ThesisConvNet
    class_names: tuple[str, ...]
    provenance: dict = field(default_factory=dict)
    pruning: dict | None = None

    def __post_init__(self) -> None:
        self.network.eval()

    @property
    def spec(self) -> ConvNetSpec:
        return self.network.spec

    def save(self, path: str | Path) -> Path:
        """Write a self-describing file: weights, spec, classes; no pickled code."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT,
            "version": _VERSION,
            "spec": self.spec.to_dict(),
            "class_names": list(self.class_names),
            "provenance": self.provenance,
            **({"pruning": self.pruning} if self.pruning else {}),
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
        }
        partial = path.with_name(path.name + ".partial")
        torch.save(payload, partial)
        partial.replace(path)  # never leave a half-written model under the real name
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TrainedModel":
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for corrupt files
            raise ModelError(f"cannot read model file {path}: {error}") from None
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ModelError(f"{path} is not a pgsweep model file")
        if payload.get("version") != _VERSION:
            raise ModelError(f"{path} has model format version {payload.get('version')}; this pgsweep reads {_VERSION}")
        network = ThesisConvNet(ConvNetSpec.from_dict(payload["spec"]))
        pruning = payload.get("pruning")
        if pruning:  # the base network's layers, cut to the pruned widths before the weights load
            from pgsweep.prune.surgery import replay

            replay(network, pruning)
        network.load_state_dict(payload["state_dict"])
        return cls(network, tuple(payload["class_names"]), dict(payload.get("provenance") or {}), pruning or None)
