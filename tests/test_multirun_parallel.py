"""Multirun jobs side by side (hydra/launcher=joblib, the thesis sweep's default): the same
tables and metrics as one after another, logged through a local MLflow server in front
of the SQLite store, which is gone when the multirun ends, stops or fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pgsweep.cli import config_dir
from pgsweep.multirun import check_jobs
from test_pipeline import _runs

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
# the thesis sweep, 2 jobs, each a full pipeline kept small (a minute or two each on a shared 2-core machine)
QUICK_THESIS = ["seed=0,1", "data.group_duplicates=true", "trainer.max_epochs=2", "trainer.progress_bar=false",
                "adversarial.progress_bar=false", "analysis.progress_bar=false", "adversarial.step_count=3",
                "analysis.rank.scores=[pg_softmax,pg_logit]", "analysis.knockout.scores=[pg_softmax]",
                "analysis.knockout.all_images=false", "analysis.knockout.random_orderings=5", "data.image_size=44"]
# metrics that time the work, not its result
TIMINGS = re.compile(r"(seconds|per_second)$")


def _multirun(folder: Path, *overrides: str, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    # no OMP_NUM_THREADS: torch's default is every core, so the jobs' `threads` setting is what holds
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    command = [str(Path(sys.executable).with_name("pgsweep")), "-m", *overrides]
    if popen:
        return subprocess.Popen(command, cwd=folder, env={**env, "PYTHONWARNINGS": "ignore"}, text=True, **popen)
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=1800,
                          env={**env, "PYTHONWARNINGS": "ignore"})


def _server_pid(log: str) -> int:
    found = re.search(r"through a local MLflow server, http://127\.0\.0\.1:\d+ \(pid (\d+)\)", log)
    assert found, log[-3000:]
    return int(found.group(1))


def _gone(pid: int) -> bool:
    """No process left in the server's process group (the server and its uvicorn worker)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _jobs(folder: Path) -> tuple:
    uri = f"sqlite:///{folder}/mlflow.db"
    runs = _runs(uri)
    (parent,) = [r for r in runs if r.data.tags.get("pgsweep.multirun") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1
    return uri, parent, {r.data.params["seed"]: r for r in children}


def _tables(run) -> dict[str, bytes]:
    folder = Path(run.info.artifact_uri.removeprefix("file://"))
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def test_the_thesis_sweep_runs_its_jobs_side_by_side_on_one_thread_each(tmp_path):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True,
                      overrides=["+sweep=thesis", f"data.root={tmp_path}", f"tracking.uri=sqlite:///{tmp_path}/m.db"])
        settings = check_jobs(cfg)  # a local SQLite store is fine: a local server fronts it
    assert cfg.hydra.launcher._target_ == JOBLIB and cfg.hydra.launcher.n_jobs == -1  # every core
    assert len(settings) == 10 and {s.threads for s in settings} == {1}
    assert {s.resolved["ray"]["enabled"] for s in settings} == {False}
    # per-class knockout figures for the report's five identities only (the curves keep every class)
    assert {s.resolved["analysis"]["knockout"]["class_figures"] for s in settings} == {"thesis"}
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        basic = compose("config", overrides=["+sweep=thesis", "hydra/launcher=basic"], return_hydra_config=True)
    assert basic.hydra.launcher._target_.endswith("BasicLauncher")  # the command line wins over the sweep
    assert not (tmp_path / "m.db").exists()


def test_a_store_is_served_only_to_the_clients_of_that_store(tmp_path, monkeypatch):
    from pgsweep.tracking.server import SERVER_ENV, served_uri

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    assert served_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"  # no server: the store itself
    monkeypatch.setenv(SERVER_ENV, f'{{"store": "{store}", "server": "http://127.0.0.1:5999"}}')
    assert served_uri("sqlite:///mlflow.db") == "http://127.0.0.1:5999"  # relative: the same file
    assert served_uri(store) == "http://127.0.0.1:5999"
    assert served_uri(f"sqlite:///{tmp_path}/other.db") == f"sqlite:///{tmp_path}/other.db"
    assert served_uri("http://mlflow:5000") == "http://mlflow:5000"


def test_the_threads_setting_is_checked_and_put_back(compose_config):
    import torch

    from pgsweep.errors import ConfigError
    from pgsweep.pipeline import read_settings, torch_threads

    assert read_settings(compose_config()).threads is None
    assert read_settings(compose_config("threads=3")).threads == 3
    for bad in ("0", "two", "true"):
        with pytest.raises(ConfigError, match="threads must be an integer >= 1 or null"):
            read_settings(compose_config(f"threads={bad}"))
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_side_by_side_gives_the_same_tables_and_metrics_as_one_after_another(tmp_path, yale_root):
    """The quick thesis sweep, 2 jobs at once and then one after another (each in its own
    folder, so the second cannot resume the first's perturbation shards)."""
    side_by_side = _multirun(tmp_path / "joblib", "+sweep=thesis", f"data.root={yale_root}", *QUICK_THESIS,
                             "hydra.launcher.n_jobs=2")
    assert side_by_side.returncode == 0, side_by_side.stderr[-3000:]
    one_by_one = _multirun(tmp_path / "basic", "+sweep=thesis", f"data.root={yale_root}", *QUICK_THESIS,
                           "hydra/launcher=basic")
    assert one_by_one.returncode == 0, one_by_one.stderr[-3000:]
    assert _gone(_server_pid(side_by_side.stdout + side_by_side.stderr))
    assert "local MLflow server" not in one_by_one.stdout + one_by_one.stderr

    results = {}
    for name in ("joblib", "basic"):
        uri, parent, jobs = _jobs(tmp_path / name)
        assert parent.info.status == "FINISHED" and sorted(jobs) == ["0", "1"]
        assert all(job.info.status == "FINISHED" for job in jobs.values())
        assert all(job.data.tags["pgsweep.threads"] == "1" for job in jobs.values())
        # artifacts where they land without a server: mlartifacts/ beside the SQLite file
        beside = (tmp_path / name / "mlartifacts").as_uri()
        assert all(job.info.artifact_uri.startswith(beside) for job in jobs.values())
        report = MlflowClient(uri).download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path / name))
        assert "## Summary" in Path(report).read_text()
        results[name] = jobs
    first, second = results["joblib"].values()
    assert first.info.start_time < second.info.end_time and second.info.start_time < first.info.end_time  # at once
    for seed, job in results["joblib"].items():
        other = results["basic"][seed]
        tables, other_tables = _tables(job), _tables(other)
        assert len(tables) > 10 and tables.keys() == other_tables.keys()
        assert [name for name in tables if tables[name] != other_tables[name]] == []  # byte for byte
        metrics = {k: v for k, v in job.data.metrics.items() if not TIMINGS.search(k)}
        assert metrics == {k: v for k, v in other.data.metrics.items() if not TIMINGS.search(k)}
        assert len(metrics) > 100


@pytest.mark.slow
def test_a_failing_job_leaves_the_parent_failed_and_no_server(tmp_path):
    # each job's data folder is missing: it exits 2 in its worker, before its run starts
    done = _multirun(tmp_path, "trainer.max_epochs=1", "data=folder", "hydra/launcher=joblib",
                     f"data.root={tmp_path / 'no-such'},{tmp_path / 'missing'}")
    assert done.returncode == 2 and "data.root: folder not found" in done.stderr
    assert _gone(_server_pid(done.stdout + done.stderr))
    _, parent, jobs = _jobs(tmp_path)
    assert parent.info.status == "FAILED" and jobs == {}


@pytest.mark.slow
def test_an_interrupted_side_by_side_multirun_leaves_no_run_running_and_no_server(tmp_path):
    process = _multirun(tmp_path, "seed=0,1", "trainer.max_epochs=300", "trainer.progress_bar=false", "stages=[train]",
                        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    try:
        for line in process.stdout:  # both jobs training
            lines.append(line)
            if sum("stage train" in seen for seen in lines) == 2:
                break
        time.sleep(2)
        assert process.poll() is None, "".join(lines)[-3000:]
        process.send_signal(signal.SIGINT)  # the driver alone, as `kill -INT`
        lines.append(process.communicate(timeout=120)[0])
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, "".join(lines)[-3000:]
    assert _gone(_server_pid("".join(lines)))
    _, parent, jobs = _jobs(tmp_path)
    assert parent.info.status == "KILLED" and len(jobs) == 2
    assert {job.info.status for job in jobs.values()} == {"KILLED"}
