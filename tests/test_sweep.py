"""The adversarial stage end to end on a real local Ray, into a real MLflow store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import train_digits

from pgsweep.analyses.adversarial import Perturbation, network_for_steps
from pgsweep.data import load_dataset
from pgsweep.errors import ConfigError
from pgsweep.pipeline import run_pipeline
from pgsweep.testing.reference import per_point_loop
from pgsweep.tracking import resolve_model

pytestmark = pytest.mark.xdist_group(name="ray")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (2 CPUs); yields its address for other drivers."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits model trained for 1 epoch; returns (tracking uri, path of its model file, run id)."""
    uri, result, path = train_digits(tmp_path_factory.mktemp("trained"))
    return uri, path, result.run_id


def _sweep(compose_config, trained, out: Path, *overrides: str):
    uri, path, _ = trained
    return compose_config("stages=[adversarial]", f"model_ref={path}", f"tracking.uri={uri}",
                          f"adversarial.output_dir={out}", "adversarial.progress_bar=false", *overrides)


GRID = ("adversarial.max_images=6", "adversarial.step_kind=l2", "adversarial.step_range=list",
        "adversarial.steps=[0,2,5,12]", "adversarial.images_per_shard=2", "adversarial.targets_per_shard=5")


def test_sweep_on_ray_matches_the_per_point_loop(local_ray, trained, compose_config, tmp_path):
    import ray

    cfg = _sweep(compose_config, trained, tmp_path / "shards", *GRID)
    result = run_pipeline(cfg)
    report = result.reports["adversarial"]
    results = report.results
    assert len(results) == 6 * 10 * 4 and report.stats.computed == 6 and report.stats.resumed == 0
    assert set(report.stats.nodes) == {ray.get_runtime_context().get_node_id()}  # ran on Ray's workers
    assert report.affine_prefix == "conv1"

    model = resolve_model(str(trained[1]), cfg.tracking.uri)
    images = load_dataset("digits", None, 60)
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(result.run_id)
    # every shard ran on the network the driver's rule picks: the copy where it passes the
    # gradient check on the grid's first images at all its targets (machine-dependent rounding)
    order = pd.read_parquet(client.download_artifacts(result.run_id, "adversarial/images.parquet", str(tmp_path)))
    grid_images = images.images[order.image.tolist()]
    network = network_for_steps(model.network, grid_images[:8], range(10), "softmax")
    copy_used = network is not model.network
    assert run.data.params["adversarial.inference_copy_used"] == str(copy_used)
    manifest = [json.loads(line) for line in (report.folder / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 6 and all(record["inference_copy_used"] is copy_used for record in manifest)
    # ... and its points are the per-point loop's on that same network
    ids = sorted(results.image.unique())
    want = per_point_loop(network, images.images[ids], images.labels[ids], ids, range(10),
                          [0.0, 2.0, 5.0, 12.0], Perturbation("softmax", "l2"))
    for column in ("image", "label", "target", "step_index", "prediction", "success", "induced_error"):
        assert (results[column].to_numpy() == want[column].to_numpy()).all(), column
    for column in ("target_confidence", "true_confidence"):
        assert np.allclose(results[column], want[column], atol=1e-5), column
    assert results.induced_error.any() and results.success.any()  # the grid is not trivial
    assert np.allclose(results.pixel_rms, want.pixel_rms, rtol=1e-5)  # each point's actual x' - x

    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "adversarial")}
    for name in ("results.parquet", "per_step.parquet", "per_target.parquet", "examples.parquet",
                 "fig4_5_examples.png", "fig4_6_success.png", "fig4_7_induced_error.png"):
        assert f"adversarial/{name}" in artifacts, name
    logged = pd.read_parquet(client.download_artifacts(result.run_id, "adversarial/results.parquet", str(tmp_path)))
    pd.testing.assert_frame_equal(logged, results)
    # `image` is the dataset index in every table the stage logs
    labels = dict(zip(results.image, results.label))
    assert sorted(labels) != list(range(6))  # the test images are not the dataset's first six
    tables = {name: pd.read_parquet(client.download_artifacts(result.run_id, f"adversarial/{name}.parquet",
                                                              str(tmp_path)))
              for name in ("gradient_norms", "images", "examples")}
    for name, table in tables.items():
        assert set(table.image) <= set(labels), name
        if "label" in table:
            assert all(labels[i] == c for i, c in zip(table.image, table.label)), name
    names = tables["images"]
    assert set(names.image) == set(labels) and all(images.sources[i] == s for i, s in zip(names.image, names.source))
    assert set(tables["gradient_norms"].image) == set(labels)
    history = client.get_metric_history(result.run_id, "adversarial/success")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    off = results[results.target != results.label]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        off.groupby("step_index").success.mean().tolist())
    assert run.data.params["adversarial.steps_used"] == "[0.0, 2.0, 5.0, 12.0]"


def test_tables_do_not_depend_on_workers_or_shard_size(local_ray, trained, compose_config, tmp_path):
    on_ray = run_pipeline(_sweep(compose_config, trained, tmp_path / "a", *GRID)).reports["adversarial"]
    in_process = run_pipeline(_sweep(
        compose_config, trained, tmp_path / "b", *GRID, "adversarial.images_per_shard=4",
        "adversarial.targets_per_shard=3", "ray.enabled=false")).reports["adversarial"]
    assert in_process.stats.computed == 2 * 4 and set(in_process.stats.nodes) == {"local"}
    a, b = on_ray.results, in_process.results
    for column in ("image", "target", "step_index", "prediction", "success", "induced_error"):
        assert (a[column].to_numpy() == b[column].to_numpy()).all(), column
    assert np.allclose(a.target_confidence, b.target_confidence, atol=1e-6)


def _pgsweep(cwd: Path, *overrides: str) -> subprocess.Popen:
    script = Path(sys.executable).with_name("pgsweep")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pgsweep"]
    # an xdist worker ignores SIGINT, and a child inherits that: give the driver back its Ctrl-C
    return subprocess.Popen([*command, *overrides], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _manifest(folder: Path) -> list[dict]:
    files = list(folder.glob("*/manifest.jsonl"))
    return [json.loads(line) for line in files[0].read_text().splitlines()] if files else []


RESUME_GRID = ("adversarial.max_images=64", "adversarial.step_range=log", "adversarial.step_min=0.5",
               "adversarial.step_max=20", "adversarial.step_count=30", "adversarial.step_kind=l2",
               "adversarial.images_per_shard=4", "adversarial.examples=0")


def test_interrupted_sweep_resumes_without_recomputing(local_ray, trained, compose_config, tmp_path):
    """Ctrl-C a real `pgsweep` driver mid-sweep; the same command then finishes only the rest."""
    uri, path, _ = trained
    out = tmp_path / "shards"
    overrides = ("stages=[adversarial]", f"model_ref={path}", f"tracking.uri={uri}", f"adversarial.output_dir={out}",
                 "adversarial.progress_bar=false", f"ray.address={local_ray}", *RESUME_GRID)
    driver = _pgsweep(tmp_path, *overrides)
    deadline = time.monotonic() + 240
    while len(_manifest(out)) < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    driver.send_signal(signal.SIGINT)  # Ctrl-C
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode != 0, output
    before = _manifest(out)
    assert 3 <= len(before) < 16, output  # stopped part way (16 shards in all)
    stamps = {r["file"]: (out.glob(f"*/{r['file']}").__next__()).stat().st_mtime_ns for r in before}

    resumed = run_pipeline(compose_config(*overrides)).reports["adversarial"]
    assert resumed.stats.resumed == len(before) and resumed.stats.computed == 16 - len(before)
    after = _manifest(out)
    assert len(after) == 16 and after[: len(before)] == before  # finished shards untouched ...
    for name, stamp in stamps.items():
        assert (resumed.folder / name).stat().st_mtime_ns == stamp  # ... and not rewritten

    clean = run_pipeline(compose_config(*overrides[:3], f"adversarial.output_dir={tmp_path / 'clean'}",
                                        *overrides[4:])).reports["adversarial"]
    assert clean.stats.resumed == 0 and clean.folder.name == resumed.folder.name
    pd.testing.assert_frame_equal(resumed.results, clean.results, check_exact=True)


# ---------------------------------------------------------------- a user's pgsweep on its own local Ray

def _user_pgsweep(cwd: Path, *overrides: str) -> subprocess.Popen:
    """`pgsweep` as a user starts it: none of the test suite's Ray settings, its own Ctrl-C."""
    script = Path(sys.executable).with_name("pgsweep")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pgsweep"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    return subprocess.Popen([*command, *overrides], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**env, "PYTHONWARNINGS": "ignore"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _is_loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


class _RayProcesses:
    """Every process a driver started (Ray's GCS, raylet, agents, workers), seen while it runs."""

    def __init__(self, driver: subprocess.Popen) -> None:
        import ray  # noqa: F401  (puts Ray's bundled psutil on the path)
        import psutil

        self.psutil = psutil
        self.driver = psutil.Process(driver.pid)
        self.seen: dict[tuple[int, float], str] = {}

    def look(self) -> None:
        for process in self.driver.children(recursive=True):
            try:
                self.seen[(process.pid, process.create_time())] = process.name()
            except self.psutil.Error:
                pass

    def listening(self) -> list[tuple[str, str]]:
        """(process name, address) of every listening TCP and bound UDP socket of the driver and its Ray."""
        found = []
        for process in [self.driver, *self.driver.children(recursive=True)]:
            try:
                sockets = process.net_connections(kind="inet")
                name = process.name()
            except self.psutil.Error:
                continue
            for s in sockets:
                if s.laddr and (s.status == self.psutil.CONN_LISTEN or s.type == socket.SOCK_DGRAM):
                    found.append((name, s.laddr.ip))
        return found

    def survivors(self) -> list[str]:
        alive = []
        for (pid, created), name in self.seen.items():
            try:
                process = self.psutil.Process(pid)
                if process.create_time() == created and process.status() != self.psutil.STATUS_ZOMBIE:
                    alive.append(f"{name} (pid {pid}, parent {process.ppid()})")
            except self.psutil.Error:
                pass
        return alive


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_mid_sweep_on_a_local_ray(trained, compose_config, tmp_path, signum):
    """A user's pgsweep starts its own local Ray: every socket it opens is on loopback; Ctrl-C
    or SIGTERM mid-sweep is one line, exit 130 / 143, the run KILLED, the finished shards
    kept for a resume, and no Ray process left behind."""
    _, path, _ = trained
    uri, out = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "shards"
    # the progress bar is left at its default, auto: stderr is a pipe here, so no bar
    overrides = ("stages=[adversarial]", f"model_ref={path}", f"tracking.uri={uri}", f"adversarial.output_dir={out}",
                 "ray.num_cpus=2", *RESUME_GRID)
    driver = _user_pgsweep(tmp_path, *overrides)
    processes = _RayProcesses(driver)
    try:
        deadline = time.monotonic() + 300
        while len(_manifest(out)) < 2 and driver.poll() is None and time.monotonic() < deadline:
            processes.look()
            time.sleep(0.05)
        assert driver.poll() is None, driver.communicate()
        processes.look()
        sockets = processes.listening()
        driver.send_signal(signum)
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()

    names = set(processes.seen.values())
    assert {"gcs_server", "raylet"} <= names, names  # the driver started a Ray of its own
    assert len(sockets) >= 4, sockets
    assert [s for s in sockets if not _is_loopback(s[1])] == [], sockets

    assert driver.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    assert stderr.splitlines() == [f"pgsweep: interrupted by {name}; stopped (an MLflow run in progress is marked KILLED)"]
    assert processes.survivors() == []  # none outlived the command, and none was left to parent 1

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pgsweep").experiment_id])
    assert run.info.status == "KILLED"
    before = _manifest(out)
    assert 2 <= len(before) < 16, stdout
    resumed = run_pipeline(compose_config(*overrides, "ray.enabled=false")).reports["adversarial"]
    assert resumed.stats.resumed == len(before) and resumed.stats.computed == 16 - len(before)
    assert len(resumed.results) == 64 * 10 * 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("overrides,message", [
    (["adversarial.step_range=list", "adversarial.steps=[]"], "step list is empty"),
    (["adversarial.step_range=list", "adversarial.steps=[0.1,-2]"], ">= 0"),
    (["adversarial.step_range=list", "adversarial.steps=[a,b]"], "adversarial.steps must be a list of float"),
    (["adversarial.step_range=log", "adversarial.step_min=0"], "step_min"),
    (["adversarial.targets=[3,10]"], "class 10 is outside the model's 10 classes"),
    (["ray.address=127.0.0.1:PORT"], "cannot reach the Ray cluster at ray.address=127.0.0.1:"),
])
def test_bad_input_stops_before_any_task_or_run(trained, compose_config, tmp_path, overrides, message):
    overrides = [o.replace("PORT", str(_free_port())) for o in overrides]
    uri = f"sqlite:///{tmp_path}/fresh.db"
    cfg = compose_config("stages=[adversarial]", f"model_ref={trained[1]}", f"tracking.uri={uri}",
                         f"adversarial.output_dir={tmp_path / 'shards'}", *overrides)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        run_pipeline(cfg)
    assert not (tmp_path / "fresh.db").exists() and not (tmp_path / "shards").exists()


def test_console_script_reports_an_unreachable_cluster_in_one_line(trained, tmp_path):
    driver = _pgsweep(tmp_path, "stages=[adversarial]", f"model_ref={trained[1]}",
                      f"ray.address=127.0.0.1:{_free_port()}")
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 2
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("pgsweep: error: cannot reach the Ray cluster"), output
    assert not (tmp_path / "mlflow.db").exists()
