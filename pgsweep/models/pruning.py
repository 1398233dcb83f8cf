"""A pruned model's record and its replay: filters removed for real, with Torch-Pruning.

A filter of an activation map is removed at the conv that makes the map: its output
channel goes, and Torch-Pruning's dependency graph removes what depends on it (the next
conv's input channel, or the columns of the linear layer after a flatten). No channel
surgery of our own.

A pruned model is stored as its BASE network's description plus a pruning record
(`PruningRecord.to_dict()`): for each step, the conv names and the channel indices removed,
numbered in the network as it was at that step. `replay` rebuilds the pruned shapes on a
freshly built base network, before its state dict is loaded (pgsweep.models.checkpoint), so
any network Torch-Pruning can trace stores the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from pgsweep.errors import ModelError


@dataclass(frozen=True)
class PruningRecord:
    """What was removed, in order. input_shape: one example input's shape, (1, C, H, W)."""

    input_shape: tuple[int, ...]
    steps: tuple[dict[str, tuple[int, ...]], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape),
                "steps": [{conv: [int(i) for i in channels] for conv, channels in step.items()}
                          for step in self.steps]}

    @classmethod
    def from_dict(cls, values: Mapping) -> "PruningRecord":
        try:
            return cls(tuple(int(v) for v in values["input_shape"]),
                       tuple({str(conv): tuple(int(i) for i in channels) for conv, channels in step.items()}
                             for step in values["steps"]))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ModelError(f"the model file's pruning record is malformed: {error}") from None

    def then(self, step: Mapping[str, Sequence[int]]) -> "PruningRecord":
        return PruningRecord(self.input_shape, (*self.steps, {k: tuple(int(i) for i in v) for k, v in step.items()}))


def dependency_graph(network: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    # Torch-Pruning traces the autograd graph: a caller's torch.no_grad() (loading a model
    # inside one) would stop it
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(network, example_inputs=example, verbose=False)


def remove_filters(network: nn.Module, removal: Mapping[str, Sequence[int]], example: torch.Tensor) -> None:
    """Remove output channels of convs, in place: {conv name: channel indices in it now}."""
    modules = dict(network.named_modules())
    graph = dependency_graph(network, example)
    for conv, channels in removal.items():
        channels = sorted(int(c) for c in channels)
        if not channels:
            continue
        width = modules[conv].out_channels
        if len(set(channels)) != len(channels) or channels[0] < 0 or channels[-1] >= width:
            raise ModelError(f"cannot remove channels {channels} of {conv}, which has {width}")
        if len(channels) >= width:
            raise ModelError(f"removing channels {channels} would leave {conv} with no filter")
        graph.get_pruning_group(modules[conv], tp.prune_conv_out_channels, idxs=channels).prune()


def replay(network: nn.Module, record: Mapping | PruningRecord) -> nn.Module:
    """Apply a stored pruning record to a freshly built base network (in place; returns it)."""
    record = record if isinstance(record, PruningRecord) else PruningRecord.from_dict(record)
    parameter = next(network.parameters())
    example = torch.zeros(record.input_shape, dtype=parameter.dtype, device=parameter.device)
    was_training = network.training
    network.eval()
    for step in record.steps:
        remove_filters(network, step, example)
    network.train(was_training)
    return network
