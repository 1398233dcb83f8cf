"""`pgsweep`: the Hydra entry point. Composes the config and hands it to the pipeline."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from pgsweep.errors import PgsweepError
from pgsweep.pipeline import run_pipeline


def config_dir() -> str:
    """conf/ inside an installed wheel, or the source tree's top-level conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    source = Path(__file__).resolve().parent.parent / "conf"
    return str(packaged if packaged.is_dir() else source)


def sweeps_dir() -> str:
    """sweeps/ inside an installed wheel, or the source tree's top-level sweeps/.

    It is a Hydra search-path root (conf/config.yaml names it through this resolver)
    whose `sweep` group holds the multirun definitions: `pgsweep -m +sweep=NAME`.
    """
    packaged = Path(__file__).resolve().parent / "sweeps"
    source = Path(__file__).resolve().parent.parent / "sweeps"
    return str(packaged if packaged.is_dir() else source)


OmegaConf.register_new_resolver("pgsweep.sweeps_dir", sweeps_dir, replace=True)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _main(cfg: DictConfig) -> None:
    try:
        run_pipeline(cfg)
    except PgsweepError as error:
        logging.getLogger("pgsweep").debug("failed", exc_info=True)
        print(f"pgsweep: error: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
