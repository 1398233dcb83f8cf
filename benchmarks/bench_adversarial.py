"""Speed of the adversarial sweep against the baselines, side by side in one process.

    .venv/bin/python benchmarks/bench_adversarial.py               # in-process and Ray vs baselines
    .venv/bin/python benchmarks/bench_adversarial.py --scaling     # 1 vs 2 Ray workers on a large grid
    .venv/bin/python benchmarks/bench_adversarial.py --resnet      # the sweep vs inference on a small ResNet

Every method first is checked to give the same predictions (torchattacks excepted: FGSM
is another attack, a speed reference only), then the methods are timed in interleaved
rounds (the order rotates each round) and medians are printed with ratios. The ceiling
is the model's plain batched inference rate on the perturbed images: every grid point
needs one forward of its image, except where the affine prefix saves the first layers.
The sweep runs by default on the network's inference copy (batch norm folded into the
convolutions, channels-last memory: pgsweep.analyses.inference); the "inference copy" row
is plain inference on that same copy, so a reader sees how much of the sweep's ratio is
the copy and how much the sweep itself.

torchattacks is a benchmark-only dependency (`make bench` installs it with --no-deps,
since its wheel asks for torchvision, which would replace the pinned torch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pgsweep.analyses.adversarial import Perturbation, evaluate_block, input_gradients, step_directions
from pgsweep.analyses.inference import on_inference_copy
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet
from pgsweep.models.checkpoint import TrainedModel
from pgsweep.sweep.grid import SweepJob
from pgsweep.sweep.store import ShardStore
from pgsweep.sweep.runner import RaySettings, run_sweep
from pgsweep.testing.reference import per_point_loop

REPO = Path(__file__).resolve().parents[1]
YALE = REPO.parent / "shared" / "data" / "yalefaces"


def thesis_setup(images_count: int, seed: int = 0):
    """The thesis convnet (15 classes) and Yale faces if present, else random 60x60 images."""
    torch.manual_seed(seed)
    if (YALE / "subject01.happy").exists():
        from pgsweep.data import load_dataset

        data = load_dataset("yale", str(YALE), 60)
        rows = torch.randperm(len(data))[:images_count]
        images, labels, source = data.images[rows], data.labels[rows], "Yale faces"
    else:
        images, labels, source = torch.rand(images_count, 1, 60, 60), torch.randint(0, 15, (images_count,)), "random"
    spec = ConvNetSpec(num_classes=15, input_mean=float(images.mean()), input_std=float(images.std()))
    return ThesisConvNet(spec).eval(), images.contiguous(), labels, source


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rounds(methods: dict, count: int) -> dict[str, float]:
    """Median seconds of each method over `count` interleaved rounds (order rotated)."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(count):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            times[name].append(timed(methods[name]))
    return {name: statistics.median(values) for name, values in times.items()}


# ---------------------------------------------------------------- baselines

@torch.no_grad()
def inference(network, inputs: torch.Tensor, batch: int = 64) -> None:
    for start in range(0, inputs.shape[0], batch):
        network(inputs[start : start + batch])


def torchattacks_fgsm(network, images, labels, targets, steps) -> None:
    """Targeted FGSM, one call per (target, step) on the whole batch, then the prediction."""
    import torchattacks

    for t in targets:
        wanted = torch.full_like(labels, t)
        for s in steps:
            attack = torchattacks.FGSM(network, eps=s)
            attack.set_mode_targeted_by_function(lambda images, labels, wanted=wanted: wanted)
            adversarial = attack(images, labels)
            with torch.no_grad():
                torch.softmax(network(adversarial), 1).argmax(1)


# ---------------------------------------------------------------- Ray

def ray_sweep(job: SweepJob, workers: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = ShardStore(Path(folder), job.describe())
        run_sweep(job, store, RaySettings(max_in_flight=workers), progress=False)


def in_process_shards(job: SweepJob) -> None:
    """The same shards, one after another in this process (what Ray's overhead is measured against)."""
    network = job.network()
    for shard in job.pieces():
        job.run(shard, network)


def make_job(network, images, labels, steps, perturbation, prefix, images_per_shard: int = 8) -> SweepJob:
    classes = network.spec.num_classes
    return SweepJob(model=TrainedModel(network, tuple(str(c) for c in range(classes))),
                    images=images, labels=labels, image_ids=tuple(range(len(images))),
                    targets=tuple(range(classes)), steps=tuple(steps), perturbation=perturbation,
                    affine_prefix=prefix, images_per_shard=images_per_shard, targets_per_shard=classes)


def row(name: str, seconds: float, points: int, inference_rate: float, fgsm_rate: float | None,
        loop_rate: float | None) -> str:
    rate = points / seconds
    cells = [f"{seconds * 1000:9.1f} ms", f"{rate:10,.0f}", f"{rate / inference_rate:6.2f}"]
    cells.append(f"{rate / fgsm_rate:6.2f}" if fgsm_rate else "     -")
    cells.append(f"{rate / loop_rate:6.1f}" if loop_rate else "     -")
    return f"| {name:<46} | " + " | ".join(cells) + " |"


def main_bench(args) -> None:
    import ray

    network, images, labels, source = thesis_setup(args.images)
    targets = list(range(15))
    probe = input_gradients(network, images[:8], targets, "softmax")
    scale = float(step_directions(probe, "raw").flatten(2).norm(dim=2).median())
    steps = list(np.geomspace(0.005, 0.5, args.steps) * (60 / scale))  # RMS pixel change 0.005 .. 0.5
    points = len(images) * len(targets) * len(steps)
    unclipped, clipped = Perturbation("softmax", "raw"), Perturbation("softmax", "raw", clip=True)

    # same answers first
    fast = evaluate_block(network, images, labels, range(len(images)), targets, steps, unclipped, "conv1")
    plain = evaluate_block(network, images, labels, range(len(images)), targets, steps, unclipped, None)
    assert (fast.prediction == plain.prediction).all(), "affine prefix disagrees with the plain path"
    loop_images = 2
    loop = per_point_loop(network, images[:loop_images], labels[:loop_images], range(loop_images), targets, steps)
    ours = fast[fast.image < loop_images].reset_index(drop=True)
    agree = float((loop.prediction == ours.prediction).mean())
    assert agree >= 0.999, f"per-point loop disagrees on {1 - agree:.2%} of points"

    with torch.no_grad():  # the perturbed images themselves, for the inference ceiling
        directions = step_directions(input_gradients(network, images, targets, "softmax"), "raw")
        perturbed = torch.cat([(images.unsqueeze(0) + s * directions).flatten(0, 1) for s in steps])
    job = make_job(network, images, labels, steps, unclipped, "conv1")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray_sweep(job, 2)  # warm the workers up (they import torch once)
    try:
        methods = {
            "inference": lambda: inference(network, perturbed),
            "sweep unclipped (affine prefix)": lambda: evaluate_block(
                network, images, labels, range(len(images)), targets, steps, unclipped, "conv1"),
            "sweep unclipped, prefix off": lambda: evaluate_block(
                network, images, labels, range(len(images)), targets, steps, unclipped, None),
            "sweep clipped": lambda: evaluate_block(
                network, images, labels, range(len(images)), targets, steps, clipped, None),
            "torchattacks FGSM per (target, step)": lambda: torchattacks_fgsm(
                network, images, labels, targets, steps),
            "per-point loop (2 images)": lambda: per_point_loop(
                network, images[:loop_images], labels[:loop_images], range(loop_images), targets, steps),
            "Ray, 1 worker, shards of 8 images": lambda: ray_sweep(job, 1),
            "Ray, 2 workers, shards of 8 images": lambda: ray_sweep(job, 2),
        }
        medians = rounds(methods, args.rounds)
    finally:
        ray.shutdown()
    loop_points = loop_images * len(targets) * len(steps)
    inference_rate = len(perturbed) / medians["inference"]
    fgsm_rate = points / medians["torchattacks FGSM per (target, step)"]
    loop_rate = loop_points / medians["per-point loop (2 images)"]
    print(f"\n{source}: {len(images)} images x {len(targets)} targets x {len(steps)} steps = {points:,} points; "
          f"thesis convnet; torch threads {torch.get_num_threads()} (Ray workers: 1 each); "
          f"{args.rounds} rounds, medians")
    print("| method | median | points/s | vs inference | vs torchattacks | vs per-point loop |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(row("plain inference of the perturbed images (img/s)", medians["inference"], len(perturbed),
              inference_rate, fgsm_rate, loop_rate))
    for name in methods:
        if name in ("inference",):
            continue
        count = loop_points if name.startswith("per-point loop") else points
        print(row(name, medians[name], count, inference_rate, fgsm_rate, loop_rate))


def resnet_bench(args) -> None:
    """The sweep on a small ResNet (pgsweep.testing.models.small_resnet: stem, two residual stages,
    batch norm, ReLU; 3x32x32, 10 classes) against plain inference of the perturbed images: the
    affine prefix here is the stem's conv and batch norm, found in the torch.fx graph."""
    from pgsweep.analyses.adversarial import find_affine_prefix
    from pgsweep.testing.models import small_resnet

    torch.manual_seed(0)
    network = small_resnet().eval()
    images, labels = torch.rand(args.images, 3, 32, 32), torch.arange(args.images) % 10
    targets = list(range(10))
    steps = list(np.geomspace(0.01, 1.0, args.steps))
    points = len(images) * len(targets) * len(steps)
    prefix = find_affine_prefix(network)  # the stem's conv and bn (given images, auto declines it: see below)
    auto = find_affine_prefix(network, images[:1])
    unclipped = Perturbation("softmax", "l2")
    fast = evaluate_block(network, images, labels, range(len(images)), targets, steps, unclipped, prefix)
    plain = evaluate_block(network, images, labels, range(len(images)), targets, steps, unclipped, None)
    agree = float((fast.prediction == plain.prediction).mean())
    assert agree == 1.0, f"affine prefix disagrees with the plain path on {1 - agree:.2%} of points"
    with torch.no_grad():
        directions = step_directions(input_gradients(network, images, targets, "softmax"), "l2")
        perturbed = torch.cat([(images.unsqueeze(0) + s * directions).flatten(0, 1) for s in steps])
    as_given = evaluate_block(network, images, labels, range(len(images)), targets, steps, unclipped, None,
                              optimize="false")
    agree = float((as_given.prediction == plain.prediction).mean())
    assert agree == 1.0, f"the inference copy disagrees with the network as given on {1 - agree:.2%} of points"
    copy, copied = on_inference_copy(network, perturbed)
    methods = {
        "inference": lambda: inference(network, perturbed),
        "inference copy": lambda: inference(copy, copied),
        "sweep unclipped, prefix off": lambda: evaluate_block(
            network, images, labels, range(len(images)), targets, steps, unclipped, None),
        f"sweep unclipped (affine prefix {prefix})": lambda: evaluate_block(
            network, images, labels, range(len(images)), targets, steps, unclipped, prefix),
        "sweep unclipped, prefix off, optimize=false": lambda: evaluate_block(
            network, images, labels, range(len(images)), targets, steps, unclipped, None, optimize="false"),
    }
    medians = rounds(methods, args.rounds)
    inference_rate = len(perturbed) / medians["inference"]
    print(f"\nsmall ResNet, random 3x32x32 images: {len(images)} images x {len(targets)} targets x {len(steps)} "
          f"steps = {points:,} points; l2 steps; same predictions with and without the prefix and the inference "
          f"copy; torch threads {torch.get_num_threads()}; {args.rounds} rounds, medians; affine_prefix=auto "
          f"picks {auto}")
    print("| method | median | points/s | vs inference | vs torchattacks | vs per-point loop |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(row("plain inference of the perturbed images (img/s)", medians["inference"], len(perturbed),
              inference_rate, None, None))
    print(row("the same on the inference copy (img/s)", medians["inference copy"], len(perturbed),
              inference_rate, None, None))
    for name in list(methods)[2:]:
        print(row(name, medians[name], points, inference_rate, None, None))


def scaling_bench(args) -> None:
    """1 vs 2 Ray workers (one thread each) on a grid that takes one worker 30 s or more,
    and Ray's overhead against the same shards in this process on one thread."""
    import ray

    torch.set_num_threads(1)
    network, images, labels, source = thesis_setup(args.images)
    steps = list(np.geomspace(1.0, 1000.0, args.steps))
    job = make_job(network, images, labels, steps, Perturbation("softmax", "raw"), "conv1", args.shard)
    points = len(images) * 15 * len(steps)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        small = make_job(network, images[:16], labels[:16], steps[:2], job.perturbation, "conv1")
        ray_sweep(small, 2)  # warm-up
        methods = {
            "in-process, 1 thread": lambda: in_process_shards(job),
            "Ray, 1 worker": lambda: ray_sweep(job, 1),
            "Ray, 2 workers": lambda: ray_sweep(job, 2),
        }
        medians = rounds(methods, args.rounds)
    finally:
        ray.shutdown()
    print(f"\n{source}: {len(images)} images x 15 targets x {len(steps)} steps = {points:,} points, "
          f"shards of {args.shard} images; {args.rounds} rounds, medians")
    for name, seconds in medians.items():
        print(f"  {name:<22} {seconds:8.1f} s  {points / seconds:10,.0f} points/s")
    print(f"  Ray overhead vs in-process (1 worker): {medians['Ray, 1 worker'] / medians['in-process, 1 thread'] - 1:+.1%}")
    print(f"  2 workers vs 1: {medians['Ray, 1 worker'] / medians['Ray, 2 workers']:.2f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scaling", action="store_true", help="1 vs 2 Ray workers on a large grid")
    parser.add_argument("--resnet", action="store_true", help="the sweep vs inference on a small ResNet")
    parser.add_argument("--images", type=int, default=None, help="images (41; scaling: 165)")
    parser.add_argument("--steps", type=int, default=None, help="steps (10; scaling: 100)")
    parser.add_argument("--shard", type=int, default=8, help="images per shard (scaling)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (7; scaling: 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.scaling:
        args.images, args.steps, args.rounds = args.images or 165, args.steps or 100, args.rounds or 3
        scaling_bench(args)
    elif args.resnet:
        args.images, args.steps, args.rounds = args.images or 41, args.steps or 10, args.rounds or 5
        resnet_bench(args)
    else:
        args.images, args.steps, args.rounds = args.images or 41, args.steps or 10, args.rounds or 7
        main_bench(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
