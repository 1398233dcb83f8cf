"""The thesis convnet: shapes, named layers called once, config checks, save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgsweep.errors import ConfigError, ModelError
from pgsweep.models.checkpoint import TrainedModel
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet

THESIS_LAYERS = [
    "normalize", "conv1", "act1", "pool1", "conv2", "act2", "pool2",
    "conv3", "act3", "pool3", "flatten", "fc1", "act4", "fc2",
]


def test_thesis_architecture():
    net = ThesisConvNet(ConvNetSpec(num_classes=15))
    assert [name for name, _ in net.named_children()] == THESIS_LAYERS
    assert [net.get_submodule(f"conv{i}").out_channels for i in (1, 2, 3)] == [5, 8, 10]
    assert all(net.get_submodule(f"conv{i}").kernel_size == (5, 5) for i in (1, 2, 3))
    assert all(isinstance(net.get_submodule(f"act{i}"), nn.Tanh) for i in (1, 2, 3, 4))
    assert all(isinstance(net.get_submodule(f"pool{i}"), nn.MaxPool2d) for i in (1, 2, 3))
    assert net.fc1.in_features == 10 * 4 * 4 and net.fc1.out_features == 20
    assert net.fc2.out_features == 15
    assert net.activation_layer_names == ["act1", "act2", "act3", "act4"]


def test_shapes_of_every_layer_and_each_called_once():
    net = ThesisConvNet(ConvNetSpec(num_classes=15)).eval()
    shapes, calls = {}, {}

    def record(name):
        def hook(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            shapes[name] = tuple(output.shape)
        return hook

    for name, module in net.named_children():
        module.register_forward_hook(record(name))
    logits = net(torch.rand(3, 1, 60, 60))
    assert logits.shape == (3, 15)
    assert calls == {name: 1 for name in THESIS_LAYERS}
    assert shapes["act1"] == (3, 5, 56, 56) and shapes["pool1"] == (3, 5, 28, 28)
    assert shapes["act2"] == (3, 8, 24, 24) and shapes["pool2"] == (3, 8, 12, 12)
    assert shapes["act3"] == (3, 10, 8, 8) and shapes["pool3"] == (3, 10, 4, 4)
    assert shapes["act4"] == (3, 20)


def test_architecture_comes_from_config():
    spec = ConvNetSpec(num_classes=4, input_size=32, conv_channels=(6, 7), kernel_size=3, padding=1,
                       hidden_units=(12, 9), activation="relu", pooling="avg")
    net = ThesisConvNet(spec)
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 4)
    names = [name for name, _ in net.named_children()]
    assert names[-5:] == ["fc1", "act3", "fc2", "act4", "fc3"]
    assert not any(getattr(m, "inplace", False) for m in net.modules())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"input_size": 16}, "shrinks to nothing"),
        ({"activation": "swish"}, "model.activation 'swish'"),
        ({"pooling": "median"}, "model.pooling"),
        ({"conv_channels": (5, 0)}, "conv_channels"),
        ({"num_classes": 1}, "at least 2 classes"),
    ],
)
def test_bad_architecture_is_rejected(change, message):
    with pytest.raises(ConfigError, match=message):
        ThesisConvNet(ConvNetSpec(**{"num_classes": 3, **change}))


def test_standardize_uses_training_statistics():
    net = ThesisConvNet(ConvNetSpec(num_classes=3, input_mean=0.5, input_std=0.25))
    x = torch.full((1, 1, 60, 60), 0.75)
    assert torch.allclose(net.normalize(x), torch.ones_like(x))


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = ThesisConvNet(ConvNetSpec(num_classes=3, input_mean=0.4, input_std=0.2))
    model = TrainedModel(net, ("a", "b", "c"), {"dataset": "x", "test_sources": ["a/1.png"]})
    path = model.save(tmp_path / "m.pt")
    loaded = TrainedModel.load(path)
    x = torch.rand(4, 1, 60, 60)
    assert torch.equal(loaded.network(x), model.network(x))
    assert loaded.class_names == ("a", "b", "c") and loaded.spec == model.spec
    assert loaded.provenance["test_sources"] == ["a/1.png"]
    assert not loaded.network.training
    assert not list(tmp_path.glob("*.partial"))


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        TrainedModel.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="junk.pt"):
        TrainedModel.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a pgsweep model"):
        TrainedModel.load(tmp_path / "other.pt")


def test_the_training_module_logs_each_epochs_means_over_its_images_once_per_epoch():
    """Uneven batches (4, 4, 2) and a learning rate of 0: every epoch's train and held-out
    loss and error are the means over all images of the fixed network's, once per epoch."""
    import pytorch_lightning as pl
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from pgsweep.models.lightning import ClassifierModule
    from pgsweep.stages.common import quiet_lightning

    quiet_lightning()
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    images, labels = torch.randn(10, 1, 3, 4), torch.arange(10) % 3
    with torch.no_grad():
        logits = network(images)
    want_loss = float(F.cross_entropy(logits, labels))
    want_error = float((logits.argmax(1) != labels).float().mean())
    seen = []

    class Epochs(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    module = ClassifierModule(network, learning_rate=0.0, heldout_name="test")
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
                         callbacks=[Epochs()])
    data = TensorDataset(images, labels)
    trainer.fit(module, DataLoader(data, batch_size=4), DataLoader(data, batch_size=3))
    assert len(seen) == 2
    for metrics in seen:
        assert set(metrics) == {"train_loss", "train_error", "test_loss", "test_error"}
        for stage in ("train", "test"):
            assert metrics[f"{stage}_loss"] == pytest.approx(want_loss, rel=1e-6)
            assert metrics[f"{stage}_error"] == pytest.approx(want_error)


def test_a_loader_without_a_length_still_logs_the_epochs_means():
    """An iterable loader has no last batch to wait for: the module logs each batch and
    Lightning averages them, weighted by batch size, as it did before."""
    import pytorch_lightning as pl
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, IterableDataset

    from pgsweep.models.lightning import ClassifierModule
    from pgsweep.stages.common import quiet_lightning

    quiet_lightning()
    import warnings

    warnings.filterwarnings("ignore", message=".*val_dataloader.*")  # as the pruning's fine-tuning does
    torch.manual_seed(1)
    network = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    images, labels = torch.randn(10, 1, 3, 4), torch.arange(10) % 3

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(zip(images, labels))

    with torch.no_grad():
        want = float(F.cross_entropy(network(images), labels))
    module = ClassifierModule(network, learning_rate=0.0)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(module, DataLoader(Stream(), batch_size=4))
    assert float(trainer.callback_metrics["train_loss"]) == pytest.approx(want, rel=1e-6)
