"""Pruning's measures of a network, with Torch-Pruning: which conv makes a map, which convs share
channels, filter magnitudes, size and speed. The removal itself and its replay from a model
file's record live with the model file (pgsweep.models.pruning).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from pgsweep.errors import ModelError
from pgsweep.models.pruning import dependency_graph


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


def coupled_convs(network: nn.Module, convs: Sequence[str], example: torch.Tensor) -> dict[str, str]:
    """{conv: an earlier conv of `convs` whose output channels Torch-Pruning removes with it}.

    Convs whose outputs are added together (a residual block's last conv and the stream it
    adds to) share their channels: removing a filter of one removes it from all of them, so
    two of them cannot be pruned as separate layers.
    """
    modules = dict(network.named_modules())
    names = {id(module): name for name, module in modules.items()}
    graph = dependency_graph(network, example)
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


def magnitude_scores(network: nn.Module, convs: Sequence[str], example: torch.Tensor) -> dict[str, np.ndarray]:
    """L1 norm of each filter's weights, by Torch-Pruning's MagnitudeImportance (the conv's own
    weights only: group_reduction="first", no normalizer)."""
    modules = dict(network.named_modules())
    graph = dependency_graph(network, example)
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
