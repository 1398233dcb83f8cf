"""Replaying orderings of knockouts: what the network predicts after each step.

A filter is knocked out by zeroing its channel of the activation in the forward pass;
the weights stay untouched. An ordering of units is replayed step by step: after
step s the first s units of the ordering are zeroed.

Three paths, one answer. For a network that is an nn.Sequential with the knocked layers
among its children, each step recomputes only from the layer whose mask changed, reusing
the outputs of the layers before it (they cannot change), and the unmasked first
pass is shared by every ordering; a layer's mask applies after the channel-wise modules
that follow it (its pooling: a zeroed channel pools to zero), so a step skips them. Any
other network torch.fx can trace (residual blocks included) replays its graph node by
node, rerunning only the nodes downstream of the changed layer (pgsweep.analyses.graph);
one that does not trace takes the loop.
The results equal the plain per-step loop (`knockout_predictions_loop`) bit for bit:
same modules, same order of operations on every value that is not zero.

By default (on the CPU) both run on the network's inference copy (pgsweep.analyses.inference:
batch norm folded, channels-last memory), checked against the network first: the same
function with other rounding, so against the loop on the network as given the losses
agree to about 1e-6 and the predictions wherever two classes are not tied that closely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pgsweep.analyses.graph import GraphReplay, graph_replay
from pgsweep.analyses.inference import knockout_check, on_inference_copy
from pgsweep.analyses.units import Units
from pgsweep.errors import QueryError
from pgsweep.pg.engine import eval_mode

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class KnockoutRun:
    """What every step of every ordering predicts.

    predictions: (R, S + 1, N) int64 predicted class; step 0 is the intact network
    losses:      (R, S + 1, N) float32 cross-entropy of each image at each step
    inference_copy_used: whether it ran on the network's inference copy
    """

    predictions: np.ndarray
    losses: np.ndarray
    inference_copy_used: bool = False


class _StepCount:
    """Counts the (ordering, step) replays done, in whole steps, for a progress callback."""

    def __init__(self, progress: Callable[[int], None] | None, images: int) -> None:
        self.progress, self.images, self.done, self.told = progress, max(images, 1), 0.0, 0

    def ordering(self, steps: int, rows: int) -> None:
        """One ordering's `steps` replayed on `rows` of the images."""
        if self.progress is None:
            return
        self.done += steps * rows / self.images
        whole = int(self.done + 1e-9)
        if whole > self.told:
            self.progress(whole - self.told)
            self.told = whole


def _check_orders(orders: np.ndarray, units: Units, steps: int | None) -> tuple[np.ndarray, int]:
    orders = np.asarray(orders, dtype=np.int64)
    if orders.ndim != 2:
        raise QueryError(f"orders must be (orderings, units), got shape {orders.shape}")
    if orders.size and (orders.min() < 0 or orders.max() >= units.total):
        raise QueryError(f"an ordering names a unit outside 0..{units.total - 1}")
    steps = orders.shape[1] if steps is None else steps
    if not 0 <= steps <= orders.shape[1]:
        raise QueryError(f"steps={steps} must be between 0 and the ordering length {orders.shape[1]}")
    for row in orders:
        if len(set(row[:steps].tolist())) != steps:
            raise QueryError("an ordering knocks out the same unit twice")
    return orders, steps


def _segments(network: nn.Module, layers: Sequence[str]) -> tuple[list[nn.Sequential], nn.Sequential] | None:
    """Split a Sequential network after each knocked layer and the channel-wise modules that
    follow it (its activation, its pooling), where its mask goes; None if it is not one."""
    if not isinstance(network, nn.Sequential):
        return None
    children = list(network.named_children())
    names = [name for name, _ in children]
    if any(layer not in names for layer in layers):
        return None  # a nested layer: fall back to hooks
    positions = [names.index(layer) for layer in layers]
    if positions != sorted(positions):
        raise QueryError(f"layers {list(layers)} must be listed in forward order")
    segments, start = [], 0
    for i, position in enumerate(positions):
        # the mask moves past the channel-wise modules after the layer (a zeroed channel stays
        # zero through them, the others are computed as before): a step then skips them
        end, limit = position, positions[i + 1] if i + 1 < len(positions) else len(children)
        while end + 1 < limit and _keeps_zero_channels(children[end + 1][1]):
            end += 1
        segments.append(nn.Sequential(*[m for _, m in children[start : end + 1]]))
        start = end + 1
    return segments, nn.Sequential(*[m for _, m in children[start:]])


# modules whose every output channel is computed from the same input channel alone and is
# all zero where that channel is (pooling with its -inf padding too)
_CHANNEL_WISE = (nn.Tanh, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Identity,
                 nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)


def _keeps_zero_channels(module: nn.Module) -> bool:
    return type(module) in _CHANNEL_WISE and not getattr(module, "return_indices", False)


def _channel_mask(size: int, ndim: int, knocked: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """(1, F, 1, 1) or (1, U) of ones with zeros at the knocked channels."""
    mask = torch.ones(size, dtype=like.dtype, device=like.device)
    mask[list(knocked)] = 0
    return mask.view(1, size, *[1] * (ndim - 1))


def knockout_predictions(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    units: Units,
    orders: np.ndarray,
    steps: int | None = None,
    image_chunk: int = 512,
    optimize: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> KnockoutRun:
    """Replay each ordering of units (R, >= steps) on the images, one knockout per step.

    Returns the predictions and losses after 0..steps knockouts for every ordering.
    Any network works; the fast path needs an nn.Sequential with the layers as children,
    or a network torch.fx can trace. optimize (auto: on the CPU): replay on the network's
    inference copy (pgsweep.analyses.inference), as `knockout_predictions_loop` does with
    the same setting; false: on the network as it is. progress(n): n more of the R x steps
    (ordering, step) replays done.
    """
    orders, steps = _check_orders(orders, units, steps)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    chosen, images = on_inference_copy(network, images, units.layers, optimize, knockout_check(units.layers))
    run = _replay(chosen, images, labels, units, orders, steps, image_chunk, progress)
    return replace(run, inference_copy_used=chosen is not network)


def _replay(network: nn.Module, images: torch.Tensor, labels: torch.Tensor, units: Units,
            orders: np.ndarray, steps: int, image_chunk: int, progress) -> KnockoutRun:
    split = _segments(network, units.layers)
    if split is None:
        replay = graph_replay(network, units.layers, "knockout")
        if replay is not None:
            run = _knockout_by_graph(replay, network, images, labels, units, orders, steps, image_chunk, progress)
            if run is not None:
                return run
        # already on the inference copy (or the network as it is): no second copy
        return knockout_predictions_loop(network, images, labels, units, orders, steps, image_chunk, "false",
                                         progress)
    counter = _StepCount(progress, len(images))
    segments, tail = split
    layer_of, channel_of = units.layer_index, units.channel
    count = len(images)
    predictions = np.empty((len(orders), steps + 1, count), dtype=np.int64)
    losses = np.empty((len(orders), steps + 1, count), dtype=np.float32)
    parameter = next(network.parameters())
    with eval_mode(network), torch.no_grad():
        for start in range(0, count, image_chunk):
            rows = slice(start, start + image_chunk)
            x = images[rows].to(parameter.device, parameter.dtype)
            y = labels[rows].to(parameter.device)
            intact, h = [], x  # every layer's output with nothing knocked out
            for segment in segments:
                h = segment(h)
                intact.append(h)
            logits = tail(h)
            first = (logits.argmax(1).cpu().numpy(), F.cross_entropy(logits, y, reduction="none").cpu().numpy())
            seen = {0: first}  # knocked set (bit mask) -> results: orderings share prefixes and the end
            for r, order in enumerate(orders):
                predictions[r, 0, rows], losses[r, 0, rows] = first
                raw = list(intact)  # raw[j]: layer j's output given the masks before it
                stale = len(segments)  # raw[i] for i > stale is out of date (a skipped step)
                knocked: list[list[int]] = [[] for _ in units.layers]
                key = 0
                for step in range(1, steps + 1):
                    unit = int(order[step - 1])
                    j = int(layer_of[unit])
                    knocked[j].append(int(channel_of[unit]))
                    key |= 1 << unit
                    if key in seen:  # another ordering reached this set: same network, same answer
                        stale = min(stale, j)
                        predictions[r, step, rows], losses[r, step, rows] = seen[key]
                        continue
                    # layers before the first changed one are unchanged: start from its kept output
                    j = min(j, stale)
                    stale = len(segments)
                    h = raw[j] * _channel_mask(units.sizes[j], units.ndims[j], knocked[j], raw[j]) \
                        if knocked[j] else raw[j]
                    for i in range(j + 1, len(segments)):
                        raw[i] = segments[i](h)
                        h = raw[i] * _channel_mask(units.sizes[i], units.ndims[i], knocked[i], raw[i]) \
                            if knocked[i] else raw[i]
                    logits = tail(h)
                    seen[key] = (logits.argmax(1).cpu().numpy(),
                                 F.cross_entropy(logits, y, reduction="none").cpu().numpy())
                    predictions[r, step, rows], losses[r, step, rows] = seen[key]
                counter.ordering(steps, len(x))
    return KnockoutRun(predictions, losses)


def _knockout_by_graph(replay: GraphReplay, network: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       units: Units, orders: np.ndarray, steps: int, image_chunk: int,
                       progress=None) -> KnockoutRun | None:
    """The fast path on any traced network: each step reruns only the graph nodes downstream of
    the layers whose masks changed. A mask multiplies the knocked channels by zero (the hook
    loop zeroes a clone: the same values, so the results equal it bit for bit, tested); None
    (the caller falls back) when the replayed intact network does not give its own logits."""
    layer_of, channel_of = units.layer_index, units.channel
    count = len(images)
    counter = _StepCount(progress, count)
    predictions = np.empty((len(orders), steps + 1, count), dtype=np.int64)
    losses = np.empty((len(orders), steps + 1, count), dtype=np.float32)
    parameter = next(network.parameters())
    with eval_mode(network), torch.no_grad():
        for start in range(0, count, image_chunk):
            rows = slice(start, start + image_chunk)
            x = images[rows].to(parameter.device, parameter.dtype)
            y = labels[rows].to(parameter.device)
            knocked: list[list[int]] = [[] for _ in units.layers]
            masks: dict[int, torch.Tensor] = {}  # layer -> its channel mask, made when its knocked set grows

            def mask(j: int, value: torch.Tensor) -> torch.Tensor:
                # one multiply, as the Sequential path does: a third of clone-and-zero's time on
                # a channels-last tensor, and the same values downstream (-0 where zero was)
                if not knocked[j]:
                    return value
                if j not in masks:
                    masks[j] = _channel_mask(units.sizes[j], units.ndims[j], knocked[j], value)
                return value * masks[j]

            intact_values, intact_raw = replay.run(x, mask)
            logits = intact_values[replay.output]
            if start == 0 and not torch.equal(logits, network(x)):
                log.info("knockout: the traced graph of %s does not reproduce its forward; using the plain path",
                         type(network).__name__)
                return None
            first = (logits.argmax(1).cpu().numpy(), F.cross_entropy(logits, y, reduction="none").cpu().numpy())
            seen = {0: first}  # knocked set (bit mask) -> results: orderings share prefixes and the end
            for r, order in enumerate(orders):
                predictions[r, 0, rows], losses[r, 0, rows] = first
                values, raw = dict(intact_values), dict(intact_raw)
                for j in range(len(knocked)):
                    knocked[j] = []
                masks.clear()
                changed: set[int] = set()  # layers whose mask changed since values were last brought up to date
                key = 0
                for step in range(1, steps + 1):
                    unit = int(order[step - 1])
                    j = int(layer_of[unit])
                    knocked[j].append(int(channel_of[unit]))
                    masks.pop(j, None)
                    key |= 1 << unit
                    changed.add(j)
                    if key in seen:  # another ordering reached this set: same network, same answer
                        predictions[r, step, rows], losses[r, step, rows] = seen[key]
                        continue
                    replay.recompute(values, raw, changed, mask)
                    changed = set()
                    logits = values[replay.output]
                    seen[key] = (logits.argmax(1).cpu().numpy(),
                                 F.cross_entropy(logits, y, reduction="none").cpu().numpy())
                    predictions[r, step, rows], losses[r, step, rows] = seen[key]
                counter.ordering(steps, len(x))
    return KnockoutRun(predictions, losses)


def knockout_predictions_loop(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    units: Units,
    orders: np.ndarray,
    steps: int | None = None,
    image_chunk: int = 512,
    optimize: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> KnockoutRun:
    """The per-step loop most people write: hooks zero the knocked channels, one full
    forward per step. The reference the fast path is tested and benchmarked against,
    and the fallback for networks that do not trace. With the same `optimize`, it runs on
    the same network (the inference copy, or the network as it is) as the fast path, so
    the two agree bit for bit; optimize=false is the loop on the network as given."""
    orders, steps = _check_orders(orders, units, steps)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    given = network
    network, images = on_inference_copy(network, images, units.layers, optimize, knockout_check(units.layers))
    modules = dict(network.named_modules())
    knocked: dict[str, list[int]] = {layer: [] for layer in units.layers}

    def hook(name: str):
        def zero(module, inputs, output):
            if knocked[name]:
                output = output.clone()
                output[:, knocked[name]] = 0
            return output
        return zero

    handles = [modules[layer].register_forward_hook(hook(layer)) for layer in units.layers]
    counter = _StepCount(progress, len(images))
    predictions = np.empty((len(orders), steps + 1, len(images)), dtype=np.int64)
    losses = np.empty((len(orders), steps + 1, len(images)), dtype=np.float32)
    parameter = next(network.parameters())
    try:
        with eval_mode(network), torch.no_grad():
            for r, order in enumerate(orders):
                for layer in knocked:
                    knocked[layer] = []
                for step in range(steps + 1):
                    if step:
                        unit = order[step - 1]
                        knocked[units.layers[units.layer_index[unit]]].append(int(units.channel[unit]))
                    for start in range(0, len(images), image_chunk):
                        rows = slice(start, start + image_chunk)
                        logits = network(images[rows].to(parameter.device, parameter.dtype))
                        y = labels[rows].to(logits.device)
                        predictions[r, step, rows] = logits.argmax(1).cpu().numpy()
                        losses[r, step, rows] = F.cross_entropy(logits, y, reduction="none").cpu().numpy()
                counter.ordering(steps, len(images))
    finally:
        for handle in handles:
            handle.remove()
    return KnockoutRun(predictions, losses, network is not given)
