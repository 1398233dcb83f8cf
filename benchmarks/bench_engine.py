"""How fast is the PG engine? Ratios against baselines run side by side in one process.

    .venv/bin/python benchmarks/bench_engine.py            # CPU, the issue's settings
    .venv/bin/python benchmarks/bench_engine.py --device cuda

Baselines, all computing the same tensors (checked before timing):
  captum      Captum's LayerGradientXActivation(multiply_by_inputs=False) with target=c,
              one forward + backward per class (all four layers in one call)
  fwd-once    one forward with hooks, then torch.autograd.grad once per class
Candidates: pgsweep's engine with its default strategy, and its variants.

The machine is noisy: every method runs in each round, in a shuffled order, and the
table reports medians over rounds. Only the ratios are meant to be compared.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import OrderedDict

import torch
from torch import nn

from pgsweep import prediction_gradients
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet
from pgsweep.testing.models import resnet18


def captum_loop(model, images, layers, targets):
    from captum.attr import LayerGradientXActivation

    softmax_model = lambda x: torch.softmax(model(x), dim=1)  # noqa: E731
    method = LayerGradientXActivation(
        softmax_model, [model.get_submodule(name) for name in layers], multiply_by_inputs=False
    )
    per_target = [method.attribute(images, target=t) for t in targets]
    return {name: torch.stack([grads[i] for grads in per_target]) for i, name in enumerate(layers)}


def forward_once_loop(model, images, layers, targets):
    captured = {}
    handles = [
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
        for name in layers
    ]
    try:
        y = torch.softmax(model(images.detach().requires_grad_(True)), dim=1)
    finally:
        for handle in handles:
            handle.remove()
    tensors = [captured[name] for name in layers]
    per_target = [
        torch.autograd.grad(y[:, t].sum(), tensors, retain_graph=i < len(targets) - 1)
        for i, t in enumerate(targets)
    ]
    return {name: torch.stack([grads[i] for grads in per_target]) for i, name in enumerate(layers)}


def engine(**options):
    def run(model, images, layers, targets):
        return prediction_gradients(model, images, layers, targets, **options).gradients

    return run


def time_side_by_side(methods: dict, model, images, layers, targets, rounds: int) -> dict[str, float]:
    reference = forward_once_loop(model, images, layers, targets)
    for name, method in methods.items():  # same answer before any timing
        result = method(model, images, layers, targets)
        for layer in layers:
            torch.testing.assert_close(result[layer], reference[layer], rtol=1e-4, atol=1e-6, msg=f"{name} {layer}")
    times: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    synchronize = torch.cuda.synchronize if images.device.type == "cuda" else (lambda: None)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            synchronize()
            started = time.perf_counter()
            methods[name](model, images, layers, targets)
            synchronize()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def report(title: str, medians: dict[str, float], pg_count: int, base: str = "fwd-once") -> None:
    print(f"\n{title}")
    print(f"  {'method':24s} {'median ms':>10s} {'x captum':>9s} {'x fwd-once':>11s} {'PG/s':>10s}")
    for name, seconds in medians.items():
        captum = medians.get("captum", float("nan")) / seconds
        print(f"  {name:24s} {seconds * 1e3:10.1f} {captum:9.2f} {medians[base] / seconds:11.2f} {pg_count / seconds:10.0f}")


def thesis_model(device, dtype):
    torch.manual_seed(0)
    return ThesisConvNet(ConvNetSpec(num_classes=15, input_mean=0.4, input_std=0.3)).to(device, dtype).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=11)  # the README table's setting
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-large", action="store_true", help="only the batch-64 thesis comparison")
    parser.add_argument("--resnet-only", action="store_true", help="only the ResNet-18 comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), torch.float32
    random.seed(0)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, float32")

    if args.resnet_only:
        return resnet_part(device, dtype, args.rounds)
    layers = ["act1", "act2", "act3", "act4"]
    model = thesis_model(device, dtype)
    targets = list(range(15))
    variants = OrderedDict(
        [
            ("captum", captum_loop),
            ("fwd-once", forward_once_loop),
            ("pgsweep", engine()),
            ("pgsweep fast_conv=off", engine(fast_conv=False)),
            ("pgsweep vmap", engine(strategy="vmap")),
        ]
    )
    images = torch.rand(64, 1, 60, 60, device=device, dtype=dtype)
    medians = time_side_by_side(variants, model, images, layers, targets, args.rounds)
    report("thesis convnet, batch 64, 15 classes, layers act1-act4", medians, 64 * 15)
    if args.skip_large:
        return

    images = torch.rand(256, 1, 60, 60, device=device, dtype=dtype)
    medians = time_side_by_side(
        OrderedDict([("captum", captum_loop), ("fwd-once", forward_once_loop), ("pgsweep", engine()),
                     ("pgsweep vmap", engine(strategy="vmap"))]),
        model, images, layers, targets, max(3, args.rounds // 3),
    )
    report("thesis convnet, batch 256, 15 classes, layers act1-act4", medians, 256 * 15)
    resnet_part(device, dtype, args.rounds)


def resnet_part(device, dtype, rounds: int) -> None:
    torch.manual_seed(0)
    big = resnet18(in_channels=3, num_classes=10).to(device, dtype).eval()
    images = torch.rand(32, 3, 64, 64, device=device, dtype=dtype)
    big_layers = ["layer1", "layer2", "layer3", "layer4"]
    medians = time_side_by_side(
        OrderedDict([("captum", captum_loop), ("fwd-once", forward_once_loop), ("pgsweep", engine()),
                     ("pgsweep vmap", engine(strategy="vmap", target_chunk=5))]),
        big, images, big_layers, list(range(10)), max(3, rounds // 5),
    )
    report("ResNet-18 (11M weights), 3x64x64, batch 32, 10 classes, layers layer1-layer4", medians, 32 * 10)


if __name__ == "__main__":
    main()
