"""Multiruns from sweeps/: every sweep composes and checks, jobs nest under one parent run,
bad sweep values stop before the first job, and a stopped multirun leaves nothing RUNNING."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pgsweep.cli import config_dir, sweeps_dir
from pgsweep.multirun import check_jobs, job_overrides
from test_pipeline import _pgsweep, _runs

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p.stem for p in (REPO / "sweeps" / "sweep").glob("*.yaml"))
# what a sweep needs besides itself to compose and check (a model to query, say)
EXTRA_OVERRIDES: dict[str, list[str]] = {  # checking a query's config never loads its model
    "norm_x_rank_split": ["model_ref=" + "0" * 32],
    "step_ranges_x_kinds": ["model_ref=" + "0" * 32],
}
SMALL = ["seed=0", "model.conv_channels=[3,4,5],[5,8,10]", "trainer.max_epochs=1", "trainer.progress_bar=false"]


def test_sweeps_dir_is_the_top_level_folder():
    assert Path(sweeps_dir()) == REPO / "sweeps"
    assert {"seeds_x_widths", "norm_x_rank_split", "step_ranges_x_kinds"} <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_composes_and_every_job_checks(name, tmp_path):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"+sweep={name}", f"tracking.uri=sqlite:///{tmp_path}/m.db",
                                           *EXTRA_OVERRIDES.get(name, [])], return_hydra_config=True)
        assert cfg.hydra.sweeper.params, f"{name} sweeps nothing"
        jobs = job_overrides(cfg)
        settings = check_jobs(cfg)
    assert len(jobs) == len(settings) > 1
    assert not (tmp_path / "m.db").exists()  # checking writes nothing


def test_seeds_x_widths_is_nine_jobs(tmp_path):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["+sweep=seeds_x_widths"], return_hydra_config=True)
        settings = check_jobs(cfg)
    pairs = {(s.trainer.seed, s.architecture.conv_channels) for s in settings}
    assert len(pairs) == 9 and {seed for seed, _ in pairs} == {0, 1, 2}
    assert {channels for _, channels in pairs} == {(3, 4, 5), (5, 8, 10), (10, 16, 20)}


def _parent_and_children(uri: str):
    runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get("pgsweep.multirun") == "parent"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1  # every other run nests under the parent
    return parents[0], children


def test_small_sweep_runs_end_to_end_nested_under_one_parent(tmp_path):
    done = _pgsweep(tmp_path, "-m", "+sweep=seeds_x_widths", *SMALL)
    assert done.returncode == 0, done.stderr
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent, children = _parent_and_children(uri)
    assert parent.info.status == "FINISHED" and parent.data.params["multirun.jobs"] == "2"
    assert sorted(c.data.params["model.conv_channels"] for c in children) == ["[3, 4, 5]", "[5, 8, 10]"]
    assert all(c.info.status == "FINISHED" for c in children)
    client = MlflowClient(uri)
    summary = pd.read_parquet(client.download_artifacts(parent.info.run_id, "multirun/summary.parquet", str(tmp_path)))
    assert sorted(summary["run_id"]) == sorted(c.info.run_id for c in children)
    assert list(summary["model.conv_channels"]) == ["[3, 4, 5]", "[5, 8, 10]"]
    by_run = {c.info.run_id: c.data.metrics["final_test_error"] for c in children}
    assert dict(zip(summary["run_id"], summary["final_test_error"])) == pytest.approx(by_run)
    assert parent.data.metrics["jobs_finished"] == 2
    # the parent names the code its jobs ran (the same fingerprint and commit as theirs)
    for tag in ("pgsweep.code", "pgsweep.version", "pgsweep.lib.torch"):
        assert {c.data.tags[tag] for c in children} == {parent.data.tags[tag]}, tag
    assert parent.data.tags.get("mlflow.source.git.commit") == children[0].data.tags.get("mlflow.source.git.commit")
    kind = client.get_experiment(parent.info.experiment_id).tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"  # MLflow's "Machine learning" kind (its 3.17.2 UI ignores it)


def test_a_multirun_of_queries_goes_beside_its_model(tmp_path):
    """Jobs querying a model, and their parent, go into the model's experiment unless
    tracking.experiment is typed."""
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    model_run = client.create_run(client.create_experiment("faces")).info.run_id  # stands for a training run
    for typed, experiment in (([], "faces"), (["tracking.experiment=mine"], "mine")):
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("config", overrides=["+sweep=norm_x_rank_split", f"tracking.uri={uri}",
                                               f"model_ref={model_run}", *typed], return_hydra_config=True)
            settings = check_jobs(cfg)
        assert {s.tracking.experiment for s in settings} == {experiment}


@pytest.mark.parametrize(
    "params, overrides, message",
    [
        ({"trainer.max_epochs": "1,ten"}, [], "job 1 (trainer.max_epochs=ten): trainer.max_epochs must be int, got 'ten'"),
        ({"+trainer.epochs": "1,2"}, [], "job 0 (+trainer.epochs=1): unknown config key trainer.epochs"),
        ({"seed": "0,x"}, [], "job 1 (seed=x): seed must be an integer"),
        ({"tracking.experiment": "a,b"}, [], "tracking.uri and tracking.experiment must be the same for every job"),
        ({}, ["hydra/launcher=ray"], "hydra/launcher=RayLauncher runs jobs in other processes"),
        ({}, ["hydra/launcher=ray_cluster"], "hydra/launcher=RayLauncher runs jobs in other processes"),
    ],
)
def test_bad_sweep_values_are_found_before_any_job(tmp_path, params, overrides, message):
    from omegaconf import open_dict

    from pgsweep.errors import ConfigError

    if overrides and not _has_ray_launcher():
        pytest.skip("hydra-ray-launcher is not installed (the ray-launcher extra)")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"tracking.uri=sqlite:///{tmp_path}/m.db", *overrides],
                      return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.sweeper.params = {"seed": "0,1", **params} if overrides else {"seed": "0", **params}
        with pytest.raises(ConfigError) as error:
            check_jobs(cfg)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    "params, fixed, message",
    [  # a value every job shares is named by its setting, not by a job's swept values
        ({"seed": "0,1"}, ["trainer.max_epochs=0"], "trainer.max_epochs must be >= 1, got 0 (in all 2 jobs)"),
        ({"seed": "0"}, ["trainer.max_epochs=0"], "trainer.max_epochs must be >= 1, got 0"),
        # a swept value at fault names its job by that value alone
        ({"seed": "0,1", "trainer.max_epochs": "1,0"}, [], "job 1 (trainer.max_epochs=0): trainer.max_epochs must be >= 1, got 0"),
    ],
)
def test_a_config_error_names_the_setting_at_fault(tmp_path, params, fixed, message):
    from omegaconf import open_dict

    from pgsweep.errors import ConfigError

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"tracking.uri=sqlite:///{tmp_path}/m.db", *fixed], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.sweeper.params = params
            cfg.hydra.overrides.task = fixed
        with pytest.raises(ConfigError) as error:
            check_jobs(cfg)
    assert str(error.value) == message


def _has_ray_launcher() -> bool:
    try:
        import hydra_plugins.hydra_ray_launcher  # noqa: F401
    except ImportError:
        return False
    return True


def test_a_bad_sweep_value_stops_the_command_in_one_line(tmp_path):
    done = _pgsweep(tmp_path, "-m", "seed=0", "trainer.max_epochs=1,2,3,ten")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == ["pgsweep: error: job 3 (trainer.max_epochs=ten): trainer.max_epochs must be int, "
                      "got 'ten'"], done.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
    assert not (tmp_path / "multirun").exists()  # no job ran


def test_a_job_that_stops_the_process_leaves_the_parent_failed(tmp_path):
    # job 1's data folder is missing: the job exits 2 before its run starts, skipping Hydra's end hooks
    done = _pgsweep(tmp_path, "-m", "trainer.max_epochs=1", "data=folder",
                    f"data.root={REPO / 'no-such-folder'},{tmp_path / 'missing'}")
    assert done.returncode == 2
    parent, children = _parent_and_children(f"sqlite:///{tmp_path}/mlflow.db")
    assert parent.info.status == "FAILED" and children == []


@pytest.mark.slow
def test_an_interrupted_multirun_leaves_no_run_running(tmp_path):
    script = Path(sys.executable).with_name("pgsweep")
    process = subprocess.Popen(
        [str(script), "-m", "seed=0,1", "trainer.max_epochs=200", "trainer.progress_bar=false"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # wait for the first job to train; reading the new store meanwhile would race its creation
        for line in process.stdout:
            if "stage train" in line:
                break
        time.sleep(3)
        assert process.poll() is None, "the multirun ended before it was interrupted"
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert process.returncode != 0
    parent, children = _parent_and_children(uri)
    assert len(children) == 1  # the second job never started
    assert parent.info.status in ("FAILED", "KILLED")
    assert all(c.info.status in ("FAILED", "KILLED") for c in children)


def test_children_left_running_are_killed_and_the_parent_with_them(tmp_path):
    """A job whose process died (a Ray worker, kill -9) left its run RUNNING: the driver's
    exit handler ends it KILLED, and the parent KILLED, with the summary of what ran."""
    from dataclasses import replace

    from pgsweep.errors import ConfigError
    from pgsweep.tracking import TrackingSettings, finish_parent_run, start_parent_run, tracked_run
    from pgsweep.tracking.runs import _open_run

    settings = TrackingSettings(uri=f"sqlite:///{tmp_path}/mlflow.db")
    parent = start_parent_run(settings, {"pgsweep.multirun": "parent"}, {"multirun.jobs": 2})
    child = replace(settings, parent_run_id=parent)
    with tracked_run(child) as finished:
        finished.log_metrics({"final_test_error": 0.25})
    _, running = _open_run(child, {})  # its process is gone
    assert finish_parent_run(settings, parent, [], ended=False) == "KILLED"
    client = MlflowClient(settings.uri)
    assert client.get_run(running).info.status == "KILLED"
    assert client.get_run(finished.run_id).info.status == "FINISHED"
    assert client.get_run(parent).data.metrics["jobs_killed"] == 1
    summary = pd.read_parquet(client.download_artifacts(parent, "multirun/summary.parquet", str(tmp_path)))
    assert list(summary["status"]) == ["FINISHED", "KILLED"]
    with pytest.raises(ConfigError, match="no such run"):
        _open_run(replace(settings, parent_run_id="f" * 32), {})
    with pytest.raises(ConfigError, match="another experiment"):
        _open_run(replace(child, experiment="elsewhere"), {})


def test_a_report_that_fails_leaves_the_parent_failed_and_exits_1(tmp_path, capsys):
    """Hydra logs an exception of an end-of-multirun callback as a warning and exits 0; a report
    that fails must stop the command with one line and a non-zero status instead."""
    from omegaconf import OmegaConf

    from pgsweep.multirun import MultirunTracking
    from pgsweep.settings import TrackingSettings
    from pgsweep.tracking import start_parent_run

    tracking = TrackingSettings(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="reported")
    callback = MultirunTracking()
    callback._tracking, callback._open = tracking, True
    callback.parent_run_id = start_parent_run(tracking, tags={"pgsweep.multirun": "parent"}, params={})
    config = OmegaConf.create({"report": True, "report_rules": None, "hydra": {"sweep": {"dir": str(tmp_path / "m")}}})
    with pytest.raises(SystemExit) as stopped:
        callback.on_multirun_end(config)  # a parent without jobs: nothing to report on
    assert stopped.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pgsweep:")]
    assert len(lines) == 1 and lines[0].startswith(f"pgsweep: error: the report of parent run {callback.parent_run_id} failed: ")
    assert MlflowClient(tracking.uri).get_run(callback.parent_run_id).info.status == "FAILED"


def test_the_thesis_sweep_also_runs_as_one_job():
    """`pgsweep +sweep=thesis` without -m has no job number; its log lines say job 0 (the
    format's interpolation had failed with a traceback)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["+sweep=thesis"], return_hydra_config=True)
    assert cfg.hydra.job_logging.formatters.simple.format.startswith("[%(asctime)s][job 0]")
