"""The analysis stages through the real Hydra config: what lands in MLflow, and bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pgsweep.cli import config_dir
from pgsweep.errors import ConfigError, ModelError
from pgsweep.pipeline import run_pipeline
from pgsweep.tracking import resolve_model

SMALL = ["analysis.knockout.classes=[0,1]", "analysis.knockout.random_orderings=2", "analysis.features.images=1"]


def _compose(store: Path, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[f"tracking.uri=sqlite:///{store}/mlflow.db",
                                            "trainer.progress_bar=false", *overrides])


def _runs(store: Path) -> int:
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """One digits run: train 1 epoch, then every analysis stage (all in the default stage list)."""
    store = tmp_path_factory.mktemp("analysed")
    analyses = ["rank", "knockout", "diagrams", "features"]
    assert set(analyses) <= set(_compose(store).stages)
    cfg = _compose(store, "trainer.max_epochs=1", "analysis.rank.fc_units=true", *SMALL,
                   f"stages=[train,{','.join(analyses)}]")
    return store, run_pipeline(cfg)


def _artifacts(client, run_id, folder):
    return {Path(a.path).name for a in client.list_artifacts(run_id, folder)}


def _table(client, run_id, path) -> pd.DataFrame:
    return pd.read_parquet(client.download_artifacts(run_id, path))


def test_every_stage_logs_its_tables_figures_and_metrics(analysed):
    store, result = analysed
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run_id = result.run_id
    assert {"class_scores.parquet", "strongest_weakest.parquet", "thesis_table.md", "heatmap.png",
            "fc_class_scores.parquet", "fc_thesis_table.md"} <= _artifacts(client, run_id, "rank")
    assert {"curves.parquet", "summary.parquet", "oracle.parquet", "summary.md", "class_0.png", "class_1.png",
            "thesis_class_error.png", "thesis_overall_error.png"} <= _artifacts(client, run_id, "knockout")
    assert {"image_scores.parquet", "consistency.parquet", "fixed_class_consistency.parquet",
            "network_pg.png"} <= _artifacts(client, run_id, "diagrams")
    # every image's PG for every class as target (claim 3's fixed-class vectors), own class included
    image_scores = _table(client, run_id, "diagrams/image_scores.parquet")
    assert len(image_scores) == 449 * 10 and image_scores.groupby("image").target.nunique().eq(10).all()
    assert (image_scores.target == image_scores["class"]).sum() == 449
    assert {"features.parquet", "characteristic_0.png", "lookalike_0.png"} <= _artifacts(client, run_id, "features")

    params = client.get_run(run_id).data.params
    assert params["analysis.knockout.inference_copy_used"] == "True"  # its knockout check passed on the CPU
    assert params["analysis.knockout.steps_used"] == "23"  # the default budget keeps the thesis net's filters
    metrics = client.get_run(run_id).data.metrics
    # zero knockouts is the plain network: exactly the test error training reported
    assert metrics["knockout/intact_test_error"] == metrics["final_test_error"]
    assert metrics["rank/filters"] == 23 and metrics["rank/images"] == 449
    for name in ("auc_strongest", "auc_weakest", "area_between", "spearman_oracle"):
        assert f"knockout/pg_softmax/{name}/class_0" in metrics and f"knockout/taylor/{name}/mean" in metrics
    # recomputed from the logged per-image scores: z-score each filter, then Pearson per image
    # pair; first each image's own class as target, then one fixed target at a time (claim 3's)
    def within_between(rows: pd.DataFrame) -> tuple[float, float]:
        vectors = rows[[c for c in rows if "-" in c]].to_numpy(np.float64)
        vectors = (vectors - vectors.mean(0)) / np.where(vectors.std(0) > 0, vectors.std(0), 1.0)
        corr = np.corrcoef(vectors)
        same = rows["class"].to_numpy()[:, None] == rows["class"].to_numpy()[None, :]
        return corr[same & ~np.eye(len(rows), dtype=bool)].mean(), corr[~same].mean()

    own_within, own_between = within_between(image_scores[image_scores.target == image_scores["class"]])
    assert metrics["diagrams/within_class_correlation"] == pytest.approx(own_within, abs=1e-9)
    assert metrics["diagrams/between_class_correlation"] == pytest.approx(own_between, abs=1e-9)
    fixed = pd.DataFrame([within_between(rows) for _, rows in image_scores.groupby("target")],
                         columns=["within", "between"])
    logged = _table(client, run_id, "diagrams/fixed_class_consistency.parquet").sort_values("target")
    assert list(logged.target) == list(range(10))
    np.testing.assert_allclose(logged[["within", "between"]].to_numpy(), fixed.to_numpy(), atol=1e-9)
    assert metrics["diagrams/fixed_class_within_correlation"] == pytest.approx(fixed.within.mean(), abs=1e-9)
    assert metrics["diagrams/fixed_class_between_correlation"] == pytest.approx(fixed.between.mean(), abs=1e-9)

    scores = _table(client, run_id, "rank/class_scores.parquet")
    assert len(scores) == 10 * 23 and {"pg_softmax", "pg_logit", "loss_gradient", "activation", "taylor"} <= set(scores)
    assert len(_table(client, run_id, "rank/fc_class_scores.parquet")) == 10 * 20  # act4's 20 units
    curves = _table(client, run_id, "knockout/curves.parquet")
    assert set(curves["class"]) == {0, 1} and curves.step.max() == 23
    assert set(curves.score) == {"pg_softmax", "pg_logit", "loss_gradient", "activation", "taylor", "oracle", "random"}
    features = _table(client, run_id, "features/features.parquet")
    assert len(features) == 449 * 10 and features.own_class.sum() == 449
    text = Path(client.download_artifacts(run_id, "rank/thesis_table.md")).read_text()
    assert "PG of the softmax" in text and "PG of the logit" in text


def test_a_model_trained_earlier_gives_the_same_knockout(analysed):
    store, first = analysed
    before = _runs(store)
    # knockout alone ranks the filters itself; the layers listed out of order change nothing
    result = run_pipeline(_compose(store, "stages=[knockout]", f"model_ref={first.run_id}",
                                   "analysis.layers=[act3,act2,act1]", *SMALL))
    assert _runs(store) == before + 1
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    assert client.get_run(result.run_id).data.tags["pgsweep.model_ref"] == first.run_id
    again = _table(client, result.run_id, "knockout/summary.parquet")
    original = _table(client, first.run_id, "knockout/summary.parquet")
    pd.testing.assert_frame_equal(again, original)


@pytest.mark.slow
def test_every_job_of_the_shipped_rank_and_knockout_sweep_gives_other_numbers(analysed):
    """sweeps/sweep/norm_x_rank_split.yaml: each job's knockout summary differs from every other
    job's; analysis.output, which it does not sweep, changes none of them."""
    from pgsweep.multirun import job_overrides

    store, first = analysed
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["+sweep=norm_x_rank_split", f"model_ref={first.run_id}"],
                      return_hydra_config=True)
        jobs = job_overrides(cfg)
    assert len(jobs) == 6

    def summary(*overrides: str) -> pd.DataFrame:
        # a job's overrides (+sweep=..., model_ref=..., its values); knockout alone ranks by itself,
        # and act3's 10 filters keep it short
        cfg = _compose(store, *SMALL, *overrides, "stages=[knockout]", "analysis.layers=[act3]",
                       "analysis.knockout.random_orderings=0")
        table = run_pipeline(cfg).reports["knockout"].summary
        return table[table["class"] == -1].set_index("score")

    columns = ["spearman_oracle", "auc_strongest_class_error", "auc_weakest_class_error"]
    results = [summary(*job) for job in jobs]
    scored = results[0].index.drop("oracle")
    for i in range(len(jobs)):
        for j in range(i):  # every score the norm or the images change: the PG ones
            pair = f"{jobs[i]} vs {jobs[j]}"
            assert not results[i].loc[["pg_softmax", "pg_logit"], columns].equals(
                results[j].loc[["pg_softmax", "pg_logit"], columns]), pair
    logit = summary(*jobs[0], "analysis.output=logit")
    pd.testing.assert_frame_equal(logit.loc[scored, columns], results[0].loc[scored, columns])


@pytest.mark.parametrize("overrides, error, message", [
    (["analysis.knockout.classes=[0,eleven]"], ConfigError, "analysis.knockout.classes: unknown class 'eleven'"),
    (["analysis.diagrams.classes=[ten]"], ConfigError, "analysis.diagrams.classes: unknown class 'ten'"),
    (["analysis.layers=[act1,act9]"], ConfigError, "analysis.layers: unknown layer 'act9'"),
    (["analysis.rank.k=24"], ConfigError, "analysis.rank.k=24 is larger than the 23 filters"),
    (["analysis.knockout.after=30"], ConfigError, "analysis.knockout.after=30 is larger than the 23 filters"),
    (["analysis.features.layer=fc1"], ConfigError, "has no spatial maps"),
    (["analysis.output=prob"], ConfigError, "analysis.output must be one of softmax, logit"),
    (["+analysis.rank.top=3"], ConfigError, "unknown config key analysis.rank.top"),
    (["+analysis.typo=1"], ConfigError, "unknown config key analysis.typo"),
    (["analysis.rank.split=val"], ConfigError, "analysis.rank.split must be one of"),
    (["analysis.knockout.optimize=fast"], ConfigError, "analysis.knockout.optimize must be auto, true or false"),
    (["adversarial.optimize=maybe"], ConfigError, "adversarial.optimize must be auto, true or false, got 'maybe'"),
])
def test_bad_analysis_input_fails_in_one_line_before_any_run(tmp_path, overrides, error, message):
    cfg = _compose(tmp_path, "trainer.max_epochs=1", *overrides)
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[")) as caught:
        run_pipeline(cfg)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "mlflow.db").exists() or _runs(tmp_path) == 0


def test_model_ref_with_other_classes_or_a_class_without_test_images(analysed, yale_like, tmp_path):
    store, first = analysed
    before = _runs(store)
    folder = yale_like()
    cfg = _compose(store, "stages=[rank]", f"model_ref={first.run_id}", "data=yale", f"data.root={folder}")
    with pytest.raises(ModelError, match="classes .* differ from the data's 3 classes"):
        run_pipeline(cfg, chosen={"data", "data.root"})  # as typed: data=yale data.root=...
    # a model whose recorded test images hold no digit 0
    model = resolve_model(first.run_id, f"sqlite:///{store}/mlflow.db")
    provenance = dict(model.provenance)
    from pgsweep.data import load_digits

    digits = load_digits(image_size=60)
    provenance["test_sources"] = [s for s in provenance["test_sources"]
                                  if int(digits.labels[digits.sources.index(s)]) != 0]
    path = replace(model, provenance=provenance).save(tmp_path / "no-zero" / "pgsweep-model.pt")
    cfg = _compose(store, "stages=[knockout]", f"model_ref={path}", "analysis.knockout.classes=[0]")
    with pytest.raises(ConfigError, match="analysis.knockout.classes: class '0' has no test images"):
        run_pipeline(cfg)
    assert _runs(store) == before



def test_knockout_class_figures_all_thesis_or_none(analysed):
    """class_figures picks which classes get a class_<name>.png; the curves table keeps them all.
    On the digits (no thesis identities) `thesis` means the first five of the knocked-out classes."""
    store, first = analysed
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    classes = "analysis.knockout.classes=[0,1,2,3,4,5,6]"
    for choice, drawn in (("thesis", {0, 1, 2, 3, 4}), ("none", set())):
        cfg = _compose(store, "stages=[knockout]", f"model_ref={first.run_id}", classes,
                       "analysis.knockout.random_orderings=2", f"analysis.knockout.class_figures={choice}")
        run_id = run_pipeline(cfg).run_id
        names = _artifacts(client, run_id, "knockout")
        assert {n for n in names if n.startswith("class_")} == {f"class_{c}.png" for c in drawn}, choice
        assert {"thesis_class_error.png", "thesis_overall_error.png"} <= names
        assert set(_table(client, run_id, "knockout/curves.parquet")["class"]) == set(range(7))
    with pytest.raises(ConfigError, match="analysis.knockout.class_figures must be one of all, thesis, none"):
        run_pipeline(_compose(store, "stages=[knockout]", f"model_ref={first.run_id}",
                              "analysis.knockout.class_figures=some"))

# ---------------------------------------------------------------- the knockout on a bigger net: budget, plan, progress

def test_knockout_on_a_residual_net_shows_progress_an_estimate_and_keeps_to_its_step_budget(capsys, caplog):
    import logging

    import torch

    from pgsweep.analyses.ranking import class_scores
    from pgsweep.analyses.units import default_layers
    from pgsweep.settings import read_analysis_config
    from pgsweep.stages.knockout import knockout_analysis
    from pgsweep.testing.models import small_resnet

    torch.manual_seed(0)
    net = small_resnet(num_classes=3, width=4).eval()
    images, labels = torch.rand(12, 3, 16, 16), torch.arange(12) % 3
    scores = class_scores(net, images, labels, ("a", "b", "c"), default_layers(net, images[:1]))
    assert scores.units.total > 6
    settings = read_analysis_config({"progress_bar": "true",
                                     "knockout": {"max_steps": 6, "after": 3, "random_orderings": 2}})
    with caplog.at_level(logging.INFO, logger="pgsweep.stages.knockout"):
        curves, summary, oracle, _ = knockout_analysis(net, images, labels, scores, [0, 1], settings)
    assert curves.step.max() == 6 and set(curves.groupby(["class", "score", "direction", "seed"]).step.max()) == {6}
    assert len(oracle) == 3 * scores.units.total  # the single knockouts are not capped
    (plan,) = [r.getMessage() for r in caplog.records if "the replay about" in r.getMessage()]
    assert f"2 classes x 14 orderings x 6 steps of {scores.units.total} (analysis.knockout.max_steps)" in plan
    assert "on 12 test images" in plan and "one step took" in plan
    bars = capsys.readouterr().err
    assert "knockout: single knockouts" in bars and f"{scores.units.total}/{scores.units.total}" in bars
    assert "knockout: orderings" in bars and f"{2 * 14 * 6}/{2 * 14 * 6}" in bars
    quiet = read_analysis_config({"progress_bar": "false", "knockout": {"max_steps": 6, "after": 3,
                                                                         "random_orderings": 2}})
    knockout_analysis(net, images, labels, scores, [0], quiet)
    assert "knockout:" not in capsys.readouterr().err


@pytest.mark.parametrize("knockout, message", [
    ({"max_steps": 0}, "analysis.knockout.max_steps must be >= 1, got 0"),
    ({"max_steps": "many"}, "analysis.knockout.max_steps must be int, got 'many'"),
    ({"max_steps": 5}, "analysis.knockout.after=10 is larger than analysis.knockout.max_steps=5"),
])
def test_a_bad_step_budget_is_one_line(knockout, message):
    from pgsweep.settings import read_analysis_config

    with pytest.raises(ConfigError) as error:
        read_analysis_config({"knockout": knockout})
    assert str(error.value) == message


def test_the_thesis_convnets_filters_fit_the_default_step_budget():
    from pgsweep.settings import read_analysis_config

    default = read_analysis_config(OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "analysis" / "default.yaml")))
    assert default.knockout.max_steps >= 5 + 8 + 10  # act1..act3 of the thesis convnet
    assert default.query.progress_bar == "auto"


def test_the_ranking_reports_its_progress_image_by_chunk():
    import torch

    from pgsweep.analyses.ranking import class_scores
    from pgsweep.testing.models import small_resnet

    torch.manual_seed(0)
    net = small_resnet(num_classes=3, width=4).eval()
    images, labels = torch.rand(10, 3, 16, 16), torch.arange(10) % 3
    done: list[int] = []
    quiet = class_scores(net, images, labels, ("a", "b", "c"), ["act"], image_chunk=4)
    told = class_scores(net, images, labels, ("a", "b", "c"), ["act"], image_chunk=4, progress=done.append)
    assert done == [4, 4, 2]
    np.testing.assert_array_equal(told.scores["pg_softmax"], quiet.scores["pg_softmax"])


def test_class_error_on_all_images_is_the_plain_loops_on_the_class_images():
    """analysis.knockout.all_images: PG's orderings run on their class's images only and the random
    ones once on all images; each class's error on all of its images equals the plain per-step
    loop run on every image, for both kinds of ordering."""
    import torch

    from pgsweep.analyses.knockout import knockout_predictions_loop
    from pgsweep.analyses.knockout.curves import class_errors
    from pgsweep.analyses.ranking import class_scores
    from pgsweep.analyses.units import default_layers
    from pgsweep.models.convnet import ThesisConvNet
    from pgsweep.models.spec import ConvNetSpec
    from pgsweep.settings import read_analysis_config
    from pgsweep.stages.knockout import knockout_analysis

    torch.manual_seed(0)
    net = ThesisConvNet(ConvNetSpec(num_classes=3, input_size=28, conv_channels=(3, 4), hidden_units=(6,)))
    images, labels = torch.rand(30, 1, 28, 28), torch.arange(30) % 3
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(60):  # fitted, so that knockouts change predictions
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()
    net.eval()
    test, test_labels = images[:12], labels[:12]
    scores = class_scores(net, test, test_labels, ("a", "b", "c"), default_layers(net, images[:1])[:2])
    settings = read_analysis_config({"progress_bar": "false", "knockout": {"after": 2, "random_orderings": 3}})
    curves, *_ = knockout_analysis(net, test, test_labels, scores, [0, 2], settings, images, labels)
    picked = curves[curves.score.isin(["pg_softmax", "random"])]
    assert picked.class_error_all.notna().all() and curves[~curves.index.isin(picked.index)].class_error_all.isna().all()
    by_name = {name: u for u, name in enumerate(scores.units.names())}
    for (c, score, direction, seed), table in picked.groupby(["class", "score", "direction", "seed"]):
        order = np.array([[by_name[k] for k in table.sort_values("step").knocked.iloc[1:]]])
        loop = knockout_predictions_loop(net, images, labels, scores.units, order, optimize="false")
        expected = class_errors(loop, labels.numpy(), c)[0]
        assert np.array_equal(table.sort_values("step").class_error_all.to_numpy(), expected), (c, score, direction, seed)
    assert (picked.groupby("class").class_images_all.first() == 10).all()
    # the curves differ between orderings, so a row given another ordering's errors would show
    random = picked[(picked.score == "random") & (picked["class"] == 0)]
    assert random.groupby("seed").class_error_all.apply(tuple).nunique() > 1
