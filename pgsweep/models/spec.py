"""The thesis convnet's layer choices as a plain dataclass (no torch: config checks stay fast)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pgsweep.errors import ConfigError

ACTIVATION_NAMES = ("tanh", "relu", "sigmoid")
POOLING_NAMES = ("max", "avg")


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
        if self.activation not in ACTIVATION_NAMES:
            raise ConfigError(
                f"model.activation '{self.activation}' is unknown; choose one of {', '.join(ACTIVATION_NAMES)}"
            )
        if self.pooling not in POOLING_NAMES:
            raise ConfigError(f"model.pooling '{self.pooling}' is unknown; choose one of {', '.join(POOLING_NAMES)}")
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
