"""Per-filter scores beside PG: gradient x activation, integrated PG, and Captum's layer attributions.

`unit_scores` answers, for a model, images and layers, one score per (class, image, filter):

    classes="all":        {layer: (T, B, F)}  T = every class of the model, in class order
    classes=(B,) tensor:  {layer: (B, F)}     each image's own chosen class only

F is a conv layer's filters (activation (F, H, W)) or an FC layer's units (activation (U,)).
Each score's reduction over a filter's map, with a = the activation, g = d y_t / d a (PG),
y = softmax probability or logit of class t (`output`):

    pg                    ||g||_norm over the map (the thesis's filter score, per image)
    grad_x_activation     sum over the map of a * g, signed: the first-order drop in y when
                          the map is zeroed (Captum's LayerGradientXActivation summed)
    grad_x_activation_l2  ||a * g||_2 over the map
    integrated_pg         ||int_0^1 g(baseline + s (x - baseline)) ds||_norm over the map:
                          PG integrated along the straight path (Captum's InternalInfluence)
    conductance           sum over the map of Captum's LayerConductance (signed)
    deeplift              sum over the map of Captum's LayerDeepLift, always of the logit
                          (its softmax rule depends on the other images in the batch)
    gradcam               mean over the map of Captum's LayerGradCam without the sum over
                          filters: Grad-CAM's per-map weight (mean g over the map) x mean a
    ablation              Captum's LayerFeatureAblation with one group per filter, zeroing it:
                          y - y(filter zeroed), exact (one forward per filter)

pg, grad_x_activation(_l2) and integrated_pg come from pgsweep's engine (every class from
one forward and one backward per class; integrated_pg: several path points stacked into each
such pass, each class's gradient folded into its integral as it comes). The Captum gradient
methods (conductance, deeplift, gradcam) get every class from one call per chunk of (class,
image) pairs, the target expanded over the copies of each image; ablation gets every class from
one call without a target (Captum then attributes every output, from the same ablated forwards).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pgsweep.errors import QueryError
from pgsweep.pg.engine import (
    INPUT, backward_each_target, forward_with_activations, image_class_gradients, layer_modules,
    prediction_gradients,
)
from pgsweep.pg.fast_conv import helps as fast_conv_helps
from pgsweep.pg.reductions import filter_scores
from pgsweep.pg.choices import CAPTUM_SCORES, ENGINE_SCORES, PATH_BASELINES, PG_OUTPUTS

SCORES = {
    "pg": "norm over the map of PG (d y / d a)",
    "grad_x_activation": "sum over the map of activation x PG, signed",
    "grad_x_activation_l2": "L2 over the map of activation x PG",
    "integrated_pg": "norm over the map of PG integrated along the path from the baseline (InternalInfluence)",
    "conductance": "sum over the map of Captum's LayerConductance",
    "deeplift": "sum over the map of Captum's LayerDeepLift of the logit",
    "gradcam": "mean over the map of Captum's LayerGradCam per filter (per-map weight x mean activation)",
    "ablation": "drop in y when the filter is zeroed (Captum's LayerFeatureAblation)",
}
assert tuple(SCORES) == ENGINE_SCORES + CAPTUM_SCORES
PATH_SCORES = ("integrated_pg", "conductance", "deeplift")  # the ones that use a baseline
# input rows per Captum forward: a larger batch does not make a row cheaper on CPU (it leaves the
# caches: 615 rows of the thesis net ran 1.4-2.9x slower per row than 82-205), and it bounds memory
CAPTUM_ROWS = 128
ABLATION_VALUES = 2**25  # attribution values per LayerFeatureAblation call for every class (128 MiB in float32)
CONDUCTANCE_POINTS = 4  # path points per internal pass of LayerConductance
BLUR_SIGMA = 5.0  # pixels: the "blur" baseline keeps coarse shading and removes edges


# ---------------------------------------------------------------- checks

def check_score_layer(score: str, layer: str, activation_ndim: int) -> None:
    """One-line QueryError when `score` cannot be computed on `layer` (activation_ndim: 3 conv, 1 FC)."""
    if score not in SCORES:
        raise QueryError(f"unknown score '{score}'; choose from {', '.join(SCORES)}")
    if score in CAPTUM_SCORES and layer == INPUT:
        raise QueryError(f"score '{score}' hooks a module; '{INPUT}' is not one: pick a layer")
    if score == "gradcam" and activation_ndim != 3:
        raise QueryError(f"score 'gradcam' needs a conv map (filters, rows, cols); layer '{layer}' has units only")


def path_baseline(kind: str | torch.Tensor, images: torch.Tensor, train_mean: torch.Tensor | None = None) -> torch.Tensor:
    """The baseline image of each image, (B, *input): zeros, the training mean image, a blurred copy,
    or a given tensor shaped like one image (*input) or like `images` (B, *input)."""
    if isinstance(kind, torch.Tensor):
        if kind.shape == images.shape:
            return kind.to(images)
        if kind.shape == images.shape[1:]:
            return kind.to(images).expand_as(images)
        raise QueryError(f"baseline shaped {tuple(kind.shape)} does not match the images {tuple(images.shape[1:])}")
    if kind == "zeros":
        return torch.zeros_like(images)
    if kind == "mean":
        if train_mean is None:
            raise QueryError("baseline 'mean' needs the training mean image")
        return path_baseline(train_mean, images)
    if kind == "blur":
        return gaussian_blur(images, BLUR_SIGMA)
    raise QueryError(f"unknown baseline '{kind}'; choose from {', '.join(PATH_BASELINES)}")


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) -> the same, each channel blurred with a Gaussian (reflected borders)."""
    if images.dim() != 4:
        raise QueryError("the blur baseline needs images shaped (batch, channels, rows, cols)")
    radius = min(int(3 * sigma), (min(images.shape[-2:]) - 1) // 2)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)


# ---------------------------------------------------------------- the scores

def _reduce_product(score: str, a: torch.Tensor, g: torch.Tensor, ndim: int) -> torch.Tensor:
    """a (B, F, ...) and g (..., B, F, ...) -> a * g over each map: signed sum, or L2: (..., B, F)."""
    if ndim == 1:
        return a * g if score == "grad_x_activation" else (a * g).abs()
    a, g = a.flatten(-ndim + 1), g.flatten(-ndim + 1)  # (B, F, P), (..., B, F, P)
    if score == "grad_x_activation":
        return torch.einsum("...bfp,bfp->...bf", g, a)  # a batched dot product: no (..., B, F, P) product kept
    return torch.linalg.vector_norm(a * g, dim=-1)


def _engine_gradients(model, images, layers, classes, output):
    """({layer: g}, {layer: a}): g (T, B, ...) for all classes or (B, ...) for own classes; a (B, ...)."""
    if classes is None:
        got = prediction_gradients(model, images, layers, "all", output)
        return got.gradients, got.activations
    got = image_class_gradients(model, images, layers, classes, [output])
    return got.gradients[output], got.activations


def _gauss_legendre(steps: int) -> tuple[list[float], list[float]]:
    """(step sizes, alphas) on [0, 1]: Captum's own rule, so integrated_pg matches InternalInfluence."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    sizes, alphas = approximation_parameters("gausslegendre")
    return list(sizes(steps)), list(alphas(steps))


def _engine_scores(model, images, layers, score, classes, output, norm, baseline, path_steps, path_batch):
    if score == "integrated_pg":
        if classes is None:
            integral = _path_integral_all_classes(model, images, layers, output, baseline, path_steps, path_batch)
        else:
            integral = _path_integral_own_classes(model, images, layers, classes, output, baseline, path_steps,
                                                  path_batch)
        ndim = {layer: integral[layer].dim() - (1 if classes is not None else 2) for layer in layers}
        return {layer: filter_scores(integral[layer], ndim[layer], norm) for layer in layers}
    gradients, activations = _engine_gradients(model, images, layers, classes, output)
    out = {}
    for layer in layers:
        a, g = activations[layer], gradients[layer]
        ndim = a.dim() - 1
        out[layer] = filter_scores(g, ndim, norm) if score == "pg" else _reduce_product(score, a, g, ndim)
    return out


def _path_passes(images, baseline, path_steps, path_batch):
    """(scaled images (k * B, *input), step weights (k,)) per engine pass: k path points stacked
    along the batch, so that a pass has about `path_batch` images (at least one point)."""
    sizes, alphas = _gauss_legendre(path_steps)
    per_pass = max(1, path_batch // images.shape[0])
    for first in range(0, path_steps, per_pass):
        group = alphas[first : first + per_pass]
        weights = torch.tensor(sizes[first : first + per_pass], dtype=images.dtype, device=images.device)
        yield torch.cat([baseline + alpha * (images - baseline) for alpha in group]), weights


def _path_integral_all_classes(model, images, layers, output, baseline, path_steps, path_batch):
    """{layer: (T, B, *activation)}: PG of every class integrated along the path (step-weighted sum).

    One forward per pass over its stacked path points, then the engine's backward per class; each
    class's gradient (k * B, ...) is folded into its integral by the step weights as it comes, so
    no (T, k * B, ...) gradient is kept (writing and re-reading that made stacked points slower than
    one point per pass)."""
    modules = layer_modules(model, layers)
    cpu = images.device.type == "cpu"
    fast = cpu and fast_conv_helps(model)
    batch = images.shape[0]
    integral: dict[str, torch.Tensor] = {}
    for scaled, weights in _path_passes(images, baseline, path_steps, path_batch):
        with torch.enable_grad():
            logits, captured = forward_with_activations(model, scaled.detach().requires_grad_(True), modules)
            y = torch.softmax(logits, dim=1) if output == "softmax" else logits
            names = list(captured)
            if not integral:
                integral = {name: images.new_zeros(y.shape[1], batch, *captured[name].shape[1:]) for name in names}

            def fold(index, grads, names=names, weights=weights):
                for name, g in zip(names, grads):
                    if g is not None:  # integral[t] += sum_k weights[k] * g[k-th point]
                        integral[name][index].view(-1).addmv_(g.reshape(len(weights), -1).T, weights)

            backward_each_target(y, [captured[name] for name in names], list(range(y.shape[1])), fold,
                                 "per_target" if cpu else "vmap", fast)
    return integral


def _path_integral_own_classes(model, images, layers, classes, output, baseline, path_steps, path_batch):
    """{layer: (B, *activation)}: each image's own-class PG integrated along the path."""
    batch = images.shape[0]
    integral: dict[str, torch.Tensor] = {}
    for scaled, weights in _path_passes(images, baseline, path_steps, path_batch):
        gradients, _ = _engine_gradients(model, scaled, layers, classes.repeat(len(weights)), output)
        for layer in layers:
            g = gradients[layer]  # (k * B, ...) -> (B, ...)
            part = torch.einsum("kbd,k->bd", g.reshape(len(weights), batch, -1), weights).view(batch, *g.shape[1:])
            integral[layer] = part if layer not in integral else integral[layer].add_(part)
    return integral


def _check_captum_layers(model: nn.Module, layers: list[str], score: str, example: torch.Tensor) -> None:
    modules = dict(model.named_modules())
    for layer in layers:
        if layer == INPUT:
            check_score_layer(score, layer, 0)
        if layer not in modules or layer == "":
            raise QueryError(f"unknown layer '{layer}'; valid layers: {', '.join(m for m in modules if m)}")
    shapes = _activation_shapes(model, {layer: modules[layer] for layer in layers}, example)
    for layer in layers:
        check_score_layer(score, layer, len(shapes[layer]))


class SoftmaxOutput(nn.Module):
    """The network with softmax on its logits: Captum's forward for output="softmax"."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x), dim=1)


def _captum_layer(score, model, forward, module, images, baseline, targets, path_steps):
    """One Captum call of a gradient method on images (N, *input) with targets (N,): (N, *activation)."""
    from captum.attr import LayerConductance, LayerDeepLift, LayerGradCam

    if score == "conductance":
        # a few path points per internal pass bounds memory to a few times one forward's
        points = images.shape[0] * CONDUCTANCE_POINTS
        return LayerConductance(forward, module).attribute(
            images, baseline, target=targets, n_steps=path_steps, internal_batch_size=points,
        )
    if score == "deeplift":
        return LayerDeepLift(model, module).attribute(images, baseline, target=targets)
    return LayerGradCam(forward, module).attribute(images, target=targets, attr_dim_summation=False)


def _rows_per_call(score: str) -> int:
    """(class, image) pairs per Captum call, so that each of its forwards sees about CAPTUM_ROWS rows."""
    if score == "conductance":
        return max(1, CAPTUM_ROWS // CONDUCTANCE_POINTS)
    if score == "deeplift":  # Captum runs the inputs and their baselines in one forward
        return max(1, CAPTUM_ROWS // 2)
    return CAPTUM_ROWS


def _ablation(model, forward, module, images, classes) -> torch.Tensor:
    """Captum's LayerFeatureAblation, one group per filter (or unit), zeroing it: (T, B, *activation)
    for every class, or (B, *activation) for each image's own class (`classes`).

    Every class: no target, so Captum attributes every element of the forward's (B, T) output and
    one forward per ablated filter answers all classes (with a target per class, each class would
    repeat them all). Those attributions are T times an image's, so the images go in chunks that
    keep them under ABLATION_VALUES; several filters share a forward up to about CAPTUM_ROWS rows."""
    from captum.attr import LayerFeatureAblation

    shape = _activation_shapes(model, {"layer": module}, images[:1])["layer"]
    groups = torch.arange(shape[0], device=images.device).view(1, shape[0], *[1] * (len(shape) - 1))
    method = LayerFeatureAblation(forward, module)
    if classes is not None:
        return method.attribute(images, layer_baselines=0.0, target=classes.to(images.device), layer_mask=groups)
    with torch.no_grad():
        num_classes = forward(images[:1]).shape[1]
    step = max(1, ABLATION_VALUES // (num_classes * math.prod(shape)))
    parts = []
    for begin in range(0, images.shape[0], step):
        x = images[begin : begin + step]
        attribution = method.attribute(x, layer_baselines=0.0, target=None, layer_mask=groups,
                                       perturbations_per_eval=max(1, CAPTUM_ROWS // x.shape[0]))
        parts.append(attribution.view(x.shape[0], num_classes, *shape))  # row b * T + t is output (b, t)
    return torch.cat(parts).transpose(0, 1)


def _activation_shapes(model: nn.Module, modules: dict[str, nn.Module], example: torch.Tensor) -> dict[str, tuple]:
    """{name: activation shape without the batch dim}, from one forward of one image."""
    seen: dict[str, tuple] = {}

    def hook(name):
        def keep(module, inputs, output):
            seen[name] = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        return keep

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in modules if not seen.get(name)]
    if missing:
        raise QueryError(f"layer '{missing[0]}' gives no tensor activation in forward; pick another layer")
    return seen


def _reduce_map(score: str, attribution: torch.Tensor, lead: int = 1) -> torch.Tensor:
    """(*lead dims, *activation) -> (*lead dims, F): a conv map summed (conductance, deeplift) or
    averaged (gradcam, ablation); FC units kept as they are."""
    if attribution.dim() - lead == 1:
        return attribution
    maps = attribution.flatten(lead + 1)
    return maps.sum(-1) if score in ("conductance", "deeplift") else maps.mean(-1)


def _captum_scores(model, images, layers, score, classes, output, baseline, path_steps):
    modules = dict(model.named_modules())
    # deeplift's softmax rule mixes the images of a batch, so it always explains the logit
    forward = SoftmaxOutput(model) if output == "softmax" and score != "deeplift" else model
    batch = images.shape[0]
    if score == "ablation":
        lead = 2 if classes is None else 1
        return {layer: _reduce_map(score, _ablation(model, forward, modules[layer], images, classes), lead)
                for layer in layers}
    if classes is None:
        # every class: the (class, image) pairs in class-major order, target t on each copy of an image
        with torch.no_grad():
            num_classes = model(images[:1]).shape[1]
        targets = torch.arange(num_classes, device=images.device).repeat_interleave(batch)
        rows = torch.arange(batch, device=images.device).repeat(num_classes)
    else:
        targets, rows = classes.to(images.device), torch.arange(batch, device=images.device)
    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    step = _rows_per_call(score)
    for begin in range(0, len(rows), step):  # one Captum call per chunk of pairs and layer
        chunk = rows[begin : begin + step]
        inputs, starts = images[chunk], None if baseline is None else baseline[chunk]
        for layer in layers:
            attribution = _captum_layer(score, model, forward, modules[layer], inputs, starts,
                                        targets[begin : begin + step], path_steps)
            parts[layer].append(_reduce_map(score, attribution.detach()))
    if classes is None:
        return {layer: torch.cat(parts[layer]).view(num_classes, batch, -1) for layer in layers}
    return {layer: torch.cat(parts[layer]) for layer in layers}


def unit_scores(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str],
    score: str,
    classes: torch.Tensor | None = None,
    output: str = "softmax",
    norm: str = "l2",
    baseline: str | torch.Tensor = "zeros",
    train_mean: torch.Tensor | None = None,
    path_steps: int = 32,
    image_chunk: int | None = None,
    path_batch: int = 256,
) -> dict[str, torch.Tensor]:
    """`score` of every filter of `layers`: {layer: (T, B, F)} for every class, or {layer: (B, F)}
    for each image's own class when `classes` (B,) is given. See the module docstring for each
    score's reduction over the map; the model is queried in eval mode (its mode is restored).

    baseline: zeros | mean (needs `train_mean`, one image) | blur | a tensor (*input) or (B, *input);
    used by integrated_pg, conductance and deeplift, with `path_steps` points on the path.
    norm: the map norm of pg and integrated_pg (l2, l1, max).
    image_chunk: images per pass, to bound memory; path_batch: integrated_pg's images per engine
    pass, path points of one chunk stacked (the chunk alone when it is larger).
    """
    if score not in SCORES:
        raise QueryError(f"unknown score '{score}'; choose from {', '.join(SCORES)}")
    if output not in PG_OUTPUTS:
        raise QueryError(f"output must be one of {', '.join(PG_OUTPUTS)}, got '{output}'")
    if path_steps < 1:
        raise QueryError(f"path_steps must be >= 1, got {path_steps}")
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] == 0:
        raise QueryError("images must be a tensor shaped (batch, ...) with at least one image")
    layers = [layers] if isinstance(layers, str) else list(layers)
    parameter = next(model.parameters(), None)
    if parameter is not None:
        images = images.to(device=parameter.device, dtype=parameter.dtype)
    if classes is not None:
        classes = torch.as_tensor(classes, dtype=torch.int64)
        if classes.shape != (images.shape[0],):
            raise QueryError(f"need one class per image: {tuple(classes.shape)} classes for {images.shape[0]} images")
    starts = path_baseline(baseline, images, train_mean) if score in PATH_SCORES else None
    was_training = model.training
    model.eval()
    try:
        step = image_chunk or images.shape[0]
        parts: list[dict[str, torch.Tensor]] = []
        for begin in range(0, images.shape[0], step):
            rows = slice(begin, begin + step)
            x = images[rows]
            start = None if starts is None else starts[rows]
            own = None if classes is None else classes[rows]
            if score in ENGINE_SCORES:
                got = _engine_scores(model, x, layers, score, own, output, norm, start, path_steps, path_batch)
            else:
                if begin == 0:
                    _check_captum_layers(model, layers, score, x[:1])
                got = _captum_scores(model, x, layers, score, own, output, start, path_steps)
            parts.append({layer: value.detach() for layer, value in got.items()})
    finally:
        model.train(was_training)
    batch_dim = 1 if classes is None else 0
    return {layer: torch.cat([p[layer] for p in parts], dim=batch_dim) for layer in layers}
