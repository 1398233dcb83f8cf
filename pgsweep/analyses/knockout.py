"""Knockout curves (thesis 4.2.2, Figures 4.1 and 4.2): zero filters one by one, watch the error.

A filter is knocked out by zeroing its channel of the activation in the forward pass;
the weights stay untouched. An ordering of units is replayed step by step: after
step s the first s units of the ordering are zeroed.

Fast and exact: for a network that is an nn.Sequential with the knocked layers among
its children, each step recomputes only from the layer whose mask changed, reusing
the outputs of the layers before it (they cannot change), and the unmasked first
pass is shared by every ordering. Any other network torch.fx can trace (residual
blocks included) replays its graph node by node, rerunning only the nodes downstream
of the changed layer (pgsweep.analyses.graph); one that does not trace takes the loop.
The results equal the plain per-step loop (`knockout_predictions_loop`) bit for bit:
same modules, same order of operations.

By default (on the CPU) both run on the network's inference copy (pgsweep.analyses.inference:
batch norm folded, channels-last memory), checked against the network first: the same
function with other rounding, so against the loop on the network as given the losses
agree to about 1e-6 and the predictions wherever two classes are not tied that closely.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.nn import functional as F

from pgsweep.analyses.graph import GraphReplay, graph_replay
from pgsweep.analyses.inference import on_inference_copy
from pgsweep.analyses.ranking import strongest_first, weakest_first
from pgsweep.analyses.units import Units
from pgsweep.errors import QueryError
from pgsweep.pg.engine import _eval_mode

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class KnockoutRun:
    """What every step of every ordering predicts.

    predictions: (R, S + 1, N) int64 predicted class; step 0 is the intact network
    losses:      (R, S + 1, N) float32 cross-entropy of each image at each step
    """

    predictions: np.ndarray
    losses: np.ndarray


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
    """Split a Sequential network right after each knocked layer; None if it is not one."""
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
    for position in positions:
        segments.append(nn.Sequential(*[m for _, m in children[start : position + 1]]))
        start = position + 1
    return segments, nn.Sequential(*[m for _, m in children[start:]])


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
) -> KnockoutRun:
    """Replay each ordering of units (R, >= steps) on the images, one knockout per step.

    Returns the predictions and losses after 0..steps knockouts for every ordering.
    Any network works; the fast path needs an nn.Sequential with the layers as children,
    or a network torch.fx can trace. optimize (auto: on the CPU): replay on the network's
    inference copy (pgsweep.analyses.inference), as `knockout_predictions_loop` does with
    the same setting; false: on the network as it is.
    """
    orders, steps = _check_orders(orders, units, steps)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    network, images = on_inference_copy(network, images, units.layers, optimize)
    split = _segments(network, units.layers)
    if split is None:
        replay = graph_replay(network, units.layers, "knockout")
        if replay is not None:
            run = _knockout_by_graph(replay, network, images, labels, units, orders, steps, image_chunk)
            if run is not None:
                return run
        # already on the inference copy (or the network as it is): no second copy
        return knockout_predictions_loop(network, images, labels, units, orders, steps, image_chunk, "false")
    segments, tail = split
    layer_of, channel_of = units.layer_index, units.channel
    count = len(images)
    predictions = np.empty((len(orders), steps + 1, count), dtype=np.int64)
    losses = np.empty((len(orders), steps + 1, count), dtype=np.float32)
    parameter = next(network.parameters())
    with _eval_mode(network), torch.no_grad():
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
    return KnockoutRun(predictions, losses)


def _knockout_by_graph(replay: GraphReplay, network: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       units: Units, orders: np.ndarray, steps: int, image_chunk: int) -> KnockoutRun | None:
    """The fast path on any traced network: each step reruns only the graph nodes downstream of
    the layers whose masks changed. A mask multiplies the knocked channels by zero (the hook
    loop zeroes a clone: the same values, so the results equal it bit for bit, tested); None
    (the caller falls back) when the replayed intact network does not give its own logits."""
    layer_of, channel_of = units.layer_index, units.channel
    count = len(images)
    predictions = np.empty((len(orders), steps + 1, count), dtype=np.int64)
    losses = np.empty((len(orders), steps + 1, count), dtype=np.float32)
    parameter = next(network.parameters())
    with _eval_mode(network), torch.no_grad():
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
) -> KnockoutRun:
    """The per-step loop most people write: hooks zero the knocked channels, one full
    forward per step. The reference the fast path is tested and benchmarked against,
    and the fallback for networks that do not trace. With the same `optimize`, it runs on
    the same network (the inference copy, or the network as it is) as the fast path, so
    the two agree bit for bit; optimize=false is the loop on the network as given."""
    orders, steps = _check_orders(orders, units, steps)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    network, images = on_inference_copy(network, images, units.layers, optimize)
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
    predictions = np.empty((len(orders), steps + 1, len(images)), dtype=np.int64)
    losses = np.empty((len(orders), steps + 1, len(images)), dtype=np.float32)
    parameter = next(network.parameters())
    try:
        with _eval_mode(network), torch.no_grad():
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
    finally:
        for handle in handles:
            handle.remove()
    return KnockoutRun(predictions, losses)


# ---------------------------------------------------------------- oracle and curves

def single_knockouts(
    network: nn.Module, images: torch.Tensor, labels: torch.Tensor, units: Units,
    num_classes: int, image_chunk: int = 512, optimize: str = "auto",
) -> pd.DataFrame:
    """Each unit knocked out alone: the rise in each class's mean loss and error.

    Returns rows (class, unit, loss_increase, error_increase). The oracle ranks units by
    loss_increase: the loss moves with every image's confidence, where the error of a
    class with 3 test images moves in steps of 1/3 and ties most units.
    """
    orders = np.arange(units.total)[:, None]  # U orderings of one unit each
    run = knockout_predictions(network, images, labels, units, orders, 1, image_chunk, optimize)
    labels_np = np.asarray(labels)
    wrong = run.predictions != labels_np  # (U, 2, N)
    rows = []
    for c in range(num_classes):
        members = labels_np == c
        if not members.any():
            continue
        loss = run.losses[:, :, members].mean(axis=2)  # (U, 2)
        error = wrong[:, :, members].mean(axis=2)
        for u in range(units.total):
            rows.append({"class": c, "unit": u, "loss_increase": float(loss[u, 1] - loss[u, 0]),
                         "error_increase": float(error[u, 1] - error[u, 0])})
    return pd.DataFrame(rows)


def random_orders(total: int, count: int, seed: int) -> np.ndarray:
    """(count, total) random permutations of the units, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(total) for _ in range(count)]) if count else np.empty((0, total), np.int64)


def class_orders(scores: dict[str, np.ndarray], random: np.ndarray) -> tuple[np.ndarray, list[tuple[str, str, int]]]:
    """Every ordering of one class: each score's strongest- and weakest-first, then random.

    scores: name -> (U,) the class's score per unit. Returns (R, U) orders and, per row,
    (score, direction, seed index) with direction "strongest", "weakest" or "random".
    """
    rows, keys = [], []
    for name, values in scores.items():
        rows += [strongest_first(values), weakest_first(values)]
        keys += [(name, "strongest", -1), (name, "weakest", -1)]
    for i, order in enumerate(random):
        rows.append(order)
        keys.append(("random", "random", i))
    return np.stack(rows), keys


# a knocked-out net that gives one class to at least this share of the test images has
# collapsed: its error on that class is then near 0, which must not read as "fine"
COLLAPSE_SHARE = 0.5


def emptied_layers(order: np.ndarray, units: Units) -> list[str]:
    """For steps 0..len(order): the layers (numbered from 1) all of whose units are knocked
    out by then, as text ("", "1", "1,3"). Emptying a layer cuts the network in two, which
    decides the error whatever the order of the rest."""
    sizes = np.asarray(units.sizes)
    counts = np.zeros(len(sizes), dtype=np.int64)
    out = [""]
    for unit in order:
        counts[units.layer_index[int(unit)]] += 1
        out.append(",".join(str(j + 1) for j in np.flatnonzero(counts == sizes)))
    return out


def curve_table(
    run: KnockoutRun, keys: list[tuple[str, str, int]], orders: np.ndarray, labels: np.ndarray,
    target: int, target_name: str, units: Units,
) -> pd.DataFrame:
    """Long table of one class's curves: (class, score, direction, seed, step, unit knocked,
    class_error, overall_error, class_loss), and what a reader needs to trust a number:

    class_images / images: how many test images the class error / overall error are over;
    class_precision: of the test images predicted as the class, the share that are it (NaN
    when none is); top_class_share: the largest share of test images given one class;
    collapsed: top_class_share >= COLLAPSE_SHARE (a class error of 0 then means little);
    emptied_layers: layers (from 1) whose every filter is knocked out by this step.
    """
    labels = np.asarray(labels)
    members = labels == target
    wrong = run.predictions != labels  # (R, S + 1, N)
    class_error = wrong[:, :, members].mean(axis=2)
    overall_error = wrong.mean(axis=2)
    class_loss = run.losses[:, :, members].mean(axis=2)
    predicted = run.predictions == target
    hits = (predicted & members).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted.sum(axis=2) > 0, hits / predicted.sum(axis=2), np.nan)
    classes = int(max(run.predictions.max(initial=0), labels.max(initial=0))) + 1
    shares = np.stack([(run.predictions == k).mean(axis=2) for k in range(classes)])  # (K, R, S + 1)
    top_share = shares.max(axis=0)
    names = units.names()
    frames = []
    steps = run.predictions.shape[1]
    for r, (score, direction, seed) in enumerate(keys):
        frames.append(pd.DataFrame({
            "class": target, "class_name": target_name, "score": score, "direction": direction,
            "seed": seed, "step": np.arange(steps),
            "knocked": [""] + [names[u] for u in orders[r, : steps - 1]],
            "class_error": class_error[r], "overall_error": overall_error[r], "class_loss": class_loss[r],
            "class_images": int(members.sum()), "images": len(labels),
            "class_precision": precision[r], "top_class_share": top_share[r],
            "collapsed": top_share[r] >= COLLAPSE_SHARE,
            "emptied_layers": emptied_layers(orders[r, : steps - 1], units),
        }))
    return pd.concat(frames, ignore_index=True)


def class_errors(run: KnockoutRun, labels: np.ndarray, target: int) -> np.ndarray:
    """(R, S + 1): the error on the images of class `target` among `labels` after each step."""
    members = np.asarray(labels) == target
    return (run.predictions[:, :, members] != target).mean(axis=2)


# ---------------------------------------------------------------- ways of knocking a filter out

ZEROINGS = {
    "post_activation": "the filter's map after the activation (what pgsweep zeroes)",
    "pre_activation": "the convolution's output channel, before the activation",
    "pooled": "the filter's map after the pooling that follows",
    "weights": "the filter's weights and bias",
}


def _neighbours(network: nn.Module, layer: str) -> tuple[nn.Module | None, nn.Module | None]:
    """The children right before and after `layer` in a Sequential (None where there is none)."""
    if not isinstance(network, nn.Sequential):
        return None, None
    names = [name for name, _ in network.named_children()]
    if layer not in names:
        return None, None
    i = names.index(layer)
    children = list(network.children())
    return (children[i - 1] if i else None), (children[i + 1] if i + 1 < len(children) else None)


def zeroing_predictions(network: nn.Module, images: torch.Tensor, units: Units, orders: np.ndarray,
                        how: str) -> np.ndarray | None:
    """(R, S + 1, N) predictions when each knocked filter is removed in way `how` (ZEROINGS).

    None when the network has no such place for every layer (not a Sequential, no
    convolution before the map, no pooling after it).
    """
    orders = np.asarray(orders, dtype=np.int64)
    places = {}
    for layer in units.layers:
        before, after = _neighbours(network, layer)
        place = {"post_activation": dict(network.named_modules()).get(layer),
                 "pre_activation": before if isinstance(before, nn.Conv2d) else None,
                 "weights": before if isinstance(before, nn.Conv2d) else None,
                 "pooled": after if isinstance(after, (nn.MaxPool2d, nn.AvgPool2d)) else None}[how]
        if place is None:
            return None
        places[layer] = place
    knocked: dict[str, list[int]] = {layer: [] for layer in units.layers}

    def zero_output(name):
        def hook(module, inputs, output):
            if knocked[name]:
                output = output.clone()
                output[:, knocked[name]] = 0
            return output
        return hook

    handles = []
    if how != "weights":
        handles = [places[layer].register_forward_hook(zero_output(layer)) for layer in units.layers]
    saved = {layer: (places[layer].weight.detach().clone(), places[layer].bias.detach().clone()
                     if places[layer].bias is not None else None) for layer in units.layers} if how == "weights" else {}
    out = np.empty((len(orders), orders.shape[1] + 1, len(images)), dtype=np.int64)
    parameter = next(network.parameters())
    try:
        with _eval_mode(network), torch.no_grad():
            for r, order in enumerate(orders):
                for layer in knocked:
                    knocked[layer] = []
                for step in range(orders.shape[1] + 1):
                    if step:
                        unit = order[step - 1]
                        knocked[units.layers[units.layer_index[unit]]].append(int(units.channel[unit]))
                    if how == "weights":
                        for layer, (weight, bias) in saved.items():
                            conv = places[layer]
                            conv.weight.copy_(weight)
                            conv.weight[knocked[layer]] = 0
                            if bias is not None:
                                conv.bias.copy_(bias)
                                conv.bias[knocked[layer]] = 0
                    logits = network(images.to(parameter.device, parameter.dtype))
                    out[r, step] = logits.argmax(1).cpu().numpy()
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for layer, (weight, bias) in saved.items():
                places[layer].weight.copy_(weight)
                if bias is not None:
                    places[layer].bias.copy_(bias)
    return out


def zeroing_agreement(network: nn.Module, images: torch.Tensor, labels: torch.Tensor, units: Units,
                      orders: np.ndarray) -> pd.DataFrame:
    """Does it matter where a filter is zeroed? For each way in ZEROINGS, the share of
    (ordering, step, image) predictions equal to zeroing the map after the activation.

    With tanh (tanh(0) = 0) and max pooling all four are the same network, so the answer
    should be 1.0; a sigmoid (sigmoid(0) = 0.5) would make them differ. Rows (zeroing,
    what, agreement, predictions); agreement NaN where the network has no such place.
    """
    # like for like: every zeroing here runs on the network as it is
    reference = knockout_predictions(network, images, labels, units, orders, optimize="false").predictions
    rows = []
    for how, what in ZEROINGS.items():
        got = zeroing_predictions(network, images, units, orders, how)
        agreement = float((got == reference).mean()) if got is not None else float("nan")
        rows.append({"zeroing": how, "what": what, "agreement": agreement, "predictions": int(reference.size)})
    return pd.DataFrame(rows)


def area(values: np.ndarray) -> float:
    """The knockout summaries' `auc_*`: the area under an error curve over 0..S knockouts by the
    trapezoid rule, divided by S, so in [0, 1]. It is the average height of the piecewise-linear
    curve, in which the first and last points (no knockout, all S) weigh half as much as the
    others; not the plain mean of the S + 1 errors."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values[0]) if len(values) else float("nan")
    return float(np.trapezoid(values) / (len(values) - 1))


def summarize(curves: pd.DataFrame, scores: dict[str, np.ndarray], oracle: np.ndarray, after: int) -> pd.DataFrame:
    """One class's summary per score: areas, area between the two directions, error after
    `after` knockouts each way, and the Spearman correlation of the score with the oracle.

    scores: name -> (U,) for this class; oracle: (U,) loss increase of single knockouts.
    """
    rows = []
    for score, group in curves.groupby("score", sort=False):
        row = {"class": int(group["class"].iloc[0]), "class_name": group["class_name"].iloc[0], "score": score}
        for curve in ("class_error", "overall_error", "class_error_all"):
            if curve not in group or group[curve].isna().all():  # the whole set: PG and random only
                continue
            by_direction = {d: g.groupby("step")[curve].mean().to_numpy() for d, g in group.groupby("direction")}
            for direction, values in by_direction.items():
                row[f"auc_{direction}_{curve}"] = area(values)
                row[f"{curve}_after_{after}_{direction}"] = float(values[min(after, len(values) - 1)])
            if {"strongest", "weakest"} <= set(by_direction):
                # positive when knocking the top-scored units first hurts more, as it should
                row[f"area_between_{curve}"] = row[f"auc_strongest_{curve}"] - row[f"auc_weakest_{curve}"]
        for flag in ("collapsed", "emptied_layers"):
            if flag not in group:
                continue
            for direction, g in group[group["direction"] != "random"].groupby("direction"):
                at = g[g["step"] == min(after, int(g["step"].max()))][flag]
                # 1.0: the net after `after` knockouts this way collapsed / lost a whole layer
                row[f"{'collapsed' if flag == 'collapsed' else 'emptied'}_after_{after}_{direction}"] = \
                    float(at.astype(bool).mean()) if flag == "collapsed" else float((at != "").mean())
        if score in scores:
            rho = spearmanr(scores[score], oracle).statistic
            row["spearman_oracle"] = float(rho) if np.isfinite(rho) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
