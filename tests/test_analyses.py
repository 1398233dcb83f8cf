"""The query analyses as plain functions: ranking, knockout, diagrams, features.

Exact answers come from a hand-set net (pgsweep.testing.models.hand_set_knockout_net)
whose filter scores and knockout effects follow from its weights; the fast knockout
is checked against the plain per-step loop on the thesis convnet.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pgsweep.analyses.diagrams import choose_images, consistency, consistency_test, image_filter_scores
from pgsweep.analyses.features import _gradient_box, feature_maps, feature_table, receptive_field
from pgsweep.analyses.knockout import (
    area, class_orders, curve_table, emptied_layers, knockout_predictions, knockout_predictions_loop,
    random_orders, single_knockouts, summarize, zeroing_agreement,
)
from pgsweep.analyses.knockout.seeds import weights_seed
from pgsweep.analyses.ranking import class_scores, strongest_weakest, thesis_table_markdown
from pgsweep.analyses.units import find_units
from pgsweep.config import build
from pgsweep.errors import ConfigError, QueryError
from pgsweep.settings import KnockoutSettings
from pgsweep.stages.common import error_report
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet
from pgsweep.pg import prediction_gradients
from pgsweep.testing.models import KNOCKOUT_WEIGHTS, hand_set_knockout_net, knockout_images

W = np.array(KNOCKOUT_WEIGHTS)


@pytest.fixture(scope="module")
def hand_set():
    net = hand_set_knockout_net()
    images, labels = knockout_images()
    return net, images, labels, find_units(net, ["act1"], images)


@pytest.fixture(scope="module")
def convnet():
    """A random thesis convnet (tanh, max pool) and 30 images of 6 classes."""
    torch.manual_seed(0)
    net = ThesisConvNet(ConvNetSpec(num_classes=6, input_size=36, conv_channels=(4, 5, 6))).eval()
    images, labels = torch.rand(30, 1, 36, 36), torch.arange(30) % 6
    return net, images, labels, find_units(net, ["act1", "act2", "act3"], images)


# ---------------------------------------------------------------- ranking

def test_logit_pg_scores_are_the_output_weights(hand_set):
    net, images, labels, units = hand_set
    scores = class_scores(net, images, labels, ["a", "b"], ["act1"], image_chunk=4)
    np.testing.assert_allclose(scores.scores["pg_logit"], np.abs(W) / 2, rtol=1e-6)
    assert scores.counts.tolist() == [3, 3]
    top = strongest_weakest(scores.scores["pg_logit"], units, ["a", "b"], 2)
    strongest = top[top.kind == "strongest"].groupby("class")["channel"].apply(list).to_dict()
    weakest = top[top.kind == "weakest"].groupby("class")["channel"].apply(list).to_dict()
    assert strongest == {0: [0, 2], 1: [1, 2]} and weakest == {0: [1, 2], 1: [0, 2]}
    text = thesis_table_markdown(top, ["act1"])
    assert "| a | 1 | 1 | 1 |" in text  # class a: layer 1, unit 1 (channel 0), PG 1


def test_softmax_loss_activation_and_taylor_scores_by_hand(hand_set):
    net, images, labels, _ = hand_set
    scores = class_scores(net, images, labels, ["a", "b"], ["act1"], image_chunk=2)
    with torch.no_grad():
        act = F.relu(images)  # the identity conv: act1 = relu(x)
        p = torch.softmax(net(images), 1).numpy()
    feature = act.mean(dim=(2, 3)).numpy()  # (B, 3)
    for c in (0, 1):
        rows = labels.numpy() == c
        pc = p[rows, c][:, None]
        # d p_c / d f = p_c (W_c - sum_j p_j W_j); each of 4 positions gets 1/4 of it; L2 over 4 = x 2
        d_softmax = pc * (W[c] - p[rows] @ W) / 4
        np.testing.assert_allclose(scores.scores["pg_softmax"][c], np.abs(d_softmax.mean(0)) * 2, rtol=1e-5, atol=1e-7)
        d_loss = (p[rows] @ W - W[c]) / 4  # d CE / d a at each position
        np.testing.assert_allclose(scores.scores["loss_gradient"][c], np.abs(d_loss.mean(0)) * 2, rtol=1e-5, atol=1e-7)
        activation = np.sqrt((act[rows] ** 2).sum(dim=(2, 3)).numpy()).mean(0)
        np.testing.assert_allclose(scores.scores["activation"][c], activation, rtol=1e-5)
        taylor = np.abs(feature[rows] * d_loss).mean(0)
        np.testing.assert_allclose(scores.scores["taylor"][c], taylor, rtol=1e-5, atol=1e-7)


def test_streaming_class_scores_match_the_engine_and_do_not_depend_on_chunks(convnet):
    net, images, labels, units = convnet
    names = [str(c) for c in range(6)]
    small = class_scores(net, images, labels, names, units.layers, image_chunk=7)
    whole = class_scores(net, images, labels, names, units.layers, image_chunk=1000)
    for score in small.scores:
        np.testing.assert_allclose(small.scores[score], whole.scores[score], rtol=1e-5, atol=1e-9)
    for output in ("softmax", "logit"):
        pg = prediction_gradients(net, images, list(units.layers), output=output)
        # the engine's class scores for every (target, class); a class's own target is the diagonal
        own = [pg.class_filter_scores(layer, labels).diagonal(dim1=0, dim2=1).T for layer in units.layers]
        np.testing.assert_allclose(small.scores[f"pg_{output}"], torch.cat(own, 1).numpy(), rtol=1e-4, atol=1e-9)


def test_ranking_rejects_bad_requests(hand_set, convnet):
    net, images, labels, units = hand_set
    with pytest.raises(QueryError, match="k=4 must be between 1 and the number of units"):
        strongest_weakest(np.ones((2, 3)), units, ["a", "b"], 4)
    with pytest.raises(QueryError, match="unknown layer 'act9'"):
        class_scores(net, images, labels, ["a", "b"], ["act9"])
    with pytest.raises(QueryError, match="unknown norm"):
        class_scores(net, images, labels, ["a", "b"], ["act1"], norm="l3")


# ---------------------------------------------------------------- knockout

def test_hand_set_knockout_effects(hand_set):
    net, images, labels, units = hand_set
    orders = np.array([[0, 2, 1], [1, 2, 0], [2, 0, 1]])
    run = knockout_predictions(net, images, labels, units, orders)
    wrong = run.predictions != labels.numpy()  # (orderings, steps, images)
    class0, class1 = labels.numpy() == 0, labels.numpy() == 1
    assert not wrong[:, 0].any()  # intact: all right
    assert wrong[0, 1, class0].all() and not wrong[0, 1, class1].any()  # filter 0 gone: class 0 fails
    assert wrong[1, 1, class1].all() and not wrong[1, 1, class0].any()  # filter 1 gone: class 1 fails
    assert not wrong[2, 1].any()  # filter 2 alone matters to neither
    assert not wrong[1, 2, class0].any()  # filters 1 and 2 gone: class 0 still stands
    oracle = single_knockouts(net, images, labels, units, 2)
    for c in (0, 1):
        rise = oracle[oracle["class"] == c].sort_values("unit")["loss_increase"].to_numpy()
        assert rise.argmax() == c and rise[1 - c] <= 0 < rise[2] < rise[c]
        errors = oracle[oracle["class"] == c].sort_values("unit")["error_increase"].to_numpy()
        assert errors.tolist() == [1.0 if u == c else 0.0 for u in range(3)]


def test_zero_knockouts_reproduce_the_plain_test_error(convnet):
    net, images, labels, units = convnet
    orders = random_orders(units.total, 3, 1)
    as_given = knockout_predictions(net, images, labels, units, orders, steps=4, optimize="false")
    on_copy = knockout_predictions(net, images, labels, units, orders, steps=4)  # the default: inference copy
    report = error_report(net, images, labels, [str(i) for i in range(len(labels))], "test")
    for run in (as_given, on_copy):
        for r in range(3):
            assert (run.predictions[r, 0] != labels.numpy()).mean() == report.error
    with torch.no_grad():
        plain = F.cross_entropy(net(images), labels, reduction="none").numpy()
    assert np.array_equal(as_given.losses[:, 0], np.broadcast_to(plain, as_given.losses[:, 0].shape))
    # the copy rounds differently: equal to float32's last digits, not bit for bit
    np.testing.assert_allclose(on_copy.losses[:, 0], np.broadcast_to(plain, on_copy.losses[:, 0].shape), rtol=1e-5)
    assert not np.array_equal(on_copy.losses[:, 0], as_given.losses[:, 0])  # the copy was used


def test_fast_knockout_equals_the_per_step_loop_exactly(convnet):
    net, images, labels, units = convnet
    orders = random_orders(units.total, 6, 0)
    orders[1] = orders[0]  # a repeated ordering and shared prefixes use the cache
    orders[2] = np.concatenate([orders[0, :5], orders[0, 5:][::-1]])
    # bit for bit on the same network in the same chunks (a chunk size may change float32's last
    # digits: oneDNN splits a batch among threads by its size)
    fast = knockout_predictions(net, images, labels, units, orders, image_chunk=8, optimize="false")
    loop = knockout_predictions_loop(net, images, labels, units, orders, image_chunk=8, optimize="false")
    assert np.array_equal(fast.predictions, loop.predictions)
    assert np.array_equal(fast.losses, loop.losses)
    assert (fast.predictions[:, -1] == fast.predictions[0, -1]).all()  # everything gone: one answer
    # the same on the inference copy (the default), which rounds differently from the network
    on_copy = knockout_predictions(net, images, labels, units, orders, image_chunk=8)
    on_copy_loop = knockout_predictions_loop(net, images, labels, units, orders, image_chunk=8)
    assert np.array_equal(on_copy.predictions, on_copy_loop.predictions)
    assert np.array_equal(on_copy.losses, on_copy_loop.losses)
    assert np.array_equal(on_copy.predictions, loop.predictions)
    np.testing.assert_allclose(on_copy.losses, loop.losses, rtol=1e-5)
    whole = knockout_predictions(net, images, labels, units, orders)  # one chunk of 30
    assert np.array_equal(whole.predictions, on_copy.predictions)
    np.testing.assert_allclose(whole.losses, on_copy.losses, rtol=1e-5)


def test_a_layers_mask_goes_after_its_pooling_but_never_past_another_knocked_layer(convnet):
    """A step on act1 need not pool act1's maps again: a zeroed channel pools to zero. The
    mask moves past the channel-wise modules (act, pool) to the next mixing one, and stops at
    a layer that is itself knocked; either way the replay equals the loop bit for bit."""
    from pgsweep.analyses.knockout.replay import _segments

    net, images, labels, units = convnet
    segments, tail = _segments(net, units.layers)
    assert [type(segment[-1]) for segment in segments] == [nn.MaxPool2d] * 3  # act_j's mask after pool_j
    assert type(tail[0]) is nn.Flatten
    both = find_units(net, ["act1", "pool1", "act2"], images)  # pool1 knocked too: act1's mask stays before it
    segments, _ = _segments(net, both.layers)
    assert [type(segment[-1]) for segment in segments] == [nn.Tanh, nn.MaxPool2d, nn.MaxPool2d]
    for layers_units in (units, both):
        orders = random_orders(layers_units.total, 5, 1)
        fast = knockout_predictions(net, images, labels, layers_units, orders, image_chunk=8, optimize="false")
        loop = knockout_predictions_loop(net, images, labels, layers_units, orders, image_chunk=8, optimize="false")
        assert np.array_equal(fast.predictions, loop.predictions)
        assert np.array_equal(fast.losses, loop.losses)


def test_masks_never_leak_between_orderings_classes_or_calls(convnet):
    net, images, labels, units = convnet
    with torch.no_grad():
        before = net(images)
    orders = random_orders(units.total, 4, 3)
    together = knockout_predictions(net, images, labels, units, orders)
    for r in range(4):
        alone = knockout_predictions(net, images, labels, units, orders[r : r + 1])
        assert np.array_equal(alone.losses[0], together.losses[r])
    reversed_run = knockout_predictions(net, images, labels, units, orders[::-1])
    assert np.array_equal(reversed_run.losses[::-1], together.losses)
    with torch.no_grad():  # the network is left as it was: no hooks, no changed weights
        assert torch.equal(net(images), before)
        assert not any(m._forward_hooks for m in net.modules())


def test_networks_that_are_not_sequential_use_the_loop(convnet):
    net, images, labels, units = convnet

    class Wrapped(nn.Module):  # the same network, but not an nn.Sequential
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    wrapped = Wrapped(net)
    nested = find_units(wrapped, ["inner.act1", "inner.act2"], images)
    orders = random_orders(nested.total, 2, 5)
    direct = knockout_predictions(net, images, labels, find_units(net, ["act1", "act2"], images), orders)
    via_hooks = knockout_predictions(wrapped, images, labels, nested, orders)
    assert np.array_equal(direct.losses, via_hooks.losses)


def test_knockout_rejects_bad_orderings(hand_set):
    net, images, labels, units = hand_set
    with pytest.raises(QueryError, match="outside"):
        knockout_predictions(net, images, labels, units, np.array([[0, 1, 5]]))
    with pytest.raises(QueryError, match="same unit twice"):
        knockout_predictions(net, images, labels, units, np.array([[0, 0, 1]]))
    with pytest.raises(QueryError, match="steps=4"):
        knockout_predictions(net, images, labels, units, np.array([[0, 1, 2]]), steps=4)


def test_curves_and_summaries_of_the_hand_set_net(hand_set):
    net, images, labels, units = hand_set
    scores = class_scores(net, images, labels, ["a", "b"], ["act1"])
    oracle = single_knockouts(net, images, labels, units, 2)
    c = 0
    class_scores_c = {name: values[c] for name, values in scores.scores.items()}
    oracle_c = oracle[oracle["class"] == c].sort_values("unit")["loss_increase"].to_numpy()
    class_scores_c["oracle"] = oracle_c
    orders, keys = class_orders(class_scores_c, random_orders(units.total, 4, 0))
    run = knockout_predictions(net, images, labels, units, orders)
    curves = curve_table(run, keys, orders, labels.numpy(), c, "a", units)
    assert len(curves) == len(keys) * 4 and set(curves.direction) == {"strongest", "weakest", "random"}
    logit = curves[(curves.score == "pg_logit") & (curves.direction == "strongest")]
    assert logit.class_error.tolist() == [0.0, 1.0, 1.0, 0.0]  # all gone: logits tie, argmax says class 0
    assert logit.knocked.tolist() == ["", "1-1", "1-3", "1-2"]  # the thesis's layer-unit, from 1
    assert logit.emptied_layers.tolist() == ["", "", "", "1"]  # all of act1's 3 filters gone at the end
    assert (logit.class_images == 3).all() and (logit.images == 6).all()
    # all filters gone: every image gets class 0, so its class error is 0 and the net has collapsed
    assert logit.collapsed.tolist()[-1] and logit.top_class_share.tolist()[-1] == 1.0
    assert logit.class_precision.tolist()[-1] == 0.5
    summary = summarize(curves, class_scores_c, oracle_c, after=1).set_index("score")
    assert summary.loc["pg_logit", "class_error_after_1_strongest"] == 1.0
    assert summary.loc["pg_logit", "class_error_after_1_weakest"] == 0.0
    assert summary.loc["pg_logit", "area_between_class_error"] > 0
    assert summary.loc["oracle", "spearman_oracle"] == pytest.approx(1.0)
    assert summary.loc["pg_logit", "spearman_oracle"] == pytest.approx(1.0)  # same order as the oracle
    # auc_*: trapezoid area over 0..S knockouts / S (0.75 here), not the mean of the S + 1 errors (0.667)
    assert area(np.array([0.0, 1.0, 1.0])) == pytest.approx(0.75)
    curve = curves[(curves.score == "pg_softmax") & (curves.direction == "strongest")].class_error.to_numpy()
    assert summary.loc["pg_softmax", "auc_strongest_class_error"] == pytest.approx(np.trapezoid(curve) / 3)


def test_zeroing_a_filter_anywhere_gives_the_same_knockout_with_tanh_and_max_pool(convnet):
    net, images, labels, units = convnet
    table = zeroing_agreement(net, images, labels, units, random_orders(units.total, 2, 3)).set_index("zeroing")
    assert list(table.index) == ["post_activation", "pre_activation", "pooled", "weights"]
    assert (table["agreement"] == 1.0).all() and (table["predictions"] == 2 * 16 * 30).all()
    assert units.names()[:5] == ["1-1", "1-2", "1-3", "1-4", "2-1"]
    # a network that is not a Sequential has no known place before or after a map: n/a, not a guess
    wrapped = nn.Sequential(nn.Identity(), net)
    nested = find_units(wrapped, ["1.act1"], images)
    table = zeroing_agreement(wrapped, images, labels, nested, random_orders(nested.total, 1, 0)).set_index("zeroing")
    assert table.loc["post_activation", "agreement"] == 1.0 and table.drop("post_activation")["agreement"].isna().all()
    assert emptied_layers(np.array([4, 0, 1, 2, 3]), units) == ["", "", "", "", "", "1"]


def test_zeroed_weights_are_restored(convnet):
    net, images, labels, units = convnet
    before = {k: v.clone() for k, v in net.state_dict().items()}
    zeroing_agreement(net, images, labels, units, random_orders(units.total, 1, 0))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# ---------------------------------------------------------------- diagrams and features

def test_the_consistency_permutation_test_separates_real_from_shuffled_classes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 5)
    alike = rng.normal(size=(3, 10))[labels] + 0.3 * rng.normal(size=(15, 10))
    test = consistency_test(alike, labels, permutations=500)
    assert test["within"] > test["between"] and test["p_value"] == pytest.approx(1 / 501)
    assert test["within"] == pytest.approx(consistency(alike, labels, "abc").set_index("class_name").loc["all", "within"])
    noise = consistency_test(rng.normal(size=(15, 10)), labels, permutations=500)
    assert noise["p_value"] > 0.05 and noise["permutations"] == 500 and noise["images"] == 15


def test_consistency_separates_classes_with_alike_patterns():
    rng = np.random.default_rng(0)
    patterns = rng.normal(size=(3, 12))
    labels = np.repeat(np.arange(3), 4)
    vectors = patterns[labels] + 0.01 * rng.normal(size=(12, 12))
    table = consistency(vectors, labels, ["x", "y", "z"]).set_index("class_name")
    assert table.loc["all", "within"] > 0.99 and table.loc["all", "between"] < 0.5
    shuffled = consistency(rng.normal(size=(12, 12)), labels, ["x", "y", "z"]).set_index("class_name")
    assert shuffled.loc["all", "within"] < 0.6
    assert choose_images(labels, [2, 0], 2).tolist() == [8, 9, 0, 1]
    with pytest.raises(QueryError, match="class 5 has no images"):
        choose_images(labels, [5], 2)


def test_image_filter_scores_are_each_images_own_class_pg(convnet):
    net, images, labels, units = convnet
    vectors, _ = image_filter_scores(net, images, labels, units.layers, "logit", image_chunk=7)
    pg = prediction_gradients(net, images, list(units.layers), output="logit")
    expected = torch.cat([pg.filter_scores(layer)[labels, torch.arange(len(labels))] for layer in units.layers], 1)
    np.testing.assert_allclose(vectors, expected.numpy(), rtol=1e-5, atol=1e-9)


def test_peak_pg_position_and_its_receptive_field(convnet):
    net, images, labels, _ = convnet
    maps = feature_maps(net, images[0], 2, "act2")
    pg = prediction_gradients(net, images[:1], ["act2"], targets=[2]).gradients["act2"][0, 0]
    assert maps.score == pytest.approx(float(pg.max())) and pg[maps.filter, maps.row, maps.col] == pg.max()
    # act2 position (r, c): conv1 5x5, pool 2, conv2 5x5 -> 14 pixels from (2r, 2c)
    assert receptive_field(net, "act2", 3, 4, (36, 36)) == (6, 8, 20, 22)
    assert receptive_field(net, "act1", 0, 0, (36, 36)) == _gradient_box(net, "act1", 0, 0, (36, 36))
    table = feature_table(net, images[:5], "act1", targets="all", image_chunk=2)
    assert len(table) == 5 * 6
    row = table[(table.image == 3) & (table.target == 4)].iloc[0]
    full = prediction_gradients(net, images[3:4], ["act1"], targets=[4]).gradients["act1"][0, 0]
    assert row.score == pytest.approx(float(full.max())) and full[row["filter"], row["row"], row["col"]] == full.max()
    assert (row.bottom - row.top, row.right - row.left) == (5, 5)


def test_readme_analysis_example_runs(yale_like, tmp_path):
    import re
    from pathlib import Path

    from pgsweep.models.checkpoint import TrainedModel

    stages_page = (Path(__file__).resolve().parents[1] / "docs" / "stages.md").read_text()
    section = stages_page.split("### In a notebook", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    folder = yale_like()
    names = ("subject01", "subject02", "subject03")
    path = TrainedModel(ThesisConvNet(ConvNetSpec(num_classes=3)), names).save(tmp_path / "pgsweep-model.pt")
    namespace: dict = {}
    exec(code.replace("RUN_ID", str(path)).replace("PATH/TO/yalefaces", str(folder)), namespace)  # noqa: S102
    assert namespace["scores"].scores["pg_softmax"].shape == (3, 23)
    assert namespace["run"].predictions.shape == (1, 24, 12)
    assert len(namespace["top"]) == 3 * 2 * 3


def test_each_model_seeds_its_own_random_orders_and_a_rerun_draws_the_same():
    def net(seed):
        torch.manual_seed(seed)
        return ThesisConvNet(ConvNetSpec(num_classes=3))

    first, second, same = net(0), net(1), net(2)
    same.load_state_dict(first.state_dict())
    assert weights_seed(first) == weights_seed(same)
    assert weights_seed(first) != weights_seed(second)
    with torch.no_grad():  # one weight's last bit is enough to change the orders
        next(same.parameters()).view(-1)[0] = torch.nextafter(next(same.parameters()).view(-1)[0], torch.tensor(1.0))
    assert weights_seed(first) != weights_seed(same)
    assert not np.array_equal(random_orders(23, 40, weights_seed(first)), random_orders(23, 40, weights_seed(second)))
    with pytest.raises(ConfigError, match="analysis.knockout.seed must be 'model' or an integer >= 0, got '-3'"):
        build(KnockoutSettings, {"seed": -3}, "analysis.knockout")
