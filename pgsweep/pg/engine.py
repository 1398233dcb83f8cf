"""Prediction gradients PG(a) = d y_c / d a for many layers and all classes at once.

One forward pass captures every requested activation (forward hooks, by module
name); the backward pass then produces d y_t / d a for every target t. Works for
any nn.Module classifier that returns logits (B, C) and treats the images of a
batch independently in eval mode, which is what makes one backward over the
summed batch give every image's own gradient.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from pgsweep.errors import QueryError
from pgsweep.pg.choices import PG_OUTPUTS
from pgsweep.pg import reductions
from pgsweep.pg.fast_conv import ConvInputGradAsForward
from pgsweep.pg.fast_conv import helps as fast_conv_helps

INPUT = "input"  # the pseudo-layer for d y / d x
OUTPUTS = PG_OUTPUTS
STRATEGIES = ("auto", "per_target", "vmap")


@dataclass(frozen=True, eq=False)
class PredictionGradients:
    """The answer to one query.

    gradients[layer]:   (T, B, *activation_shape)  d y_{targets[t]} / d a, image b
    activations[layer]: (B, *activation_shape)     a itself (the image, for "input")
    targets:            (T,) class indices, in the order of the first dim
    predictions:        (B, C) the y the gradients are of: softmax probabilities or logits
    output:             "softmax" or "logit"
    """

    gradients: dict[str, torch.Tensor]
    activations: dict[str, torch.Tensor]
    targets: torch.Tensor
    predictions: torch.Tensor
    output: str

    @property
    def layers(self) -> list[str]:
        return list(self.gradients)

    def activation_ndim(self, layer: str) -> int:
        return self._gradient(layer).dim() - 2

    def _gradient(self, layer: str) -> torch.Tensor:
        if layer not in self.gradients:
            raise QueryError(f"layer '{layer}' was not queried; have {', '.join(self.gradients)}")
        return self.gradients[layer]

    def target_index(self, target: int) -> int:
        """Position of class `target` along the first dim of every gradient."""
        hits = (self.targets == target).nonzero()
        if not len(hits):
            raise QueryError(f"class {target} was not among the targets {self.targets.tolist()}")
        return int(hits[0, 0])

    def filter_scores(self, layer: str, norm: str = "l2") -> torch.Tensor:
        """(T, B, F): each filter's (or FC unit's) PG collapsed over space."""
        return reductions.filter_scores(self._gradient(layer), self.activation_ndim(layer), norm)

    def saliency(self, layer: str, norm: str = "l2") -> torch.Tensor:
        """(T, B, H, W): each position's PG collapsed over filters."""
        return reductions.saliency(self._gradient(layer), self.activation_ndim(layer), norm)

    def class_filter_scores(
        self, layer: str, labels: torch.Tensor, norm: str = "l2", order: str = "average_then_norm"
    ) -> torch.Tensor:
        """(T, K, F): filter scores from the PG averaged over the images of each class."""
        return reductions.class_filter_scores(
            self._gradient(layer), labels, self.predictions.shape[1],
            self.activation_ndim(layer), norm, order,
        )


# ---------------------------------------------------------------- checks before any work

def layer_modules(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module | None]:
    """{layer name: its module} (None for INPUT), checked: QueryError names an unknown layer."""
    modules = dict(model.named_modules())
    modules.pop("", None)
    if isinstance(layers, str):
        layers = [layers]
    if not layers:
        raise QueryError("no layers requested")
    if len(set(layers)) != len(layers):
        raise QueryError(f"layers listed twice: {list(layers)}")
    found: dict[str, nn.Module | None] = {}
    for name in layers:
        if name == INPUT:
            found[name] = None
        elif name in modules:
            found[name] = modules[name]
        else:
            raise QueryError(f"unknown layer '{name}'; valid layers: {', '.join([INPUT, *modules])}")
    return found


def _target_list(targets: int | Iterable[int] | str | None, num_classes: int) -> list[int]:
    if targets is None or (isinstance(targets, str) and targets == "all"):
        return list(range(num_classes))
    if isinstance(targets, str):
        raise QueryError(f"targets must be 'all', a class index or a list of them, got '{targets}'")
    values = [int(targets)] if isinstance(targets, int) else [int(t) for t in targets]
    if not values:
        raise QueryError("no target classes requested")
    bad = [t for t in values if not 0 <= t < num_classes]
    if bad:
        raise QueryError(f"class index {bad[0]} out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    return values


@contextmanager
def eval_mode(model: nn.Module):
    """The model in eval mode inside the block, back in the mode it had afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class _Capture:
    """Forward hooks that keep each named module's output and count its calls."""

    def __init__(self, modules: dict[str, nn.Module | None]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.calls = {name: 0 for name in modules}
        self.versions: dict[str, int] = {}
        self._handles = [
            module.register_forward_hook(self._hook(name))
            for name, module in modules.items()
            if module is not None
        ]

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            self.calls[name] += 1
            if not isinstance(output, torch.Tensor):
                raise QueryError(f"layer '{name}' returns {type(output).__name__}, not a tensor; pick a submodule")
            self.outputs[name] = output
            self.versions[name] = output._version

        return hook

    def check(self) -> None:
        for name, count in self.calls.items():
            if name == INPUT:
                continue
            if count == 0:
                raise QueryError(f"layer '{name}' is never called in forward, so it has no activation")
            if count > 1:
                raise QueryError(
                    f"layer '{name}' is called {count} times in forward (a reused module); "
                    "its activation is ambiguous: give each use its own module"
                )
            if self.outputs[name]._version != self.versions[name]:
                raise QueryError(
                    f"layer '{name}''s output is changed in place later in forward "
                    "(e.g. by ReLU(inplace=True)); use out-of-place ops"
                )

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def forward_with_activations(model: nn.Module, images: torch.Tensor, modules: dict[str, nn.Module | None]):
    """One forward; returns logits and {layer: activation} with the graph kept."""
    capture = _Capture(modules)
    try:
        logits = model(images)
    finally:
        capture.remove()
    capture.check()
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise QueryError("the model must return logits shaped (batch, classes)")
    activations = dict(capture.outputs)
    if INPUT in modules:
        activations[INPUT] = images
    return logits, {name: activations[name] for name in modules}


# ---------------------------------------------------------------- the query

def _seeds(predictions: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """(T, B, C): for each target t, a one-hot on class targets[t] for every image."""
    seeds = torch.zeros(len(targets), *predictions.shape, dtype=predictions.dtype, device=predictions.device)
    rows = torch.arange(len(targets), device=predictions.device)
    seeds[rows, :, torch.tensor(targets, device=predictions.device)] = 1.0
    return seeds


def _backward_per_target(y, activations, targets, write, fast_conv: bool) -> None:
    """One backward per target over the graph of the single forward (retained until the last).

    Measured on CPU, this beats every batched-backward variant (see benchmarks/):
    per-sample conv cost does not fall with a bigger batch, and vmap's max-pool
    rule copies the pool input once per target.
    """
    mode = ConvInputGradAsForward() if fast_conv and y.device.type == "cpu" else nullcontext()
    seed = torch.zeros_like(y)
    with mode:
        for index, target in enumerate(targets):
            seed.zero_()
            seed[:, target] = 1.0
            grads = torch.autograd.grad(
                y, activations, seed, retain_graph=index < len(targets) - 1, allow_unused=True
            )
            write(index, grads)


def _backward_vmap(y, activations, targets, write, target_chunk: int) -> None:
    """Targets batched into one backward per chunk with torch.func.vmap (for accelerators)."""
    seeds = _seeds(y, targets)
    for start in range(0, len(targets), target_chunk):
        chunk = seeds[start : start + target_chunk]
        grads = torch.func.vmap(
            lambda seed: torch.autograd.grad(y, activations, seed, retain_graph=True, allow_unused=True)
        )(chunk)
        for offset in range(chunk.shape[0]):
            write(start + offset, [None if g is None else g[offset] for g in grads])


def backward_each_target(y, tensors, targets: list[int], write, strategy: str, fast_conv: bool,
                         target_chunk: int | None = None) -> None:
    """write(index, grads) with d y[:, targets[index]] / d tensors, for every target, over the graph
    of one forward: one backward per target ("per_target", CPU) or batched by vmap ("vmap")."""
    if strategy == "vmap":
        _backward_vmap(y, tensors, targets, write, target_chunk or len(targets))
    else:
        _backward_per_target(y, tensors, targets, write, fast_conv)


def prediction_gradients(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | str,
    targets: int | Iterable[int] | str | None = "all",
    output: str = "softmax",
    image_chunk: int | None = None,
    target_chunk: int | None = None,
    strategy: str = "auto",
    fast_conv: bool = True,
) -> PredictionGradients:
    """PG of every target class w.r.t. every requested layer, for every image.

    model:    any classifier returning logits (B, C); queried in eval mode (its mode is restored).
    images:   (B, *input_shape), moved to the model's device and dtype.
    layers:   dotted module names (`conv1`, `layer1.0.conv2`), or "input" for d y / d x.
    targets:  "all", one class index, or a list of them.
    output:   "softmax" (the thesis: y = p_c) or "logit" (y = z_c; no saturation).
    image_chunk:  images per forward pass, to bound memory.
    target_chunk: targets per batched backward (strategy "vmap"), to bound memory.
    strategy: "per_target" (one forward, then one backward per target: fastest on CPU),
              "vmap" (targets batched into one backward), or "auto" (per_target on CPU,
              vmap on accelerators). None of these change the result.
    fast_conv: on CPU, compute small convolutions' input gradients with the forward kernel.
    """
    if output not in OUTPUTS:
        raise QueryError(f"output must be one of {', '.join(OUTPUTS)}, got '{output}'")
    if strategy not in STRATEGIES:
        raise QueryError(f"strategy must be one of {', '.join(STRATEGIES)}, got '{strategy}'")
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] == 0:
        raise QueryError("images must be a tensor shaped (batch, ...) with at least one image")
    for name, value in (("image_chunk", image_chunk), ("target_chunk", target_chunk)):
        if value is not None and value < 1:
            raise QueryError(f"{name} must be a positive integer, got {value}")
    modules = layer_modules(model, layers)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else images.device
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else images.dtype
    images = images.to(device=device, dtype=dtype)
    if strategy == "auto":
        strategy = "per_target" if device.type == "cpu" else "vmap"

    fast_conv = fast_conv and device.type == "cpu" and fast_conv_helps(model)
    with eval_mode(model):
        # the first chunk's forward gives the shapes and classes (no separate probe: on
        # ResNet-18 a probe forward cost about 1% of the whole query)
        gradients = activations = predictions = None
        target_list: list[int] = []
        batch = images.shape[0]
        image_step = image_chunk or batch
        for start in range(0, batch, image_step):
            rows = slice(start, start + image_step)
            chunk = images[rows].detach().requires_grad_(True)
            with torch.enable_grad():
                logits, captured = forward_with_activations(model, chunk, modules)
                if gradients is None:
                    target_list = _target_list(targets, logits.shape[1])
                    count = len(target_list)
                    # written in place chunk by chunk, so memory is the result plus one chunk's graph
                    gradients = {name: images.new_empty(count, batch, *a.shape[1:]) for name, a in captured.items()}
                    activations = {name: images.new_empty(batch, *a.shape[1:]) for name, a in captured.items()}
                    predictions = images.new_empty(batch, logits.shape[1])
                y = torch.softmax(logits, dim=1) if output == "softmax" else logits
            predictions[rows] = y.detach()
            names = list(captured)
            for name in names:
                activations[name][rows] = captured[name].detach()

            def write(index: int, grads, rows=rows, names=names) -> None:
                for name, grad in zip(names, grads):
                    target_slot = gradients[name][index, rows]
                    target_slot.zero_() if grad is None else target_slot.copy_(grad)

            with torch.enable_grad():
                tensors = [captured[name] for name in names]
                backward_each_target(y, tensors, target_list, write, strategy, fast_conv, target_chunk)
    return PredictionGradients(
        gradients=gradients,
        activations=activations,
        targets=torch.tensor(target_list, dtype=torch.int64),
        predictions=predictions,
        output=output,
    )


# ---------------------------------------------------------------- one class per image

IMAGE_OUTPUTS = ("softmax", "logit", "loss")


@dataclass(frozen=True, eq=False)
class ImageGradients:
    """Each image's gradient for its own chosen class, from one forward.

    gradients[output][layer]: (B, *activation_shape)  d y_{classes[b]} / d a for image b
        ("loss": d CE(logits_b, classes[b]) / d a, the loss gradient of thesis 3.2.1)
    activations[layer]:       (B, *activation_shape)
    logits:                   (B, C)
    """

    gradients: dict[str, dict[str, torch.Tensor]]
    activations: dict[str, torch.Tensor]
    logits: torch.Tensor


def image_class_gradients(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | str,
    classes: torch.Tensor,
    outputs: Sequence[str] = ("softmax",),
    fast_conv: bool = True,
) -> ImageGradients:
    """d y_{classes[b]} / d a for every image b: one backward per output, not one per class.

    Class averages (thesis 4.2.1) need only each image's own-class PG; since the images
    of a batch do not interact, one seed with a one-hot per image gives them all at once,
    where `prediction_gradients(targets="all")` would run a backward for every class.
    """
    outputs = list(outputs)
    bad = [o for o in outputs if o not in IMAGE_OUTPUTS]
    if bad or not outputs:
        raise QueryError(f"outputs must be among {', '.join(IMAGE_OUTPUTS)}, got {outputs}")
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] == 0:
        raise QueryError("images must be a tensor shaped (batch, ...) with at least one image")
    classes = torch.as_tensor(classes, dtype=torch.int64)
    if classes.shape != (images.shape[0],):
        raise QueryError(f"need one class per image: {tuple(classes.shape)} classes for {images.shape[0]} images")
    modules = layer_modules(model, layers)
    parameter = next(model.parameters(), None)
    if parameter is not None:
        images = images.to(device=parameter.device, dtype=parameter.dtype)
    with eval_mode(model), torch.enable_grad():
        chunk = images.detach().requires_grad_(True)
        logits, captured = forward_with_activations(model, chunk, modules)
        if int(classes.min()) < 0 or int(classes.max()) >= logits.shape[1]:
            raise QueryError(f"class index out of range: the model has {logits.shape[1]} classes")
        classes = classes.to(logits.device)
        names = list(captured)
        tensors = [captured[name] for name in names]
        use_fast = fast_conv and logits.device.type == "cpu" and fast_conv_helps(model)
        mode = ConvInputGradAsForward() if use_fast else nullcontext()
        gradients: dict[str, dict[str, torch.Tensor]] = {}
        with mode:
            for index, output in enumerate(outputs):
                if output == "loss":
                    y = torch.nn.functional.cross_entropy(logits, classes, reduction="sum")
                else:
                    scores = torch.softmax(logits, dim=1) if output == "softmax" else logits
                    y = scores.gather(1, classes[:, None]).sum()
                grads = torch.autograd.grad(y, tensors, retain_graph=index < len(outputs) - 1, allow_unused=True)
                gradients[output] = {
                    name: torch.zeros_like(t) if g is None else g for name, t, g in zip(names, tensors, grads)
                }
    return ImageGradients(gradients, {name: captured[name].detach() for name in names}, logits.detach())
