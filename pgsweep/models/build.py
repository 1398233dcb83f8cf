"""Any classifier by Hydra `_target_`: build it, standardise its input, load outside weights, check it.

A net is named by the dotted path of its class (or of a function returning an nn.Module)
plus its own keyword arguments, built with `hydra.utils.instantiate`. pgsweep adds
`num_classes`, `in_channels` and `input_size` (from the data) only where the class's
signature takes them, and the pixel standardisation `input_mean` / `input_std` the same
way; a class that does not take them gets it applied just before its forward (a forward
pre-hook), so every stage feeds it [0, 1] images and its own layer names stay as they are.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import torch
from torch import nn

from pgsweep.errors import ModelError
from pgsweep.models.spec import DATA_ARGUMENTS, INPUT_ARGUMENTS, ModelRecipe


def locate(target: str, what: str = "model.net._target_"):
    """The object a dotted path names, or one-line ModelError naming what does not import."""
    parts = str(target).split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ModelError(f"{what} '{target}' is not a dotted path to a class (e.g. my_pkg.nets.Net)")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            found = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise ModelError(f"{what} '{target}' does not import: importing {module_name} failed: {error}") from None
        except Exception as error:  # noqa: BLE001  (the user's module raised while importing)
            first = str(error).splitlines()[0] if str(error) else ""
            raise ModelError(f"{what} '{target}' does not import: importing {module_name} raised "
                             f"{type(error).__name__}: {first}") from None
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                raise ModelError(f"{what} '{target}' does not import: {module_name} has no '{attribute}'")
            found = getattr(found, attribute)
        return found
    raise ModelError(f"{what} '{target}' does not import: no module named '{parts[0]}' "
                     "(is its package installed, or on PYTHONPATH?)")


def _accepts(factory, name: str) -> bool:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: pass nothing extra
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


class InputStandardization:
    """A forward pre-hook: x -> (x - mean) / std, for a net that does not standardise its input itself.

    A plain class (no closure over the module), so a deep copy or pickle of the net keeps it.
    """

    def __init__(self, mean, std) -> None:
        self.mean, self.std = mean, std

    def _tensor(self, value, like: torch.Tensor) -> torch.Tensor:
        if isinstance(value, (list, tuple)):
            return torch.tensor(value, dtype=like.dtype, device=like.device).reshape(-1, 1, 1)
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)

    def __call__(self, module: nn.Module, args: tuple):
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        x = args[0]
        return ((x - self._tensor(self.mean, x)) / self._tensor(self.std, x), *args[1:])


def _is_identity(mean, std) -> bool:
    means = mean if isinstance(mean, (list, tuple)) else (mean,)
    stds = std if isinstance(std, (list, tuple)) else (std,)
    return all(float(m) == 0.0 for m in means) and all(float(s) == 1.0 for s in stds)


def build_network(recipe: ModelRecipe, standardize: bool = True) -> nn.Module:
    """A fresh network from its recipe (random weights), with its input standardisation.

    standardize=False leaves a class that does not take input_mean/input_std without the
    pre-hook (load outside weights first, then call `standardize_input`).
    """
    from hydra.utils import instantiate

    factory = locate(recipe.target)
    given = {"num_classes": recipe.num_classes, "in_channels": recipe.in_channels, "input_size": recipe.input_size}
    extras = {name: given[name] for name in DATA_ARGUMENTS if name not in recipe.arguments and _accepts(factory, name)}
    takes_input = all(_accepts(factory, name) for name in INPUT_ARGUMENTS)
    if takes_input:
        extras.update(input_mean=recipe.input_mean, input_std=recipe.input_std)
    try:
        network = instantiate({"_target_": recipe.target, "_convert_": "all", **recipe.arguments}, **extras)
    except Exception as error:  # noqa: BLE001  (the user's constructor: any error, shown in one line)
        cause = error.__cause__ or error
        first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ModelError(f"model.net '{recipe.target}' could not be built: {type(cause).__name__}: {first}") from None
    if not isinstance(network, nn.Module):
        raise ModelError(f"model.net '{recipe.target}' gave a {type(network).__name__}, not a torch nn.Module")
    if standardize and not takes_input:
        standardize_input(network, recipe)
    return network


def standardize_input(network: nn.Module, recipe: ModelRecipe) -> nn.Module:
    """Apply the recipe's pixel standardisation before `network`'s forward (nothing when it is 0 and 1)."""
    if not _is_identity(recipe.input_mean, recipe.input_std):
        network.register_forward_pre_hook(InputStandardization(recipe.input_mean, recipe.input_std))
    return network


def takes_input_standardization(recipe: ModelRecipe) -> bool:
    factory = locate(recipe.target)
    return all(_accepts(factory, name) for name in INPUT_ARGUMENTS)


# ---------------------------------------------------------------- outside weights

def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict file (torch.save of net.state_dict()), read with weights_only=True."""
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise ModelError(f"model.weights: file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (torch raises many types for foreign or corrupt files)
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"model.weights: cannot read {path} as a state_dict (weights only): {first}") from None
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]  # a checkpoint that wraps its state_dict
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ModelError(f"model.weights: {path} does not hold a state_dict (a mapping of names to tensors)")
    return payload


def weights_problem(network: nn.Module, weights: dict[str, torch.Tensor]) -> str | None:
    """Why `weights` do not fit `network`, naming the first mismatched key; None when they fit."""
    expected = network.state_dict()
    first = first_layer(network)
    for key, tensor in expected.items():
        if key not in weights:
            return f"key '{key}' is missing from the file"
        got = tuple(weights[key].shape)
        if first is not None and isinstance(first[1], nn.Conv2d) and key == f"{first[0]}.weight" \
                and len(got) == 4 and got[:1] + got[2:] == tuple(tensor.shape[:1] + tensor.shape[2:]) \
                and got[1] != tensor.shape[1]:
            # the net is built for the data's channels: the file was trained on images with other channels
            return (f"its first conv '{key}' takes {got[1]} input channels, the data has {tensor.shape[1]}: "
                    f"set data.channels={got[1]}")
        if got != tuple(tensor.shape):
            return (f"key '{key}' has shape {tuple(weights[key].shape)} in the file, "
                    f"the net needs {tuple(tensor.shape)}")
    for key in weights:
        if key not in expected:
            return f"key '{key}' in the file is not in the net"
    return None


def load_weights(network: nn.Module, weights: dict[str, torch.Tensor], source: str) -> nn.Module:
    problem = weights_problem(network, weights)
    if problem:
        raise ModelError(f"{source} do not fit {type(network).__name__}: {problem}")
    network.load_state_dict(weights)
    return network


# ---------------------------------------------------------------- checks against the data

def first_layer(network: nn.Module) -> tuple[str, nn.Module] | None:
    """The first conv or linear module in registration order (what reads the image's channels)."""
    for name, module in network.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return name, module
    return None


def check_network(network: nn.Module, images: torch.Tensor, num_classes: int, target: str) -> None:
    """The net must read the images' channels and return (N, num_classes) logits; one line if not.

    images: (N, C, S, S), a few of the data's images in [0, 1].
    """
    channels = int(images.shape[1])
    first = first_layer(network)
    if first is not None and isinstance(first[1], nn.Conv2d) and first[1].in_channels != channels:
        raise ModelError(
            f"data.channels={channels}, but the net's first layer ({first[0]}) takes {first[1].in_channels} "
            f"channels: set data.channels={first[1].in_channels} or build the net for {channels}"
        )
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            parameter = next(network.parameters(), None)
            probe = images[:2]
            if parameter is not None:
                probe = probe.to(parameter.device, parameter.dtype)
            output = network(probe)
    except Exception as error:  # noqa: BLE001  (whatever the user's forward raises)
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ModelError(f"model.net '{target}' fails on the data's {tuple(images.shape[1:])} images: "
                         f"{type(error).__name__}: {first_line}") from None
    finally:
        network.train(was_training)
    count = int(probe.shape[0])
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if not isinstance(output, torch.Tensor) or shape != (count, num_classes):
        raise ModelError(f"model.net '{target}' returns {shape} for {count} images; it must return logits "
                         f"shaped (N, classes) = ({count}, {num_classes}) for the data's {num_classes} classes")
