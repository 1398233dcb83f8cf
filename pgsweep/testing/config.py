"""Config sections as a user gets them: the shipped YAML's defaults, a few values changed.

The defaults live only in conf/ (not in the settings dataclasses), so tests build settings
from there, as the pipeline does.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from pgsweep.settings import PruneSettings, read_prune_config


def section_defaults(group: str, option: str = "default") -> dict:
    """conf/<group>/<option>.yaml as a plain dict."""
    from pgsweep.cli import config_dir

    return OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / group / f"{option}.yaml"), resolve=True)


def prune_settings(**overrides: object) -> PruneSettings:
    """conf/prune/default.yaml with `overrides`, checked like a command's `prune.*`."""
    return read_prune_config({**section_defaults("prune"), **overrides})
