"""How fast does the thesis convnet train in channels-last memory? A ratio against contiguous.

    .venv/bin/python benchmarks/bench_train.py                           # the bundled digits
    .venv/bin/python benchmarks/bench_train.py --yale PATH --epochs 40   # the Yale faces (thesis setup)

Both train with pgsweep's own `train_model` (Lightning, plain SGD, seeded), on the CPU, on
one torch thread (as each job of `+sweep=thesis` does):
  contiguous     trainer.channels_last=false: weights and image batches in NCHW memory
  channels-last  trainer.channels_last=true (auto's choice for the thesis convnet on the
                 CPU): oneDNN's convolutions and pooling take NHWC without reordering
Time: the median over interleaved rounds in this process, the order shuffled per round. The
two round differently, so they end with other weights: each one's test error is printed
beside its time, to show the speed is not bought with a worse model.

The machine is noisy (a shared 2-core box here): only the ratio is meant to be compared.
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import torch

from pgsweep.data import load_dataset
from pgsweep.data.split import stratified_split
from pgsweep.models.convnet import ConvNetSpec
from pgsweep.settings import TrainSettings
from pgsweep.stages.train import train_model

METHODS = {"contiguous": "false", "channels-last": "true"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--yale", type=Path, help="the Yale faces folder (default: the bundled digits)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per training (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_dataset("yale", args.yale) if args.yale else load_dataset("digits")
    split = stratified_split(images.labels.numpy(), images.content_ids, images.class_names)
    batch = 16 if args.yale else 32  # the thesis experiment's and the default trainer's
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, 1 thread; thesis convnet, "
          f"{'yale' if args.yale else 'digits'} {images.image_size}x{images.image_size}, {len(split.train)} "
          f"training images, batch {batch}, {args.epochs} epochs, {args.rounds} rounds")
    seconds: dict[str, list[float]] = {name: [] for name in METHODS}
    errors: dict[str, float] = {}
    order = list(METHODS)
    for _ in range(args.rounds):
        random.shuffle(order)
        for name in order:
            settings = TrainSettings(max_epochs=args.epochs, batch_size=batch, progress_bar="false",
                                     channels_last=METHODS[name])
            _, report = train_model(images, split, ConvNetSpec(num_classes=len(images.class_names)), settings)
            seconds[name].append(report.seconds)
            errors[name] = report.test.error
    base = statistics.median(seconds["contiguous"])
    print(f"  {'method':<15}{'median s':>10}{'x contiguous':>14}{'test error':>12}")
    for name in METHODS:
        median = statistics.median(seconds[name])
        print(f"  {name:<15}{median:>10.2f}{base / median:>14.2f}{errors[name]:>12.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
