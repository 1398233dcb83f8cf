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
    # (one value for all channels, or a tuple of one per channel)
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
        stds = self.input_std if isinstance(self.input_std, tuple) else (self.input_std,)
        if min(stds) <= 0:
            raise ConfigError(f"model.input_std must be positive, got {self.input_std}")
        self.feature_map_sizes()


# ---------------------------------------------------------------- any network, by Hydra `_target_`

THESIS_TARGET = "pgsweep.models.convnet.thesis_convnet"
# what pgsweep passes to the net's class when its signature takes them (from the data)
DATA_ARGUMENTS = ("num_classes", "in_channels", "input_size")
# pixel standardisation: passed to a class that takes them, else applied before its forward
INPUT_ARGUMENTS = ("input_mean", "input_std")
_THESIS_KEYS = ("conv_channels", "kernel_size", "padding", "pool_size", "pooling", "hidden_units", "activation")

@dataclass(frozen=True, eq=False)
class ModelRecipe:
    """How to rebuild a network: the `_target_`, its own arguments, and what pgsweep passes.

    target:      dotted path of an nn.Module class (or a function returning one)
    arguments:   the config's other keys of `model.net` (plain values; nested `_target_`s allowed)
    num_classes, in_channels, input_size: from the data
    input_mean, input_std: pixel standardisation inside the network (a float, or a tuple of
                 one per channel)
    """

    target: str
    arguments: dict
    num_classes: int
    in_channels: int = 1
    input_size: int = 60
    input_mean: object = 0.0
    input_std: object = 1.0

    @property
    def is_thesis(self) -> bool:
        return self.target == THESIS_TARGET

    def to_dict(self) -> dict:
        return {
            "target": self.target, "arguments": dict(self.arguments), "num_classes": self.num_classes,
            "in_channels": self.in_channels, "input_size": self.input_size,
            "input_mean": _plain_pixels(self.input_mean), "input_std": _plain_pixels(self.input_std),
        }

    @classmethod
    def from_dict(cls, values: dict) -> "ModelRecipe":
        return cls(str(values["target"]), dict(values.get("arguments") or {}), int(values["num_classes"]),
                   int(values.get("in_channels", 1)), int(values.get("input_size", 60)),
                   _plain_pixels(values.get("input_mean", 0.0)), _plain_pixels(values.get("input_std", 1.0)))

    @classmethod
    def thesis(cls, spec: ConvNetSpec) -> "ModelRecipe":
        values = spec.to_dict()
        return cls(THESIS_TARGET, {k: _plain(values[k]) for k in _THESIS_KEYS}, spec.num_classes,
                   spec.in_channels, spec.input_size, _plain_pixels(spec.input_mean), _plain_pixels(spec.input_std))

    def spec(self) -> ConvNetSpec | None:
        """The thesis convnet's spec, or None for any other network."""
        if not self.is_thesis:
            return None
        values = {k: v for k, v in self.arguments.items() if k in _THESIS_KEYS}
        for key in ("conv_channels", "hidden_units"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        return ConvNetSpec(num_classes=self.num_classes, input_size=self.input_size, in_channels=self.in_channels,
                           input_mean=self.input_mean, input_std=self.input_std, **values)

    def config_section(self) -> dict:
        """The `model` config section this recipe answers to (what a query run logs as params)."""
        section = {k: _plain(v) for k, v in self.arguments.items() if k in _THESIS_KEYS} if self.is_thesis else {}
        section["net"] = {"_target_": self.target, **self.arguments}
        return section


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _plain_pixels(value):
    if isinstance(value, (list, tuple)):
        values = tuple(float(v) for v in value)
        return values[0] if len(values) == 1 else values
    return float(value)


@dataclass(frozen=True, eq=False)
class ModelSettings:
    """The `model` config section: the net to build, optional outside weights, pixel standardisation.

    net:         {"_target_": ..., its own arguments}, resolved plain values
    weights:     a state_dict file of this net trained elsewhere (queried, not trained)
    input_mean, input_std: None (training: the training split's; outside weights: 0 and 1),
                 a number, or one per channel
    thesis:      the thesis convnet's checked layer choices, when `model` has them
    """

    net: dict
    weights: str | None = None
    input_mean: object = None
    input_std: object = None
    thesis: ConvNetSpec | None = None

    @property
    def target(self) -> str:
        return str(self.net["_target_"])

    @property
    def arguments(self) -> dict:
        return {k: v for k, v in self.net.items() if k != "_target_"}

    def recipe(self, num_classes: int, in_channels: int, input_size: int, input_mean, input_std) -> ModelRecipe:
        mean = input_mean if self.input_mean is None else self.input_mean
        std = input_std if self.input_std is None else self.input_std
        return ModelRecipe(self.target, self.arguments, num_classes, in_channels, input_size,
                           _plain_pixels(mean), _plain_pixels(std))


def _pixel_values(value, key: str):
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number or a list of numbers (one per channel), got {value!r}") from None
    if not numbers or len(numbers) not in (1, 3):
        raise ConfigError(f"{key} must be one number or one per channel (3), got {value!r}")
    return numbers[0] if len(numbers) == 1 else numbers


def read_model_config(values: dict, image_size: int, need_net: bool = True) -> ModelSettings:
    """The `model` section -> ModelSettings; one-line ConfigError for a missing target or bad value.

    need_net=False: a query of a model file (model_ref), which records its own net.
    """
    values = dict(values)
    net = values.pop("net", None)
    if not isinstance(net, dict) or not net.get("_target_") or net.get("_target_") == "???":
        if not need_net:
            net = {}
        else:
            raise ConfigError("model.net._target_ is not set: name the network's class, e.g. "
                              "model=custom model.net._target_=my_pkg.nets.Net")
    weights = values.pop("weights", None)
    if weights is not None and (not isinstance(weights, str) or not weights.strip()):
        raise ConfigError(f"model.weights must be a path to a state_dict file, got {weights!r}")
    mean = _pixel_values(values.pop("input_mean", None), "model.input_mean")
    std = _pixel_values(values.pop("input_std", None), "model.input_std")
    if std is not None and min(std if isinstance(std, tuple) else (std,)) <= 0:
        raise ConfigError(f"model.input_std must be positive, got {std}")
    thesis = None
    if values:  # the thesis convnet's layer choices (conf/model/thesis_convnet.yaml)
        from pgsweep.config import build

        thesis = build(ConvNetSpec, values, "model", num_classes=2, input_size=image_size, in_channels=1,
                       input_mean=0.0, input_std=1.0)
    return ModelSettings(dict(net), weights, mean, std, thesis)
