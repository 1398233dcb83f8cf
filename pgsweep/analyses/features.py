"""The most characteristic feature and the look-alike (thesis 4.3, Figures 4.3 and 4.4).

For an image and a target class: the filter and position of one layer with the highest
PG. With the image's own class it is the feature that most makes the image its class;
with another class, what about it most makes it look like that class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from pgsweep.errors import QueryError
from pgsweep.models.convnet import Standardize
from pgsweep.pg.engine import prediction_gradients


# layers that keep each position where it is, so they leave the receptive field alone
_POINTWISE = (nn.Tanh, nn.ReLU, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Identity,
              nn.Dropout, nn.BatchNorm2d, Standardize)


@dataclass(frozen=True, eq=False)
class FeatureMaps:
    """One (image, target) at one layer: what the figure shows.

    activation: (F, H, W) the layer's maps; pg: (F, H, W) d y_target / d a
    filter, row, col: where pg is highest; box: (top, left, bottom, right) of its
    receptive field in the input, bottom/right exclusive
    """

    activation: np.ndarray
    pg: np.ndarray
    filter: int
    row: int
    col: int
    score: float
    box: tuple[int, int, int, int]


def receptive_field(network: nn.Module, layer: str, row: int, col: int, input_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Input pixels that position (row, col) of `layer` sees: (top, left, bottom, right).

    Composed from the kernel, stride and padding of the convolutions and poolings before
    `layer` when the network is a Sequential of such layers and elementwise ones; for
    other networks, the bounding box of the input gradient of that position (which max
    pooling can make smaller than the true field).
    """
    modules = list(network.named_children()) if isinstance(network, nn.Sequential) else []
    names = [name for name, _ in modules]
    if layer in names:
        jump, size, offset = 1, 1, 0  # position q covers [q * jump + offset, ... + size)
        known = True
        for name, module in modules[: names.index(layer) + 1]:
            if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
                k, s, p = pair(module.kernel_size)[0], pair(module.stride)[0], pair(module.padding)[0]
                d = pair(getattr(module, "dilation", 1))[0]
                k = d * (k - 1) + 1
                offset -= p * jump
                size += (k - 1) * jump
                jump *= s
            elif not isinstance(module, _POINTWISE):
                known = False
        if known:
            top, left = row * jump + offset, col * jump + offset
            return (max(top, 0), max(left, 0), min(top + size, input_size[0]), min(left + size, input_size[1]))
    return _gradient_box(network, layer, row, col, input_size)


def _gradient_box(network, layer, row, col, input_size):
    parameter = next(network.parameters())
    module = dict(network.named_modules()).get(layer)
    if module is None:
        raise QueryError(f"unknown layer '{layer}'")
    captured = {}
    handle = module.register_forward_hook(lambda m, i, o: captured.setdefault("a", o))
    x = torch.zeros(1, *_input_channels(network), *input_size, dtype=parameter.dtype, requires_grad=True)
    try:
        with torch.enable_grad():
            network(x)
            value = captured["a"][0, :, row, col].sum()
            (grad,) = torch.autograd.grad(value, x)
    finally:
        handle.remove()
    support = grad[0].abs().sum(0).nonzero()
    if not len(support):
        return (row, col, row + 1, col + 1)
    top, left = support.min(0).values.tolist()
    bottom, right = support.max(0).values.tolist()
    return (top, left, bottom + 1, right + 1)


def _input_channels(network) -> tuple[int]:
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            return (module.in_channels,)
    return (1,)


def feature_maps(network: nn.Module, image: torch.Tensor, target: int, layer: str, output: str = "softmax") -> FeatureMaps:
    """The layer's maps and PG for one image (1, H, W) and target class, and the peak PG."""
    pg = prediction_gradients(network, image[None], [layer], targets=[target], output=output)
    gradient = pg.gradients[layer][0, 0]  # (F, H, W)
    if gradient.dim() != 3:
        raise QueryError(f"layer '{layer}' has no spatial maps; choose a conv layer")
    f, r, c = np.unravel_index(int(gradient.argmax()), tuple(gradient.shape))
    box = receptive_field(network, layer, int(r), int(c), tuple(image.shape[-2:]))
    return FeatureMaps(pg.activations[layer][0].cpu().numpy(), gradient.cpu().numpy(),
                       int(f), int(r), int(c), float(gradient[f, r, c]), box)


def feature_table(
    network: nn.Module,
    images: torch.Tensor,
    layer: str,
    targets: Sequence[int] | str = "all",
    output: str = "softmax",
    image_chunk: int = 64,
) -> pd.DataFrame:
    """For every image and target: the filter and position with the highest PG at `layer`.

    Rows (image, target, layer, filter, row, col, score, top, left, bottom, right); image is
    the index into `images`; the box is the position's receptive field in the input.
    """
    rows = []
    for start in range(0, len(images), image_chunk):
        pg = prediction_gradients(network, images[start : start + image_chunk], [layer], targets=targets, output=output)
        gradient = pg.gradients[layer]  # (T, B, F, H, W)
        if gradient.dim() != 5:
            raise QueryError(f"layer '{layer}' has no spatial maps; choose a conv layer")
        shape = tuple(gradient.shape[2:])
        flat = gradient.flatten(2)
        best, where = flat.max(dim=2)  # (T, B)
        for t, target in enumerate(pg.targets.tolist()):
            for b in range(gradient.shape[1]):
                f, r, c = np.unravel_index(int(where[t, b]), shape)
                rows.append({"image": start + b, "target": target, "layer": layer, "filter": int(f),
                             "row": int(r), "col": int(c), "score": float(best[t, b])})
    table = pd.DataFrame(rows)
    boxes = {}
    size = tuple(images.shape[-2:])
    for r, c in {(r, c) for r, c in zip(table["row"], table["col"])}:
        boxes[(r, c)] = receptive_field(network, layer, r, c, size)
    table[["top", "left", "bottom", "right"]] = [boxes[(r, c)] for r, c in zip(table["row"], table["col"])]
    return table
