"""The thesis convnet (Lo 2016, section 4.1) as a plain nn.Module.

conv(5x5) -> tanh -> maxpool(2x2), three times with 5, 8 and 10 maps, then one
fully connected hidden layer of 20 tanh units and one output (logit) per class.
Every layer and every activation is its own named submodule, called exactly once
in forward, because the prediction-gradient engine hooks activations by name.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from pgsweep.models.spec import ConvNetSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
POOLING: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def _pixel_tensor(value) -> torch.Tensor:
    """One value for every channel (a 0-dim tensor), or one per channel ((C, 1, 1))."""
    if isinstance(value, (list, tuple)):
        return torch.tensor([float(v) for v in value]).reshape(-1, 1, 1)
    return torch.tensor(float(value))


class Standardize(nn.Module):
    """(x - mean) / std with the training set's pixel statistics kept as buffers."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", _pixel_tensor(mean))
        self.register_buffer("std", _pixel_tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ThesisConvNet(nn.Sequential):
    """Input (B, in_channels, S, S) in [0, 1] -> logits (B, num_classes).

    Submodules, in order: normalize, conv1, act1, pool1, ..., convK, actK, poolK,
    flatten, fc1, act(K+1), ..., and the output layer fc(H+1) (logits).
    """

    def __init__(self, spec: ConvNetSpec) -> None:
        spec.validate()
        activation, pooling = ACTIVATIONS[spec.activation], POOLING[spec.pooling]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["normalize"] = Standardize(spec.input_mean, spec.input_std)
        channels = spec.in_channels
        for i, width in enumerate(spec.conv_channels, start=1):
            layers[f"conv{i}"] = nn.Conv2d(channels, width, spec.kernel_size, padding=spec.padding)
            layers[f"act{i}"] = activation()  # (B, width, conv_size, conv_size)
            layers[f"pool{i}"] = pooling(spec.pool_size)  # (B, width, size, size)
            channels = width
        layers["flatten"] = nn.Flatten()
        features = channels * spec.feature_map_sizes()[-1] ** 2
        n_conv = len(spec.conv_channels)
        for j, units in enumerate(spec.hidden_units, start=1):
            layers[f"fc{j}"] = nn.Linear(features, units)
            layers[f"act{n_conv + j}"] = activation()  # (B, units)
            features = units
        layers[f"fc{len(spec.hidden_units) + 1}"] = nn.Linear(features, spec.num_classes)
        super().__init__(layers)
        self.spec = spec

    @property
    def activation_layer_names(self) -> list[str]:
        """Names of every activation module, conv maps first: act1 .. act(K+H)."""
        return [name for name, module in self.named_children() if name.startswith("act")]


def thesis_convnet(
    num_classes: int,
    in_channels: int = 1,
    input_size: int = 60,
    conv_channels=(5, 8, 10),
    kernel_size: int = 5,
    padding: int = 0,
    pool_size: int = 2,
    pooling: str = "max",
    hidden_units=(20,),
    activation: str = "tanh",
    input_mean=0.0,
    input_std=1.0,
) -> ThesisConvNet:
    """The thesis convnet as a Hydra `_target_` (conf/model/thesis_convnet.yaml): keyword arguments in,
    network out; pgsweep passes the data's classes, channels, size and pixel statistics."""
    def pixels(value):
        return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else float(value)

    return ThesisConvNet(ConvNetSpec(
        num_classes=int(num_classes), input_size=int(input_size), in_channels=int(in_channels),
        conv_channels=tuple(int(c) for c in conv_channels), kernel_size=int(kernel_size), padding=int(padding),
        pool_size=int(pool_size), pooling=str(pooling), hidden_units=tuple(int(u) for u in hidden_units),
        activation=str(activation), input_mean=pixels(input_mean), input_std=pixels(input_std),
    ))
