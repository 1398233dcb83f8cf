"""Does it matter where a filter is zeroed? Four ways of knocking one out, compared.

The knockout zeroes a filter's map after the activation; the same filter could be removed
before the activation, after the pooling that follows, or by zeroing its weights and bias.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from pgsweep.analyses.knockout.replay import knockout_predictions
from pgsweep.analyses.units import Units
from pgsweep.pg.engine import _eval_mode

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
