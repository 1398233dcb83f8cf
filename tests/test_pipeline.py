"""Training through the real Hydra config tree into a temporary MLflow store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pgsweep.config import override_keys
from pgsweep.errors import ConfigError, DataError, Interrupted, ModelError, PgsweepError
from pgsweep.pipeline import read_settings, run_pipeline
from pgsweep.tracking import resolve_model

REPO = Path(__file__).resolve().parents[1]


def _uri(cfg) -> str:
    return cfg.tracking.uri


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 2-epoch digits run shared by the tests that inspect it."""
    from hydra import compose, initialize_config_dir

    from pgsweep.cli import config_dir

    folder = tmp_path_factory.mktemp("trained")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"tracking.uri=sqlite:///{folder}/mlflow.db", "trainer.progress_bar=false",
            "trainer.max_epochs=2", "stages=[train]",
        ])
    return cfg, run_pipeline(cfg)


def test_run_has_params_metrics_config_and_model(trained):
    cfg, result = trained
    client = MlflowClient(_uri(cfg))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["data.name"] == "digits"
    assert params["trainer.max_epochs"] == "2"
    assert params["trainer.learning_rate"] == "0.1"
    assert params["model.conv_channels"] == "[5, 8, 10]"
    assert params["split.test"] == "449" and params["split.heldout_curve"] == "val"
    for name in ("train_loss", "train_error", "val_loss", "val_error"):
        history = client.get_metric_history(result.run_id, name)
        assert sorted(m.step for m in history) == [1, 2], name
    metrics = run.data.metrics
    assert 0.0 <= metrics["final_test_error"] < 0.5  # 10 classes: chance is 0.9
    assert metrics["final_test_misclassified"] == round(metrics["final_test_error"] * 449)
    assert {"final_train_error", "final_val_error", "final_test_loss"} <= set(metrics)
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "model", "errors"} <= artifacts
    assert [a.path for a in client.list_artifacts(result.run_id, "model")] == ["model/pgsweep-model.pt"]
    config_text = Path(client.download_artifacts(result.run_id, "config.yaml")).read_text()
    assert "max_epochs: 2" in config_text and "hydra" not in config_text


def test_model_loads_back_by_run_id_uri_and_path(trained, tmp_path):
    cfg, result = trained
    x = torch.rand(5, 1, 60, 60)
    expected = result.model.network(x)
    for ref in (result.run_id, f"runs:/{result.run_id}", result.model_uri):
        loaded = resolve_model(ref, _uri(cfg))
        assert torch.allclose(loaded.network(x), expected)
        assert loaded.class_names == tuple(str(d) for d in range(10))
        assert len(loaded.provenance["test_sources"]) == 449
    path = MlflowClient(_uri(cfg)).download_artifacts(result.run_id, "model/pgsweep-model.pt", str(tmp_path))
    assert torch.allclose(resolve_model(path, _uri(cfg)).network(x), expected)
    with pytest.raises(ModelError, match="cannot fetch model"):
        resolve_model("0" * 32, _uri(cfg))
    with pytest.raises(ModelError, match="no such file"):
        resolve_model("nowhere/model.pt", _uri(cfg))


def test_evaluate_stage_queries_a_trained_model(trained, compose_config):
    cfg, result = trained
    evaluation = run_pipeline(
        compose_config("stages=[evaluate]", f"model_ref={result.run_id}", f"tracking.uri={_uri(cfg)}")
    )
    reports = evaluation.reports["evaluate"]
    train_report = result.reports["train"]
    assert reports["test"].error == pytest.approx(train_report.test.error)
    assert reports["test"].wrong == train_report.test.wrong
    assert evaluation.model_uri == result.run_id


def test_training_is_deterministic(compose_config, trained):
    cfg, first = trained
    again = run_pipeline(compose_config("trainer.max_epochs=2"))
    for a, b in zip(first.model.network.parameters(), again.model.network.parameters()):
        assert torch.equal(a, b)


def test_failed_run_is_marked_failed(compose_config, monkeypatch):
    cfg = compose_config("trainer.max_epochs=1")

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr("pgsweep.stages.train.train_model", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_pipeline(cfg)
    (run,) = _runs(_uri(cfg))
    assert run.info.status == "FAILED"


def test_interrupted_run_is_marked_killed(compose_config, monkeypatch):
    cfg = compose_config("trainer.max_epochs=1")

    def terminated(*args, **kwargs):  # what the CLI's SIGTERM handler raises, in any stage
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr("pgsweep.stages.train.train_model", terminated)
    with pytest.raises(Interrupted) as stop:
        run_pipeline(cfg)
    assert stop.value.exit_status == 143
    (run,) = _runs(_uri(cfg))
    assert run.info.status == "KILLED"


def test_lightnings_sigterm_exit_becomes_an_interrupt(compose_config):
    """Without pgsweep's handlers (the Python API), Lightning turns SIGTERM into exit status 0."""
    from pgsweep.data import load_digits, stratified_split
    from pgsweep.models.spec import ConvNetSpec
    from pgsweep.settings import TrainSettings
    from pgsweep.stages.train import train_model

    def terminate(metrics, epoch) -> None:  # during fit, where Lightning's SIGTERM handler is installed
        os.kill(os.getpid(), signal.SIGTERM)

    images = load_digits(image_size=24)
    split = stratified_split(images.labels.numpy(), images.content_ids, images.class_names, 0.25, 0.0, 0)
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(Interrupted, match="SIGTERM"):
            train_model(images, split, ConvNetSpec(num_classes=10, input_size=24, kernel_size=3),
                        TrainSettings(max_epochs=3, progress_bar="false"), on_epoch_end=terminate)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_lightnings_ctrl_c_exit_becomes_a_keyboard_interrupt():
    """Lightning catches Ctrl-C inside fit and calls sys.exit(1); the API caller must see the interrupt."""
    from pgsweep.data import load_digits, stratified_split
    from pgsweep.models.spec import ConvNetSpec
    from pgsweep.settings import TrainSettings
    from pgsweep.stages.train import train_model

    def ctrl_c(metrics, epoch) -> None:
        raise KeyboardInterrupt

    images = load_digits(image_size=24)
    split = stratified_split(images.labels.numpy(), images.content_ids, images.class_names, 0.25, 0.0, 0)
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            train_model(images, split, ConvNetSpec(num_classes=10, input_size=24, kernel_size=3),
                        TrainSettings(max_epochs=3, progress_bar="false"), on_epoch_end=ctrl_c)
    finally:
        signal.signal(signal.SIGINT, previous)  # Lightning ignores further Ctrl-C after the first


def test_unavailable_accelerator_fails_before_any_run(compose_config):
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has a GPU")
    cfg = compose_config("trainer.accelerator=gpu")
    with pytest.raises(ConfigError, match="trainer.accelerator=gpu, but no GPU is available here"):
        run_pipeline(cfg)
    assert not Path(_uri(cfg).removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (["data=yale"], DataError, "data.root is not set"),
        (["data=yale", "data.root=/no/such/folder"], DataError, "folder not found: /no/such/folder"),
        (["stages=[train,bogus]"], ConfigError, "unknown stage 'bogus'"),
        (["trainer.max_epochs=0"], ConfigError, "trainer.max_epochs must be >= 1"),
        (["trainer.max_epochs=ten"], ConfigError, "trainer.max_epochs must be int"),
        (["trainer.max_epochs=null"], ConfigError, "trainer.max_epochs is required"),
        (["trainer.learning_rate=inf"], ConfigError, "trainer.learning_rate must be"),
        (["+model.num_classes=3"], ConfigError, "unknown config key model.num_classes"),
        (["seed=abc"], ConfigError, "seed must be an integer"),
        (["data.image_size=16"], ConfigError, "shrinks to nothing"),
        (["data.test_fraction=1.5"], DataError, "split fractions"),
        (["stages=[evaluate]"], ConfigError, "set model_ref"),
        (["stages=[evaluate]", "model_ref=/no/model.pt"], ModelError, "no such file"),
        (["model_ref=abc"], ConfigError, "drop one of them"),
        (["tracking.uri=mlflow.db"], ConfigError, "not a URI"),
        (["tracking.uri=http://127.0.0.1:9"], ConfigError, "cannot reach the MLflow server"),
    ],
)
def test_bad_input_fails_before_any_run(compose_config, overrides, error, message):
    cfg = compose_config(*overrides)
    with pytest.raises(error, match=message):
        run_pipeline(cfg)
    uri = cfg.tracking.uri
    if uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).exists():
        assert _runs(uri) == []


def test_model_with_other_classes_is_rejected(trained, compose_config, yale_like):
    cfg, result = trained
    root = yale_like()
    chosen = ("data=yale", f"data.root={root}")  # typed by the user: wins over the model's record
    with pytest.raises(ModelError, match="classes"):
        run_pipeline(compose_config(*chosen, "stages=[evaluate]", f"model_ref={result.run_id}",
                                    f"tracking.uri={_uri(cfg)}"), chosen=override_keys(chosen))


def test_every_experiment_composes(compose_config, yale_root):
    experiments = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    assert "thesis_yale" in experiments
    for name in experiments:
        settings = read_settings(compose_config(f"experiment={name}", f"data.root={yale_root}"))
        assert settings.trainer.max_epochs >= 1
    thesis = read_settings(compose_config("experiment=thesis_yale", f"data.root={yale_root}"))
    assert thesis.data.name == "yale" and thesis.trainer.max_epochs == 250
    assert thesis.trainer.learning_rate == 0.1 and thesis.architecture.conv_channels == (5, 8, 10)


def test_thesis_experiment_trains_on_real_yale(compose_config, yale_root):
    cfg = compose_config("experiment=thesis_yale", f"data.root={yale_root}", "trainer.max_epochs=2")
    result = run_pipeline(cfg)
    report = result.reports["train"]
    assert report.test.images == 41 and report.train.images == 124 and report.val is None
    run = MlflowClient(cfg.tracking.uri).get_run(result.run_id)
    assert run.data.params["split.duplicate_groups"] == "9"
    assert run.data.params["split.heldout_curve"] == "test"
    history = MlflowClient(cfg.tracking.uri).get_metric_history(result.run_id, "test_error")
    assert [m.step for m in history] == [1, 2]  # no val split: the held-out curve is the test split
    assert run.data.metrics["final_test_error"] == pytest.approx(history[-1].value)
    assert result.model.class_names[0] == "subject01"


# ---------------------------------------------------------------- the console script

def _pgsweep(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("pgsweep")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pgsweep"]
    return subprocess.run(
        [*command, *overrides], cwd=cwd, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_console_script_trains_into_local_sqlite(tmp_path):
    done = _pgsweep(tmp_path, "trainer.max_epochs=1", "trainer.progress_bar=false", "stages=[train]")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlartifacts").is_dir()
    (run,) = _runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert run.info.status == "FINISHED" and "final_test_error" in run.data.metrics
    assert list((tmp_path / "outputs").rglob("config.yaml"))  # Hydra's own record of the job


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data=yale", "data.root=/no/such/folder"], "pgsweep: error: data.root: folder not found"),
        (["stages=[fly]"], "pgsweep: error: stages: unknown stage 'fly'"),
        # mistyped keys and options are Hydra's to find; they get the same one line and status
        (["trainer.max_epoch=5"], "pgsweep: error: Could not override 'trainer.max_epoch'. To append"),
        (["experiment=thesis_yal"],
         "pgsweep: error: In 'config': Could not find 'experiment/thesis_yal'; available: thesis_yale"),
        (["-m", "seed=0,1", "data=yal"], "pgsweep: error: In 'config': Could not find 'data/yal'; available:"),
        (["trainer.max_epochs=["], "pgsweep: error: cannot parse override 'trainer.max_epochs=['"),
    ],
)
def test_console_script_reports_bad_input_in_one_line(tmp_path, overrides, message):
    done = _pgsweep(tmp_path, *overrides)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [errors[0]] and errors[0].startswith(message), done.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_training_logs_to_a_real_mlflow_server(tmp_path):
    """The one server test that needs no PostgreSQL: a SQLite backend store."""
    from servers import mlflow_server

    with mlflow_server(tmp_path, f"sqlite:///{tmp_path}/server.db") as uri:
        workdir = tmp_path / "work"
        workdir.mkdir()
        done = _pgsweep(workdir, f"tracking.uri={uri}", "trainer.max_epochs=1", "trainer.progress_bar=false",
                        "stages=[train]")
        assert done.returncode == 0, done.stderr
        assert not (workdir / "mlflow.db").exists()
        (run,) = _runs(uri)
        assert run.info.status == "FINISHED" and "final_test_error" in run.data.metrics
        loaded = resolve_model(run.info.run_id, uri)
        assert loaded.class_names[0] == "0"


def test_tracker_logs_tables_and_figures_that_read_back(tmp_path):
    import pandas as pd

    from pgsweep.plots import new_figure
    from pgsweep.tracking import TrackingSettings, tracked_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    table = pd.DataFrame({"step": [0.1, 0.2], "success": [0.0, 0.5]})
    with tracked_run(TrackingSettings(uri=uri)) as tracker:
        tracker.log_table(table, "adversarial/results.parquet")
        figure = new_figure()
        figure.add_subplot().plot([0, 1], [1, 0])
        tracker.log_figure(figure, "adversarial/curve.png")
        with pytest.raises(ValueError, match="Parquet"):
            tracker.log_table(table, "adversarial/results.csv")
    client = MlflowClient(uri)
    path = client.download_artifacts(tracker.run_id, "adversarial/results.parquet", str(tmp_path))
    assert pd.read_parquet(path).equals(table)
    png = Path(client.download_artifacts(tracker.run_id, "adversarial/curve.png", str(tmp_path)))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_config_builder_converts_lists_and_rejects_wrong_types():
    from dataclasses import dataclass

    from pgsweep.config import build

    @dataclass(frozen=True)
    class Steps:
        values: tuple[float, ...] = (0.5,)
        names: tuple[str, ...] = ("a",)
        count: int = 1

    built = build(Steps, {"values": [1, "2.5"], "names": ["x", 3], "count": 4.0}, "s")
    assert built == Steps((1.0, 2.5), ("x", "3"), 4)
    with pytest.raises(ConfigError, match="s.values must be a list of float"):
        build(Steps, {"values": ["abc"]}, "s")
    with pytest.raises(ConfigError, match="s.values must be a list of float"):
        build(Steps, {"values": 0.5}, "s")
    with pytest.raises(ConfigError, match="unknown config key s.value;"):
        build(Steps, {"value": [1]}, "s")


@pytest.mark.parametrize("choice, is_thesis, accelerator, expected", [
    ("auto", True, "cpu", True), ("auto", False, "cpu", False), ("true", False, "cpu", True),
    ("false", True, "cpu", False), (True, False, "cpu", True), ("auto", True, "gpu", False),
])
def test_trainer_channels_last_choice(choice, is_thesis, accelerator, expected):
    from pgsweep.settings import TrainSettings
    from pgsweep.stages.train import trains_channels_last

    settings = TrainSettings(channels_last=choice, accelerator=accelerator)
    settings.validate()
    assert trains_channels_last(settings, is_thesis) is expected


def test_trainer_channels_last_is_checked(compose_config):
    cfg = compose_config("trainer.channels_last=sometimes")
    with pytest.raises(ConfigError, match="trainer.channels_last must be auto, true or false, got 'sometimes'"):
        run_pipeline(cfg)


def test_channels_last_training_reaches_the_layers_is_repeatable_and_hands_back_contiguous_weights():
    from pgsweep.data import load_digits, stratified_split
    from pgsweep.models.spec import ConvNetSpec
    from pgsweep.settings import TrainSettings
    from pgsweep.stages.train import train_model

    images = load_digits(image_size=24)
    split = stratified_split(images.labels.numpy(), images.content_ids, images.class_names, 0.25, 0.0, 0)
    spec = ConvNetSpec(num_classes=10, input_size=24, kernel_size=3)
    seen: list[bool] = []  # per training batch: was conv2's input (5 maps) in channels-last memory?

    def note_layout(module, inputs):
        x = inputs[0]
        if module.training:
            seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())

    weights = {}
    for run, choice in (("a", "true"), ("b", "true"), ("off", "false")):
        seen.clear()
        handle = torch.nn.modules.module.register_module_forward_pre_hook(
            lambda module, inputs: note_layout(module, inputs) if module.__class__ is torch.nn.Conv2d
            and module.in_channels == 5 else None)
        try:
            model, _ = train_model(images, split, spec, TrainSettings(max_epochs=1, progress_bar="false",
                                                                      channels_last=choice))
        finally:
            handle.remove()
        assert seen and all(seen) if choice == "true" else seen and not any(seen), (run, seen[:3])
        assert all(p.is_contiguous() for p in model.network.parameters())  # later stages get the net as built
        weights[run] = model.network.state_dict()
    for name in weights["a"]:
        assert torch.equal(weights["a"][name], weights["b"][name]), name  # seeded: the same weights again
