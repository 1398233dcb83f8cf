"""A trained model with what travels with it: how to rebuild it, its class names and data split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pgsweep.errors import ModelError
from pgsweep.models.spec import ConvNetSpec, ModelRecipe

MODEL_FILE = "pgsweep-model.pt"
_FORMAT = "pgsweep-model"
# 1: the thesis convnet only ("spec"); 2: any net by `_target_` ("recipe": target, arguments,
# classes, channels, size, pixel standardisation), and the input convention it expects
_VERSION = 2
_READS = (1, 2)


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A network in eval mode plus the class index <-> name mapping it was trained on.

    recipe rebuilds the network (its `_target_` and arguments); None for a ThesisConvNet,
    whose spec says it. provenance records the data it saw: dataset name, image size, split
    settings and the source of every test image, so later stages can query the same test set.
    pruning: for a pruned network, the filters removed from the base network the recipe
    builds (pgsweep.models.pruning.PruningRecord as a dict), replayed when it loads.
    """

    network: nn.Module
    class_names: tuple[str, ...]
    provenance: dict = field(default_factory=dict)
    recipe: ModelRecipe | None = None
    pruning: dict | None = None

    def __post_init__(self) -> None:
        self.network.eval()
        if self.recipe is None and isinstance(getattr(self.network, "spec", None), ConvNetSpec):
            object.__setattr__(self, "recipe", ModelRecipe.thesis(self.network.spec))

    @property
    def spec(self) -> ConvNetSpec | None:
        """The thesis convnet's spec; None for any other network."""
        spec = getattr(self.network, "spec", None)
        return spec if isinstance(spec, ConvNetSpec) else None

    def payload(self) -> dict:
        """The model file's content: weights, recipe, classes, input convention; no pickled code."""
        if self.recipe is None:
            raise ModelError(f"cannot save a {type(self.network).__name__} without its recipe (its _target_)")
        recipe = self.recipe.to_dict()
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "recipe": recipe,
            "input": {"range": [0.0, 1.0], "channels": recipe["in_channels"], "image_size": recipe["input_size"],
                      "standardization": "inside the network: (x - input_mean) / input_std"},
            "class_names": list(self.class_names),
            "provenance": self.provenance,
            **({"pruning": self.pruning} if self.pruning else {}),
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
        }

    def __reduce__(self):
        # pickled (a Ray task's model, a deep copy) as the model file's content, rebuilt the way
        # load rebuilds it: one format wherever a model travels
        return (TrainedModel.from_payload, (self.payload(),))

    def save(self, path: str | Path) -> Path:
        """Write a self-describing file (see payload)."""
        payload = self.payload()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
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
        return cls.from_payload(payload, path)

    @classmethod
    def from_payload(cls, payload: dict, source: str | Path = "the model file") -> "TrainedModel":
        """The model a payload describes: its network built from the recipe, pruned, weights loaded."""
        from pgsweep.models.build import build_network, locate

        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ModelError(f"{source} is not a pgsweep model file")
        if payload.get("version") not in _READS:
            raise ModelError(f"{source} has model format version {payload.get('version')}; this pgsweep reads "
                             f"{', '.join(map(str, _READS))}")
        if payload["version"] == 1:
            recipe = ModelRecipe.thesis(ConvNetSpec.from_dict(payload["spec"]))
        else:
            recipe = ModelRecipe.from_dict(payload["recipe"])
        locate(recipe.target, f"the model's class (recorded in {Path(source).name})")
        network = build_network(recipe)
        pruning = payload.get("pruning")
        if pruning:  # the base network's layers, cut to the pruned widths before the weights load
            from pgsweep.models.pruning import replay

            replay(network, pruning)
        network.load_state_dict(payload["state_dict"])
        return cls(network, tuple(payload["class_names"]), dict(payload.get("provenance") or {}), recipe,
                   pruning or None)
