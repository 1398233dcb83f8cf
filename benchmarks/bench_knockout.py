"""How fast are the knockout curves and the streaming class rankings? Ratios against baselines.

    .venv/bin/python benchmarks/bench_knockout.py             # both parts
    .venv/bin/python benchmarks/bench_knockout.py --part knockout --rounds 7

Part 1, knockout (thesis convnet, 15 classes, 60x60; 30 random orderings of its 23
filters; 41 images, the Yale test set's size):
  loop      the per-step loop most people write: forward hooks zero the knocked-out
            channels, then one full forward of the images per step
  fast      pgsweep's knockout_predictions: each step recomputes only from the layer
            whose mask changed, keeping the outputs of the layers before it
Each runs on the network as given and on its inference copy (pgsweep.analyses.inference:
batch norm folded, channels-last memory; pgsweep's default on the CPU). On the same
network the two give the same predictions and losses bit for bit (checked before timing);
the copy rounds differently from the network as given, so there the largest loss
difference is printed. The baseline is the loop on the network as given: the loop most
people write; the copy's own loop shows how much of the ratio is the copy.

Part 1b, knockout on a small ResNet (a stem and two residual stages of 16 and 32 channels,
batch norm, ReLU; 3x32x32 images, 10 classes; the 112 filters of the activation after
every convolution, `analysis.layers=[conv]`), the same two methods: pgsweep's fast path
here replays the torch.fx graph, rerunning only the nodes downstream of the changed layer.

Part 2, class-averaged ranking of 10,000 images (the bundled digits tiled with noise,
10 classes), softmax PG of every conv filter:
  materialize  every image's own-class PG from the engine first (prediction_gradients
               per class, all kept), then class_filter_scores
  streaming    pgsweep's class_scores: image chunks, running class sums only
Time: medians over interleaved rounds in this process. Peak memory: each method once
in a fresh process, the rise of its peak resident memory (Linux VmHWM, reset after
loading) over the loaded data.

The machine is noisy (a shared 2-core box here): every method runs in each round, in a
shuffled order, and only the ratios are meant to be compared.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import time

import numpy as np
import torch

from pgsweep import prediction_gradients
from pgsweep.analyses.knockout import knockout_predictions, knockout_predictions_loop, random_orders
from pgsweep.analyses.ranking import class_scores
from pgsweep.analyses.units import find_units
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet
from pgsweep.testing.models import small_resnet

LAYERS = ["act1", "act2", "act3"]


def _time(methods: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        names = list(methods)
        random.shuffle(names)
        for name in names:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _table(medians: dict[str, float], baseline: str, unit: str = "s") -> None:
    print(f"| method | median ({unit}) | speed-up vs {baseline} |")
    print("| --- | --- | --- |")
    for name, value in medians.items():
        print(f"| {name} | {value:.3f} | {medians[baseline] / value:.2f}x |")


# ---------------------------------------------------------------- part 1: knockout

def _compare(net, x, y, units, orders, rounds: int, title: str) -> None:
    """The loop and the fast path, each on the network as given and on its inference copy."""
    methods = {
        "loop (hooks, full forward per step)": dict(fast=False, optimize="false"),
        "loop on the inference copy": dict(fast=False, optimize="auto"),
        "pgsweep fast knockout, network as given": dict(fast=True, optimize="false"),
        "pgsweep fast knockout (default: inference copy)": dict(fast=True, optimize="auto"),
    }

    def run(fast: bool, optimize: str):
        method = knockout_predictions if fast else knockout_predictions_loop
        return method(net, x, y, units, orders, optimize=optimize)

    results = {name: run(**how) for name, how in methods.items()}
    names = list(methods)
    same = lambda a, b: (np.array_equal(results[a].predictions, results[b].predictions)  # noqa: E731
                         and np.array_equal(results[a].losses, results[b].losses))
    as_given, on_copy = same(names[0], names[2]), same(names[1], names[3])
    predictions = np.array_equal(results[names[0]].predictions, results[names[3]].predictions)
    loss_gap = float(np.abs(results[names[0]].losses - results[names[3]].losses).max())
    print(f"\n## {title}, {rounds} rounds\n\nfast equals the loop bit for bit on the network as given: {as_given}; "
          f"on the inference copy: {on_copy}. The copy against the network as given: same predictions: "
          f"{predictions}, largest loss difference {loss_gap:.1e}\n")
    assert as_given and on_copy, "the fast knockout differs from the loop"
    medians = _time({name: (lambda how=how: run(**how)) for name, how in methods.items()}, rounds)
    _table(medians, names[0])


def bench_knockout(rounds: int, orderings: int, images: int) -> None:
    torch.manual_seed(0)
    net = ThesisConvNet(ConvNetSpec(num_classes=15)).eval()
    x, y = torch.rand(images, 1, 60, 60), torch.arange(images) % 15
    units = find_units(net, LAYERS, x)
    orders = random_orders(units.total, orderings, 0)
    _compare(net, x, y, units, orders, rounds,
             f"Knockout: {orderings} random orderings of {units.total} filters, {images} images")


def bench_knockout_resnet(rounds: int, orderings: int, images: int) -> None:
    from pgsweep.analyses.units import default_layers

    torch.manual_seed(0)
    net = small_resnet().eval()
    x, y = torch.rand(images, 3, 32, 32), torch.arange(images) % 10
    layers = default_layers(net, x[:1])
    units = find_units(net, layers, x)
    orders = random_orders(units.total, orderings, 0)
    _compare(net, x, y, units, orders, rounds,
             f"Knockout on a small ResNet: {orderings} random orderings of {units.total} filters "
             f"({', '.join(layers)}), {images} images")


# ---------------------------------------------------------------- part 2: streaming ranking

def _ranking_data(count: int):
    from pgsweep.data import load_digits

    digits = load_digits(image_size=60)
    generator = torch.Generator().manual_seed(0)
    reps = -(-count // len(digits))
    images = digits.images.repeat(reps, 1, 1, 1)[:count]
    images = (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    labels = digits.labels.repeat(reps)[:count]
    torch.manual_seed(0)
    net = ThesisConvNet(ConvNetSpec(num_classes=10)).eval()
    return net, images, labels, [str(c) for c in range(10)]


def materialize(net, images, labels, names, chunk):
    """Every image's own-class PG kept in memory first, then averaged per class by the engine's reduction."""
    every = [prediction_gradients(net, images[labels == c], LAYERS, targets=[c], image_chunk=chunk)
             for c in range(len(names))]  # (1, N_c, ...) per class: all N images' PGs at once
    scores = [torch.cat([pg.class_filter_scores(layer, labels[labels == c])[0, c] for layer in LAYERS])
              for c, pg in enumerate(every)]
    return torch.stack(scores).numpy()


def streaming(net, images, labels, names, chunk):
    return class_scores(net, images, labels, names, LAYERS, image_chunk=chunk, scores=("pg_softmax",)).scores["pg_softmax"]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _peak_child(method: str, count: int, chunk: int, queue) -> None:
    net, images, labels, names = _ranking_data(count)
    run = {"materialize": materialize, "streaming": streaming}[method]
    run(net, images[:chunk], labels[:chunk], names, chunk)  # warm-up: libraries' one-time buffers
    with open("/proc/self/clear_refs", "w") as refs:  # Linux: reset the peak (VmHWM) to the current size
        refs.write("5")
    before = _status_kib("VmRSS")
    run(net, images, labels, names, chunk)
    queue.put((_status_kib("VmHWM") - before) / 1024)  # KiB -> MiB


def bench_streaming(rounds: int, count: int, chunk: int) -> None:
    net, images, labels, names = _ranking_data(count)
    a = streaming(net, images, labels, names, chunk)
    b = materialize(net, images, labels, names, chunk)
    close = np.allclose(a, b, rtol=1e-4, atol=1e-9)
    print(f"\n## Class-averaged ranking of {count} images (chunks of {chunk}), {rounds} rounds; "
          f"same scores (rtol 1e-4): {close}\n")
    assert close, "streaming and materialized class scores differ"
    medians = _time({
        "materialize every PG, then average": lambda: materialize(net, images, labels, names, chunk),
        "pgsweep streaming class sums": lambda: streaming(net, images, labels, names, chunk),
    }, rounds)
    _table(medians, "materialize every PG, then average")
    context = multiprocessing.get_context("spawn")
    print("\n| method | peak memory over the loaded data (MiB) |\n| --- | --- |")
    for method in ("materialize", "streaming"):
        queue = context.Queue()
        child = context.Process(target=_peak_child, args=(method, count, chunk, queue))
        child.start()
        peak = queue.get()
        child.join()
        print(f"| {method} | {peak:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["knockout", "resnet", "streaming", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--orderings", type=int, default=30)
    parser.add_argument("--images", type=int, default=41)
    parser.add_argument("--ranking-images", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=256)
    args = parser.parse_args()
    random.seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.part in ("knockout", "all"):
        bench_knockout(args.rounds, args.orderings, args.images)
    if args.part in ("resnet", "all"):
        bench_knockout_resnet(args.rounds, max(1, args.orderings // 3), args.images)
    if args.part in ("streaming", "all"):
        bench_streaming(max(1, args.rounds // 2), args.ranking_images, args.chunk)


if __name__ == "__main__":
    main()
