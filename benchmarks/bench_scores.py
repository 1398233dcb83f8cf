"""How fast are the per-filter scores beside PG? Ratios against baselines, side by side in one process.

    .venv/bin/python benchmarks/bench_scores.py                 # the thesis convnet on 41 Yale faces
    .venv/bin/python benchmarks/bench_scores.py --rounds 5 --yale /path/to/yalefaces

The thesis convnet (untrained: time does not depend on the weights), 60x60 input, 15
classes, 41 Yale faces, the conv maps act1-act3, every class (pgsweep.pg.scores.unit_scores).
Goals (pgsweep issue 24), each printed with "met" or "not met":
  grad_x_activation       within 1.5x the all-class PG's time
  integrated_pg, 32 steps within 40x the all-class PG's time (one all-class PG per step would be 32x;
                          the engine stacks several path points into each pass; --per-point also times
                          integrated_pg_per_point, one pass per path point)
  each Captum method      every class in one call at least 3x faster than one Captum call per class
                          (for the gradient methods, where it is not met, the line adds the ceiling:
                          every class needs its own backward, and Captum's layer methods give each
                          backward its own forward, so a call for every class does the per-class loop's
                          work per image, and batching can save at most the loop's cost per call; the
                          per-class loop on one image bounds that cost from above, so the ceiling is
                          loop / (loop - loop on one image))
Every pair is checked to give the same numbers before any timing (the Captum pairs on 6 images). Methods run in a
shuffled order in each round; the table reports medians over rounds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from pgsweep.data import load_yale
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet
from pgsweep.pg.scores import SoftmaxOutput, unit_scores

LAYERS = ["act1", "act2", "act3"]
STEPS = 32
GOALS = {"grad_x_activation": ("pg", 1.5, "at most"), "integrated_pg": ("pg", 40.0, "at most")}
CAPTUM = ("gradcam", "deeplift", "ablation", "conductance")  # cheapest first
CAPTUM_GOAL = 3.0


def captum_per_class(model, images, score: str, steps: int) -> dict[str, torch.Tensor]:
    """The plain way: one Captum call per class and layer, reduced as unit_scores reduces: (T, B, F)."""
    from captum.attr import LayerConductance, LayerDeepLift, LayerFeatureAblation, LayerGradCam

    softmax = SoftmaxOutput(model)
    zeros = torch.zeros_like(images)
    classes = model(images[:1]).shape[1]
    out = {}
    for layer in LAYERS:
        module = model.get_submodule(layer)
        per_class = []
        for t in range(classes):
            if score == "conductance":
                a = LayerConductance(softmax, module).attribute(images, zeros, target=t, n_steps=steps).flatten(2).sum(-1)
            elif score == "deeplift":
                a = LayerDeepLift(model, module).attribute(images, zeros, target=t).flatten(2).sum(-1)
            elif score == "gradcam":
                a = LayerGradCam(softmax, module).attribute(images, target=t, attr_dim_summation=False).flatten(2).mean(-1)
            else:
                mask = _groups(model, layer, images)
                a = LayerFeatureAblation(softmax, module).attribute(
                    images, layer_baselines=0.0, target=t, layer_mask=mask).flatten(2).mean(-1)
            per_class.append(a.detach())
        out[layer] = torch.stack(per_class)
    return out


def _groups(model, layer: str, images: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    with torch.no_grad():
        model(images[:1])
    handle.remove()
    return torch.arange(seen[0]).view(1, -1, 1, 1)


def time_side_by_side(methods: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            started = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def verdict(ratio: float, goal: float, kind: str) -> str:
    met = ratio <= goal if kind == "at most" else ratio >= goal
    return f"{'met' if met else 'NOT met'} (goal: {kind} {goal:g}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--yale", default="/work/shared/data/yalefaces")
    parser.add_argument("--captum", nargs="*", default=list(CAPTUM), choices=CAPTUM, help="Captum methods to time")
    parser.add_argument("--captum-rounds", type=int, default=1, help="rounds for the (slow) Captum pairs")
    parser.add_argument("--conductance-steps", type=int, default=8,
                        help="path points of the conductance pair (the batched/per-class ratio hardly depends on it)")
    parser.add_argument("--per-point", action="store_true", help="also time integrated_pg with one path point per pass")
    args = parser.parse_args()

    faces = load_yale(args.yale, 60)
    images = faces.images[:41]
    torch.manual_seed(0)
    model = ThesisConvNet(ConvNetSpec(num_classes=15, input_mean=0.4, input_std=0.3)).eval()
    print(f"thesis convnet (untrained), {len(images)} Yale faces 60x60, 15 classes, layers {', '.join(LAYERS)}; "
          f"{torch.get_num_threads()} threads, medians of {args.rounds} rounds")

    engine = {
        "pg": lambda: unit_scores(model, images, LAYERS, "pg"),
        "grad_x_activation": lambda: unit_scores(model, images, LAYERS, "grad_x_activation"),
        "integrated_pg": lambda: unit_scores(model, images, LAYERS, "integrated_pg", path_steps=STEPS),
    }
    if args.per_point:  # the plain way: one engine pass per path point, not several points stacked into one
        engine["integrated_pg_per_point"] = lambda: unit_scores(model, images, LAYERS, "integrated_pg",
                                                                path_steps=STEPS, path_batch=1)
    medians = time_side_by_side(engine, args.rounds)
    print(f"\n  {'score':24s} {'median ms':>10s} {'x PG':>8s}")
    for name, seconds in medians.items():
        ratio = seconds / medians["pg"]
        goal = f"  {verdict(ratio, GOALS[name][1], GOALS[name][2])}" if name in GOALS else ""
        print(f"  {name:24s} {seconds * 1e3:10.1f} {ratio:8.2f}{goal}")

    print(f"\n  {'Captum method':24s} {'batched ms':>10s} {'per-class ms':>13s} {'speed-up':>9s}")
    for score in args.captum:
        steps = args.conductance_steps
        check = images[:6]  # the same numbers before any timing (on a few images: the per-class loop is slow)
        batched = unit_scores(model, check, LAYERS, score, path_steps=steps)
        looped = captum_per_class(model, check, score, steps)
        for layer in LAYERS:
            torch.testing.assert_close(batched[layer], looped[layer], rtol=1e-4, atol=1e-6, msg=f"{score} {layer}")
        methods = {
            "batched": lambda: unit_scores(model, images, LAYERS, score, path_steps=steps),
            "per_class": lambda: captum_per_class(model, images, score, steps),
        }
        if score != "ablation":  # the per-class loop on one image: Captum's cost per call, and one image's work
            methods["per_class_one_image"] = lambda: captum_per_class(model, images[:1], score, steps)
        pair = time_side_by_side(methods, args.captum_rounds)
        ratio = pair["per_class"] / pair["batched"]
        label = f"{score} ({steps} points)" if score == "conductance" else score
        line = f"  {label:24s} {pair['batched'] * 1e3:10.1f} {pair['per_class'] * 1e3:13.1f} {ratio:9.2f}  "
        line += verdict(ratio, CAPTUM_GOAL, "at least")
        if "per_class_one_image" in pair and ratio < CAPTUM_GOAL:
            per_call = pair["per_class_one_image"]
            ceiling = pair["per_class"] / max(pair["per_class"] - per_call, 1e-9)
            why = "out of reach of any batching" if ceiling < CAPTUM_GOAL else "room left in our code"
            line += f"; {why}: per-call cost {per_call * 1e3:.0f} ms, ceiling {ceiling:.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
