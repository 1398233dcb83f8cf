"""Bring your own model: a residual net with batch norm, named by `_target_`, through every stage.

The nets are pgsweep.testing's (`pgsweep.testing.models.SmallResNet` and two variants), imported
by `_target_` as a user's own package would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pgsweep.errors import PgsweepError
from pgsweep.testing.models import ReusedReLUResNet, SmallResNet, with_batch_norm_statistics

HERE = Path(__file__).resolve().parent
TARGET = "pgsweep.testing.models.SmallResNet"
COLOURS = {"blue": (40, 60, 200), "green": (40, 190, 60), "red": (210, 50, 40)}


def write_rgb_folder(root: Path, per_class: int = 8, size: int = 16) -> Path:
    """Classes that differ by colour: each image its class's colour plus noise and a bright patch."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour)[None, None] + rng.normal(0, 30, (size, size, 3)), 0, 255)
            r, c = rng.integers(0, size - 4, 2)
            pixels[r : r + 4, c : c + 4] = 255
            Image.fromarray(pixels.astype(np.uint8), mode="RGB").save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory) -> Path:
    return write_rgb_folder(tmp_path_factory.mktemp("rgb") / "colours")


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    return env


def _command() -> list[str]:
    script = Path(sys.executable).with_name("pgsweep")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pgsweep"]


def _pgsweep(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=_env())


def _client(db: Path):
    from mlflow.tracking import MlflowClient  # not at the top: Ray workers import this module for its nets

    return MlflowClient(f"sqlite:///{db}")


def _runs(db: Path) -> list:
    if not db.exists():
        return []
    client = _client(db)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


CUSTOM = ("model=custom", f"model.net._target_={TARGET}", "+model.net.width=4", "data=folder",
          "data.channels=3", "data.image_size=16", "trainer.progress_bar=false")


# ---------------------------------------------------------------- the whole pipeline from the CLI

@pytest.mark.xdist_group("ray")
def test_residual_net_trains_and_goes_through_every_stage_on_rgb_images(rgb_folder, tmp_path):
    """Train, rank, knockout, diagrams, features and the adversarial sweep on a local Ray, from the
    command line; then the logged model file answers a query by model_ref (format 2, rebuilt by
    `_target_`). About 40 s on 2 shared cores, most of it Ray's start-up and the interpreters'."""
    done = _pgsweep(tmp_path, *CUSTOM, f"data.root={rgb_folder}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                    "trainer.max_epochs=3", "trainer.batch_size=6", "analysis.knockout.random_orderings=2",
                    "analysis.diagrams.class_count=2", "analysis.diagrams.images_per_class=1",
                    "analysis.features.images=1", "adversarial.max_images=4", "adversarial.targets=[0,1]",
                    "adversarial.step_count=3", "adversarial.images_per_shard=2", "adversarial.examples=1",
                    "adversarial.example_steps=2", "ray.num_cpus=1", "adversarial.progress_bar=false")
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = _runs(tmp_path / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert run.data.params["model.net._target_"] == TARGET and run.data.params["data.channels"] == "3"
    client = _client(tmp_path / "mlflow.db")
    logged = {a.path for folder in ("rank", "knockout", "diagrams", "features", "adversarial", "model")
              for a in client.list_artifacts(run.info.run_id, folder)}
    for artifact in ("rank/class_scores.parquet", "knockout/curves.parquet", "features/features.parquet",
                     "adversarial/results.parquet", "model/pgsweep-model.pt"):
        assert artifact in logged, sorted(logged)
    scores = client.download_artifacts(run.info.run_id, "rank/class_scores.parquet", str(tmp_path))
    import pandas as pd

    layers = list(dict.fromkeys(pd.read_parquet(scores)["layer"]))
    # the default layers: each activation right after a convolution, by the module's own dotted name
    assert layers == ["act", "layer1.0.act1", "layer1.0.act2", "layer2.0.act1", "layer2.0.act2"]

    model_file = client.download_artifacts(run.info.run_id, "model/pgsweep-model.pt", str(tmp_path / "m"))
    query = _pgsweep(tmp_path, "stages=[evaluate]", f"model_ref={model_file}",
                     f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    assert query.returncode == 0, query.stderr[-3000:]
    queried = [r for r in _runs(tmp_path / "mlflow.db") if r.info.run_id != run.info.run_id]
    assert queried[0].data.metrics["eval_test_error"] == run.data.metrics["final_test_error"]

    # pruning the residual net: Torch-Pruning removes filters across the residual connection,
    # and the pruned model file (recipe + pruning record) rebuilds by `_target_`
    pruned = _pgsweep(tmp_path, "stages=[prune]", f"model_ref={model_file}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                      "prune.criteria=[pg_softmax,magnitude]", "prune.seeds=[0]", "prune.step_fraction=0.25",
                      "prune.final_fraction=0.5", "prune.finetune_epochs=1", "prune.latency_repeats=1",
                      "ray.num_cpus=1", "prune.progress_bar=false")
    assert pruned.returncode == 0, pruned.stderr[-3000:]
    assert (pruned.stderr + pruned.stdout).count("leaving out layer1.0.act2, whose channels are act's") == 1
    [prune_run] = [r for r in _runs(tmp_path / "mlflow.db") if "prune/curves.parquet" in
                   {a.path for a in client.list_artifacts(r.info.run_id, "prune")}]
    from pgsweep import load_model

    pruned_file = client.download_artifacts(prune_run.info.run_id, "prune/models/pg_softmax_seed0/pgsweep-model.pt",
                                            str(tmp_path / "p"))
    small = load_model(pruned_file)
    widths = {name: m.out_channels for name, m in small.network.named_modules() if isinstance(m, nn.Conv2d)}
    assert widths["conv"] == widths["layer1.0.conv2"] == 2 and widths["layer1.0.conv1"] == 2  # half of 4 each
    assert widths["layer2.0.conv1"] == 4 and widths["layer2.0.conv2"] == widths["layer2.0.shortcut.0"] == 4
    assert small.network(torch.rand(2, 3, 16, 16)).shape == (2, 3)


# ---------------------------------------------------------------- the math on a residual net

def _trained_net(seed: int = 0) -> SmallResNet:
    torch.manual_seed(seed)
    return with_batch_norm_statistics(SmallResNet(num_classes=3, width=4))


def test_residual_net_pg_equals_autograd():
    from pgsweep import prediction_gradients

    net = _trained_net()
    images = torch.rand(5, 3, 16, 16)
    layers = ["layer1.0.act2", "layer2.0.act1", "input"]
    pg = prediction_gradients(net, images, layers, targets="all", output="softmax", image_chunk=2)
    for b in range(len(images)):
        for target in range(3):
            captured = {}
            handles = [dict(net.named_modules())[name].register_forward_hook(
                lambda m, i, o, name=name: captured.__setitem__(name, o)) for name in layers[:2]]
            x = images[b : b + 1].clone().requires_grad_(True)
            y = torch.softmax(net(x), dim=1)[0, target]
            for handle in handles:
                handle.remove()
            expected = torch.autograd.grad(y, [captured[layers[0]], captured[layers[1]], x])
            for name, grad in zip(layers, expected):
                torch.testing.assert_close(pg.gradients[name][target, b], grad[0], rtol=1e-5, atol=1e-7)


def test_residual_net_knockout_equals_the_hook_loop():
    from pgsweep.analyses.knockout import knockout_predictions, knockout_predictions_loop
    from pgsweep.analyses.units import default_layers, find_units

    net = _trained_net(1)
    images, labels = torch.rand(12, 3, 16, 16), torch.arange(12) % 3
    layers = default_layers(net, images[:1])
    assert layers == ["act", "layer1.0.act1", "layer1.0.act2", "layer2.0.act1", "layer2.0.act2"]
    units = find_units(net, layers, images)
    assert units.sizes == (4, 4, 4, 8, 8)
    orders = np.stack([np.random.default_rng(s).permutation(units.total) for s in range(3)])
    fast = knockout_predictions(net, images, labels, units, orders)
    loop = knockout_predictions_loop(net, images, labels, units, orders, units.total)
    np.testing.assert_array_equal(fast.predictions, loop.predictions)
    np.testing.assert_array_equal(fast.losses, loop.losses)
    # knocking out every filter changes the losses: the knockout does reach the network
    assert not np.allclose(loop.losses[:, 0], loop.losses[:, -1])


def test_residual_net_knockout_takes_the_graph_path():
    from pgsweep.analyses.graph import graph_replay

    replay = graph_replay(_trained_net(), ["act", "layer2.0.act1"], "knockout")
    assert replay is not None
    # a knockout in layer2.0.act1 reruns only what comes after it, not the stem or layer1
    rerun = {str(replay.nodes[i].target) for i in replay.downstream[1]}
    assert "layer2.0.conv2" in rerun and "fc" in rerun and "layer1.0.conv1" not in rerun and "conv" not in rerun


def test_residual_net_fast_sweep_equals_the_plain_sweep():
    from pgsweep.analyses.adversarial import (
        Perturbation, StepPlan, evaluate_block, find_affine_prefix, input_gradients, plan_agrees, step_directions,
    )

    net = _trained_net(2)
    images, labels = torch.rand(6, 3, 16, 16), torch.arange(6) % 3
    prefix = find_affine_prefix(net)
    assert prefix == "bn"  # the stem's conv and batch norm, found in the fx graph
    # ... which auto declines on images: its 4 channels are more values per step than the image's 3
    assert find_affine_prefix(net, images[:1]) is None
    perturbation, steps = Perturbation("softmax", "l2"), [0.0, 0.5, 2.0, 8.0]
    plan = StepPlan.build(net, prefix, clip=False)
    directions = step_directions(input_gradients(net, images, [0, 1, 2], "softmax"), "l2")
    assert plan.prefix is not None and plan_agrees(plan, net, images, directions, max(steps), None)
    fast = evaluate_block(net, images, labels, range(6), [0, 1, 2], steps, perturbation, prefix)
    plain = evaluate_block(net, images, labels, range(6), [0, 1, 2], steps, perturbation, None)
    assert (fast["prediction"] == plain["prediction"]).all()
    np.testing.assert_allclose(fast["target_confidence"], plain["target_confidence"], rtol=1e-4, atol=1e-6)


def test_default_layers_leave_out_a_reused_relu_and_say_so(caplog):
    from pgsweep.analyses.units import default_layers

    net = ReusedReLUResNet(num_classes=3, width=4).eval()
    with caplog.at_level("WARNING"):
        layers = default_layers(net, torch.rand(1, 3, 16, 16))
    assert "act" not in layers and "layer2.0.act2" in layers
    assert any("act called more than once in forward" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- outside weights

def _plain_pytorch_training(images: torch.Tensor, labels: torch.Tensor, mean, std) -> SmallResNet:
    """What someone else did: plain PyTorch, on standardised images, no pgsweep."""
    torch.manual_seed(3)
    net = SmallResNet(num_classes=3, width=4)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    inputs = (images - torch.tensor(mean).reshape(1, 3, 1, 1)) / torch.tensor(std).reshape(1, 3, 1, 1)
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(inputs), labels).backward()
        optimizer.step()
    return net.eval()


def test_outside_weights_give_the_same_predictions(rgb_folder, tmp_path, compose_config):
    from pgsweep.data import load_dataset
    from pgsweep.stages.common import predict_logits
    from pgsweep.pipeline import run_pipeline
    from pgsweep.tracking import resolve_model

    images = load_dataset("folder", rgb_folder, 16, channels=3)
    mean, std = [0.4, 0.4, 0.4], [0.25, 0.25, 0.25]
    net = _plain_pytorch_training(images.images, images.labels, mean, std)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    expected = predict_logits(net, (images.images - 0.4) / 0.25)

    cfg = compose_config(*CUSTOM, f"data.root={rgb_folder}", f"model.weights={tmp_path}/weights.pt",
                         f"model.input_mean={mean}".replace(" ", ""), f"model.input_std={std}".replace(" ", ""),
                         "stages=[evaluate]")
    result = run_pipeline(cfg, chosen={"data", "model"})
    torch.testing.assert_close(predict_logits(result.model.network, images.images), expected)
    # the run logged a model file like any other: a later query by model_ref rebuilds the same net
    again = resolve_model(result.model_uri, f"sqlite:///{tmp_path}/mlflow.db")
    assert again.recipe.target == TARGET and again.recipe.in_channels == 3
    torch.testing.assert_close(predict_logits(again.network, images.images), expected)


# ---------------------------------------------------------------- bad input: one line, exit 2, no run

def test_a_target_that_does_not_import_is_one_line_and_no_run(rgb_folder, tmp_path):
    done = _pgsweep(tmp_path, "model=custom", "model.net._target_=no_such_pkg.nets.Net", "data=folder",
                    f"data.root={rgb_folder}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "pgsweep: error: model.net._target_ 'no_such_pkg.nets.Net' does not import: no module named "
        "'no_such_pkg' (is its package installed, or on PYTHONPATH?)"]
    assert _runs(tmp_path / "mlflow.db") == []


def _bad_weights(tmp_path: Path) -> str:
    state = SmallResNet(num_classes=3, width=4).state_dict()
    state["layer1.0.conv2.weight"] = torch.zeros(4, 4, 1, 1)
    torch.save(state, tmp_path / "bad.pt")
    return str(tmp_path / "bad.pt")


def _rgb_weights(tmp_path: Path) -> str:
    """Weights of a net trained on 3-channel images."""
    torch.save(SmallResNet(num_classes=3, width=4, in_channels=3).state_dict(), tmp_path / "rgb.pt")
    return str(tmp_path / "rgb.pt")


@pytest.mark.parametrize("overrides, message", [
    (("model.net._target_=???",), "model.net._target_ is not set: name the network's class"),
    (("model.net._target_=pgsweep.testing.models.FeaturesResNet",),
     "model.net 'pgsweep.testing.models.FeaturesResNet' returns (2, 8, 1, 1) for 2 images; it must return logits shaped "
     "(N, classes) = (2, 3)"),
    (("model.net._target_=pgsweep.testing.models.NoSuchNet",),
     "model.net._target_ 'pgsweep.testing.models.NoSuchNet' does not import: pgsweep.testing.models has no 'NoSuchNet'"),
    (("model.weights=BAD", "stages=[evaluate]"),
     "do not fit SmallResNet: key 'layer1.0.conv2.weight' has shape (4, 4, 1, 1) in the file, the net needs "
     "(4, 4, 3, 3)"),
    (("stages=[train,rank]", "analysis.layers=[layer1.0.act9]"),
     "analysis.layers: unknown layer 'layer1.0.act9'; valid layers: input, conv, bn, act, layer1, layer1.0,"),
    (("data.channels=1", "+model.net.in_channels=3"),
     "data.channels=1, but the net's first layer (conv) takes 3 channels: set data.channels=3"),
    (("data.channels=1", "model.weights=RGB", "stages=[evaluate]"),
     "do not fit SmallResNet: its first conv 'conv.weight' takes 3 input channels, the data has 1: "
     "set data.channels=3"),
])
def test_bad_input_is_one_line_before_any_run(rgb_folder, tmp_path, compose_config, overrides, message):
    from pgsweep.pipeline import run_pipeline

    overrides = tuple(o.replace("BAD", _bad_weights(tmp_path)).replace("RGB", _rgb_weights(tmp_path))
                      for o in overrides)
    custom = tuple(o for o in CUSTOM if not any(o.split("=")[0] == v.split("=")[0] for v in overrides))
    cfg = compose_config(*custom, f"data.root={rgb_folder}", *overrides)
    with pytest.raises(PgsweepError) as error:
        run_pipeline(cfg, chosen={"data", "model"})
    assert message in str(error.value) and "\n" not in str(error.value)
    assert _runs(tmp_path / "mlflow.db") == []


# ---------------------------------------------------------------- the README's commands

def test_readme_your_own_model_runs_as_written(rgb_folder, tmp_path):
    """The section's my_pkg/nets.py and its commands, with PATH, net.pt and RUN_ID filled in and
    settings appended that keep them short (1 epoch; the training commands stop after rank; no Ray)."""
    import re

    readme = (HERE.parent / "README.md").read_text().split("## Your own model", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
                .splitlines() if line.startswith("pgsweep ")]
    assert len(commands) == 4
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_pkg" / "nets.py").write_text(code)
    sys.path.insert(0, str(tmp_path))
    try:
        from my_pkg.nets import Net

        torch.save(Net(num_classes=3, in_channels=3, width=32).state_dict(), tmp_path / "net.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_pkg.nets", None), sys.modules.pop("my_pkg", None)
    env_path = os.pathsep.join([str(tmp_path), str(HERE)])
    short = ["trainer.max_epochs=1", "trainer.progress_bar=false", "data.image_size=16",
             f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "ray.enabled=false", "adversarial.max_images=2",
             "adversarial.targets=[0]", "adversarial.step_count=2", "analysis.knockout.random_orderings=1"]
    for number, command in enumerate(commands):
        words = command.replace("data.root=PATH", f"data.root={rgb_folder}").split()[1:]
        words = [w.replace("model.weights=net.pt", f"model.weights={tmp_path}/net.pt") for w in words]
        if number < 2:
            words.append("stages=[train,rank]")
        if "model_ref=RUN_ID" in words:
            model_file = next(tmp_path.glob("mlartifacts/**/pgsweep-model.pt"))
            words = [w.replace("RUN_ID", str(model_file)) for w in words if w != "data.image_size=16"]
            extra = [w for w in short if not w.startswith(("trainer.", "data."))]
        else:
            extra = short
        done = subprocess.run([*_command(), *words, *extra], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600, env={**_env(), "PYTHONPATH": env_path})
        assert done.returncode == 0, (command, done.stderr[-6000:])
    assert len(_runs(tmp_path / "mlflow.db")) == 4


# ---------------------------------------------------------------- model files

def test_model_file_records_the_target_and_rebuilds_it(tmp_path):
    from pgsweep.models.checkpoint import TrainedModel
    from pgsweep.models.spec import ModelRecipe

    recipe = ModelRecipe(TARGET, {"width": 4}, num_classes=3, in_channels=3, input_size=16,
                         input_mean=(0.4, 0.5, 0.6), input_std=0.25)
    from pgsweep.models.build import build_network

    model = TrainedModel(build_network(recipe), ("a", "b", "c"), {"dataset": "folder"}, recipe)
    path = model.save(tmp_path / "pgsweep-model.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["version"] == 2 and payload["recipe"]["target"] == TARGET
    assert payload["input"]["channels"] == 3 and payload["input"]["range"] == [0.0, 1.0]
    loaded = TrainedModel.load(path)
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(loaded.network(x), model.network(x))  # weights and standardisation both
    assert loaded.recipe.input_mean == (0.4, 0.5, 0.6) and loaded.class_names == ("a", "b", "c")

    payload["recipe"]["target"] = "gone_pkg.nets.Net"  # the class's package was uninstalled since
    torch.save(payload, tmp_path / "gone.pt")
    with pytest.raises(PgsweepError) as error:
        TrainedModel.load(tmp_path / "gone.pt")
    assert str(error.value) == ("the model's class (recorded in gone.pt) 'gone_pkg.nets.Net' does not import: "
                                "no module named 'gone_pkg' (is its package installed, or on PYTHONPATH?)")


def test_a_version_1_model_file_still_loads(tmp_path):
    from pgsweep.models.checkpoint import TrainedModel
    from pgsweep.models.convnet import ThesisConvNet
    from pgsweep.models.spec import ConvNetSpec

    torch.manual_seed(0)
    network = ThesisConvNet(ConvNetSpec(num_classes=4, input_size=32, kernel_size=3, input_mean=0.3, input_std=0.2))
    torch.save({"format": "pgsweep-model", "version": 1, "spec": network.spec.to_dict(), "class_names": list("abcd"),
                "provenance": {}, "state_dict": network.state_dict()}, tmp_path / "v1.pt")
    loaded = TrainedModel.load(tmp_path / "v1.pt")
    assert isinstance(loaded.network, ThesisConvNet) and loaded.spec == network.spec
    x = torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(loaded.network(x), network.eval()(x))


def test_prune_layers_tied_by_a_residual_connection():
    """The stem's maps and layer1's block output are added together (an identity shortcut):
    Torch-Pruning removes their filters together, so `conv` keeps the first and naming both fails."""
    from pgsweep.errors import ConfigError
    from pgsweep.testing.config import prune_settings
    from pgsweep.stages.prune import prune_layers

    net, example = SmallResNet(num_classes=3, width=4).eval(), torch.rand(1, 3, 16, 16)
    assert prune_layers(net, prune_settings(), example) == {"act": 4, "layer1.0.act1": 4, "layer2.0.act1": 8,
                                                          "layer2.0.act2": 8}
    with pytest.raises(ConfigError, match="layer1.0.act2 and act share their channels"):
        prune_layers(net, prune_settings(layers=("act", "layer1.0.act2")), example)
