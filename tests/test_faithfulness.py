"""The scores wired into the knockout and pruning, and the faithfulness table read off the knockout.

The end-to-end run is the issue's own command on the digits (1 training epoch, a small pruning);
its knockout orders are checked against Captum called directly on the trained model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from scipy.stats import spearmanr

from pgsweep.analyses.knockout.faithfulness import MEASURES, faithfulness_table, mean_interval
from pgsweep.errors import ConfigError


def _summary(after: int = 2) -> pd.DataFrame:
    """A knockout summary of 3 classes: pg, a better score, the oracle and random."""
    rows = []
    for c, (pg_rho, gxa_rho) in enumerate([(0.1, 0.8), (0.2, 0.9), (0.0, 0.7)]):
        for score, rho, strong, weak in (("pg_softmax", pg_rho, 0.3 + 0.1 * c, 0.20), ("grad_x_activation", gxa_rho, 0.9, 0.05),
                                        ("oracle", 1.0, 1.0, 0.02)):
            rows.append({"class": c, "class_name": f"c{c}", "score": score, "spearman_oracle": rho,
                         f"class_error_after_{after}_strongest": strong,
                         f"overall_error_after_{after}_weakest": weak})
        rows.append({"class": c, "class_name": f"c{c}", "score": "random",
                     f"class_error_after_{after}_random": 0.2 + 0.1 * c, f"overall_error_after_{after}_random": 0.25})
    mean = pd.DataFrame(rows).drop(columns="class_name").groupby("score").mean().reset_index()
    return pd.concat([pd.DataFrame(rows), mean.assign(**{"class": -1, "class_name": "mean"})], ignore_index=True)


def test_faithfulness_table_is_each_measure_over_classes_against_random_class_by_class():
    table = faithfulness_table(_summary(), after=2).set_index("score")
    assert list(table.index) == ["pg_softmax", "grad_x_activation", "oracle"]  # random is the baseline, not a row
    assert (table.classes == 3).all() and (table.after == 2).all()
    gxa = table.loc["grad_x_activation"]
    assert gxa.spearman_oracle == pytest.approx(0.8)
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)  # sd of (0.8, 0.9, 0.7) is 0.1
    assert (gxa.spearman_oracle_low, gxa.spearman_oracle_high) == pytest.approx((0.8 - half, 0.8 + half))
    # paired per class: 0.9 - (0.2, 0.3, 0.4)
    assert gxa.class_error_strongest_vs_random == pytest.approx(0.6)
    assert gxa.class_error_strongest_vs_random_high - gxa.class_error_strongest_vs_random == pytest.approx(half)
    # pg's strongest error rises with the random one class by class: the paired difference has no spread
    pg = table.loc["pg_softmax"]
    assert pg.class_error_strongest_vs_random == pytest.approx(0.1)
    assert pg.class_error_strongest_vs_random_low == pytest.approx(0.1)
    assert pg.overall_error_weakest_vs_random == pytest.approx(-0.05)
    assert table.loc["oracle"].spearman_oracle == 1.0
    assert all(f"{m}_{end}" in table for m in MEASURES for end in ("low", "high"))


def test_faithfulness_without_random_orders_leaves_the_differences_empty():
    summary = _summary()
    table = faithfulness_table(summary[summary.score != "random"], after=2)
    assert table.class_error_strongest_vs_random.isna().all()
    assert table.spearman_oracle.notna().all()


def test_mean_interval_needs_two_values_for_its_bounds():
    assert mean_interval([0.5]) == (0.5, pytest.approx(np.nan, nan_ok=True), pytest.approx(np.nan, nan_ok=True))
    mean, low, high = mean_interval([1.0, 3.0, np.nan])
    assert mean == 2.0 and low < 2.0 < high
    assert np.isnan(mean_interval([])[0])


def test_faithfulness_figure_draws_a_row_per_score_on_three_panels():
    from pgsweep import plots

    figure = plots.faithfulness(faithfulness_table(_summary(), after=2))
    axes = figure.get_axes()
    assert len(axes) == 3
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels[-1] == "oracle (single knockout)" and "PG (softmax)" in labels  # best Spearman on top


# ---------------------------------------------------------------- bad input: one line, before a run

def _compose(store, *overrides):
    from hydra import compose, initialize_config_dir

    from pgsweep.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[f"tracking.uri=sqlite:///{store}/mlflow.db", "trainer.progress_bar=false",
                                            f"prune.output_dir={store}/prune", *overrides])


@pytest.mark.parametrize("overrides, message", [
    (["analysis.knockout.scores=[pg_softmax,saliency]"], "analysis.knockout.scores: unknown score 'saliency'"),
    (["analysis.knockout.scores=[pg_softmax,oracle]"], "analysis.knockout.scores: 'oracle' is always replayed"),
    (["analysis.knockout.scores=[pg_logit,integrated_pg]"], "analysis.knockout.scores must keep pg_softmax"),
    (["analysis.knockout.scores=[pg_softmax,gradcam]", "analysis.layers=[act1,act4]"],
     "analysis.knockout.scores: score 'gradcam' needs a conv map"),
    (["prune.criteria=[pg_softmax,saliency]"], "prune.criteria: unknown criterion 'saliency'"),
    (["prune.path_steps=0"], "prune.path_steps must be >= 1, got 0"),
    (["prune.baseline=noise"], "prune.baseline must be one of zeros, mean, blur"),
])
def test_bad_score_names_fail_in_one_line_before_any_run(tmp_path, overrides, message):
    from pgsweep.pipeline import run_pipeline

    cfg = _compose(tmp_path, "stages=[train,knockout,prune]", *overrides)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as caught:
        run_pipeline(cfg)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "mlflow.db").exists()  # no run was started


def test_an_unknown_knockout_score_on_the_command_line_exits_2(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pgsweep", "analysis.knockout.scores=[pg_softmax,saliency]"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert "analysis.knockout.scores: unknown score 'saliency'" in done.stderr


# ---------------------------------------------------------------- the issue's command, end to end

KNOCKED = ["pg_softmax", "integrated_pg", "conductance", "grad_x_activation"]
PATH_STEPS = 4
KNOCKED_CLASSES = ["0", "3", "8"]


@pytest.fixture(scope="module")
def wired_run(tmp_path_factory):
    from pgsweep.pipeline import run_pipeline

    store = tmp_path_factory.mktemp("wired")
    cfg = _compose(store, "stages=[train,knockout,prune]", f"analysis.knockout.scores=[{','.join(KNOCKED)}]",
                   "prune.criteria=[pg_softmax,integrated_pg]", "trainer.max_epochs=1",
                   f"analysis.path_steps={PATH_STEPS}", f"prune.path_steps={PATH_STEPS}",
                   "analysis.knockout.random_orderings=2", "prune.seeds=[0]", "prune.finetune_epochs=1",
                   # the cost down: 40x40 digits (the smallest the thesis convnet takes), 3 classes knocked out
                   "data.image_size=40", f"analysis.knockout.classes=[{','.join(KNOCKED_CLASSES)}]",
                   "prune.step_fraction=0.2", "prune.final_fraction=0.2", "prune.latency_repeats=1",
                   "prune.progress_bar=false", "ray.enabled=false")
    return cfg, store, run_pipeline(cfg)


def _artifact(store, run_id, path) -> pd.DataFrame:
    from mlflow.tracking import MlflowClient

    return pd.read_parquet(MlflowClient(f"sqlite:///{store}/mlflow.db").download_artifacts(run_id, path))


def test_the_issues_command_logs_the_scores_the_faithfulness_and_the_criteria(wired_run):
    _, store, result = wired_run
    summary = _artifact(store, result.run_id, "knockout/summary.parquet")
    assert set(summary.score) == {*KNOCKED, "oracle", "random"}
    faithful = _artifact(store, result.run_id, "knockout/faithfulness.parquet")
    assert set(faithful.score) == {*KNOCKED, "oracle"}
    assert faithful.spearman_oracle.between(-1, 1).all() and (faithful.classes == len(KNOCKED_CLASSES)).all()
    assert faithful.set_index("score").spearman_oracle["oracle"] == pytest.approx(1.0)
    curves = _artifact(store, result.run_id, "prune/curves.parquet")
    assert {"pg_softmax", "integrated_pg"} == set(curves.criterion)
    final = curves[curves.step == curves.step.max()]
    assert (final.params < curves[curves.step == 0].params.max()).all()  # filters really went


def _captum_class_means(network, images, labels, score, classes: int) -> np.ndarray:
    """(K, U): Captum called directly, one class at a time on that class's images, reduced per
    filter as pgsweep states it, averaged over the class's images; layers act1..act3 in order."""
    from captum.attr import InternalInfluence, LayerConductance, LayerGradientXActivation

    from pgsweep.pg.scores import SoftmaxOutput

    forward = SoftmaxOutput(network).eval()
    out = np.zeros((classes, 0))
    for layer in ("act1", "act2", "act3"):
        module = dict(network.named_modules())[layer]
        per_class = []
        for c in range(classes):
            x = images[labels == c]
            target = torch.full((len(x),), c)
            if score == "integrated_pg":
                a = InternalInfluence(forward, module).attribute(x, torch.zeros_like(x), target=target,
                                                                 n_steps=PATH_STEPS)
                values = torch.linalg.vector_norm(a.flatten(2), dim=-1)
            elif score == "conductance":
                a = LayerConductance(forward, module).attribute(x, torch.zeros_like(x), target=target,
                                                                n_steps=PATH_STEPS)
                values = a.flatten(2).sum(-1)
            else:
                values = LayerGradientXActivation(forward, module).attribute(x, target=target).flatten(2).sum(-1)
            per_class.append(values.mean(0).detach().double().numpy())
        out = np.concatenate([out, np.stack(per_class)], axis=1)
    return out


@pytest.mark.parametrize("score", ["integrated_pg", "conductance", "grad_x_activation"])
def test_the_knockouts_scores_agree_with_captum_called_directly(wired_run, score):
    from pgsweep.data import load_dataset, stratified_split
    from pgsweep.pipeline import read_settings

    cfg, store, result = wired_run
    data = read_settings(cfg).data
    images = load_dataset(data.name, data.root, data.image_size, data.equalize, data.channels)
    split = stratified_split(images.labels.numpy(), images.content_ids, images.class_names, data.test_fraction,
                             data.val_fraction, data.split_seed, data.group_duplicates)
    x, y = images.images[split.test], images.labels[split.test]
    network = result.model.network.eval()
    expected = _captum_class_means(network, x, y, score, len(images.class_names))
    oracle = _artifact(store, result.run_id, "knockout/oracle.parquet")
    summary = _artifact(store, result.run_id, "knockout/summary.parquet")
    for c in (int(name) for name in KNOCKED_CLASSES):
        loss = oracle[oracle["class"] == c].sort_values("unit").loss_increase.to_numpy()
        logged = summary[(summary["class"] == c) & (summary.score == score)].spearman_oracle.item()
        assert logged == pytest.approx(spearmanr(expected[c], loss).statistic, abs=1e-9)
    # and the strongest-first order the knockout replayed is Captum's
    curves = result.reports["knockout"].curves
    first = curves[(curves["class"] == 3) & (curves.score == score) & (curves.direction == "strongest")]
    names = __import__("pgsweep.analyses.units", fromlist=["find_units"]).find_units(
        network, ["act1", "act2", "act3"], x[:1]).names()
    assert list(first.sort_values("step").knocked.iloc[1:6]) == [names[u] for u in np.argsort(-expected[3])[:5]]


# ---------------------------------------------------------------- the new criteria in pruning

@pytest.mark.parametrize("criterion", ["grad_x_activation", "grad_x_activation_l2", "integrated_pg", "conductance",
                                       "taylor_signed", "ablation"])
def test_a_new_criterion_scores_the_filter_nothing_reads_zero(criterion):
    """act1 channel 3 of the hand-set knockout net is read by no output: every data-driven score gives it 0,
    and the criterion is computed as the ranking computes it (Captum's own reduction, for conductance)."""
    from collections import OrderedDict

    from torch import nn

    from pgsweep.analyses.ranking import class_scores
    from pgsweep.prune.criteria import filter_scores, normalize_classes
    from pgsweep.testing.models import KNOCKOUT_WEIGHTS, knockout_images

    net = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(3, 4, 1)), ("act1", nn.ReLU()), ("pool1", nn.AvgPool2d(2)),
                                     ("flatten", nn.Flatten()), ("fc1", nn.Linear(4, 2))]))
    with torch.no_grad():
        net.conv1.weight.zero_()
        net.conv1.weight[:3, :, 0, 0] = torch.eye(3)
        net.conv1.weight[3, 0, 0, 0] = 1.0  # a live filter nothing downstream reads
        net.conv1.bias.zero_()
        net.fc1.weight.zero_()
        net.fc1.weight[:, :3] = torch.tensor(KNOCKOUT_WEIGHTS)
        net.fc1.bias.zero_()
    net.eval()
    images, labels = knockout_images()
    scores = filter_scores(net, criterion, ["act1"], images, labels, ["a", "b"], path_steps=4)["act1"]
    assert scores.shape == (4,) and scores[3] == 0 and np.abs(scores[:3]).max() > 0
    expected = class_scores(net, images, labels, ["a", "b"], ["act1"], scores=[criterion], path_steps=4)
    np.testing.assert_allclose(scores, normalize_classes(expected.scores[criterion]))
