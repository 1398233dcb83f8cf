"""The config's plain dataclasses: data, trainer and tracking settings.

Kept free of heavy imports (no torch, Lightning, MLflow or Ray), so that reading and
checking a config answers in a fraction of a second; the modules that use them
(pgsweep.train, pgsweep.tracking) re-export them.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass

from pgsweep.errors import ConfigError


@dataclass(frozen=True)
class DataSettings:
    name: str = "digits"
    root: str | None = None
    image_size: int = 60
    test_fraction: float = 0.25
    val_fraction: float = 0.0
    group_duplicates: bool = True
    split_seed: int = 0


_PROGRESS_BAR = {"auto": None, "true": True, "false": False}


@dataclass(frozen=True)
class TrainSettings:
    max_epochs: int = 250
    batch_size: int = 16
    learning_rate: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    accelerator: str = "cpu"
    # auto: only when the bar's stream (stdout) is a terminal, not into a log file or pipe
    progress_bar: str = "auto"

    def validate(self) -> None:
        if self.max_epochs < 1:
            raise ConfigError(f"trainer.max_epochs must be >= 1, got {self.max_epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"trainer.batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"trainer.learning_rate must be a finite number > 0, got {self.learning_rate}")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"trainer.{name} must be a finite number >= 0, got {value}")
        if self.accelerator not in ("cpu", "gpu", "cuda", "auto"):
            raise ConfigError(f"trainer.accelerator must be cpu, gpu or auto, got '{self.accelerator}'")
        if str(self.progress_bar).lower() not in _PROGRESS_BAR:
            raise ConfigError(f"trainer.progress_bar must be auto, true or false, got '{self.progress_bar}'")

    def show_progress_bar(self) -> bool:
        choice = _PROGRESS_BAR[str(self.progress_bar).lower()]
        return sys.stdout.isatty() if choice is None else choice


@dataclass(frozen=True)
class TrackingSettings:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "pgsweep"
    artifact_location: str | None = None  # default: mlartifacts/ beside a local SQLite store
    run_name: str | None = None
    # A multirun's parent: each job's run nests under it (set by pgsweep.multirun)
    parent_run_id: str | None = None

    def validate(self) -> None:
        if not self.uri or "://" not in self.uri and not self.uri.startswith("databricks"):
            raise ConfigError(
                f"tracking.uri '{self.uri}' is not a URI; use sqlite:///PATH.db or http://HOST:PORT"
            )
        if not self.experiment:
            raise ConfigError("tracking.experiment must be a non-empty name")
        if self.parent_run_id is not None and not re.fullmatch(r"[0-9a-f]{32}", self.parent_run_id):
            raise ConfigError(f"tracking.parent_run_id '{self.parent_run_id}' is not an MLflow run id")

    @property
    def is_server(self) -> bool:
        """Many processes may log at once only to a tracking server, not to a local SQLite file."""
        return self.uri.startswith(("http://", "https://"))
