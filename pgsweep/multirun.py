"""The Hydra callback behind `pgsweep -m`: one MLflow parent run per multirun.

on_multirun_start composes every job's config, checks it with the pipeline's own
read_settings (a bad value in job 13 stops the multirun before job 1), and creates the
parent run; each job's run nests under it (on_job_start hands the id to the job through
PGSWEEP_PARENT_RUN_ID, which conf/tracking/default.yaml reads as tracking.parent_run_id;
the callback object travels with the job to a Ray worker, so this works there too).
on_multirun_end logs a summary table, a row per job, and ends the parent.

hydra-core 1.3.8 skips on_multirun_end when a job fails or the multirun is interrupted,
so an exit handler ends the parent instead (KILLED if a job was killed, else FAILED) and
ends any job run still RUNNING as KILLED. This module is an entry point: Hydra is used
here, MLflow only through pgsweep.tracking.
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
    if settings and config.hydra.launcher._target_ != _BASIC_LAUNCHER and not settings[0].tracking.is_server:
        # jobs in other processes (Ray workers) would all write one SQLite file at once
        raise ConfigError(
            f"hydra/launcher={config.hydra.launcher._target_.rsplit('.', 1)[-1]} runs jobs in other "
            f"processes, which log themselves: set tracking.uri=http://HOST:PORT (an MLflow server); "
            f"'{settings[0].tracking.uri}' takes one writer at a time"
        )
    return settings


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


class MultirunTracking(Callback):
    """Nests a multirun's job runs under one MLflow parent run (see the module docstring)."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self._tracking = None
        self._swept: list[str] = []
        self._open = False

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
                tags={"pgsweep.multirun": "parent", "pgsweep.sweep_dir": str(config.hydra.sweep.dir)},
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

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id is not None:
            os.environ[PARENT_ENV] = self.parent_run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._open and config.get("report"):  # a failing report leaves the parent FAILED (at exit)
            from omegaconf import OmegaConf

            from pgsweep.report import report_multirun

            rules = config.get("report_rules")  # sweeps/sweep/thesis.yaml: conf/report/default.yaml
            report_multirun(self._tracking, self.parent_run_id, config.hydra.sweep.dir,
                            rules=OmegaConf.to_container(rules, resolve=True) if rules is not None else None)
        self._finish(ended=True)

    def _finish(self, ended: bool) -> None:
        if not self._open:
            return
        self._open = False
        from pgsweep.tracking import finish_parent_run

        status = finish_parent_run(self._tracking, self.parent_run_id, self._swept, ended)
        log.info("MLflow parent run %s: %s", self.parent_run_id, status)
