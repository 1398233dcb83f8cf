"""The sweep on a real multi-node Ray cluster on 127.0.0.1 (ray.cluster_utils.Cluster).

The driver joins through `ray.address=HOST:PORT`, as a user would. A worker process is
killed, and a whole node is removed, mid-sweep; the sweep must finish with the full table,
identical to an in-process run, and both nodes must have run shards.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pgsweep.models.checkpoint import TrainedModel
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet
from pgsweep.pipeline import run_pipeline

pytestmark = [pytest.mark.xdist_group(name="ray"), pytest.mark.slow]

# Ray's own cluster tests shorten the health checks so a dead node is noticed in seconds
FAST_FAILURE = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": FAST_FAILURE})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    yield cluster, workers
    cluster.shutdown()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A digits-shaped thesis convnet with seeded random weights (speed, not accuracy, matters here)."""
    from pgsweep.data import load_dataset

    images = load_dataset("digits", None, 60)
    torch.manual_seed(0)
    network = ThesisConvNet(ConvNetSpec(num_classes=10, input_mean=0.2, input_std=0.3))
    path = tmp_path_factory.mktemp("model") / "pgsweep-model.pt"
    return TrainedModel(network, images.class_names).save(path)


GRID = ("adversarial.max_images=48", "adversarial.images_per_shard=3", "adversarial.step_kind=l2",
        "adversarial.step_range=log", "adversarial.step_min=0.5", "adversarial.step_max=20",
        "adversarial.step_count=30", "adversarial.examples=0", "adversarial.progress_bar=false")
SHARDS = 16


def _config(compose_config, model_file, out: Path, *overrides: str):
    return compose_config("stages=[adversarial]", f"model_ref={model_file}", f"adversarial.output_dir={out}",
                          *GRID, *overrides)


def _records(out: Path) -> list[dict]:
    files = list(out.glob("*/manifest.jsonl"))
    return [json.loads(line) for line in files[0].read_text().splitlines()] if files else []


def _in_background(cfg):
    """Run the pipeline on a thread; returns (thread, box) where box gets the result or error."""
    box: dict = {}

    def target():
        try:
            box["result"] = run_pipeline(cfg)
        except BaseException as error:  # re-raised by the test
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _wait(condition, box, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert "error" not in box, box.get("error")
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(model_file, tmp_path_factory):
    """The same grid computed in this process, without Ray."""
    from hydra import compose, initialize_config_dir

    from pgsweep.cli import config_dir

    folder = tmp_path_factory.mktemp("reference")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"tracking.uri=sqlite:///{folder}/mlflow.db", "stages=[adversarial]", f"model_ref={model_file}",
            f"adversarial.output_dir={folder}/shards", *GRID, "ray.enabled=false"])
    return run_pipeline(cfg).reports["adversarial"].results


def _same_table(got, want) -> None:
    assert len(got) == len(want) == 48 * 10 * 30
    for column in ("image", "target", "step_index", "prediction", "success", "induced_error"):
        assert (got[column].to_numpy() == want[column].to_numpy()).all(), column
    assert np.allclose(got.target_confidence, want.target_confidence, atol=1e-6)


def test_killed_worker_process_loses_no_results(cluster, model_file, reference, compose_config, tmp_path):
    ray_cluster, _ = cluster
    out = tmp_path / "shards"
    thread, box = _in_background(_config(compose_config, model_file, out, f"ray.address={ray_cluster.address}"))

    def running_shard() -> int | None:  # Ray titles a worker process after the task it runs (Linux /proc)
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if cmdline.read_bytes().startswith(b"ray::pgsweep_shard"):
                    return int(cmdline.parent.name)
            except OSError:  # the process ended meanwhile
                continue
        return None

    _wait(lambda: len(_records(out)) >= 2 and running_shard() is not None, box)
    victim = running_shard()
    os.kill(victim, signal.SIGKILL)
    finished_at_kill = len(_records(out))
    thread.join(300)
    assert "error" not in box, box.get("error")
    assert finished_at_kill < SHARDS, "the sweep ended before the kill"
    status = Path(f"/proc/{victim}/status")
    assert not status.exists() or "zombie" in status.read_text()  # it did die
    report = box["result"].reports["adversarial"]
    assert report.stats.computed == SHARDS
    _same_table(report.results, reference)


def test_removed_node_loses_no_results_and_both_nodes_ran_shards(cluster, model_file, reference, compose_config,
                                                                 tmp_path):
    ray_cluster, workers = cluster
    doomed = workers[0]
    head_id, doomed_id = ray_cluster.head_node.node_id, doomed.node_id
    out = tmp_path / "shards"
    thread, box = _in_background(_config(compose_config, model_file, out, f"ray.address={ray_cluster.address}"))
    _wait(lambda: any(r["node"] == doomed_id for r in _records(out)), box)
    ray_cluster.remove_node(doomed, allow_graceful=False)
    finished_at_removal = len(_records(out))
    thread.join(300)
    assert "error" not in box, box.get("error")
    assert finished_at_removal < SHARDS, "the sweep ended before the node was removed"
    report = box["result"].reports["adversarial"]
    assert report.stats.computed == SHARDS
    _same_table(report.results, reference)
    nodes = {r["node"] for r in _records(out)}
    assert {head_id, doomed_id} <= nodes  # shards ran on the head and on the worker node
    later = _records(out)[finished_at_removal:]
    assert later and all(r["node"] != doomed_id for r in later)
