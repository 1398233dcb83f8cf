"""The inference copy (pgsweep.analyses.inference): what it folds, where it declines, and
that the knockout and the sweep on it give the network's answers."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pgsweep.analyses.adversarial import Perturbation, evaluate_block
from pgsweep.analyses.inference import channels_last, inference_copy
from pgsweep.analyses.knockout import knockout_predictions, knockout_predictions_loop, random_orders
from pgsweep.analyses.units import default_layers, find_units
from pgsweep.testing.models import mlp, small_resnet, with_batch_norm_statistics


def _resnet_with_statistics(seed: int = 0) -> nn.Module:
    """small_resnet with batch norms that do something (fresh ones are the identity)."""
    torch.manual_seed(seed)
    return with_batch_norm_statistics(small_resnet(num_classes=6, width=8), mean=0.5, var=(0.5, 2.0))


def test_the_copy_folds_batch_norm_and_gives_the_networks_logits():
    net = _resnet_with_statistics()
    images = torch.rand(10, 3, 16, 16)
    with torch.no_grad():
        before = net(images)
    fast = inference_copy(net, images[:4])
    assert fast is not None
    folded = dict(fast.named_modules())
    # every batch norm follows a conv that nothing else reads: all folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert isinstance(folded["layer2.0.shortcut.1"], nn.Identity)
    assert not torch.equal(folded["conv"].weight, net.conv.weight)  # the norm's scale is in the weights
    assert folded["conv"].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(m.inplace for m in fast.modules() if isinstance(m, nn.ReLU))
    with torch.no_grad():
        got = fast(channels_last(images))
        torch.testing.assert_close(got, before, rtol=1e-5, atol=1e-6)
        # the network itself is untouched: same modules, same answer bit for bit
        assert torch.equal(net(images), before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert not any(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))


def test_kept_layers_are_neither_folded_nor_overwritten():
    net = _resnet_with_statistics()
    fast = inference_copy(net, torch.rand(4, 3, 16, 16), keep=["layer1.0.bn1", "layer2.0.conv2"])
    modules = dict(fast.named_modules())
    assert isinstance(modules["layer1.0.bn1"], nn.BatchNorm2d)  # the caller reads it as it is
    assert isinstance(modules["layer2.0.bn2"], nn.BatchNorm2d)  # its conv is kept, so it stays
    assert not modules["layer1.0.act1"].inplace  # it would overwrite the kept bn1's output
    assert isinstance(modules["layer1.0.bn2"], nn.Identity)


def test_the_copy_declines_where_it_has_nothing_to_offer_or_fails(caplog):
    images = torch.rand(4, 3, 16, 16)
    assert inference_copy(_resnet_with_statistics(), images, optimize="false") is None
    assert inference_copy(mlp(12, (8,), 3), torch.rand(4, 12)) is None  # no convolution

    class Viewing(nn.Module):  # a forward that needs a contiguous tensor: .view fails on channels-last
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 14 * 14, 2)

        def forward(self, x):
            h = self.conv(x)
            return self.fc(h.view(h.shape[0], -1))

    net = Viewing().eval()
    with caplog.at_level(logging.INFO, logger="pgsweep.analyses.inference"):
        assert inference_copy(net, images) is None
    assert "Viewing: its fast copy (channels-last) fails (RuntimeError" in caplog.text
    # and the analyses then run on the network as it is
    units = find_units(net, ["conv"], images)
    orders = random_orders(units.total, 2, 0)
    run = knockout_predictions(net, images, torch.tensor([0, 1, 0, 1]), units, orders)
    loop = knockout_predictions_loop(net, images, torch.tensor([0, 1, 0, 1]), units, orders, optimize="false")
    assert np.array_equal(run.losses, loop.losses)


def test_optimize_true_is_refused_nowhere_and_words_are_checked():
    with pytest.raises(Exception, match="optimize must be auto, true or false, got 'fast'"):
        inference_copy(_resnet_with_statistics(), torch.rand(2, 3, 16, 16), optimize="fast")
    assert inference_copy(_resnet_with_statistics(), torch.rand(2, 3, 16, 16), optimize="true") is not None


def test_knockout_on_the_copy_equals_its_loop_and_the_network_up_to_rounding():
    net = _resnet_with_statistics(1)
    images, labels = torch.rand(18, 3, 16, 16), torch.arange(18) % 6
    units = find_units(net, default_layers(net, images[:1]), images)
    orders = random_orders(units.total, 3, 2)
    fast = knockout_predictions(net, images, labels, units, orders)
    loop = knockout_predictions_loop(net, images, labels, units, orders)
    np.testing.assert_array_equal(fast.predictions, loop.predictions)
    np.testing.assert_array_equal(fast.losses, loop.losses)
    as_given = knockout_predictions_loop(net, images, labels, units, orders, optimize="false")
    assert not np.array_equal(fast.losses, as_given.losses)  # the copy was used ...
    np.testing.assert_allclose(fast.losses, as_given.losses, rtol=1e-4, atol=1e-6)  # ... and agrees
    assert (fast.predictions == as_given.predictions).mean() >= 0.99  # a near tie may flip


def test_the_sweep_on_the_copy_gives_the_networks_table():
    net = _resnet_with_statistics(2)
    images, labels = torch.rand(6, 3, 16, 16), torch.arange(6) % 6
    steps, perturbation = [0.1, 1.0, 5.0], Perturbation("softmax", "l2")
    fast = evaluate_block(net, images, labels, range(6), range(6), steps, perturbation)
    plain = evaluate_block(net, images, labels, range(6), range(6), steps, perturbation, optimize="false")
    assert (fast.prediction == plain.prediction).all()
    assert not np.array_equal(fast.target_confidence, plain.target_confidence)  # the copy was used
    np.testing.assert_allclose(fast.target_confidence, plain.target_confidence, rtol=1e-4, atol=1e-6)
    # each point's pixel change follows its gradient, which the copy rounds differently
    np.testing.assert_allclose(fast.pixel_rms, plain.pixel_rms, rtol=1e-4)
    floats = ["target_confidence", "true_confidence", "pixel_rms"]
    assert fast.drop(columns=floats).equals(plain.drop(columns=floats))


def test_the_copy_is_made_once_per_network_until_its_weights_change():
    net, images = _resnet_with_statistics(), torch.rand(4, 3, 16, 16)
    first = inference_copy(net, images)
    assert inference_copy(net, images) is first
    assert inference_copy(net, images, keep=["layer1.0.bn1"]) is not first  # other kept layers: another copy
    with torch.no_grad():
        net.fc.bias.add_(1.0)
    second = inference_copy(net, images)
    assert second is not first
    with torch.no_grad():
        torch.testing.assert_close(second(channels_last(images)), net(images), rtol=1e-5, atol=1e-6)
    net.load_state_dict(_resnet_with_statistics(5).state_dict())
    assert inference_copy(net, images) is not second


# ---------------------------------------------------------------- the copy checked on what each use takes

def _memory_differs(x: torch.Tensor) -> bool:
    """Whether x is in channels-last memory (as the copy's tensors are), not contiguous."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _DoubledGradientOnChannelsLast(torch.autograd.Function):
    """The identity forward; backward doubles the gradient of a channels-last input."""

    @staticmethod
    def forward(ctx, x):
        ctx.doubled = _memory_differs(x)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 2 if ctx.doubled else grad


class _WrongGradientCopy(nn.Module):
    """A net whose copy gives its logits exactly but input gradients twice as large."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.net = _resnet_with_statistics(3)

    def forward(self, x):
        return self.net(_DoubledGradientOnChannelsLast.apply(x))


class _ShiftOnKnockedChannelsLast(nn.Module):
    """Adds 1 where its (channels-last) input has channel 0 zeroed: only a knocked-out copy differs."""

    def forward(self, h):
        return h + 1 if _memory_differs(h) and bool((h[:, 0] == 0).all()) else h


def _wrong_knockout_copy() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(3, 4, 3), _ShiftOnKnockedChannelsLast(), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).eval()


def test_a_copy_whose_input_gradients_differ_is_not_used_by_the_sweep(caplog):
    net, images, labels = _WrongGradientCopy().eval(), torch.rand(6, 3, 16, 16), torch.arange(6) % 6
    assert inference_copy(net, images) is not None  # its logits agree: only the gradients tell
    steps, perturbation = [0.1, 1.0], Perturbation("softmax", "l2")
    with caplog.at_level(logging.INFO, logger="pgsweep.analyses.inference"):
        table = evaluate_block(net, images, labels, range(6), [1, 2], steps, perturbation)
    assert "input gradients d y/d x of the softmax at targets [1, 2] differ from the network's" in caplog.text
    assert table.attrs["inference_copy_used"] is False
    plain = evaluate_block(net, images, labels, range(6), [1, 2], steps, perturbation, optimize="false")
    pd.testing.assert_frame_equal(table, plain)  # the network as it is, bit for bit
    good = _resnet_with_statistics(2)
    assert evaluate_block(good, images, labels, range(6), [1, 2], steps, perturbation).attrs["inference_copy_used"]


def test_a_copy_whose_knocked_out_outputs_differ_is_not_used_by_the_knockout(caplog):
    net, images, labels = _wrong_knockout_copy(), torch.rand(8, 3, 16, 16), torch.arange(8) % 3
    assert inference_copy(net, images, keep=["0"]) is not None  # intact, the copy agrees
    units = find_units(net, ["0"], images)
    orders = random_orders(units.total, 2, 0)
    with caplog.at_level(logging.INFO, logger="pgsweep.analyses.inference"):
        run = knockout_predictions(net, images, labels, units, orders)
    assert "logits with a filter of 0 zeroed differ from the network's" in caplog.text
    assert run.inference_copy_used is False
    loop = knockout_predictions_loop(net, images, labels, units, orders, optimize="false")
    np.testing.assert_array_equal(run.losses, loop.losses)
    good = _resnet_with_statistics(1)
    good_units = find_units(good, default_layers(good, images[:1]), images)
    assert knockout_predictions(good, images, labels % 6, good_units, random_orders(good_units.total, 1, 0)
                                ).inference_copy_used


def test_each_sweep_shard_records_whether_it_used_the_copy(tmp_path):
    from pgsweep.models.checkpoint import TrainedModel
    from pgsweep.models.spec import ModelRecipe
    from pgsweep.settings import RaySettings
    from pgsweep.sweep.grid import SweepJob
    from pgsweep.sweep.runner import run_sweep
    from pgsweep.sweep.store import ShardStore

    torch.manual_seed(0)
    recipe = ModelRecipe("pgsweep.testing.models.small_resnet", {"width": 8}, num_classes=6, in_channels=3,
                         input_size=16)
    model = TrainedModel(small_resnet(num_classes=6, width=8), tuple("abcdef"), recipe=recipe)
    images = torch.rand(4, 3, 16, 16)
    for optimize, expected in (("auto", True), ("false", False)):
        job = SweepJob(model, images, torch.arange(4), tuple(range(4)), (1, 2), (0.5,), Perturbation("softmax", "l2"),
                       None, images_per_shard=2, targets_per_shard=2, optimize=optimize)
        store = ShardStore(tmp_path / optimize, job.describe())
        run_sweep(job, store, RaySettings(enabled=False), progress=False)
        records = store.finished()
        assert len(records) == 2 and all(r["inference_copy_used"] is expected for r in records.values())


class _DoubledGradientOnBrightChannelsLast(torch.autograd.Function):
    """The identity forward; backward doubles the gradient of a channels-last input's bright images."""

    @staticmethod
    def forward(ctx, x):
        ctx.bright = (x.flatten(1).mean(1) > 0.5).view(-1, 1, 1, 1) if _memory_differs(x) else None
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad if ctx.bright is None else torch.where(ctx.bright, grad * 2, grad)


class _WrongGradientCopyOnBrightImages(nn.Module):
    """A net whose copy is right on dark images and wrong on bright ones: a check on a sample of
    images decides by which images it is given."""

    def __init__(self):
        super().__init__()
        self.net = _resnet_with_statistics(3)

    def forward(self, x):
        return self.net(_DoubledGradientOnBrightChannelsLast.apply(x))


def test_every_shard_checks_the_copy_on_the_grids_first_images_whichever_a_process_runs_first():
    """The copy's verdict is kept per process; on Ray each worker meets the shards in its own
    order. Checked on each shard's own images, a worker whose first shard is bright would run
    every later shard on the network and one whose first is dark on the copy: the same grid,
    other tables. Checked on the grid's first images, the order does not matter."""
    from pgsweep.models.checkpoint import TrainedModel
    from pgsweep.models.spec import ModelRecipe
    from pgsweep.sweep.grid import SweepJob

    torch.manual_seed(0)
    images = torch.cat([torch.rand(8, 3, 16, 16) * 0.4, 0.6 + torch.rand(8, 3, 16, 16) * 0.4])  # dark, then bright
    recipe = ModelRecipe("pgsweep.testing.models.small_resnet", {"width": 8}, num_classes=6, in_channels=3,
                         input_size=16)
    model = TrainedModel(small_resnet(num_classes=6, width=8), tuple("abcdef"), recipe=recipe)  # the job's key only
    job = SweepJob(model, images, torch.arange(16) % 6, tuple(range(16)), (1, 2), (0.5, 2.0),
                   Perturbation("softmax", "l2"), None, images_per_shard=8, targets_per_shard=2)
    dark, bright = job.pieces()

    def tables(order):
        network = _WrongGradientCopyOnBrightImages().eval()  # a fresh process's network: nothing decided yet
        return {shard.index: job.run(shard, network) for shard in order}

    forward, backward = tables([dark, bright]), tables([bright, dark])
    for index in (dark.index, bright.index):
        assert forward[index].attrs["inference_copy_used"] is backward[index].attrs["inference_copy_used"] is True
        pd.testing.assert_frame_equal(forward[index], backward[index])

    # each block checked on its own images (evaluate_block's default) depends on the order: what the test guards
    def own_images(order):
        network = _WrongGradientCopyOnBrightImages().eval()
        return [evaluate_block(network, images[s.start:s.stop], job.labels[s.start:s.stop], range(s.start, s.stop),
                               s.targets, job.steps, job.perturbation).attrs["inference_copy_used"] for s in order]

    assert own_images([dark, bright]) == [True, True] and own_images([bright, dark]) == [False, False]
