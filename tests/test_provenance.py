"""Results that know the code that made them: resumable stores keyed on the code fingerprint,
runs tagged with what made them, the model and the data logged as MLflow expects."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import train_digits

from pgsweep import provenance
from pgsweep.errors import ConfigError
from pgsweep.pipeline import read_settings, run_pipeline
from pgsweep.provenance import CodeFingerprint, code_fingerprint

REPO = Path(__file__).resolve().parents[1]
REGISTERED = "digits_convnet"


@pytest.fixture
def package_copy(tmp_path, monkeypatch) -> Path:
    """The fingerprint reads a copy of pgsweep's source (and conf/) that a test may edit."""
    source = provenance.package_dir()
    copy = tmp_path / "src" / "pgsweep"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    conf = source / "conf" if (source / "conf").is_dir() else source.parent / "conf"
    shutil.copytree(conf, copy.parent / "conf")
    monkeypatch.setattr(provenance, "package_dir", lambda: copy)
    return copy


def _edit_one_line(package: Path) -> None:
    path = package / "stages" / "prune.py"
    path.write_text(path.read_text() + "# one more line\n")


def test_the_fingerprint_follows_every_source_line_and_library(package_copy, monkeypatch):
    before = code_fingerprint()
    assert before == code_fingerprint()  # stable while nothing changes
    assert "pgsweep/stages/prune.py" in before.files and "conf/config.yaml" in before.files
    _edit_one_line(package_copy)
    after = code_fingerprint()
    assert after.digest != before.digest
    assert after.changes_since(before) == "pgsweep source changed (pgsweep/stages/prune.py)"
    real = provenance.library_version
    monkeypatch.setattr(provenance, "library_version", lambda name: "9.9" if name == "torch" else real(name))
    upgraded = code_fingerprint()
    assert upgraded.digest != after.digest
    assert upgraded.changes_since(after) == f"library torch {real('torch')} -> 9.9"
    assert CodeFingerprint.from_dict(json.loads(json.dumps(upgraded.to_dict()))).digest == upgraded.digest


@pytest.mark.parametrize("override, message", [
    ("recompute=yes", "recompute must be true or false"),
    ("tracking.register_model='a/b'", "tracking.register_model 'a/b' is not a model name"),
])
def test_bad_options_are_refused(compose_config, override, message):
    with pytest.raises(ConfigError, match=message):
        read_settings(compose_config(override))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits model trained for 1 epoch and registered; (tracking uri, run id, model file)."""
    uri, result, path = train_digits(tmp_path_factory.mktemp("trained"), f"tracking.register_model={REGISTERED}")
    return uri, result.run_id, path, result.model


def test_a_run_records_what_made_it(trained):
    uri, run_id, _, _ = trained
    tags = MlflowClient(uri).get_run(run_id).data.tags
    assert tags["pgsweep.code"] == code_fingerprint().digest
    assert tags["pgsweep.version"] == provenance.library_version("pgsweep") != provenance.NOT_INSTALLED
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head and len(head) == 40
    for name in ("torch", "pytorch-lightning", "ray", "mlflow", "torch-pruning"):
        assert tags[f"pgsweep.lib.{name}"] == provenance.library_version(name)
    assert tags["pgsweep.lib.torch"].startswith(torch.__version__.split("+")[0])
    assert tags["pgsweep.device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
    assert int(tags["pgsweep.threads"]) == torch.get_num_threads()


def test_logging_the_mlflow_model_leaves_the_environment_as_it_was(trained, tmp_path, monkeypatch):
    """MLflow's fluent set_tracking_uri/set_experiment write MLFLOW_TRACKING_URI and
    MLFLOW_EXPERIMENT_ID into os.environ; left there, every later subprocess (the next pgsweep,
    a Ray worker) would log to this store instead of its own."""
    from pgsweep.tracking import Tracker

    _, _, _, model = trained
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.create_run(client.create_experiment("leak"))
    Tracker(client, run.info.run_id).log_model(model, example=torch.zeros(2, 1, 60, 60))
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_EXPERIMENT_ID" not in os.environ
    assert client.search_logged_models([run.info.experiment_id])  # and the model was logged


def test_the_data_is_logged_as_mlflow_datasets_with_their_context(trained):
    uri, run_id, _, model = trained
    inputs = MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
    by_context = {tag.value: item.dataset for item in inputs for tag in item.tags if tag.key == "mlflow.data.context"}
    assert set(by_context) == {"training", "validation", "test"}
    assert by_context["training"].name == "digits-train" and by_context["test"].name == "digits-test"
    assert json.loads(by_context["test"].source)["uri"].endswith("digits.csv.gz")
    assert len({d.digest for d in by_context.values()}) == 3  # three different sets of images


def test_the_model_is_an_mlflow_model_that_loads_and_answers_a_query(trained, compose_config, monkeypatch):
    import mlflow

    uri, run_id, _, model = trained
    # mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ: monkeypatch puts it back,
    # else every later subprocess of this test process logs to this test's store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    (output,) = run.outputs.model_outputs  # listed under the run's logged models
    logged = client.get_logged_model(output.model_id)
    assert logged.name == "pytorch_model" and logged.source_run_id == run_id
    assert logged.experiment_id == run.info.experiment_id  # beside the run, not in Default
    assert client.get_model_version(REGISTERED, "1").run_id == run_id

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pytorch.load_model(f"models:/{REGISTERED}/1")
    finally:
        mlflow.set_tracking_uri(before)
    images = torch.rand(3, 1, 60, 60)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images), model.network.eval()(images))

    result = run_pipeline(compose_config("stages=[evaluate]", f"model_ref=models:/{REGISTERED}/1",
                                         f"tracking.uri={uri}"))
    for name, tensor in model.network.state_dict().items():
        assert torch.equal(result.model.network.state_dict()[name], tensor)
    assert result.reports["evaluate"] is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_models_serve_answers_predictions(trained, tmp_path):
    uri, _, _, model = trained
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_cli), "models", "serve", "-m", f"models:/{REGISTERED}/1", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        # the server starts uvicorn from PATH: the environment's bin/, as in an activated venv
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO),
             "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"}, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not answer /ping within 120 s")
        images = np.random.default_rng(0).random((2, 1, 60, 60), dtype=np.float32)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"inputs": images.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = np.asarray(json.loads(response.read())["predictions"], dtype=np.float32)
        with torch.no_grad():
            expected = model.network.eval()(torch.from_numpy(images)).numpy()
        assert predictions.shape == (2, 10)
        np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-6)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


GRID = ("adversarial.max_images=4", "adversarial.step_kind=l2", "adversarial.step_range=list",
        "adversarial.steps=[0,2,5]", "adversarial.images_per_shard=2", "adversarial.targets_per_shard=5",
        "adversarial.examples=0", "adversarial.progress_bar=false", "ray.enabled=false")


def test_a_rerun_resumes_and_a_code_change_recomputes(trained, compose_config, package_copy, monkeypatch,
                                                      tmp_path, caplog):
    uri, _, path, _ = trained
    out = tmp_path / "shards"

    def sweep(*extra: str):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pgsweep"):
            result = run_pipeline(compose_config("stages=[adversarial]", f"model_ref={path}", f"tracking.uri={uri}",
                                                 f"adversarial.output_dir={out}", *GRID, *extra))
        code = MlflowClient(uri).get_run(result.run_id).data.tags["pgsweep.code"]
        recomputing = [r.getMessage() for r in caplog.records if "recomputing" in r.getMessage()]
        return result.reports["adversarial"], code, recomputing

    first, code, said = sweep()
    shards = first.stats.shards
    assert first.stats.computed == shards == 4 and not said

    again, code_again, said = sweep()
    assert again.stats.computed == 0 and again.stats.resumed == shards and not said
    assert code_again == code and again.folder == first.folder

    _edit_one_line(package_copy)
    edited, code_edited, said = sweep()
    assert edited.stats.computed == shards and edited.stats.resumed == 0
    assert code_edited != code and edited.folder != first.folder
    assert len(said) == 1 and "pgsweep source changed (pgsweep/stages/prune.py)" in said[0], said
    assert str(first.folder) in said[0]
    assert json.loads((out / "code.json").read_text()).popitem()[1]["code"] == code_edited

    real = provenance.library_version
    monkeypatch.setattr(provenance, "library_version", lambda name: "9.9" if name == "numpy" else real(name))
    upgraded, code_upgraded, said = sweep()
    assert upgraded.stats.computed == shards and code_upgraded not in (code, code_edited)
    assert len(said) == 1 and f"library numpy {real('numpy')} -> 9.9" in said[0], said

    forced, _, said = sweep("recompute=true")
    assert forced.stats.computed == shards and forced.folder == upgraded.folder
    assert len(said) == 1 and "recompute=true" in said[0]
    assert forced.results.equals(first.results)  # recomputed, and the same numbers
