"""The inference copy (pgsweep.analyses.inference): what it folds, where it declines, and
that the knockout and the sweep on it give the network's answers."""

from __future__ import annotations

import logging

import numpy as np
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
    assert fast.drop(columns=["target_confidence", "true_confidence"]).equals(
        plain.drop(columns=["target_confidence", "true_confidence"]))


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
