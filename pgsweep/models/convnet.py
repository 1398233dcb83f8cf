"""The thesis convnet (Lo 2016, section 4.1) as a plain nn.Module.

conv(5x5) -> tanh -> maxpool(2x2), three times with 5, 8 and 10 maps, then one
fully connected hidden layer of 20 tanh units and one output (logit) per class.
Every layer and every activation is its own named submodule, called exactly once
in forward, because the prediction-gradient engine hooks activations by name.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
from torch import nn

from pgsweep.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
POOLING: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


@dataclass(frozen=True)
class ConvNetSpec:
    """Everything needed to rebuild the network; stored with every saved model."""

    num_classes: int
    input_size: int = 60
    in_channels: int = 1
    conv_channels: tuple[int, ...] = (5, 8, 10)
    kernel_size: int = 5
    padding: int = 0
    pool_size: int = 2
    pooling: str = "max"
    hidden_units: tuple[int, ...] = (20,)
    activation: str = "tanh"
    # pixel standardisation inside the model, so every stage feeds [0, 1] images
    input_mean: float = 0.0
    input_std: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ConvNetSpec":
        values = dict(values)
        for key in ("conv_channels", "hidden_units"):
            values[key] = tuple(int(v) for v in values[key])
        return cls(**values)

    def feature_map_sizes(self) -> list[int]:
        """Side length after each conv+pool block; fails if the input shrinks to nothing."""
        size, sizes = self.input_size, []
        for i, _ in enumerate(self.conv_channels, start=1):
            conv_size = size + 2 * self.padding - self.kernel_size + 1
            size = conv_size // self.pool_size
            if conv_size < 1 or size < 1:
                raise ConfigError(
                    f"model: a {self.input_size}x{self.input_size} input shrinks to nothing at "
                    f"conv{i} (kernel {self.kernel_size}, padding {self.padding}, pool "
                    f"{self.pool_size}); use a larger data.image_size, padding, or fewer layers"
                )
            sizes.append(size)
        return sizes

    def validate(self) -> None:
        if self.num_classes < 2:
            raise ConfigError(f"model: need at least 2 classes, got {self.num_classes}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.activation '{self.activation}' is unknown; choose one of {', '.join(ACTIVATIONS)}"
            )
        if self.pooling not in POOLING:
            raise ConfigError(f"model.pooling '{self.pooling}' is unknown; choose one of {', '.join(POOLING)}")
        for name, values in (("conv_channels", self.conv_channels), ("hidden_units", self.hidden_units)):
            if any(v < 1 for v in values):
                raise ConfigError(f"model.{name} must be positive integers, got {list(values)}")
        if not self.conv_channels:
            raise ConfigError("model.conv_channels needs at least one conv layer")
        if self.kernel_size < 1 or self.pool_size < 1 or self.padding < 0:
            raise ConfigError("model: kernel_size and pool_size must be >= 1 and padding >= 0")
        if self.input_std <= 0:
            raise ConfigError(f"model.input_std must be positive, got {self.input_std}")
        self.feature_map_sizes()


class Standardize(nn.Module):
    """(x - mean) / std with the training set's pixel statistics kept as buffers."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

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
    def conv_layer_names(self) -> list[str]:
        return [f"conv{i}" for i in range(1, len(self.spec.conv_channels) + 1)]

    @property
    def activation_layer_names(self) -> list[str]:
        """Names of every activation module, conv maps first: act1 .. act(K+H)."""
        return [name for name, module in self.named_children() if name.startswith("act")]
