"""The Hydra callback behind `pgsweep -m`: one MLflow parent run per multirun.

on_multirun_start composes every job's config, checks it with the pipeline's own
read_settings (a bad value in job 13 stops the multirun before job 1), and creates the
parent run; each job's run nests under it (on_job_start hands the id to the job through
PGSWEEP_PARENT_RUN_ID, which conf/tracking/default.yaml reads as tracking.parent_run_id;
the callback object travels with the job to a Ray worker, so this works there too).
on_multirun_end logs a summary table, a row per job, and ends the parent.

Jobs side by side on this machine (hydra/launcher=joblib, which sweeps/sweep/thesis.yaml
picks) each log from their own process; a local SQLite store takes one writer at a time,
so for their duration a local MLflow server fronts it (pgsweep.tracking.server) and
on_job_start points the job's clients at it. Launchers that run jobs elsewhere (Ray) need
a tracking server of the user's.

hydra-core 1.3.8 skips on_multirun_end when a job fails or the multirun is interrupted,
so an exit handler ends the parent instead (KILLED if a job was killed, else FAILED) and
ends any job run still RUNNING as KILLED, after stopping the local server. This module is
an entry point: Hydra is used here, MLflow only through pgsweep.tracking.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

PARENT_ENV = "PGSWEEP_PARENT_RUN_ID"
_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
# jobs in processes of this machine (loky workers): a local store can be served to them
_LOCAL_LAUNCHERS = ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",)

log = logging.getLogger(__name__)


def job_overrides(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, as the basic sweeper will launch them (command line wins)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)
    return batch


def check_jobs(config: DictConfig, jobs: list[list[str]] | None = None) -> list:
    """Compose and check every job's config before any job runs; returns their Settings.

    jobs: each job's overrides, when the caller has them already (job_overrides).
    Raises ConfigError naming the first bad job and its problem.
    """
    from pgsweep.config import override_keys
    from pgsweep.errors import ConfigError, PgsweepError
    from pgsweep.pipeline import beside_model, read_settings

    loader = GlobalHydra.instance().config_loader()
    jobs = job_overrides(config) if jobs is None else jobs
    settings, failures, origins = [], [], {}
    for number, overrides in enumerate(jobs):
        try:
            job = read_settings(loader.load_sweep_config(config, list(overrides)))
            # a query's run goes beside its model (unless the job names tracking.experiment)
            settings.append(beside_model(job, override_keys(overrides), origins)[0])
        except PgsweepError as error:
            failures.append((number, str(error)))
        except Exception as error:  # Hydra's own composition errors: a key not in the config ...
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            failures.append((number, message))
    if failures:
        raise ConfigError(_failure_line(failures, jobs))
    trackings = {(s.tracking.uri, s.tracking.experiment) for s in settings}
    if len(trackings) > 1:
        raise ConfigError("tracking.uri and tracking.experiment must be the same for every job of a multirun "
                          "(jobs querying models of different experiments: set tracking.experiment=NAME)")
    launcher = config.hydra.launcher._target_
    if settings and launcher != _BASIC_LAUNCHER and launcher not in _LOCAL_LAUNCHERS \
            and not settings[0].tracking.is_server:
        # jobs on other machines (Ray workers) cannot reach a local store, nor all write it at once
        raise ConfigError(
            f"hydra/launcher={launcher.rsplit('.', 1)[-1]} runs jobs in other processes, maybe on "
            f"other machines, which log themselves: set tracking.uri=http://HOST:PORT (an MLflow "
            f"server); '{settings[0].tracking.uri}' takes one writer at a time (hydra/launcher=joblib "
            f"runs jobs side by side on this machine with it)"
        )
    return settings


def needs_local_server(config: DictConfig, tracking) -> bool:
    """Jobs side by side on this machine logging to a store that is not a server."""
    return config.hydra.launcher._target_ in _LOCAL_LAUNCHERS and not tracking.is_server


def _failure_line(failures: list[tuple[int, str]], jobs: list[list[str]]) -> str:
    """One line naming the setting at fault: the first bad job by the swept value its error
    names, or, when every job fails alike on a value they share, just that setting."""
    import re

    from pgsweep.config import override_key

    number, message = failures[0]
    swept = swept_keys(jobs)
    named = [o for o in jobs[number] if override_key(o) in swept
             and re.search(rf"(?<![\w.]){re.escape(override_key(o))}(?!\w)", message)]
    if not named and len(failures) == len(jobs) and len({m for _, m in failures}) == 1:
        return message if len(jobs) == 1 else f"{message} (in all {len(jobs)} jobs)"
    shown = named or [o for o in jobs[number] if override_key(o) in swept] or jobs[number]
    return f"job {number} ({' '.join(shown)}): {message}"


def swept_keys(jobs: list[list[str]]) -> list[str]:
    """The config keys whose value differs between jobs (the summary table's columns)."""
    from pgsweep.config import override_key

    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for override in overrides:
            values.setdefault(override_key(override), set()).add(override.partition("=")[2])
    return [key for key, seen in values.items() if len(seen) > 1]


def parent_provenance() -> dict[str, str]:
    """The code the jobs run (pgsweep.code, version, git commit, libraries) as the parent's tags;
    not a device or thread count, which are each job's (and would import torch here)."""
    from pgsweep.provenance import run_facts
    from pgsweep.tracking import provenance_tags

    return provenance_tags(run_facts(this_process=False))


class MultirunTracking(Callback):
    """Nests a multirun's job runs under one MLflow parent run (see the module docstring)."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self._tracking = None
        self._swept: list[str] = []
        self._open = False
        self._server = None  # the local MLflow server in front of the store (driver only)
        # what each job's process needs to reach it (None: unset, as for a job without one)
        self._job_environment: dict[str, str | None] = {}

    def __getstate__(self) -> dict:
        # the callback travels with each job to its worker process; the server stays with the driver
        return {**self.__dict__, "_server": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pgsweep.errors import PgsweepError
        from pgsweep.tracking import start_parent_run

        try:
            if config.hydra.sweeper._target_ != _BASIC_SWEEPER:
                log.warning("sweeper %s: job configs are checked as each job starts", config.hydra.sweeper._target_)
                return
            jobs = job_overrides(config)
            settings = check_jobs(config, jobs)
            if not settings:
                return
            if config.get("report"):  # a malformed rule stops the multirun before job 1, not after job 10
                from omegaconf import OmegaConf

                from pgsweep.report.rules import load_rules

                rules = config.get("report_rules")
                load_rules(base=OmegaConf.to_container(rules, resolve=True) if rules is not None else None)
            self._tracking = settings[0].tracking
            self._swept = swept_keys(jobs)
            self.parent_run_id = start_parent_run(
                self._tracking,
                tags={"pgsweep.multirun": "parent", "pgsweep.sweep_dir": str(config.hydra.sweep.dir),
                      **parent_provenance()},
                params={"multirun.jobs": len(jobs), "multirun.swept": ",".join(self._swept),
                        "multirun.overrides": " ".join(config.hydra.overrides.task)},
            )
        except PgsweepError as error:
            print(f"pgsweep: error: {error}", file=sys.stderr)
            sys.exit(2)
        self._open = True
        atexit.register(self._finish, ended=False)
        if config.hydra.launcher._target_ == _BASIC_LAUNCHER:  # jobs in this process share one local Ray
            from pgsweep.sweep.runner import keep_ray_between_jobs

            keep_ray_between_jobs()
        log.info("multirun of %d jobs: MLflow parent run %s", len(jobs), self.parent_run_id)
        from pgsweep.tracking.server import SERVER_ENV

        self._job_environment = {SERVER_ENV: None}  # a worker kept from an earlier multirun: not its server
        if needs_local_server(config, self._tracking):
            self._serve(config)

    def _serve(self, config: DictConfig) -> None:
        """Start the local MLflow server the jobs log through (the parent already made the store)."""
        from pathlib import Path

        from pgsweep.errors import PgsweepError
        from pgsweep.tracking.server import LocalServer
        from pgsweep.tracking.store import local_db_path

        db = local_db_path(self._tracking.uri)
        artifacts = self._tracking.artifact_location or str(db.parent / "mlartifacts" if db else "mlartifacts")
        try:
            self._server = LocalServer(self._tracking.uri, artifacts,
                                       Path(str(config.hydra.sweep.dir), "mlflow-server.log"))
        except (PgsweepError, OSError) as error:  # Hydra would only warn and start the jobs without it
            print(f"pgsweep: error: {error}", file=sys.stderr)
            sys.exit(2)  # the parent ends FAILED at exit
        self._job_environment = self._server.environment
        log.info("jobs log to %s through a local MLflow server, %s (pid %d)",
                 self._tracking.uri, self._server.url, self._server.process.pid)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # in the job's process: this one (basic launcher) or a worker (joblib, Ray)
        if self.parent_run_id is not None:
            os.environ[PARENT_ENV] = self.parent_run_id
        for name, value in self._job_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._stop_server()  # every job is over: the driver alone writes the report and the summary
        if self._open and config.get("report"):  # a failing report leaves the parent FAILED (at exit)
            from omegaconf import OmegaConf

            from pgsweep.report import report_multirun

            rules = config.get("report_rules")  # sweeps/sweep/thesis.yaml: conf/report_rules/default.yaml
            try:
                report_multirun(self._tracking, self.parent_run_id, config.hydra.sweep.dir,
                                rules=OmegaConf.to_container(rules, resolve=True) if rules is not None else None)
            except Exception as error:  # Hydra would log a callback's exception as a warning and exit 0
                self._finish(ended=False)  # the parent: FAILED
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                print(f"pgsweep: error: the report of parent run {self.parent_run_id} failed: {first}",
                      file=sys.stderr)
                sys.exit(1)  # SystemExit passes through Hydra's callback guard
        self._finish(ended=True)

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            log.info("local MLflow server stopped")

    def _finish(self, ended: bool) -> None:
        self._stop_server()
        if not self._open:
            return
        self._open = False
        from pgsweep.tracking import finish_parent_run

        status = finish_parent_run(self._tracking, self.parent_run_id, self._swept, ended)
        log.info("MLflow parent run %s: %s", self.parent_run_id, status)
