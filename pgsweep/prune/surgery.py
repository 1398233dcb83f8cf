"""Removing filters for real, with Torch-Pruning (the only module that imports torch_pruning).

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

import copy
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
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


def producing_conv(network: nn.Module, layer: str) -> str:
    """The Conv2d whose output channels are `layer`'s maps: the last one before it in module order.

    For the thesis convnet, act{i} -> conv{i}; a conv layer names itself.
    """
    names = [name for name, _ in network.named_modules()]
    if layer not in names:
        raise ModelError(f"no layer '{layer}' in the network")
    convs = [name for name, module in network.named_modules() if isinstance(module, nn.Conv2d)]
    before = [name for name in names[: names.index(layer) + 1] if name in convs]
    if not before:
        raise ModelError(f"layer '{layer}' has no conv before it whose filters could be removed")
    return before[-1]


def _graph(network: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    # Torch-Pruning traces the autograd graph: a caller's torch.no_grad() (loading a model
    # inside one) would stop it
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(network, example_inputs=example, verbose=False)


def coupled_convs(network: nn.Module, convs: Sequence[str], example: torch.Tensor) -> dict[str, str]:
    """{conv: an earlier conv of `convs` whose output channels Torch-Pruning removes with it}.

    Convs whose outputs are added together (a residual block's last conv and the stream it
    adds to) share their channels: removing a filter of one removes it from all of them, so
    two of them cannot be pruned as separate layers.
    """
    modules = dict(network.named_modules())
    names = {id(module): name for name, module in modules.items()}
    graph = _graph(network, example)
    owner: dict[str, str] = {}
    coupled: dict[str, str] = {}
    for conv in convs:
        if conv in owner:
            coupled[conv] = owner[conv]
            continue
        group = graph.get_pruning_group(modules[conv], tp.prune_conv_out_channels, idxs=[0])
        for dependency, _ in group:
            module = dependency.target.module
            if isinstance(module, nn.Conv2d) and dependency.handler == tp.prune_conv_out_channels:
                owner.setdefault(names.get(id(module), ""), conv)
    return coupled


def remove_filters(network: nn.Module, removal: Mapping[str, Sequence[int]], example: torch.Tensor) -> None:
    """Remove output channels of convs, in place: {conv name: channel indices in it now}."""
    modules = dict(network.named_modules())
    graph = _graph(network, example)
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


def magnitude_scores(network: nn.Module, convs: Sequence[str], example: torch.Tensor) -> dict[str, np.ndarray]:
    """L1 norm of each filter's weights, by Torch-Pruning's MagnitudeImportance (the conv's own
    weights only: group_reduction="first", no normalizer)."""
    modules = dict(network.named_modules())
    graph = _graph(network, example)
    importance = tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    scores = {}
    for conv in convs:
        width = modules[conv].out_channels
        group = graph.get_pruning_group(modules[conv], tp.prune_conv_out_channels, idxs=list(range(width)))
        scores[conv] = importance(group).detach().cpu().double().numpy()
    return scores


def size(network: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(multiply-accumulates of one input, parameters), counted by Torch-Pruning."""
    macs, params = tp.utils.count_ops_and_params(copy.deepcopy(network).eval(), example)
    return int(macs), int(params)


@torch.no_grad()
def latencies(networks: Sequence[nn.Module], batch: torch.Tensor, rounds: int, seed: int = 0) -> list[float]:
    """Median seconds of one forward pass of `batch` through each network, on one CPU thread.

    Interleaved: each round times every network once, in a new random order, so a burst of
    load from elsewhere on the machine falls on all of them alike instead of on a few.
    """
    rng = np.random.default_rng(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times: list[list[float]] = [[] for _ in networks]
    try:
        for network in networks:  # warm-up, untimed
            network.eval()(batch)
        for _ in range(rounds):
            for i in rng.permutation(len(networks)):
                started = time.perf_counter()
                networks[i](batch)
                times[i].append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return [float(statistics.median(t)) for t in times]
