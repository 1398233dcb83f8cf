"""Per-filter scores beside PG (pgsweep.pg.scores) against Captum called directly and plain autograd.

Hand-set tiny nets (pgsweep.testing.models) make every reference a few lines of autograd;
Captum's own per-class calls are the reference for its methods batched over classes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import (
    InternalInfluence, LayerConductance, LayerDeepLift, LayerFeatureAblation, LayerGradCam,
    LayerGradientXActivation,
)
from torch import nn

from pgsweep.analyses.ranking import class_scores
from pgsweep.errors import ConfigError, QueryError
from pgsweep.pg import scores as scores_module
from pgsweep.pg.scores import SoftmaxOutput, gaussian_blur, path_baseline, unit_scores
from pgsweep.settings import read_analysis_config
from pgsweep.testing.models import hand_set_convnet, hand_set_mlp

CLASSES = 3


@pytest.fixture(scope="module")
def conv():
    torch.manual_seed(0)
    return hand_set_convnet(), torch.randn(4, 1, 5, 5)


def _per_class(method, reduce, images, **kwargs) -> torch.Tensor:
    """The plain reference: one Captum call per class, reduced per filter: (T, B, F)."""
    return torch.stack([reduce(method.attribute(images, target=t, **kwargs)) for t in range(CLASSES)])


def _sum_map(a: torch.Tensor) -> torch.Tensor:
    return a.flatten(2).sum(-1)


def _mean_map(a: torch.Tensor) -> torch.Tensor:
    return a.flatten(2).mean(-1)


def _l2_map(a: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(a.flatten(2), dim=-1)


@pytest.mark.parametrize("output", ["softmax", "logit"])
def test_grad_x_activation_is_captums_summed_with_its_sign_and_its_l2(conv, output):
    net, images = conv
    forward = SoftmaxOutput(net) if output == "softmax" else net
    method = LayerGradientXActivation(forward, net.act1)
    got = unit_scores(net, images, ["act1"], "grad_x_activation", output=output)["act1"]
    assert got.shape == (CLASSES, 4, 2)
    torch.testing.assert_close(got, _per_class(method, _sum_map, images), rtol=1e-5, atol=1e-7)
    assert (got < 0).any()  # the sign is kept
    l2 = unit_scores(net, images, ["act1"], "grad_x_activation_l2", output=output)["act1"]
    torch.testing.assert_close(l2, _per_class(method, _l2_map, images), rtol=1e-5, atol=1e-7)


def test_grad_x_activation_by_plain_autograd_on_fc_units_and_own_classes():
    net = hand_set_mlp()
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.4, 0.8]])
    got = unit_scores(net, x, ["act1"], "grad_x_activation", output="logit")["act1"]  # (T, B, U)
    a = torch.tanh(x @ net.fc1.weight.T + net.fc1.bias).detach()
    expected = net.fc2.weight.detach()[:, None, :] * a[None]  # d z_t / d act1 = W2[t]
    torch.testing.assert_close(got, expected)
    own = torch.tensor([2, 0, 1])
    mine = unit_scores(net, x, ["act1"], "grad_x_activation", classes=own, output="logit")["act1"]
    torch.testing.assert_close(mine, got[own, torch.arange(3)])


@pytest.mark.parametrize("baseline", ["zeros", "blur"])
def test_integrated_pg_equals_captums_internal_influence(conv, baseline):
    net, images = conv
    images = images.repeat(1, 1, 2, 2)[:, :, :5, :5]  # keep 5x5; blur needs a few pixels of border
    start = path_baseline(baseline, images)
    method = InternalInfluence(SoftmaxOutput(net), net.act1)
    expected = _per_class(method, _l2_map, images, baselines=start, n_steps=7)
    got = unit_scores(net, images, ["act1"], "integrated_pg", baseline=baseline, path_steps=7)["act1"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    # and in chunks of images, as the ranking streams them
    chunked = unit_scores(net, images, ["act1"], "integrated_pg", baseline=baseline, path_steps=7, image_chunk=3)
    torch.testing.assert_close(chunked["act1"], expected, rtol=1e-5, atol=1e-7)
    # and with path points stacked into one engine pass (3 of 7 per pass), or one per pass
    for path_batch in (1, 12):
        stacked = unit_scores(net, images, ["act1"], "integrated_pg", baseline=baseline, path_steps=7,
                              path_batch=path_batch)
        torch.testing.assert_close(stacked["act1"], expected, rtol=1e-5, atol=1e-7)


def test_integrated_pg_by_vmapped_backwards_equals_one_backward_per_class(conv, monkeypatch):
    """Accelerators take the engine's vmap strategy; forced here on the CPU."""
    net, images = conv
    expected = unit_scores(net, images, ["act1", "conv1"], "integrated_pg", path_steps=5, path_batch=8)
    per_class = scores_module.backward_each_target
    monkeypatch.setattr(scores_module, "backward_each_target",
                        lambda y, tensors, targets, write, strategy, fast_conv: per_class(
                            y, tensors, targets, write, "vmap", fast_conv))
    got = unit_scores(net, images, ["act1", "conv1"], "integrated_pg", path_steps=5, path_batch=8)
    for layer in expected:
        torch.testing.assert_close(got[layer], expected[layer], rtol=1e-5, atol=1e-7)


def test_one_path_step_is_pg_at_the_midpoint(conv):
    net, images = conv
    got = unit_scores(net, images, ["act1"], "integrated_pg", path_steps=1)["act1"]
    torch.testing.assert_close(got, unit_scores(net, images / 2, ["act1"], "pg")["act1"])


@pytest.mark.parametrize("score, method, reduce, kwargs", [
    ("conductance", LayerConductance, _sum_map, {"n_steps": 5}),
    ("gradcam", LayerGradCam, _mean_map, {"attr_dim_summation": False}),
    ("ablation", LayerFeatureAblation, _mean_map, {"layer_mask": torch.arange(2).view(1, 2, 1, 1)}),
])
@pytest.mark.parametrize("rows", [128, 5])  # 5: chunks of (class, image) pairs that straddle classes
def test_captum_methods_batched_over_classes_equal_the_per_class_calls(conv, score, method, reduce, kwargs, rows,
                                                                       monkeypatch):
    monkeypatch.setattr(scores_module, "CAPTUM_ROWS", rows)
    if rows == 5:  # ablation's every-class attributions (3 classes x 32 values an image) in chunks of 2 images
        monkeypatch.setattr(scores_module, "ABLATION_VALUES", 200)
    net, images = conv
    start = path_baseline("zeros", images)
    if score == "conductance":
        kwargs = {**kwargs, "baselines": start}
    expected = _per_class(method(SoftmaxOutput(net), net.act1), reduce, images, **kwargs)
    got = unit_scores(net, images, ["act1"], score, path_steps=5)["act1"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    own = torch.tensor([0, 2, 1, 1])
    mine = unit_scores(net, images, ["act1"], score, classes=own, path_steps=5)["act1"]
    torch.testing.assert_close(mine, got[own, torch.arange(4)], rtol=1e-5, atol=1e-6)


def test_ablation_of_fc_units_every_class_equals_the_per_class_calls():
    net = hand_set_mlp()
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.4, 0.8]])
    method = LayerFeatureAblation(SoftmaxOutput(net), net.act1)
    expected = _per_class(method, lambda a: a, x, layer_mask=torch.arange(2).view(1, 2), layer_baselines=0.0)
    got = unit_scores(net, x, ["act1"], "ablation")["act1"]
    assert got.shape == (CLASSES, 3, 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_ablation_is_the_drop_when_the_filter_is_zeroed(conv):
    net, images = conv
    got = unit_scores(net, images, ["act1"], "ablation", output="logit")["act1"]
    full = net(images).detach()
    for f in range(2):
        keep = torch.ones(1, 2, 1, 1)
        keep[0, f] = 0
        handle = net.act1.register_forward_hook(lambda m, i, o, keep=keep: o * keep)
        zeroed = net(images).detach()
        handle.remove()
        torch.testing.assert_close(got[:, :, f], (full - zeroed).T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [128, 5])
def test_deeplift_explains_the_logit_and_does_not_depend_on_the_batch(conv, rows, monkeypatch):
    monkeypatch.setattr(scores_module, "CAPTUM_ROWS", rows)
    net, images = conv
    expected = _per_class(LayerDeepLift(net, net.act1), _sum_map, images, baselines=torch.zeros_like(images))
    got = unit_scores(net, images, ["act1"], "deeplift")["act1"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    alone = unit_scores(net, images[1:2], ["act1"], "deeplift")["act1"]
    torch.testing.assert_close(alone[:, 0], got[:, 1], rtol=1e-5, atol=1e-6)


def test_baselines():
    images = torch.rand(3, 1, 12, 12)
    mean = images.mean(0)
    torch.testing.assert_close(path_baseline("mean", images, mean), mean.expand_as(images))
    blurred = path_baseline("blur", images)
    assert blurred.shape == images.shape and blurred.std() < images.std()
    flat = torch.full((1, 1, 12, 12), 0.7)
    torch.testing.assert_close(gaussian_blur(flat, 5.0), flat)  # a blur keeps a flat image
    torch.testing.assert_close(path_baseline(mean, images), mean.expand_as(images))


@pytest.mark.parametrize("call, message", [
    (lambda net, x: unit_scores(net, x, ["act1"], "saliency"), "unknown score 'saliency'"),
    (lambda net, x: unit_scores(net, x, ["input"], "conductance"), "hooks a module"),
    (lambda net, x: unit_scores(net, x, ["act1"], "integrated_pg", baseline=torch.zeros(1, 4, 4)),
     "does not match the images"),
    (lambda net, x: unit_scores(net, x, ["act1"], "integrated_pg", path_steps=0), "path_steps must be >= 1"),
    (lambda net, x: unit_scores(net, x, ["act1"], "integrated_pg", baseline="mean"), "training mean image"),
])
def test_bad_input_is_one_clear_error(conv, call, message):
    net, images = conv
    with pytest.raises(QueryError, match=message) as error:
        call(net, images)
    assert "\n" not in str(error.value)


def test_gradcam_needs_a_conv_map():
    with pytest.raises(QueryError, match="gradcam' needs a conv map"):
        unit_scores(hand_set_mlp(), torch.rand(2, 2), ["act1"], "gradcam")


# ---------------------------------------------------------------- the ranking's columns

def test_ranking_columns_are_class_means_of_each_images_own_class_score(conv):
    net, images = conv
    labels = torch.tensor([0, 1, 1, 2])
    names = ["pg_softmax", "pg_logit", "taylor", "taylor_abs", "taylor_signed", "grad_x_activation",
             "integrated_pg", "ablation"]
    got = class_scores(net, images, labels, ["a", "b", "c"], ["act1"], image_chunk=3, scores=names,
                       path_steps=4).scores
    assert list(got) == names
    gxa = unit_scores(net, images, ["act1"], "grad_x_activation")["act1"][labels, torch.arange(4)]
    ipg = unit_scores(net, images, ["act1"], "integrated_pg", path_steps=4)["act1"][labels, torch.arange(4)]
    for c, rows in enumerate([[0], [1, 2], [3]]):
        np.testing.assert_allclose(got["grad_x_activation"][c], gxa[rows].mean(0).numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got["integrated_pg"][c], ipg[rows].mean(0).numpy(), rtol=1e-5, atol=1e-7)
    # the loss's first-order term: signed (the rise in loss when the map is zeroed) and absolute
    x = images.detach().requires_grad_(True)
    acts = {}
    handle = net.act1.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    loss = nn.functional.cross_entropy(net(x), labels, reduction="sum")
    handle.remove()
    a = acts["a"]
    (g,) = torch.autograd.grad(loss, a)
    term = (a * g).detach().flatten(2).mean(-1)  # (B, F)
    np.testing.assert_allclose(got["taylor_signed"][1], -term[1:3].mean(0).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["taylor_abs"][1], term[1:3].abs().mean(0).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got["taylor"], got["taylor_abs"])


def test_ranking_rejects_a_method_on_a_layer_it_cannot_hook():
    with pytest.raises(QueryError, match="gradcam' needs a conv map"):
        class_scores(hand_set_mlp(), torch.rand(4, 2), torch.tensor([0, 1, 2, 0]), ["a", "b", "c"], ["act1"],
                     scores=["pg_softmax", "gradcam"])


@pytest.mark.parametrize("section, message", [
    ({"rank": {"scores": ["pg_softmax", "pg_logit", "saliency"]}}, "unknown score 'saliency'"),
    ({"baseline": "noise"}, "analysis.baseline must be one of zeros, mean, blur"),
    ({"path_steps": 0}, "analysis.path_steps must be >= 1"),
])
def test_config_rejects_bad_scores_baselines_and_steps(section, message):
    with pytest.raises(ConfigError, match=message):
        read_analysis_config(section)


def test_config_reads_scores_baseline_and_steps():
    settings = read_analysis_config({"baseline": "blur", "path_steps": 8,
                                     "rank": {"scores": ["pg_softmax", "pg_logit", "integrated_pg"]}})
    assert settings.query.baseline == "blur" and settings.query.path_steps == 8
    assert settings.rank.scores == ("pg_softmax", "pg_logit", "integrated_pg")


# ---------------------------------------------------------------- the rank stage through the real config

def _compose(store, *overrides):
    from hydra import compose, initialize_config_dir

    from pgsweep.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[f"tracking.uri=sqlite:///{store}/mlflow.db",
                                            "trainer.progress_bar=false", *overrides])


RANKED = ["pg_softmax", "pg_logit", "taylor_signed", "grad_x_activation", "integrated_pg", "conductance"]


def test_rank_stage_logs_one_column_per_configured_score(tmp_path):
    from mlflow.tracking import MlflowClient
    import pandas as pd

    from pgsweep.pipeline import run_pipeline

    cfg = _compose(tmp_path, "trainer.max_epochs=1", "stages=[train,rank]", f"analysis.rank.scores=[{','.join(RANKED)}]",
                   "analysis.path_steps=4", "analysis.baseline=mean")
    result = run_pipeline(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    table = pd.read_parquet(client.download_artifacts(result.run_id, "rank/class_scores.parquet"))
    assert set(RANKED) <= set(table.columns) and "loss_gradient" not in table.columns
    assert table[RANKED].notna().all().all() and len(table) == 10 * 23
    assert (table.grad_x_activation < 0).any() and not table.integrated_pg.equals(table.pg_softmax)


@pytest.mark.parametrize("overrides, message", [
    (["analysis.rank.scores=[pg_softmax,pg_logit,saliency]"], "analysis.rank.scores: unknown score 'saliency'"),
    (["analysis.layers=[act1,act4]", "analysis.rank.scores=[pg_softmax,pg_logit,gradcam]"],
     "analysis.rank.scores: score 'gradcam' needs a conv map"),
    (["analysis.path_steps=0"], "analysis.path_steps must be >= 1, got 0"),
    (["analysis.baseline=noise"], "analysis.baseline must be one of zeros, mean, blur"),
])
def test_bad_score_input_fails_in_one_line_before_any_run(tmp_path, overrides, message):
    from pgsweep.pipeline import run_pipeline

    cfg = _compose(tmp_path, "trainer.max_epochs=1", "stages=[train,rank]", *overrides)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as caught:
        run_pipeline(cfg)
    assert "\n" not in str(caught.value)


def test_an_unknown_score_on_the_command_line_exits_2_in_one_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pgsweep", "analysis.rank.scores=[pg_softmax,pg_logit,saliency]"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "pgsweep: error: analysis.rank.scores: unknown score 'saliency'; choose from " + ", ".join(
            __import__("pgsweep.settings", fromlist=["RANK_SCORES"]).RANK_SCORES)]
