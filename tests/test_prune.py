"""Stage prune: criteria, Torch-Pruning surgery and its replay, the stage end to end, bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from torch import nn

from pgsweep.analyses.knockout import knockout_predictions
from pgsweep.analyses.units import find_units
from pgsweep.cli import config_dir
from pgsweep.errors import ConfigError
from pgsweep.models.checkpoint import TrainedModel
from pgsweep.models.convnet import ThesisConvNet
from pgsweep.models.spec import ConvNetSpec
from pgsweep.pipeline import run_pipeline
from pgsweep.prune.criteria import filter_scores, lowest, normalize_classes
from pgsweep.stages.prune_job import PruneJob, PruneTask, read_model
from pgsweep.prune.schedule import removal_counts
from pgsweep.testing.config import prune_settings
from pgsweep.models.pruning import PruningRecord, remove_filters, replay
from pgsweep.settings import TrainSettings
from pgsweep.testing.models import KNOCKOUT_WEIGHTS, knockout_images
from pgsweep import load_model

SENSIBLE = ("pg_softmax", "pg_logit", "taylor", "loss_gradient", "activation", "magnitude")


# ---------------------------------------------------------------- criteria

def test_classes_are_combined_with_equal_weight_whatever_their_scale():
    """Class 0's scores are 100x class 1's: a plain mean ranks by class 0 alone; normalized, both count."""
    scores = np.array([[100.0, 200.0, 300.0], [4.0, 2.0, 1.0]])
    assert scores.mean(0).argmin() == 0  # the big class decides a plain mean
    combined = normalize_classes(scores)
    np.testing.assert_allclose(combined, [(1 / 6 + 4 / 7) / 2, (2 / 6 + 2 / 7) / 2, (3 / 6 + 1 / 7) / 2])
    assert combined.argmin() == 1 and np.isclose(combined.sum(), 1.0)
    # scaling a class changes nothing; a class without images (NaN) or all zeros carries no weight
    np.testing.assert_allclose(normalize_classes(scores * [[1000.0], [0.001]]), combined)
    with_empty = np.vstack([scores, [np.nan] * 3, [0.0] * 3])
    np.testing.assert_allclose(normalize_classes(with_empty), combined)


def _net_with_a_useless_filter() -> nn.Sequential:
    """hand_set_knockout_net with a 4th filter that sees nothing (zero weights and bias) and
    that nothing reads (a zero column in fc1): removing it cannot change any output."""
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 4, 1)), ("act1", nn.ReLU()), ("pool1", nn.AvgPool2d(2)),
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(4, 2)),
    ]))
    with torch.no_grad():
        net.conv1.weight.zero_()
        net.conv1.weight[:3, :, 0, 0] = torch.eye(3)
        net.conv1.bias.zero_()
        net.fc1.weight.zero_()
        net.fc1.weight[:, :3] = torch.tensor(KNOCKOUT_WEIGHTS)
        net.fc1.bias.zero_()
    return net.eval()


@pytest.mark.parametrize("criterion", SENSIBLE)
def test_every_sensible_criterion_removes_the_useless_filter_first(criterion):
    net = _net_with_a_useless_filter()
    images, labels = knockout_images()
    scores = filter_scores(net, criterion, ["act1"], images, labels, ["a", "b"])["act1"]
    assert scores.shape == (4,)
    assert lowest(scores, 1) == [3] and scores[3] < scores[:3].min()
    before = net(images)
    remove_filters(net, {"conv1": [3]}, images[:1])
    assert net.conv1.out_channels == 3 and net.fc1.in_features == 3
    torch.testing.assert_close(net(images), before)


def test_magnitude_is_the_l1_norm_of_each_filters_own_weights():
    net = _random_net()
    images, labels = _images(2)
    scores = filter_scores(net, "magnitude", ["act1", "act2"], images, labels, ["a", "b", "c", "d"])
    for layer, conv in (("act1", net.conv1), ("act2", net.conv2)):
        np.testing.assert_allclose(scores[layer], conv.weight.detach().abs().sum((1, 2, 3)).double().numpy(),
                                   rtol=1e-6)


def test_random_scores_depend_on_the_seed_only():
    net = _net_with_a_useless_filter()
    images, labels = knockout_images()
    draw = [filter_scores(net, "random", ["act1"], images, labels, ["a", "b"], seed=s)["act1"] for s in (0, 0, 1)]
    np.testing.assert_array_equal(draw[0], draw[1])
    assert not np.array_equal(draw[0], draw[2])


def _spec(**changes) -> ConvNetSpec:
    return replace(ConvNetSpec(num_classes=4, input_size=40, input_mean=0.5, input_std=0.25), **changes)


def _random_net(seed: int = 0, **changes) -> ThesisConvNet:
    torch.manual_seed(seed)
    net = ThesisConvNet(_spec(**changes))
    with torch.no_grad():  # biases well away from 0, so leaving them in would show
        for name in ("conv1", "conv2", "conv3"):
            getattr(net, name).bias.uniform_(0.3, 0.8)
    return net.eval()


def _images(count: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 1, 40, 40, generator=generator), torch.arange(count) % 4


def test_the_job_removes_a_useless_filter_of_the_thesis_convnet_first_by_every_sensible_criterion():
    """act2's 5th filter sees nothing and conv3 ignores it: step 1 (one of act2's 8) removes 2-5."""
    net = _random_net()
    with torch.no_grad():
        net.conv2.weight[4] = 0
        net.conv2.bias[4] = 0
        net.conv3.weight[:, 4] = 0
    images, labels = _images()
    model = TrainedModel(net, ("a", "b", "c", "d"))
    settings = prune_settings(criteria=SENSIBLE, seeds=(0,), step_fraction=0.1, final_fraction=0.1,
                             finetune_epochs=0, layers=("act2",), latency_repeats=1)
    tasks = tuple(PruneTask(i, c, 0) for i, c in enumerate(SENSIBLE))
    job = PruneJob(model, ("act2",), images, labels, images, labels, images, labels,
                   tuple(f"image{i}" for i in range(len(images))), settings, TrainSettings(), tasks)
    for task in tasks:
        table = job.run(task)
        assert list(table.step) == [0, 1]
        first = table.iloc[1]
        assert first.removed_now == "2-5", task.criterion
        # a filter nothing reads: the predictions cannot change
        assert first.test_error_before == table.iloc[0].test_error
        assert first.params < table.iloc[0].params and first.macs < table.iloc[0].macs


@pytest.mark.parametrize("mode", ["one_shot", "iterative"])
def test_both_modes_remove_the_lowest_weights_by_magnitude(mode):
    """Without fine-tuning the weights stay, so one-shot (the trained network cut to each fraction
    by one ranking) and iterative (re-scored each step) remove the same filters of act3."""
    net = _random_net()
    images, labels = _images()
    l1 = net.conv3.weight.detach().abs().sum((1, 2, 3)).numpy()
    settings = prune_settings(criteria=("magnitude",), seeds=(0,), step_fraction=0.2, final_fraction=0.4,
                             mode=mode, finetune_epochs=0, layers=("act3",), latency_repeats=1)
    job = PruneJob(TrainedModel(net, ("a", "b", "c", "d")), ("act3",), images, labels, images, labels, images,
                   labels, tuple(f"image{i}" for i in range(len(images))), settings, TrainSettings(),
                   (PruneTask(0, "magnitude", 0),))
    table = job.run(job.tasks[0])
    for step, count in ((1, 2), (2, 4)):
        expected = sorted(f"3-{c + 1}" for c in np.argsort(l1)[:count])
        assert sorted(table.removed_filters[step].split(",")) == expected
    assert table.step.tolist() == [0, 1, 2] and (table["mode"] == mode).all()
    if mode == "one_shot":  # each step prunes the trained network: step 2 lists all 4 as removed now
        assert len(table.removed_now[2].split(",")) == 4
    else:
        assert len(table.removed_now[2].split(",")) == 2


def test_pruning_a_pruned_model_extends_its_record():
    net = _random_net()
    images, labels = _images()
    first = PruningRecord(tuple(images[:1].shape)).then({"conv3": [0, 1]})
    remove_filters(net, first.steps[0], images[:1])
    model = TrainedModel(net, ("a", "b", "c", "d"), {}, pruning=first.to_dict())
    settings = prune_settings(criteria=("random",), seeds=(0,), step_fraction=0.25, final_fraction=0.25,
                             finetune_epochs=0, layers=("act3",), latency_repeats=1)
    job = PruneJob(model, ("act3",), images, labels, images, labels, images, labels,
                   tuple(f"image{i}" for i in range(len(images))), settings, TrainSettings(),
                   (PruneTask(0, "random", 0),))
    table = job.run(job.tasks[0])
    assert table.filters_total[0] == 8 and table.filters_removed[1] == 2  # a quarter of the 8 left
    final = read_model(table.model_file[1])
    assert len(final.pruning["steps"]) == 2 and final.network.conv3.out_channels == 6
    with torch.no_grad():  # loading inside no_grad works too (Torch-Pruning traces with autograd)
        again = read_model(table.model_file[1])
        torch.testing.assert_close(again.network(images), final.network(images))
        error = float((final.network(images).argmax(1) != labels).float().mean())
    assert table.test_error[1] == pytest.approx(error)


# ---------------------------------------------------------------- surgery = knockout

REMOVED = {"act1": [1], "act2": [0, 5], "act3": [2, 7, 9]}


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_removing_filters_predicts_what_knocking_them_out_does(activation):
    """Removal == zeroing the maps after the activation (the knockout), for any activation.
    Zeroing the filter's weights is not the same: with the bias left in, the map is
    act(bias) != 0; without it, act(0), which is 0 for tanh and 0.5 for sigmoid."""
    net = _random_net(activation=activation)
    images, labels = _images()
    layers = ["act1", "act2", "act3"]
    units = find_units(net, layers, images[:1])
    offsets = dict(zip(layers, np.cumsum([0, *units.sizes[:-1]])))
    order = np.array([[offsets[layer] + c for layer in layers for c in REMOVED[layer]]])
    knocked = knockout_predictions(net, images, labels, units, order)

    pruned = ThesisConvNet(net.spec)
    pruned.load_state_dict(net.state_dict())
    remove_filters(pruned.eval(), {f"conv{i}": REMOVED[f"act{i}"] for i in (1, 2, 3)}, images[:1])
    assert [pruned.conv1.out_channels, pruned.conv2.out_channels, pruned.conv3.out_channels] == [4, 6, 7]
    with torch.no_grad():
        logits = pruned(images)
    loss = nn.functional.cross_entropy(logits, labels, reduction="none").numpy()
    np.testing.assert_array_equal(logits.argmax(1).numpy(), knocked.predictions[0, -1])
    np.testing.assert_allclose(loss, knocked.losses[0, -1], rtol=1e-5, atol=1e-6)

    def zeroed(bias: bool) -> torch.Tensor:
        copy = ThesisConvNet(net.spec)
        copy.load_state_dict(net.state_dict())
        with torch.no_grad():
            for i in (1, 2, 3):
                conv = getattr(copy, f"conv{i}")
                conv.weight[REMOVED[f"act{i}"]] = 0
                if bias:
                    conv.bias[REMOVED[f"act{i}"]] = 0
            return copy.eval()(images)

    assert not torch.allclose(zeroed(bias=False), logits, atol=1e-3)  # act(bias) reaches the next layer
    if activation == "tanh":  # tanh(0) = 0: weights and bias zeroed is removal
        torch.testing.assert_close(zeroed(bias=True), logits, rtol=1e-5, atol=1e-5)
    else:  # sigmoid(0) = 0.5 still reaches the next layer
        assert not torch.allclose(zeroed(bias=True), logits, atol=1e-3)


def test_a_pruned_model_file_stores_the_base_spec_and_replays_its_record(tmp_path):
    net = _random_net()
    images, _ = _images(4)
    record = PruningRecord(tuple(images[:1].shape))
    for step in ({"conv1": [0], "conv3": [1, 2]}, {"conv2": [3], "conv3": [0]}):
        remove_filters(net, step, images[:1])
        record = record.then(step)
    model = TrainedModel(net, ("a", "b", "c", "d"), {"note": 1}, pruning=record.to_dict())
    loaded = TrainedModel.load(model.save(tmp_path / "pgsweep-model.pt"))
    assert loaded.spec == _spec()  # the base network's description: conv_channels (5, 8, 10)
    assert [loaded.network.conv1.out_channels, loaded.network.conv2.out_channels,
            loaded.network.conv3.out_channels] == [4, 7, 7]
    assert loaded.pruning == record.to_dict()
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(images), net(images))
    # a plain model file has no record and loads as before
    plain = TrainedModel.load(TrainedModel(_random_net(), ("a", "b", "c", "d")).save(tmp_path / "plain.pt"))
    assert plain.pruning is None and plain.network.conv3.out_channels == 10
    fresh = replay(ThesisConvNet(_spec()), record.to_dict())
    assert fresh.fc1.in_features == 7  # act3's 7 maps of 1x1 after the flatten


def test_the_schedule_counts_filters_per_layer():
    settings = prune_settings(step_fraction=0.1, final_fraction=0.5)
    assert settings.fractions() == (0.1, 0.2, 0.3, 0.4, 0.5)
    assert prune_settings(step_fraction=0.3, final_fraction=0.5).fractions() == (0.3, 0.5)
    counts = removal_counts({"act1": 5, "act2": 8, "act3": 10}, settings.fractions())
    assert [c["act1"] for c in counts] == [1, 1, 2, 2, 3]  # half up: 0.5 -> 1, 1.5 -> 2, 2.5 -> 3
    assert [c["act2"] for c in counts] == [1, 2, 2, 3, 4]
    assert [c["act3"] for c in counts] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------- the stage, end to end

SMALL = ["prune.criteria=[pg_softmax,magnitude,random]", "prune.seeds=[0,1]", "prune.step_fraction=0.2",
         "prune.final_fraction=0.4", "prune.finetune_epochs=1", "prune.latency_repeats=2", "ray.enabled=false",
         "prune.progress_bar=false"]


def _compose(store: Path, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[f"tracking.uri=sqlite:///{store}/mlflow.db", "trainer.progress_bar=false",
                                            f"prune.output_dir={store}/prune", *overrides])


def _runs(store: Path) -> int:
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    store = tmp_path_factory.mktemp("pruned")
    return store, run_pipeline(_compose(store, "stages=[train,prune]", "trainer.max_epochs=2", *SMALL))


@pytest.mark.xdist_group(name="ray")  # with the Ray test below: one worker, the fixture's model trained once
def test_the_stage_logs_curves_figures_summary_and_models(pruned, capsys):
    store, result = pruned
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    names = {Path(a.path).name for a in client.list_artifacts(result.run_id, "prune")}
    assert {"curves.parquet", "summary.parquet", "summary.md", "error_vs_fraction.png",
            "error_vs_latency.png", "models"} <= names
    curves = pd.read_parquet(client.download_artifacts(result.run_id, "prune/curves.parquet"))
    assert len(curves) == 3 * 2 * 3  # criteria x seeds x (intact + 2 steps)
    metrics = client.get_run(result.run_id).data.metrics
    intact = curves[curves.step == 0]
    assert (intact.test_error == metrics["final_test_error"]).all()
    for _, rows in curves.groupby(["criterion", "seed"]):
        rows = rows.sort_values("step")
        # 0.2 then 0.4 of 5, 8 and 10 filters, rounded half up: 1+2+2 = 5, then 2+3+4 = 9 of 23
        assert list(rows.filters_removed) == [0, 5, 9]
        assert rows.params.is_monotonic_decreasing and rows.params.nunique() == 3
        assert rows.macs.is_monotonic_decreasing and rows.macs.nunique() == 3
        assert len(rows.removed_filters.iloc[-1].split(",")) == 9
        assert (rows.latency_ms > 0).all()
    report = result.reports["prune"]
    assert set(report.summary.criterion) == {"pg_softmax", "magnitude", "random"}
    assert set(report.comparisons.other) == {"magnitude", "random"}
    text = Path(client.download_artifacts(result.run_id, "prune/summary.md")).read_text()
    assert "| pg_softmax | magnitude |" in text
    assert metrics["prune/tasks_computed"] == 6
    # the same summary, printed again from the run's curves table
    from pgsweep.prune import summary

    assert summary.main([result.run_id, "--tracking-uri", f"sqlite:///{store}/mlflow.db"]) == 0
    assert capsys.readouterr().out == text


@pytest.mark.xdist_group(name="ray")  # with the Ray test below: one worker, the fixture's model trained once
def test_a_pruned_model_loads_and_every_query_stage_runs_on_it(pruned):
    store, result = pruned
    uri = result.reports["prune"].model_uris[("pg_softmax", 1)]
    model = load_model(uri, f"sqlite:///{store}/mlflow.db")
    assert model.spec.conv_channels == (5, 8, 10)  # the base network's description ...
    widths = [model.network.conv1.out_channels, model.network.conv2.out_channels, model.network.conv3.out_channels]
    assert widths == [3, 5, 6]  # ... and the pruned widths, replayed
    assert model.provenance["pruned"]["criterion"] == "pg_softmax"
    small = ["analysis.knockout.classes=[0,1]", "analysis.knockout.random_orderings=2", "analysis.features.images=1",
             "ray.enabled=false", "adversarial.max_images=8", "adversarial.targets=[0,1]", "adversarial.examples=1",
             "adversarial.progress_bar=false", f"adversarial.output_dir={store}/adversarial"]
    query = run_pipeline(_compose(store, "stages=[evaluate,rank,knockout,diagrams,features,adversarial]",
                                  f"model_ref={uri}", *small))
    curves = result.reports["prune"].curves
    final = curves[(curves.criterion == "pg_softmax") & (curves.seed == 1)].sort_values("step").iloc[-1]
    assert query.reports["evaluate"]["test"].error == pytest.approx(final.test_error)
    assert query.reports["rank"].scores.units.sizes == (3, 5, 6)
    assert query.reports["knockout"].curves.step.max() == 14  # 3 + 5 + 6 filters
    assert len(query.reports["adversarial"].results) == 8 * 2 * 10  # images x targets x steps


@pytest.mark.xdist_group(name="ray")  # with the Ray test below: one worker, the fixture's model trained once
def test_the_same_command_resumes_from_the_finished_tasks(pruned):
    store, first = pruned
    again = run_pipeline(_compose(store, "stages=[prune]", f"model_ref={first.run_id}", *SMALL))
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    metrics = client.get_run(again.run_id).data.metrics
    assert metrics["prune/tasks_resumed"] == 6 and metrics["prune/tasks_computed"] == 0
    # the same table; only the latencies are timed again
    pd.testing.assert_frame_equal(again.reports["prune"].curves.drop(columns="latency_ms"),
                                  first.reports["prune"].curves.drop(columns="latency_ms"))


@pytest.mark.xdist_group(name="ray")  # Ray clusters started in parallel under xdist time out
def test_tasks_on_ray_give_the_table_computed_in_the_driver(pruned):
    """The same tasks as Ray tasks on a local Ray of 2 workers: the same filters removed, the
    same sizes, the same errors (to one test image: a worker runs torch on one thread)."""
    store, first = pruned
    on_ray = [o for o in SMALL if not o.startswith(("ray.enabled", "prune.criteria", "prune.seeds"))]
    result = run_pipeline(_compose(store, "stages=[prune]", f"model_ref={first.run_id}", *on_ray,
                                   "prune.criteria=[pg_softmax,random]", "prune.seeds=[1]", "ray.num_cpus=2"))
    columns = ["criterion", "seed", "step", "filters_removed", "removed_filters", "params", "macs"]
    local = first.reports["prune"].curves
    local = local[local.criterion.isin(["pg_softmax", "random"]) & (local.seed == 1)].reset_index(drop=True)
    remote = result.reports["prune"].curves
    pd.testing.assert_frame_equal(remote[columns], local[columns])
    assert (remote.test_error - local.test_error).abs().max() <= 1 / 449 + 1e-9


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("overrides, message", [
    (["prune.final_fraction=1.0"], "prune.final_fraction must be in [0, 1), got 1.0"),
    (["prune.step_fraction=-0.1"], "prune.step_fraction must be in [0, 1), got -0.1"),
    (["prune.final_fraction=0.95"], "prune: final_fraction=0.95 would remove all 5 filters of act1"),
    (["prune.layers=[act3]", "prune.final_fraction=0.99"], "would remove all 10 filters of act3"),
    (["prune.criteria=[pg_softmax,fisher]"], "prune.criteria: unknown criterion 'fisher'"),
    (["prune.layers=[act4]"], "prune.layers: act4 has units, not filter maps"),
    (["prune.layers=[act9]"], "prune.layers: "),
    (["prune.mode=greedy"], "prune.mode must be one of iterative, one_shot"),
])
def test_bad_prune_input_fails_in_one_line_before_any_run(tmp_path, overrides, message):
    cfg = _compose(tmp_path, "stages=[train,prune]", "trainer.max_epochs=1", *overrides)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        run_pipeline(cfg)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "mlflow.db").exists() or _runs(tmp_path) == 0


@pytest.mark.parametrize("override", ["prune.final_fraction=1.5", "prune.final_fraction=0.9",
                                      "prune.criteria=[hessian]"])
def test_the_command_answers_bad_prune_input_in_one_line_with_status_2(tmp_path, override):
    script = Path(sys.executable).with_name("pgsweep")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([str(script), "stages=[train,prune]", override], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("pgsweep: error: prune")
    assert list(tmp_path.iterdir()) == []  # no store, no run, no outputs folder


def test_prune_defaults_live_only_in_the_yaml():
    """conf/prune/default.yaml is the one place a default is written: the dataclass has none,
    and a section that leaves a key out is refused by name."""
    import dataclasses

    from pgsweep.errors import ConfigError
    from pgsweep.settings import PruneSettings, read_prune_config
    from pgsweep.testing.config import section_defaults

    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(PruneSettings))
    values = section_defaults("prune")
    assert set(values) == {f.name for f in dataclasses.fields(PruneSettings)}
    del values["seeds"]
    with pytest.raises(ConfigError, match=r"^prune.seeds is required$"):
        read_prune_config(values)
def test_the_summary_shows_no_spread_for_one_seed():
    from pgsweep.prune.summary import markdown

    def curves(seeds):
        rows = [{"criterion": c, "seed": s, "step": step, "removed_fraction": 0.25 * step, "test_error": 0.1 + 0.05 * step
                 + 0.01 * s, "test_error_before": 0.3, "params": 100 - step, "macs": 1000 - step, "latency_ms": 1.0,
                 "mode": "global", "filters_total": 23, "latency_batch": 64}
                for c in ("pg_softmax", "random") for s in seeds for step in (0, 1, 2)]
        return pd.DataFrame(rows)

    one = markdown(curves([0]))
    assert "| pg_softmax | 0.200 (one seed) |" in one and "±" not in one.split("\n", 3)[3]
    two = markdown(curves([0, 1]))
    assert "| pg_softmax | 0.205 ± 0.007 [0.200, 0.210] |" in two


def test_a_tasks_scoring_and_fine_tuning_show_as_a_bar_only_when_asked(capsys):
    from dataclasses import replace as replaced

    net = _random_net()
    images, labels = _images()
    settings = prune_settings(criteria=("magnitude",), seeds=(0,), step_fraction=0.2, final_fraction=0.4,
                              finetune_epochs=1, layers=("act3",), latency_repeats=1)
    job = PruneJob(TrainedModel(net, ("a", "b", "c", "d")), ("act3",), images, labels, images, labels, images,
                   labels, tuple(f"image{i}" for i in range(len(images))), settings, TrainSettings(batch_size=8),
                   (PruneTask(0, "magnitude", 0),), show_progress=True)
    job.run(job.tasks[0])
    bars = capsys.readouterr().err
    # 2 steps x (score, fine-tune); how far the bar is drawn depends on tqdm's refresh interval
    assert "prune magnitude seed 0 (score, fine-tune)" in bars and "/4 " in bars
    assert job.key() == replaced(job, show_progress=False).key()  # how it shows is not what it computes
    replaced(job, show_progress=False).run(job.tasks[0])
    assert "prune magnitude" not in capsys.readouterr().err


def test_fine_tuning_leaves_torchs_deterministic_mode_as_it_found_it():
    """Lightning's deterministic=True would leave torch's deterministic algorithms on for the
    process, and a later stage's Captum DeepLift (a max unpool) would then fail."""
    from pgsweep.stages.prune_job import finetune

    images, labels = _images()
    assert not torch.are_deterministic_algorithms_enabled()
    finetune(_random_net(), images, labels, TrainSettings(batch_size=8), epochs=1, seed=0)
    assert not torch.are_deterministic_algorithms_enabled()
