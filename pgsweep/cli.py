"""`pgsweep`: the Hydra entry point. Composes the config and hands it to the pipeline.

Only Hydra is imported up front: the pipeline, and through it torch, Lightning and
MLflow, load when a job runs, so `--help` and Hydra's own config errors answer fast.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from pgsweep.config import override_keys
from pgsweep.errors import Interrupted, PgsweepError


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
    from pgsweep.pipeline import run_pipeline

    try:
        # what the user typed wins over what a queried model records (its data)
        run_pipeline(cfg, chosen=override_keys(HydraConfig.get().overrides.task))
    except PgsweepError as error:
        logging.getLogger("pgsweep").debug("failed", exc_info=True)
        print(f"pgsweep: error: {error}", file=sys.stderr)
        sys.exit(2)


def _raise_interrupted(signum: int, frame) -> None:
    # the first signal ends the command; repeats must not cut short marking the run KILLED
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise Interrupted wherever the command is (any stage, any job)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def hydra_error_line(error: HydraException) -> str:
    """Hydra's multi-line message for a mistyped key or option, as one line."""
    if isinstance(error, MissingConfigException) and error.options:
        first = str(error).splitlines()[0].strip()
        return f"{first}; available: {', '.join(error.options)}"
    # the message up to its first blank line (after it: search paths, hints about tracebacks)
    lines = []
    for line in str(error).splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    if isinstance(error, OverrideParseException):  # the message does not say which override
        lines.insert(0, f"cannot parse override '{error.override}':")
    cause = str(error.__cause__).splitlines()[0].strip() if error.__cause__ and str(error.__cause__) else ""
    return " ".join(lines) + (f" ({cause})" if cause else "")


def main() -> None:
    # Hydra prints its own errors over several lines and exits 1; asked to raise them
    # instead, it lets a mistyped key get pgsweep's one line and status 2 like any other.
    user_wants_tracebacks = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    with signals_interrupt():
        try:
            _main()
        except HydraException as error:
            if user_wants_tracebacks:
                raise
            print(f"pgsweep: error: {hydra_error_line(error)}", file=sys.stderr)
            sys.exit(2)
        except (Interrupted, KeyboardInterrupt) as stop:
            if not isinstance(stop, Interrupted):
                stop = Interrupted(signal.SIGINT)
            print(f"pgsweep: {stop}; stopped (an MLflow run in progress is marked KILLED)", file=sys.stderr)
            sys.exit(stop.exit_status)
        except BrokenPipeError:
            # the reader went away (`pgsweep --help | head`): not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)


if __name__ == "__main__":
    main()
