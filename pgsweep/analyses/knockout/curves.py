"""The orderings a knockout replays and what is read off them: the oracle of single
knockouts, strongest-, weakest-first and random orders, the long table of error curves,
and each score's summary (areas under the curves, correlation with the oracle)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from pgsweep.analyses.knockout.replay import KnockoutRun, knockout_predictions
from pgsweep.analyses.ranking import strongest_first, weakest_first
from pgsweep.analyses.units import Units


def single_knockouts(
    network: nn.Module, images: torch.Tensor, labels: torch.Tensor, units: Units,
    num_classes: int, image_chunk: int = 512, optimize: str = "auto", progress=None,
) -> pd.DataFrame:
    """Each unit knocked out alone: the rise in each class's mean loss and error.

    Returns rows (class, unit, loss_increase, error_increase). The oracle ranks units by
    loss_increase: the loss moves with every image's confidence, where the error of a
    class with 3 test images moves in steps of 1/3 and ties most units. progress(n): n more
    of the U knockouts done.
    """
    orders = np.arange(units.total)[:, None]  # U orderings of one unit each
    run = knockout_predictions(network, images, labels, units, orders, 1, image_chunk, optimize, progress)
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
