"""The units an analysis scores and knocks out: every filter (or FC unit) of some layers.

The thesis ranks all 23 conv filters of its network together (5 + 8 + 10), so a unit
is numbered globally across layers: unit u is channel `channel[u]` of `layer[u]`.
"""

from __future__ import annotations

from collections.abc import Sequence
import logging
import weakref
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from pgsweep.errors import QueryError
from pgsweep.pg.engine import eval_mode, forward_with_activations, layer_modules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Units:
    """Filters (conv maps) or units (FC) of the chosen layers, numbered 0..total-1.

    layers: layer names, in forward order
    sizes:  channels (or units) of each layer
    ndims:  each layer's activation dims per image: 3 for (F, H, W) maps, 1 for (U,) units
    """

    layers: tuple[str, ...]
    sizes: tuple[int, ...]
    ndims: tuple[int, ...]

    @property
    def total(self) -> int:
        return int(sum(self.sizes))

    @property
    def layer_index(self) -> np.ndarray:
        """(total,) position in `layers` of each unit's layer."""
        return np.repeat(np.arange(len(self.layers)), self.sizes)

    @property
    def channel(self) -> np.ndarray:
        """(total,) each unit's channel within its layer."""
        return np.concatenate([np.arange(size) for size in self.sizes])

    def table(self) -> pd.DataFrame:
        """One row per unit: unit (global index), layer, channel (from 0), filter (its label)."""
        return pd.DataFrame({
            "unit": np.arange(self.total),
            "layer": np.asarray(self.layers, dtype=object)[self.layer_index],
            "channel": self.channel,
            "filter": self.names(),
        })

    def names(self) -> list[str]:
        """`1-1`, `1-2`, ... `3-10`: every unit's label, the thesis's numbering (see unit_label)."""
        return [unit_label(j, c) for j, c in zip(self.layer_index, self.channel)]


def unit_label(layer_position: int, channel: int) -> str:
    """The thesis's name of a filter: `layer-unit`, both counted from 1 (Table 4.2).

    layer_position: the layer's place among the analysed layers, from 0 (act1 -> layer 1);
    channel: the filter's channel in its layer, from 0. The one place filters get a name,
    so every table and figure numbers them alike.
    """
    return f"{int(layer_position) + 1}-{int(channel) + 1}"


# modules that apply a nonlinearity elementwise: what `conv` picks after each convolution
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus)


_WARNED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()  # nets whose reused modules were reported


def _call_order(network: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """Every leaf module's call in one forward of `example`: (name, module, output shape), in order."""
    calls: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    handles = []
    for name, module in network.named_modules():
        if name and not any(True for _ in module.children()):
            def hook(module, inputs, output, name=name):
                calls.append((name, module, tuple(output.shape) if isinstance(output, torch.Tensor) else ()))
            handles.append(module.register_forward_hook(hook))
    parameter = next(network.parameters(), None)
    if parameter is not None:
        example = example.to(parameter.device, parameter.dtype)
    try:
        with eval_mode(network), torch.no_grad():
            network(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def activation_layers(network: nn.Module, example: torch.Tensor, ndim: int = 3) -> list[str]:
    """The activation modules right after each convolution (ndim 3: (F, H, W) maps), or the
    activations with (U,) outputs (ndim 1: fully connected units), in forward order, found by
    running `example` once. A module called more than once in forward (a reused ReLU) is left
    out, with one logged line: its output is ambiguous."""
    calls = _call_order(network, example[:1])
    counts: dict[str, int] = {}
    for name, _, _ in calls:
        counts[name] = counts.get(name, 0) + 1
    chosen: list[str] = []
    after_conv = False
    for name, module, shape in calls:
        if isinstance(module, nn.modules.conv._ConvNd):
            after_conv = True
        elif isinstance(module, _ACTIVATIONS) and len(shape) == ndim + 1:
            if (ndim == 3 and after_conv) or ndim == 1:
                if counts[name] == 1 and name not in chosen:
                    chosen.append(name)
                after_conv = False
    modules = {name: module for name, module, _ in calls}
    reused = [name for name, count in counts.items() if count > 1 and isinstance(modules[name], _ACTIVATIONS)]
    if reused and network not in _WARNED:
        _WARNED.add(network)
        log.warning("left out of the default layers: %s called more than once in forward (a reused module; "
                    "give each use its own module to analyse it)", ", ".join(reused))
    return chosen


def default_layers(network: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """The layers `analysis.layers=[conv]` means: the thesis convnet's conv activation maps
    (act1..actK); for any other net, the output of each conv block's activation: every
    activation module called right after a convolution (see activation_layers)."""
    spec = getattr(network, "spec", None)
    if spec is not None and hasattr(spec, "conv_channels"):
        return [f"act{i}" for i in range(1, len(spec.conv_channels) + 1)]
    if example is None:
        raise QueryError("this network has no default analysis layers: name them (e.g. analysis.layers=[layer1,layer2])")
    layers = activation_layers(network, example)
    if not layers:
        names = ", ".join(n for n, _ in network.named_modules() if n)
        raise QueryError(f"found no activation module after a convolution to analyse; name the layers "
                         f"(analysis.layers=[...]), valid layers: {names}")
    return layers


def find_units(network: nn.Module, layers: Sequence[str], example: torch.Tensor) -> Units:
    """Probe one image through `network` to learn each layer's channel count.

    Raises QueryError for an unknown layer, one never or twice called in forward, or an
    output that is neither (B, F, ...) maps nor (B, U) units.
    """
    modules = layer_modules(network, list(layers))
    if "input" in modules:
        raise QueryError("'input' has no filters to score or knock out; choose network layers")
    parameter = next(network.parameters())
    with eval_mode(network), torch.no_grad():
        _, activations = forward_with_activations(network, example[:1].to(parameter.device, parameter.dtype), modules)
    sizes, ndims = [], []
    for name in layers:
        shape = activations[name].shape[1:]
        if len(shape) not in (1, 3):
            raise QueryError(f"layer '{name}' gives activations shaped {tuple(shape)}: need (filters, H, W) or (units,)")
        sizes.append(int(shape[0]))
        ndims.append(len(shape))
    return Units(tuple(layers), tuple(sizes), tuple(ndims))
