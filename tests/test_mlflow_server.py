"""Against a real `mlflow server` whose backend store is PostgreSQL, as a team runs it:
every stage, the console script and a multirun log to it, Ray workers logging at once lose
nothing, and everything is read back through the REST API."""

from __future__ import annotations

import io
import os
import re

import pandas as pd
import pytest

from pgsweep.pipeline import STAGES, run_pipeline
from pgsweep.tracking import Tracker, TrackingSettings, tracked_run
from servers import download, fresh_database, mlflow_server, rest
from test_pipeline import _pgsweep


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module, on a fresh PostgreSQL database dropped afterwards."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with fresh_database() as database, mlflow_server(folder, database) as uri:
        yield uri, database


def _experiment_runs(uri: str, name: str) -> list[dict]:
    experiment = rest(uri, "experiments/get-by-name", experiment_name=name)["experiment"]
    found = rest(uri, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000})
    return found.get("runs", [])


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _metrics(run: dict) -> dict:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def _artifacts(uri: str, run_id: str, path: str = "") -> set[str]:
    listed = rest(uri, "artifacts/list", run_id=run_id, path=path).get("files", [])
    return {f["path"] for f in listed}


def test_every_stage_logs_to_the_server(server, compose_config):
    uri, _ = server
    trained = run_pipeline(compose_config(f"tracking.uri={uri}", "tracking.experiment=stages",
                                          "trainer.max_epochs=1"))
    # pruning's defaults fine-tune 21 networks 50 epochs each on the digits (12 of this test's
    # 13 minutes); what it logs is the same with 2 criteria, 1 seed and 1 epoch (tests/test_prune.py
    # covers the stage itself)
    small = {"prune": ["prune.criteria=[pg_softmax,random]", "prune.seeds=[0]", "prune.finetune_epochs=1"]}
    for name in STAGES:
        if name != "train":  # each querying stage, on the model the server stores
            run_pipeline(compose_config(f"tracking.uri={uri}", "tracking.experiment=stages",
                                        f"stages=[{name}]", f"model_ref={trained.run_id}", *small.get(name, [])))
    runs = _experiment_runs(uri, "stages")
    assert len(runs) == len(STAGES)
    assert all(run["info"]["status"] == "FINISHED" for run in runs)
    assert sorted(_tags(run)["pgsweep.stages"] for run in runs) == sorted(STAGES)
    assert "model/pgsweep-model.pt" in _artifacts(uri, trained.run_id, "model")


def test_a_multirun_logs_parent_and_children_to_the_server(server, tmp_path):
    uri, database = server
    done = _pgsweep(tmp_path, "-m", "seed=0,1", "trainer.max_epochs=1", "trainer.progress_bar=false",
                    "stages=[train]", f"tracking.uri={uri}", "tracking.experiment=multirun")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "mlflow.db").exists()
    runs = _experiment_runs(uri, "multirun")
    (parent,) = [run for run in runs if _tags(run).get("pgsweep.multirun") == "parent"]
    parent_id = parent["info"]["run_id"]
    children = [run for run in runs if _tags(run).get("mlflow.parentRunId") == parent_id]
    assert len(children) == 2 and len(runs) == 3
    assert parent["info"]["status"] == "FINISHED" and _metrics(parent)["jobs_finished"] == 2
    experiment = rest(uri, "experiments/get-by-name", experiment_name="multirun")["experiment"]
    assert {t["key"]: t["value"] for t in experiment["tags"]}["mlflow.experimentKind"] == "custom_model_development"
    # each run's log line links to it in the UI's model-training view
    link = f"{uri}/#/experiments/{experiment['experiment_id']}/runs/{parent['info']['run_id']}"
    assert f"{link}?workflowType=machine_learning" in done.stdout
    for child in children:
        run_id = child["info"]["run_id"]
        assert child["info"]["status"] == "FINISHED"
        history = rest(uri, "metrics/get-history", run_id=run_id, metric_key="train_loss")["metrics"]
        assert [m["step"] for m in history] == [1]
        assert {"config.yaml", "model", "errors"} <= _artifacts(uri, run_id)
    summary = pd.read_parquet(io.BytesIO(download(uri, parent_id, "multirun/summary.parquet")))
    assert sorted(summary["seed"]) == ["0", "1"]
    assert dict(zip(summary["run_id"], summary["final_test_error"])) == pytest.approx(
        {c["info"]["run_id"]: _metrics(c)["final_test_error"] for c in children})
    # the runs are in PostgreSQL, not in a file beside the server
    import psycopg

    with psycopg.connect(database) as connection:
        stored = connection.execute("SELECT count(*) FROM runs WHERE run_uuid = ANY(%s)",
                                    ([r["info"]["run_id"] for r in runs],)).fetchone()[0]
    assert stored == 3


TASKS, BATCHES, PER_BATCH = 8, 40, 10  # 320 batches, 3,200 metric values


@pytest.mark.xdist_group(name="ray")
def test_ray_workers_logging_at_once_lose_nothing(server):
    import ray

    uri, _ = server
    settings = TrackingSettings(uri=uri, experiment="load")

    @ray.remote(num_cpus=1)
    def log_batches(task: int, run_id: str) -> int:
        from mlflow.tracking import MlflowClient

        tracker = Tracker(MlflowClient(tracking_uri=uri), run_id)  # each worker its own client
        for step in range(BATCHES):
            tracker.log_metrics({f"task{task}.m{k}": task * 1000 + step * 10 + k for k in range(PER_BATCH)}, step)
        return os.getpid()

    ray.init(num_cpus=4, include_dashboard=False, address="local", log_to_driver=False,
             _node_ip_address="127.0.0.1")  # loopback only
    try:
        with tracked_run(settings) as tracker:  # the driver creates the run first
            pids = ray.get([log_batches.remote(task, tracker.run_id) for task in range(TASKS)], timeout=300)
    finally:
        ray.shutdown()
    assert len(set(pids)) > 1  # several processes logged at once
    arrived = 0
    for task in range(TASKS):
        for k in range(PER_BATCH):
            history = rest(uri, "metrics/get-history", run_id=tracker.run_id, metric_key=f"task{task}.m{k}",
                           max_results=1000)["metrics"]
            assert sorted((m["step"], m["value"]) for m in history) == [
                (step, task * 1000 + step * 10 + k) for step in range(BATCHES)]
            arrived += len(history)
    assert arrived == TASKS * BATCHES * PER_BATCH


@pytest.mark.slow
@pytest.mark.xdist_group(name="ray")
def test_hydra_ray_launcher_runs_jobs_as_ray_tasks(server, tmp_path):
    """hydra/launcher=ray (the ray-launcher extra): each job runs in a Ray worker process and
    logs there, straight to the server, nested under the driver's parent run."""
    uri, _ = server
    done = _pgsweep(tmp_path, "-m", "seed=0,1", "trainer.max_epochs=1", "trainer.progress_bar=false",
                    f"tracking.uri={uri}", "tracking.experiment=ray-launcher", "hydra/launcher=ray",
                    "hydra.launcher.ray.init.address=local",  # its own Ray, not one another test started
                    "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false",
                    "+hydra.launcher.ray.init._node_ip_address=127.0.0.1")  # loopback only
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    workers = set(re.findall(r"\(_run_job pid=(\d+)\)", done.stdout + done.stderr))
    assert workers  # the jobs ran as Ray tasks, in worker processes
    runs = _experiment_runs(uri, "ray-launcher")
    (parent,) = [run for run in runs if _tags(run).get("pgsweep.multirun") == "parent"]
    children = [run for run in runs if _tags(run).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert len(children) == 2 and all(run["info"]["status"] == "FINISHED" for run in [parent, *children])

