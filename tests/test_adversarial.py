"""The perturbation math, checked against a plain autograd loop (no Ray, no MLflow)."""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pgsweep.analyses import adversarial as adv
from pgsweep.errors import QueryError
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet
from pgsweep.testing.models import hand_set_convnet, hand_set_mlp, mlp
from pgsweep.testing.reference import per_point_loop


def small_net(seed: int = 0) -> ThesisConvNet:
    torch.manual_seed(seed)
    spec = ConvNetSpec(num_classes=4, input_size=16, conv_channels=(3, 4), kernel_size=3,
                       hidden_units=(6,), input_mean=0.4, input_std=0.3)
    network = ThesisConvNet(spec).eval()
    with torch.no_grad():  # sharper than the default init, so steps change predictions
        for module in network.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.mul_(3.0)
    return network


def reference_points(network, images, labels, targets, steps, p):
    return per_point_loop(network, images, labels, range(images.shape[0]), targets, steps, p)


@pytest.mark.parametrize("output,step_kind,clip,prefix", [
    ("softmax", "raw", False, "conv1"),
    ("softmax", "l2", True, "conv1"),
    ("logit", "sign", False, None),
    ("logit", "l2", False, "conv1"),
])
def test_every_point_matches_the_autograd_loop(output, step_kind, clip, prefix):
    network = small_net(1)
    torch.manual_seed(1)
    images, labels = torch.rand(5, 1, 16, 16), torch.tensor([0, 1, 2, 3, 0])
    steps = {"raw": [0.0, 2.0, 20.0, 200.0], "l2": [0.0, 0.5, 2.0, 8.0], "sign": [0.0, 0.02, 0.1, 0.4]}[step_kind]
    p = adv.Perturbation(output, step_kind, clip)
    got = adv.evaluate_block(network, images, labels, range(5), [0, 1, 2, 3], steps, p, prefix, batch_size=7)
    want = reference_points(network, images, labels, [0, 1, 2, 3], steps, p)
    assert list(got.columns) == list(adv.RESULT_COLUMNS)
    for column in ("image", "label", "target", "step_index", "prediction", "success", "induced_error"):
        assert (got[column].to_numpy() == want[column].to_numpy()).all(), column
    assert np.allclose(got.step, want.step)
    # each point's actual pixel change, against x' - x measured point by point
    assert np.allclose(got.pixel_rms, want.pixel_rms, rtol=1e-5, atol=1e-9) and (got.pixel_rms > 0).any()
    for column in ("target_confidence", "true_confidence"):
        assert np.allclose(got[column], want[column], atol=2e-6), column
    # the grid is not trivial: the steps change predictions
    assert got.groupby("step_index").prediction.nunique().max() > got[got.step_index == 0].prediction.nunique()


def test_affine_prefix_is_found_and_exact():
    assert adv.find_affine_prefix(small_net()) == "conv1"  # normalize + conv1, before tanh
    assert adv.find_affine_prefix(hand_set_mlp()) == "fc1"
    assert adv.find_affine_prefix(hand_set_convnet()) == "conv1"
    assert adv.find_affine_prefix(nn.Sequential(OrderedDict(relu=nn.ReLU(), fc=nn.Linear(2, 2)))) is None
    network = small_net(1)
    images, labels = torch.rand(6, 1, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    steps = [0.0, 10.0, 100.0, 1000.0]  # raw softmax gradients are tiny: large steps test precision
    plain = adv.evaluate_block(network, images, labels, range(6), range(4), steps, affine_prefix=None)
    fast = adv.evaluate_block(network, images, labels, range(6), range(4), steps, affine_prefix="conv1")
    assert (plain.prediction == fast.prediction).all()
    assert np.allclose(plain.target_confidence, fast.target_confidence, atol=1e-6)
    directions = adv.step_directions(adv.input_gradients(network, images, [0, 1], "softmax"), "raw")
    plan = adv.StepPlan.build(network, "conv1", clip=False)
    assert plan.pool == 2 and isinstance(plan.act, nn.Tanh)  # conv1's tanh + 2x2 max pool fused
    assert isinstance(plan.rest[1], nn.MaxPool2d) and isinstance(plan.rest[2], nn.Tanh)  # conv2, then pool2 before act2
    assert adv.plan_agrees(plan, network, images, directions, max(steps), None)


def test_the_fast_path_pools_before_activations_exactly():
    """max_pool(tanh(z)) == tanh(max_pool(z)), and the phase trick equals max pooling, even for odd sizes."""
    z = torch.randn(3, 2, 7, 9)
    pool = nn.MaxPool2d(2)
    assert torch.equal(adv._phases(z, 2).amax(0), pool(z))
    assert torch.allclose(pool(torch.tanh(z)), torch.tanh(pool(z)))
    assert adv._fusable_pool(nn.MaxPool2d(2)) == 2 and adv._fusable_pool(nn.MaxPool2d(3, stride=1)) == 0
    assert adv._fusable_pool(nn.AvgPool2d(2)) == 0


def test_a_prefix_that_is_not_affine_falls_back_to_the_plain_path(caplog):
    network = small_net(2)
    images, labels = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    steps = [0.0, 1.0, 4.0]
    p = adv.Perturbation("logit", "l2")
    wrong = adv.StepPlan.build(network, "act1", clip=False)  # tanh is not affine
    directions = adv.step_directions(adv.input_gradients(network, images, [0], "logit"), "l2")
    assert not adv.plan_agrees(wrong, network, images, directions, max(steps), None)
    with caplog.at_level(logging.WARNING):
        wrong_prefix = adv.evaluate_block(network, images, labels, range(4), range(4), steps, p, "act1")
    assert "disagrees with the network" in caplog.text
    plain = adv.evaluate_block(network, images, labels, range(4), range(4), steps, p, None)
    assert (wrong_prefix.prediction == plain.prediction).all()
    assert np.allclose(wrong_prefix.target_confidence, plain.target_confidence, atol=1e-6)
    with pytest.raises(QueryError, match="not a top-level layer"):
        adv.split_at(network, "nope")
    with pytest.raises(QueryError, match="nn.Sequential"):
        adv.split_at(nn.Module(), "conv1")


def test_blocks_compose_into_the_whole_grid():
    """Shards of any size give the rows of the whole grid, unchanged."""
    network = small_net(3)
    images, labels = torch.rand(7, 1, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    steps = [0.0, 30.0, 300.0]
    whole = adv.evaluate_block(network, images, labels, range(7), range(4), steps, affine_prefix="conv1")
    parts = [adv.evaluate_block(network, images[a:b], labels[a:b], range(a, b), targets, steps,
                                affine_prefix="conv1")
             for a, b in ((0, 3), (3, 7)) for targets in ([0, 1, 2], [3])]
    joined = pd.concat(parts).sort_values(["image", "target", "step_index"], ignore_index=True)
    assert (joined.prediction.to_numpy() == whole.prediction.to_numpy()).all()
    assert np.allclose(joined.target_confidence, whole.target_confidence, atol=1e-6)


def test_steps_from_norms_move_pixels_by_the_asked_rms():
    network = small_net(4)
    images, labels = torch.rand(6, 1, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    norms = adv.gradient_norms(network, images, labels, range(4), "softmax")
    assert len(norms) == 24 and (norms.gradient_norm > 0).all()
    pixels = 16 * 16
    raw = adv.steps_from_norms(norms, "raw", pixels, 0.01, 0.5, 5)
    median = np.median(norms[norms.target != norms.label].gradient_norm)
    assert raw[0] * median / np.sqrt(pixels) == pytest.approx(0.01)
    assert raw[-1] * median / np.sqrt(pixels) == pytest.approx(0.5)
    assert np.allclose(np.diff(np.log(raw)), np.log(50) / 4)  # a log range
    assert adv.steps_from_norms(norms, "l2", pixels, 0.01, 0.5, 2) == pytest.approx((0.16, 8.0))
    assert adv.steps_from_norms(norms, "sign", pixels, 0.01, 0.5, 2) == pytest.approx((0.01, 0.5))


@pytest.mark.parametrize("steps,message", [
    ([], "empty"), ([0.1, -1.0], ">= 0"), (["a"], "not a number"), ([float("nan")], "finite"),
])
def test_bad_steps_are_refused(steps, message):
    with pytest.raises(QueryError, match=message):
        adv.check_steps(steps)


def test_summaries_leave_out_the_true_class_and_rank_targets():
    results = pd.DataFrame({
        "image": [0, 0, 0, 0, 1, 1, 1, 1], "label": [0, 0, 0, 0, 1, 1, 1, 1],
        "target": [0, 0, 1, 1, 0, 0, 1, 1], "step_index": [0, 1] * 4, "step": [0.0, 1.0] * 4,
        "success": [False, False, False, True, False, False, False, False],
        "induced_error": [False, True, False, True, False, True, False, False],
    })
    per_step, per_target = adv.summaries(results)
    # off-target points: (image 0, target 1) and (image 1, target 0)
    assert per_step.success.tolist() == [0.0, 0.5] and per_step.induced_error.tolist() == [0.0, 1.0]
    assert per_step.points.tolist() == [2, 2]
    assert per_target[per_target.target == 1].success.tolist() == [0.0, 1.0]
    assert adv.easiest_targets(per_target).target.tolist() == [1, 0]


def test_mlp_prefix_through_a_generic_sequential():
    network = mlp(in_features=12, hidden=(8,), num_classes=3).eval()
    x, labels = torch.rand(4, 12), torch.tensor([0, 1, 2, 0])
    plain = adv.evaluate_block(network, x, labels, range(4), range(3), [0.0, 1.0, 5.0], adv.Perturbation("logit", "l2"))
    fast = adv.evaluate_block(network, x, labels, range(4), range(3), [0.0, 1.0, 5.0], adv.Perturbation("logit", "l2"),
                              adv.find_affine_prefix(network))
    assert np.allclose(plain.target_confidence, fast.target_confidence, atol=1e-6)


def test_points_are_binned_by_their_actual_pixel_change_and_drawn_so(tmp_path):
    from pgsweep import plots

    rms = np.array([2e-3, 2.5e-3, 0.33, 0.35, 0.0, 0.2])
    points = pd.DataFrame({"label": [0, 0, 0, 0, 0, 1], "target": [1, 2, 1, 2, 1, 1], "pixel_rms": rms,
                           "success": [False, False, True, True, False, True],
                           "induced_error": [False, True, True, True, False, True]})
    binned = adv.by_pixel_rms(points)  # the zero step and the on-target point are left out
    assert binned.points.tolist() == [2, 2] and binned.success.tolist() == [0.0, 1.0]
    assert binned.induced_error.tolist() == [0.5, 1.0]
    assert np.allclose(binned.pixel_rms, [2.25e-3, 0.34])
    edges = np.asarray(adv.PIXEL_RMS_EDGES)
    assert all(edges[b] <= r < edges[b + 1] for b, r in zip(binned.rms_bin, binned.pixel_rms))
    figure = plots.step_kinds(pd.concat([binned.assign(step_kind="raw"), binned.assign(step_kind="sign")]))
    assert "actual RMS pixel change" in figure.axes[0].get_xlabel()
    figure.savefig(tmp_path / "step_kinds.png")
def test_the_stages_lines_count_in_the_right_number_and_name_the_targets():
    from pgsweep.logs import counted
    from pgsweep.stages.adversarial import summary_line

    assert [counted(1, "shard"), counted(3, "shard"), counted(1, "criterion", "criteria"),
            counted(2, "criterion", "criteria"), counted(0, "seed")] == ["1 shard", "3 shards", "1 criterion",
                                                                         "2 criteria", "0 seeds"]
    per_step = pd.DataFrame({"success": [0.25, 0.75], "induced_error": [0.5, 1.0]})
    easiest = pd.DataFrame({"target": [2, 0, 1]})
    line = summary_line(per_step, easiest, ("subject01", "subject02", "subject03"))
    assert line == ("adversarial: mean success 0.500, mean induced error 0.750 over 2 steps; "
                    "easiest targets subject03, subject01, subject02")
    assert "over 1 step;" in summary_line(per_step[:1], easiest, ("a", "b", "c"))
