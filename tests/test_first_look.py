"""What a newcomer sees first: `--help`, and figures a reader can read (numbered dots, a
colour scale that does not start at black, sizes for where a figure is shown, one colour
per kind of feature, pruning's error against size rather than timing noise)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.patches import Circle, Rectangle

from pgsweep import plots
from pgsweep.analyses.features import FeatureMaps
from pgsweep.cli import _stage_lines, sweep_description
from pgsweep.prune import plots as prune_plots


def test_help_lists_the_stages_in_pipeline_order():
    from omegaconf import OmegaConf

    from pgsweep.cli import config_dir

    listed = [line.split()[0] for line in _stage_lines().splitlines()]
    assert listed == ["train", "evaluate", "rank", "knockout", "diagrams", "features", "adversarial", "prune"]
    default = list(OmegaConf.load(f"{config_dir()}/config.yaml").stages)
    assert [name for name in listed if name in default] == default  # the default run's order


def test_a_sweep_description_wrapped_over_lines_is_not_cut_at_its_colon():
    text = "# @package _global_\n# The whole thesis, with a report:\n# 10 jobs and a verdict per claim.\n#   more\n"
    assert sweep_description(text) == "The whole thesis, with a report: 10 jobs and a verdict per claim."
    assert sweep_description("# @package _global_\n# One line? Yes.\n# detail\n") == "One line? Yes."
    from pathlib import Path

    for file in (Path(__file__).resolve().parents[1] / "sweeps" / "sweep").glob("*.yaml"):
        assert sweep_description(file.read_text()).endswith((".", "?")), file.name


def _luminance(colour) -> float:
    red, green, blue = to_rgb(colour)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def test_network_diagram_numbers_every_dot_on_a_scale_whose_low_end_is_light():
    rng = np.random.default_rng(0)
    layer_index = np.array([0] * 5 + [1] * 8 + [2] * 10)
    scores = rng.random((2, 23))
    scores[0, 0] = 0.0
    figure = plots.network_diagrams(rng.random((2, 1, 12, 12)), scores, np.array([0, 1]), ["a", "b"], layer_index,
                                    ["act1", "act2", "act3"])
    diagram = next(ax for ax in figure.axes if any(isinstance(p, Circle) for p in ax.patches))
    numbers = [text.get_text() for text in diagram.texts]
    assert numbers == [str(n) for n in [*range(1, 6), *range(1, 9), *range(1, 11)]]
    zero_dot = next(p for p in diagram.patches if isinstance(p, Circle))  # filter 1-1, PG 0
    assert _luminance(zero_dot.get_facecolor()) > 0.8  # not black: a zero score still shows as a dot
    (scale,) = [ax._colorbar for ax in figure.axes if hasattr(ax, "_colorbar")]
    assert _luminance(scale.cmap(0.0)) > 0.8 and _luminance(scale.cmap(1.0)) < 0.3


def test_thesis_knockout_is_drawn_for_the_report_column_it_is_shown_in():
    from pgsweep.plots.common import REPORT_WIDTH_INCHES

    rows = []
    for c in range(5):
        for direction, seed in (("strongest", -1), ("weakest", -1), ("random", 0)):
            score = "random" if direction == "random" else "pg_softmax"
            rows += [{"class": c, "class_name": f"subject{c}", "score": score, "direction": direction, "seed": seed,
                      "step": s, "class_error": s / 23} for s in range(24)]
    figure = plots.thesis_knockout(pd.DataFrame(rows), "pg_softmax", "class_error", range(5))
    report_dpi, column_px = 110, 1100 - 2 * 16  # pgsweep/report/document.py: png(dpi=110), max-width 1100px, 1em padding
    assert figure.get_size_inches()[0] * report_dpi <= column_px
    assert REPORT_WIDTH_INCHES * report_dpi <= column_px
    figure.canvas.draw()
    sizes = [t.get_fontsize() for ax in figure.axes for t in [*ax.get_xticklabels(), *ax.get_yticklabels()]]
    sizes += [t.get_fontsize() for legend in figure.legends for t in legend.get_texts()]
    assert min(sizes) * report_dpi / 72 >= 11  # at least 11 px as shown, not shrunk to 6-7
    labelled = [ax for ax in figure.axes if ax.get_xlabel()]
    assert len(labelled) == 1  # one axis title for the row, not five running into each other


def test_lookalike_figure_boxes_in_the_runner_up_colour_the_overview_uses():
    rng = np.random.default_rng(1)
    maps = FeatureMaps(rng.random((3, 8, 8)), rng.normal(size=(3, 8, 8)), 1, 2, 3, 0.5, (1, 2, 6, 7))
    title = plots.feature_title("lookalike", 1234, "3", "5")
    assert [int(n) for n in __import__("re").findall(r"\d+", title) if len(n) > 1] == [1234]  # one image number
    own = plots.characteristic_feature(rng.random((12, 12)), maps, "own", 1)
    lookalike = plots.characteristic_feature(rng.random((12, 12)), maps, title, 1, runner_up=True)

    def box_colour(figure):
        (box,) = [p for p in figure.axes[0].patches if isinstance(p, Rectangle)]
        return to_rgb(box.get_edgecolor())

    faces = pd.DataFrame([{"image": 7, "class_name": "3", "channels": 1, "size": 12,
                           "pixels": rng.random(144).tolist(), "source": "digits[7]"}])
    table = pd.DataFrame([{"image": 7, "own_class": own_flag, "target": target, "runner_up": 5, "filter_name": "1-2",
                           "top": 1, "left": 2, "bottom": 6, "right": 7} for own_flag, target in ((True, 3), (False, 5))])
    overview = plots.feature_boxes(faces, table, {3: "3", 5: "5"})
    overview_colours = [to_rgb(p.get_edgecolor()) for ax in overview.axes for p in ax.patches]
    assert box_colour(lookalike) == overview_colours[1]  # the overview's runner-up row
    assert box_colour(own) == overview_colours[0] != box_colour(lookalike)


def test_pruning_figure_plots_error_against_size_and_latency_once_per_width():
    rng = np.random.default_rng(2)
    macs = [1.1e6, 0.8e6, 0.5e6]
    rows = [{"criterion": criterion, "seed": seed, "step": step, "mode": "iterative", "filters_total": 23,
             "removed_fraction": step / 10, "test_error": rng.random() / 5, "test_error_before": rng.random(),
             "latency_ms": 10 - 2 * step + rng.random(), "latency_batch": 64, "macs": macs[step],
             "params": 6000 - 1000 * step}
            for criterion in ("pg_softmax", "magnitude", "random") for seed in (0, 1) for step in range(3)]
    figure = prune_plots.error_vs_latency(pd.DataFrame(rows))
    error_ax, latency_ax = figure.axes[:2]
    for line in error_ax.get_lines():  # every criterion at the steps' sizes: no x from timing noise
        assert sorted(np.round(line.get_xdata(), 6)) == sorted(np.round(np.array(macs) / 1e6, 6))
    (median,) = latency_ax.get_lines()
    assert len(median.get_xdata()) == 3  # latency once per width, not once per criterion
    assert "multiply-adds" in error_ax.get_xlabel() and "latency" in latency_ax.get_ylabel()
