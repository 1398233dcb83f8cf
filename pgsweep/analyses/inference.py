"""A copy of a network made for running it thousands of times: batch norm folded into the
convolution before it, weights and activations in channels-last memory, ReLUs in place
where nothing else reads their input.

Same function, other rounding: its logits agree with the network's to about 1e-7 of
their size. The knockout and the adversarial sweep, which run a network once per
(ordering, step) or (image, target, step), use it by default on the CPU; each checks the
copy against the network first on fixed images (the sweep: the grid's first, for every
shard) and on what it takes from the copy (a
`CopyCheck`: the sweep's input gradients at its targets, the knockout's logits with a
filter zeroed), and keeps the network where the copy fails or disagrees (one logged line
says why). Each reports whether it used the copy (a run param, a shard's metadata).

Why it pays on the CPU (benchmarks/bench_knockout.py, bench_adversarial.py): oneDNN's
convolutions work in channels-last, so a contiguous (NCHW) tensor is reordered on the way
in and out of every convolution; a folded batch norm is one pass over the activations
fewer; and an in-place ReLU allocates no new tensor, whose page faults cost more than the
ReLU itself on this project's VM. Plain inference of the small ResNet on the copy was 1.42x
as fast (`bench_adversarial.py --resnet`), the thesis convnet's knockout loop 1.24x
(`bench_knockout.py`). Nothing here has been measured on a GPU, so `auto` leaves a network
on any other device as it is.
"""

from __future__ import annotations

import copy
import logging
import operator
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pgsweep.analyses.graph import traced
from pgsweep.analyses.choices import check_optimize

log = logging.getLogger(__name__)

# the copy's logits may differ from the network's by this much of their largest size
TOLERANCE = 1e-4
# a checked quantity (input gradients, knocked-out logits) may differ by this much of its largest size
CHECK_TOLERANCE = 1e-4


@dataclass(frozen=True)
class CopyCheck:
    """What a use takes from the copy, compared with the network's before the copy is used.

    name: says what it is, and tells one check from another (its verdict is kept per copy);
    quantity(network, images) -> a tensor, evaluated on the network and on the copy (whose
    images are channels-last); they may differ by `tolerance` of the network's largest value.
    """

    name: str
    quantity: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    tolerance: float = CHECK_TOLERANCE


def knockout_check(layers: Sequence[str]) -> CopyCheck:
    """The knockout's use: logits with the first filter of each layer zeroed, one layer at a
    time and then all together, (len(layers) + 1, B, C)."""
    layers = list(layers)

    def knocked_logits(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
        modules, knocked = dict(network.named_modules()), set()

        def zero(name):
            def hook(module, inputs, output):
                if name not in knocked:
                    return output
                output = output.clone()
                output[:, 0] = 0
                return output
            return hook

        handles = [modules[layer].register_forward_hook(zero(layer)) for layer in layers]
        try:
            with torch.no_grad():
                outputs = []
                for chosen in [[layer] for layer in layers] + [layers]:
                    knocked.clear()
                    knocked.update(chosen)
                    outputs.append(network(images))
            return torch.stack(outputs)
        finally:
            for handle in handles:
                handle.remove()

    return CopyCheck(f"logits with a filter of {', '.join(layers)} zeroed", knocked_logits)


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """Image batches (B, C, H, W) in channels-last memory; anything else as it is."""
    return images.contiguous(memory_format=torch.channels_last) if images.dim() == 4 else images


def on_inference_copy(network: nn.Module, images: torch.Tensor, keep: Sequence[str] = (),
                      optimize: str = "auto", check: CopyCheck | None = None,
                      example: torch.Tensor | None = None) -> tuple[nn.Module, torch.Tensor]:
    """(the network's inference copy, the images in its memory layout), or both as they are.
    The copy was used when the first returned is not `network`. example: the images the copy
    is checked on (default: the first 8 of `images`); a job cut into pieces passes the same
    ones to every piece, so every process decides the same way."""
    fast = inference_copy(network, images[:8] if example is None else example, keep, optimize, check)
    return (network, images) if fast is None else (fast, channels_last(images))


def inference_copy(network: nn.Module, example: torch.Tensor, keep: Sequence[str] = (),
                   optimize: str = "auto", check: CopyCheck | None = None) -> nn.Module | None:
    """The network's fast copy (eval mode), or None where there is none to use.

    keep: module names whose outputs the caller reads or changes (the knockout's layers):
    a convolution or batch norm named here is not folded. optimize: auto (on the CPU
    only), true (any device) or false (never). None also when the network has no 2-D
    convolution, or the copy fails on `example` or disagrees with the network there: on
    the logits, and on `check`'s quantity (the first time that check is asked of this copy).
    """
    optimize = check_optimize(optimize, "optimize")
    parameter = next(network.parameters(), None)
    if optimize == "false" or parameter is None or example.dim() != 4:
        return None
    if optimize == "auto" and parameter.device.type != "cpu":
        return None
    if not any(isinstance(m, nn.Conv2d) for m in network.modules()):
        return None
    # one copy per (network, kept layers) while the weights stay the same: the sweep asks once
    # per shard, and a ResNet-18's copy and check take about a second and a half
    key, state = tuple(sorted(keep)), _weights_state(network)
    cached = _COPIES.get(network, {}).get(key)
    if cached is None or cached[0] != state:
        cached = (state, _make_copy(network, example, set(keep), parameter), {})
        _COPIES.setdefault(network, {})[key] = cached
    _, fast, verdicts = cached  # verdicts: check name -> whether the copy passed it
    if fast is None or check is None:
        return fast
    if check.name not in verdicts:
        verdicts[check.name] = _agrees_on(check, network, fast, example.to(parameter.device, parameter.dtype))
    return fast if verdicts[check.name] else None


def _agrees_on(check: CopyCheck, network: nn.Module, fast: nn.Module, x: torch.Tensor) -> bool:
    was_training = network.training
    network.eval()
    try:
        with torch.enable_grad():
            expected = check.quantity(network, x).detach()
            got = check.quantity(fast, channels_last(x)).detach()
    except Exception as error:  # noqa: BLE001  (same as a copy that fails on the logits)
        log.info("%s: its fast copy fails on the %s (%s: %s); using the network as it is there",
                 type(network).__name__, check.name, type(error).__name__, str(error).splitlines()[0][:200])
        return False
    finally:
        network.train(was_training)
    scale = expected.abs().max() if expected.numel() else torch.tensor(0.0)
    difference = (got - expected).abs().max() if got.shape == expected.shape else torch.tensor(float("inf"))
    if not torch.isfinite(got).all() or not difference <= check.tolerance * scale:
        log.info("%s: its fast copy's %s differ from the network's by %.3g of their largest size "
                 "(tolerance %.0e); using the network as it is there",
                 type(network).__name__, check.name, float(difference / scale.clamp_min(1e-30)), check.tolerance)
        return False
    return True


_COPIES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _weights_state(network: nn.Module) -> tuple:
    """Which tensors the network holds, where their data is, and how often each changed in place."""
    return tuple((id(t), t.data_ptr(), t._version) for t in (*network.parameters(), *network.buffers()))


def _make_copy(network: nn.Module, example: torch.Tensor, keep: set[str], parameter: torch.Tensor) -> nn.Module | None:
    fast = copy.deepcopy(network).eval()
    graph_module, _ = traced(network)
    if graph_module is not None:  # a network that does not trace is only made channels-last
        folded = _conv_norm_pairs(network, graph_module, keep)
        for conv, norm in folded:
            _set(fast, conv, fuse_conv_bn_eval(fast.get_submodule(conv), fast.get_submodule(norm)))
            _set(fast, norm, nn.Identity())
        for relu in _relus_in_place(network, graph_module, keep, {norm for _, norm in folded}):
            fast.get_submodule(relu).inplace = True
    fast = fast.to(memory_format=torch.channels_last)
    x = example.to(parameter.device, parameter.dtype)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            expected = network(x)
        # with gradients too: autograd refuses an in-place ReLU that overwrote what a backward needs.
        # Only the input's gradient: a .backward() into the copy's weights' .grad crashed the
        # process (abort or segfault) now and then on an AVX2 CPU under pytest-xdist
        with torch.enable_grad():
            probe = channels_last(x).clone().requires_grad_(True)
            got = fast(probe)
            torch.autograd.grad(got.sum(), probe)
        got = got.detach()
    except Exception as error:  # noqa: BLE001  (a custom forward may reject channels-last: .view, ...)
        log.info("%s: its fast copy (channels-last) fails (%s: %s); using the network as it is",
                 type(network).__name__, type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
        return None
    finally:
        network.train(was_training)
    if got.shape != expected.shape or not torch.isfinite(got).all() or \
            (got - expected).abs().max() > TOLERANCE * expected.abs().max().clamp_min(1.0):
        log.info("%s: its fast copy disagrees with it; using the network as it is", type(network).__name__)
        return None
    return fast


def _calls(graph_module: torch.fx.GraphModule) -> dict[str, int]:
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def _conv_norm_pairs(network: nn.Module, graph_module: torch.fx.GraphModule,
                     keep: set[str]) -> list[tuple[str, str]]:
    """(conv, batch norm) module names where the norm only ever reads that conv's output and
    the conv's output goes nowhere else: folding them changes no other value."""
    modules, calls = dict(network.named_modules()), _calls(graph_module)
    pairs = []
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, torch.fx.Node) or source.op != "call_module":
            continue
        conv, norm = modules.get(source.target), modules[node.target]
        if type(conv) is not nn.Conv2d or norm.running_mean is None or len(source.users) != 1 \
                or len(node.args) != 1 or node.kwargs:
            continue
        if calls[source.target] != 1 or calls[node.target] != 1 or {source.target, node.target} & keep:
            continue
        pairs.append((source.target, node.target))
    return pairs


# call_function nodes whose result is a new tensor, never a view of an argument
_FRESH_FUNCTIONS = (operator.add, torch.add, operator.mul, torch.mul, torch.cat)
_FRESH_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _relus_in_place(network: nn.Module, graph_module: torch.fx.GraphModule, keep: set[str],
                    folded: set[str]) -> list[str]:
    """ReLU modules that can overwrite their input (a fresh activation tensor costs more in
    page faults than the ReLU itself). Only where nothing else reads that input: it is a
    fresh tensor (a conv's, a linear's, a batch norm's or a sum's, perhaps through a folded
    norm's Identity) with the ReLU as its only reader, and no node on the way is one the
    caller keeps."""
    modules, calls = dict(network.named_modules()), _calls(graph_module)
    names = []
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.ReLU or calls[node.target] != 1:
            continue
        source, fresh = node.args[0] if len(node.args) == 1 and not node.kwargs else None, False
        while isinstance(source, torch.fx.Node) and len(source.users) == 1 and source.target not in keep:
            if source.op == "call_module" and source.target in folded:  # an Identity now: its input
                source = source.args[0]
                continue
            fresh = (source.op == "call_module" and isinstance(modules.get(source.target), _FRESH_MODULES)
                     and calls[source.target] == 1) or \
                    (source.op == "call_function" and source.target in _FRESH_FUNCTIONS)
            break
        if fresh:
            names.append(node.target)
    return names


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
