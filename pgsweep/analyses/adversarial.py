"""Targeted perturbations along the input prediction gradient (thesis section 4.4).

For image x, target class t and step size s: x' = x + s * direction(d y_t / d x), where
the direction is the raw gradient, the gradient scaled to unit L2 norm, or its sign;
optionally clipped to the valid pixel range. The prediction on x' says whether the
perturbation succeeded (argmax == t, for t other than the true class) and whether it
induced an error (argmax != the true class).

Pure tensor math and pandas tables; nothing here knows about Ray or MLflow. The sweep
(pgsweep.sweep) calls `evaluate_block` on shards of the grid, in-process or on workers.

Speed: each (image, target) gradient comes from one engine call and is shared by every
step. For unclipped steps the layers before the first nonlinearity are affine, so the
prefix output of x + s*g is A(x) + s * L(g): the prefix runs twice per (image, target)
instead of once per step, and only the rest of the network runs per step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import fx, nn

from pgsweep.analyses.graph import GraphReplay, traced
from pgsweep.analyses.inference import CopyCheck, channels_last, on_inference_copy
from pgsweep.errors import QueryError
from pgsweep.models.convnet import Standardize
from pgsweep.analyses.choices import STEP_KINDS, Perturbation, check_steps  # noqa: F401  (the analysis's names)
from pgsweep.pg import INPUT, prediction_gradients

log = logging.getLogger(__name__)

# modules that are affine maps (eval mode), so a prefix made of them is affine
_AFFINE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Flatten, nn.Identity,
                 nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.ZeroPad2d)
RESULT_COLUMNS = ("image", "label", "target", "step_index", "step", "pixel_rms", "target_confidence",
                  "true_confidence", "prediction", "success", "induced_error")


def step_directions(gradients: torch.Tensor, kind: str) -> torch.Tensor:
    """(T, B, *x) gradients -> the directions stepped along: raw, unit L2 per (t, b), or sign."""
    if kind == "raw":
        return gradients
    if kind == "sign":
        return gradients.sign()
    norms = gradients.flatten(2).norm(dim=2).clamp_min(torch.finfo(gradients.dtype).tiny)
    return gradients / norms.reshape(*norms.shape, *[1] * (gradients.dim() - 2))


def input_gradients(network: nn.Module, images: torch.Tensor, targets: Sequence[int], output: str) -> torch.Tensor:
    """(T, B, *x): d y_t / d x for every target t and image, from one engine call."""
    return prediction_gradients(network, images, [INPUT], list(targets), output=output).gradients[INPUT]


def gradient_norms(network: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   targets: Sequence[int], output: str, image_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """L2 norm of d y_t / d x per (image, target): what a raw step of size s moves x by, over s.

    image_ids: what the `image` column holds for each image (the sweep: dataset indices,
    as in its other tables); default 0..B-1.
    """
    ids = list(range(images.shape[0])) if image_ids is None else [int(i) for i in image_ids]
    grads = input_gradients(network, images, targets, output)
    norms = grads.flatten(2).norm(dim=2)  # (T, B)
    rows = [(ids[b], int(labels[b]), int(t), float(norms[i, b]))
            for i, t in enumerate(targets) for b in range(images.shape[0])]
    return pd.DataFrame(rows, columns=["image", "label", "target", "gradient_norm"])


def direction_norm(norms: pd.DataFrame, step_kind: str, pixels: int) -> float:
    """||d||_2 of a step direction: 1 for l2 steps, sqrt(pixels) for sign steps, and for raw
    steps the gradient's norm, taken as the median over the (image, target != label) pairs."""
    if step_kind == "raw":
        off_target = norms[norms.target != norms.label].gradient_norm
        scale = float(np.median(off_target if len(off_target) else norms.gradient_norm))
        if not scale > 0:
            raise QueryError("every input gradient is zero: raw steps cannot move the images")
        return scale
    return 1.0 if step_kind == "l2" else math.sqrt(pixels)


def steps_from_norms(norms: pd.DataFrame, step_kind: str, pixels: int,
                     rms_min: float, rms_max: float, count: int) -> tuple[float, ...]:
    """A log range of steps that moves pixels by rms_min .. rms_max (root mean square).

    A step s along direction d changes x by s * ||d||_2, i.e. s * ||d|| / sqrt(pixels)
    per pixel (RMS); ||d|| is direction_norm's, so the range suits this model's
    gradients rather than a guess.
    """
    per_unit = direction_norm(norms, step_kind, pixels) / math.sqrt(pixels)  # RMS pixel change of a unit step
    return tuple(float(v) for v in np.geomspace(rms_min / per_unit, rms_max / per_unit, count))


# ---------------------------------------------------------------- the affine prefix

def _children(network: nn.Module) -> list[tuple[str, nn.Module]] | None:
    return list(network.named_children()) if isinstance(network, nn.Sequential) else None


def _is_affine(module: nn.Module) -> bool:
    return isinstance(module, (*_AFFINE_TYPES, Standardize))


def _affine_chain(network: nn.Module) -> tuple[GraphReplay, list[int]] | None:
    """A traced network and the graph positions of its leading chain of affine modules: each
    takes the one before it (the image, for the first) as its only input and is its only user.
    None when it does not trace, or has a forward pre-hook other than pgsweep's standardisation."""
    from pgsweep.models.build import InputStandardization

    if any(not isinstance(hook, InputStandardization) for hook in network._forward_pre_hooks.values()):
        return None
    graph_module, _ = traced(network)
    if graph_module is None:
        return None
    try:
        replay = GraphReplay(network, graph_module, [])
    except ValueError:
        return None
    position = {node: i for i, node in enumerate(replay.nodes)}
    chain, current = [], replay.input
    while len(current.users) == 1:
        user = next(iter(current.users))
        if user.op != "call_module" or not _is_affine(replay.modules[user.target]):
            break
        if list(user.all_input_nodes) != [current]:
            break
        chain.append(position[user])
        current = user
    return replay, chain


def find_affine_prefix(network: nn.Module, example: torch.Tensor | None = None) -> str | None:
    """The last layer of the leading run of affine modules (None if none): of an nn.Sequential's
    children, or of any other network's torch.fx graph (a residual net's stem conv and batch norm).

    On a graph, given an `example` image batch, a prefix whose output is larger than the image
    is not used: each step would add more values than it saves (measured on a small ResNet,
    whose 3 -> 16 channel stem made the sweep slower, `make bench`).

    The thesis convnet gives `conv1` (standardization, then conv1, before tanh). Any
    module with parameters or buffers that is not a known affine type ends the run.
    """
    children = _children(network)
    if children is None:
        found = _affine_chain(network)
        if found is None:
            return None
        replay, chain = found
        modules = [replay.modules[replay.nodes[i].target] for i in chain]
        if not chain or all(isinstance(m, (nn.Flatten, nn.Identity)) for m in modules):
            return None
        name = str(replay.nodes[chain[-1]].target)
        if example is not None:
            parameter = next(network.parameters(), None)
            x = example[:1] if parameter is None else example[:1].to(parameter.device, parameter.dtype)
            with torch.no_grad():
                out = _GraphPrefix(replay, chain[-1])(x)
            if out.numel() > x.numel():
                log.info("affine prefix: %s's output (%s) is larger than the image (%s): perturbing pixels "
                         "is cheaper", name, tuple(out.shape[1:]), tuple(x.shape[1:]))
                return None
        return name
    if not children:
        return None
    last = None
    for name, module in children:
        if not _is_affine(module):
            break
        last = name
    # a prefix that is only reshaping (flatten) saves nothing
    if last is None or all(isinstance(m, (nn.Flatten, nn.Identity)) for n, m in children[: _index(children, last) + 1]):
        return None
    return last


def _index(children, name: str) -> int:
    return [n for n, _ in children].index(name)


class _GraphPrefix(nn.Module):
    """The traced network's nodes up to and including the cut: x -> the cut's output."""

    def __init__(self, replay: GraphReplay, cut: int) -> None:
        super().__init__()
        self.replay, self.cut = replay, cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.replay.input: self.replay.prepare_input(x)}
        for node in self.replay.nodes[1 : self.cut + 1]:
            values[node] = self.replay.run_node(node, values)
        return values[self.replay.nodes[self.cut]]


def _graph_rest(replay: GraphReplay, cut: int) -> fx.GraphModule:
    """The traced network's nodes after the cut, as a module of its own: the cut's output ->
    logits. Generated code, not a node-by-node replay: it runs once per step, and on a small
    ResNet the replay's per-node overhead cost about what the prefix saved."""
    graph, env = fx.Graph(), {}
    env[replay.nodes[cut]] = graph.placeholder("h")
    for node in replay.nodes[cut + 1 :]:
        for source in node.all_input_nodes:  # a constant read after the cut but defined before it
            if source not in env and source.op == "get_attr":
                env[source] = graph.node_copy(source)
        env[node] = graph.node_copy(node, env.__getitem__)
    return fx.GraphModule(replay.graph_module, graph, class_name="GraphRest")


def split_at(network: nn.Module, layer: str) -> tuple[nn.Module, nn.Module]:
    """(prefix, rest) of the network, cut after layer `layer`: a top-level child of an
    nn.Sequential, or a module of the leading affine chain of any other net's fx graph."""
    children = _children(network)
    if children is None:
        found = _affine_chain(network)
        if found is None:
            raise QueryError("the affine prefix needs an nn.Sequential or a network torch.fx can trace; "
                             "set affine_prefix=none")
        replay, chain = found
        names = [str(replay.nodes[i].target) for i in chain]
        if layer not in names:
            raise QueryError(f"affine_prefix '{layer}' is not in the network's leading affine layers; "
                             f"have {', '.join(names) or 'none'}")
        cut = chain[names.index(layer)]
        return _GraphPrefix(replay, cut), _graph_rest(replay, cut)
    names = [n for n, _ in children]
    if layer not in names:
        raise QueryError(f"affine_prefix '{layer}' is not a top-level layer; have {', '.join(names)}")
    cut = names.index(layer) + 1
    return nn.Sequential(*[m for _, m in children[:cut]]), nn.Sequential(*[m for _, m in children[cut:]])


@torch.no_grad()
def linear_part(prefix: nn.Module, directions: torch.Tensor) -> torch.Tensor:
    """L(d) = prefix(d) - prefix(0) for an affine prefix, without cancellation.

    Raw softmax gradients are tiny next to the prefix's offset (the standardization's
    mean), so prefix(d) - prefix(0) would lose most digits; each direction is scaled to
    max |d| = 1 first and the result scaled back, which linearity allows.
    """
    scale = directions.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(directions.dtype).tiny)
    shape = (-1, *[1] * (directions.dim() - 1))
    zero = prefix(torch.zeros_like(directions[:1]))
    moved = prefix(directions / scale.reshape(shape)) - zero
    return moved * scale.reshape(-1, *[1] * (moved.dim() - 1))


# ---------------------------------------------------------------- the fast path, checked

# elementwise and non-decreasing, so max_pool(act(z)) == act(max_pool(z)): pooling first
# applies the activation to a quarter of the values (2x2 pools)
_MONOTONE = (nn.Tanh, nn.ReLU, nn.Sigmoid, nn.Hardtanh, nn.ReLU6, nn.Identity)


def _fusable_pool(module: nn.Module) -> int:
    """k for a non-overlapping k x k max pool (kernel == stride, no padding/dilation), else 0."""
    if not isinstance(module, nn.MaxPool2d) or module.ceil_mode or module.return_indices:
        return 0
    k, stride, pad, dil = (module.kernel_size, module.stride, module.padding, module.dilation)
    same = lambda v: v if isinstance(v, int) else (v[0] if len(set(v)) == 1 else -1)  # noqa: E731
    k, stride, pad, dil = same(k), same(stride), same(pad), same(dil)
    return k if k > 1 and stride == k and pad == 0 and dil == 1 else 0


def _pool_first(modules: list[nn.Module]) -> list[nn.Module]:
    """Swap every (monotone activation, fusable max pool) pair: same output, less work."""
    out, i = [], 0
    while i < len(modules):
        if i + 1 < len(modules) and isinstance(modules[i], _MONOTONE) and _fusable_pool(modules[i + 1]):
            out += [modules[i + 1], modules[i]]
            i += 2
        else:
            out.append(modules[i])
            i += 1
    return out


def _phases(t: torch.Tensor, k: int) -> torch.Tensor:
    """(..., H, W) -> (k*k, ..., H//k, W//k): the k x k pool windows' members, one phase each."""
    h, w = (t.shape[-2] // k) * k, (t.shape[-1] // k) * k
    return torch.stack([t[..., i:h:k, j:w:k] for i in range(k) for j in range(k)])


@dataclass
class StepPlan:
    """How the perturbed images x + s*d go through the network, for many s.

    prefix: the affine layers applied once to x and once to d (None: perturb pixels)
    pool, act: a k x k max pool and monotone activation right after the prefix, done as
               the max over the k*k phases of A(x) + s L(d), then the activation
    rest:  the remaining layers, activation/max-pool pairs swapped to pool first
    """

    prefix: nn.Module | None
    pool: int
    act: nn.Module | None
    rest: nn.Module

    @classmethod
    def plain(cls, network: nn.Module) -> "StepPlan":
        return cls(None, 0, None, network)

    @classmethod
    def build(cls, network: nn.Module, affine_prefix: str | None, clip: bool) -> "StepPlan":
        children = _children(network)
        if children is None:
            if not affine_prefix or clip:
                return cls.plain(network)
            prefix, rest = split_at(network, affine_prefix)  # the traced graph's, or the clear error
            return cls(prefix, 0, None, rest)
        modules = [m for _, m in children]
        if not affine_prefix or clip:
            return cls(None, 0, None, nn.Sequential(*_pool_first(modules)))
        prefix, _ = split_at(network, affine_prefix)
        cut = len(prefix)
        act, pool = None, 0
        if cut + 1 < len(modules) and isinstance(modules[cut], _MONOTONE):
            pool = _fusable_pool(modules[cut + 1])
            act = modules[cut] if pool else None
        after = modules[cut + 2 :] if pool else modules[cut:]
        return cls(prefix, pool, act, nn.Sequential(*_pool_first(after)))

    def prepare(self, images: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(base, moved) for `images` (B, *x) and `directions` (T, B, *x): what each step combines."""
        if self.prefix is None:
            return images, directions
        base = self.prefix(images)  # (B, *a): A(x)
        moved = linear_part(self.prefix, directions.flatten(0, 1))  # (T*B, *a): L(d)
        moved = moved.reshape(*directions.shape[:2], *moved.shape[1:])  # (T, B, *a)
        if self.pool:
            base, moved = _phases(base, self.pool), _phases(moved, self.pool).transpose(0, 1)
            # base (P, B, ...), moved (T, P, B, ...)
        return base, moved

    def rows(self, base: torch.Tensor, moved: torch.Tensor, t: int, rows: slice):
        """The slices of base and moved for target index t and some images."""
        if self.pool:
            return base[:, rows], moved[t, :, rows]
        return base[rows], moved[t, rows]

    def logits(self, base_rows: torch.Tensor, moved_rows: torch.Tensor, step: float,
               clip: tuple[float, float] | None) -> torch.Tensor:
        if self.pool:
            pooled = torch.add(base_rows[0], moved_rows[0], alpha=step)
            for p in range(1, base_rows.shape[0]):
                torch.maximum(pooled, torch.add(base_rows[p], moved_rows[p], alpha=step), out=pooled)
            return self.rest(self.act(pooled))
        inputs = torch.add(base_rows, moved_rows, alpha=step)
        if clip is not None:
            inputs.clamp_(*clip)
        return self.rest(inputs)


@torch.no_grad()
def plan_agrees(plan: StepPlan, network: nn.Module, images: torch.Tensor, directions: torch.Tensor,
                step: float, clip: tuple[float, float] | None, tolerance: float = 1e-4) -> bool:
    """Does the plan give the network's own logits for x + step*d (one target, these images)?"""
    base, moved = plan.prepare(images, directions[:1])
    fast = plan.logits(*plan.rows(base, moved, 0, slice(None)), step, clip)
    inputs = images + step * directions[0]
    direct = network(inputs.clamp(*clip) if clip is not None else inputs)
    return bool((fast - direct).abs().max() <= tolerance * direct.abs().max().clamp_min(1.0))


# ---------------------------------------------------------------- evaluating a block

def network_for_steps(network: nn.Module, example: torch.Tensor, targets: Sequence[int], output: str,
                      optimize: str = "auto") -> nn.Module:
    """The network a block of the sweep runs on: its inference copy where `optimize` allows
    one and the copy's input gradients d y/d x at `targets` agree with the network's on
    `example` (pgsweep.analyses.inference), else the network itself. The verdict is kept
    per (network, targets) in the process."""
    targets = [int(t) for t in targets]
    check = CopyCheck(f"input gradients d y/d x of the {output} at targets {targets}",
                      lambda net, x: input_gradients(net, x, targets, output))
    network, _ = on_inference_copy(network, example, (), optimize, check, example)
    return network


@torch.no_grad()
def evaluate_block(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    image_ids: Sequence[int],
    targets: Sequence[int],
    steps: Sequence[float],
    perturbation: Perturbation = Perturbation(),
    affine_prefix: str | None = None,
    batch_size: int = 64,
    optimize: str = "auto",
    check_on: tuple[torch.Tensor, Sequence[int]] | None = None,
) -> pd.DataFrame:
    """Every (image, target, step) point of one block of the grid, as a table.

    images (B, *x) in the pixel range, labels (B,), image_ids (B,) the ids written in
    the table; targets (T,) class indices; steps (S,). One gradient per (image, target);
    per step one pass of the layers after the affine prefix (the whole network when
    there is none, or when clipping). Rows are ordered by image, target, step;
    confidences are softmax probabilities whatever `output` the gradient was of.
    optimize (auto: on the CPU): gradients and steps run on the network's inference copy
    (pgsweep.analyses.inference), checked against the network first; false: on the network.
    check_on: (images, targets) the copy is checked on, default this block's first 8 images
    at its targets. The verdict is kept per process, so a grid cut into blocks passes the
    same ones to every block: then no block's result depends on which ran first where.
    """
    perturbation.validate()
    steps = check_steps(steps)
    network.eval()
    parameter = next(network.parameters(), None)
    targets, copy_used = [int(t) for t in targets], False
    if parameter is not None:  # a network on a GPU gets its images there; tables come back on the CPU
        images = images.to(parameter.device, parameter.dtype)
        example, check_targets = (images[:8], targets) if check_on is None else check_on
        given = network
        network = network_for_steps(network, example, check_targets, perturbation.output, optimize)
        copy_used = network is not given
        if copy_used:
            images = channels_last(images)
    batch = images.shape[0]
    clip = (perturbation.clip_min, perturbation.clip_max) if perturbation.clip else None
    with torch.enable_grad():
        directions = step_directions(input_gradients(network, images, targets, perturbation.output),
                                     perturbation.step_kind)  # (T, B, *x)
    plan = StepPlan.build(network, affine_prefix, perturbation.clip)
    probe = slice(0, min(batch, 8))
    if not plan_agrees(plan, network, images[probe], directions[:, probe], max(steps), clip):
        log.warning("the fast path (affine prefix '%s') disagrees with the network on this batch: "
                    "using the plain path", affine_prefix)
        plan = StepPlan.plain(network)
    base, moved = plan.prepare(images, directions)
    logits = None
    # one (target, image chunk) at a time through every step, so its tensors stay in cache
    for t in range(len(targets)):
        for start in range(0, batch, batch_size):
            rows = slice(start, start + batch_size)
            base_rows, moved_rows = plan.rows(base, moved, t, rows)
            for k, s in enumerate(steps):
                out = plan.logits(base_rows, moved_rows, s, clip)  # (rows, C)
                if logits is None:
                    logits = out.new_empty(batch, len(targets), len(steps), out.shape[1])
                logits[rows, t, k] = out
    probs = torch.softmax(logits, dim=3).cpu()  # (B, T, S, C)
    table = _table(probs, labels, image_ids, targets, steps, actual_pixel_rms(images, directions, steps, clip))
    # how the block was computed, for the sweep's shard metadata (not a column: same for every row)
    table.attrs["inference_copy_used"] = copy_used
    return table


def actual_pixel_rms(images: torch.Tensor, directions: torch.Tensor, steps: Sequence[float],
                     clip: tuple[float, float] | None) -> torch.Tensor:
    """(B, T, S) float64: the RMS over pixels of x' - x, x' = x + s*d (clipped when clip is set).

    images (B, *x), directions (T, B, *x). Unclipped it is s * ||d|| / sqrt(pixels) for each
    (image, target): a raw step moves each pair by its own gradient's norm, not the median's.
    """
    pixels = images[0].numel()
    if clip is None:
        norms = directions.flatten(2).to(torch.float64).norm(dim=2).T.cpu()  # (B, T)
        return norms.unsqueeze(2) * torch.tensor(steps, dtype=torch.float64) / math.sqrt(pixels)
    out = torch.empty(images.shape[0], directions.shape[0], len(steps), dtype=torch.float64)
    for t in range(directions.shape[0]):
        for k, s in enumerate(steps):
            moved = (images + s * directions[t]).clamp(*clip) - images
            out[:, t, k] = moved.flatten(1).to(torch.float64).pow(2).mean(dim=1).sqrt().cpu()
    return out


def _table(probs: torch.Tensor, labels: torch.Tensor, image_ids: Sequence[int],
           targets: Sequence[int], steps: Sequence[float], rms: torch.Tensor) -> pd.DataFrame:
    """(B, T, S, C) probabilities -> one row per (image, target, step), ordered so."""
    batch, count, n_steps, _ = probs.shape
    label = labels.to(torch.int64).reshape(batch, 1, 1).expand(batch, count, n_steps)
    target = torch.tensor(targets, dtype=torch.int64).reshape(1, count, 1).expand(batch, count, n_steps)
    prediction = probs.argmax(dim=3)
    target_conf = probs.gather(3, target.unsqueeze(3)).squeeze(3)
    true_conf = probs.gather(3, label.unsqueeze(3)).squeeze(3)
    ids = torch.as_tensor(np.asarray(image_ids, dtype=np.int64)).reshape(batch, 1, 1).expand(batch, count, n_steps)
    step_index = torch.arange(n_steps).reshape(1, 1, n_steps).expand(batch, count, n_steps)
    step = torch.tensor(steps, dtype=torch.float64).reshape(1, 1, n_steps).expand(batch, count, n_steps)
    return pd.DataFrame({
        "image": ids.flatten().numpy(),
        "label": label.flatten().numpy(),
        "target": target.flatten().numpy(),
        "step_index": step_index.flatten().numpy(),
        "step": step.flatten().numpy(),
        "pixel_rms": rms.flatten().numpy(),
        "target_confidence": target_conf.flatten().numpy().astype(np.float32),
        "true_confidence": true_conf.flatten().numpy().astype(np.float32),
        "prediction": prediction.flatten().numpy(),
        # success only means something for targets other than the true class
        "success": ((prediction == target) & (target != label)).flatten().numpy(),
        "induced_error": (prediction != label).flatten().numpy(),
    })


@torch.no_grad()
def perturbed_images(network: nn.Module, images: torch.Tensor, targets: Sequence[int],
                     steps: Sequence[float], perturbation: Perturbation) -> torch.Tensor:
    """(B, T, S, *x): the perturbed images themselves (for figures; one per image and target)."""
    with torch.enable_grad():
        directions = step_directions(input_gradients(network, images, targets, perturbation.output),
                                     perturbation.step_kind).transpose(0, 1)  # (B, T, *x)
    out = torch.stack([images.unsqueeze(1) + s * directions for s in steps], dim=2)
    return out.clamp(perturbation.clip_min, perturbation.clip_max) if perturbation.clip else out


# ---------------------------------------------------------------- summaries

def summaries(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per_step, per_target) tables over the off-target points (target != true class).

    per_step: step_index, step, success, induced_error, points (, pixel_rms: median over the points)
    per_target: target, step_index, step, success, induced_error, points (, pixel_rms)
    """
    off = results[results.target != results.label]
    agg = {"success": ("success", "mean"), "induced_error": ("induced_error", "mean"),
           "points": ("success", "size")}
    if "pixel_rms" in off:  # a step's actual pixel change differs from point to point: the median
        agg["pixel_rms"] = ("pixel_rms", "median")
    per_step = off.groupby(["step_index", "step"], as_index=False).agg(**agg)
    per_target = off.groupby(["target", "step_index", "step"], as_index=False).agg(**agg)
    return per_step, per_target


# fixed edges (quarter decades of RMS pixel change), so bins mean the same in every model
PIXEL_RMS_EDGES = tuple(float(v) for v in 10.0 ** np.arange(-5.0, 1.01, 0.25))


def by_pixel_rms(results: pd.DataFrame) -> pd.DataFrame:
    """Off-target points binned by their actual pixel_rms (PIXEL_RMS_EDGES; points beyond
    the edges go to the end bins): rms_bin, pixel_rms (median in the bin), success,
    induced_error, points. Steps of different kinds are compared at the same pixel change so."""
    off = results[(results.target != results.label) & (results.pixel_rms > 0)]
    edges = np.asarray(PIXEL_RMS_EDGES)
    bins = np.clip(np.searchsorted(edges, off.pixel_rms.to_numpy(), side="right") - 1, 0, len(edges) - 2)
    return off.assign(rms_bin=bins).groupby("rms_bin", as_index=False).agg(
        pixel_rms=("pixel_rms", "median"), success=("success", "mean"),
        induced_error=("induced_error", "mean"), points=("success", "size"))


def easiest_targets(per_target: pd.DataFrame) -> pd.DataFrame:
    """Targets ranked by mean success over the steps (the thesis: some targets are much easier)."""
    ranking = per_target.groupby("target", as_index=False).agg(
        mean_success=("success", "mean"), mean_induced_error=("induced_error", "mean"))
    return ranking.sort_values(["mean_success", "target"], ascending=[False, True], ignore_index=True)
