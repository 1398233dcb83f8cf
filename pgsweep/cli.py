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
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pgsweep.config import override_keys
from pgsweep.errors import Interrupted, PgsweepError
from pgsweep.logs import held_until_run_starts


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


# One line each for `pgsweep --help`, in the order a full pipeline runs them (train first,
# the default stages' order, prune last); the list itself is the pipeline's STAGES.
STAGE_HELP = {
    "train": "fit the model (Lightning, SGD); log curves, final errors, misclassified images, the model",
    "evaluate": "error of a trained model on its train/val/test images, and which images it gets wrong",
    "rank": "class-averaged PG per conv filter, strongest and weakest per class (thesis Table 4.2)",
    "knockout": "error as filters are zeroed in order of each score, with baselines (Figures 4.1, 4.2)",
    "diagrams": "per-image PG per filter, drawn as the network beside the image (Table 4.1)",
    "features": "the filter and position with the highest PG, own class and look-alike (Figures 4.3, 4.4)",
    "adversarial": "perturb every test image toward every class along d y_t / d x, on Ray (4.4, Figures 4.5-4.7)",
    "prune": "remove the lowest-scored filters (PG, Taylor, magnitude, random ...), fine-tune, compare, on Ray",
}


def _stage_lines() -> str:
    from pgsweep.pipeline import STAGES  # torch-free: what config checks use too

    ordered = [name for name in STAGE_HELP if name in STAGES] + [name for name in STAGES if name not in STAGE_HELP]
    width = max(map(len, ordered))
    return "\n".join(f"{name:<{width}}  {STAGE_HELP.get(name, '(see the documentation)')}" for name in ordered)


def _listed(values) -> str:
    return "[" + ",".join(map(str, values)) + "]"


def sweep_description(text: str) -> str:
    """A sweep file's first sentence: its leading comment lines (after `# @package`) joined
    until one ends a sentence, so a line that wraps (ends with a colon or mid-phrase) is not cut."""
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#") or "@package" in line:
            if words:
                break
            continue
        words.append(line[1:].strip())
        if words[-1].endswith((".", "?", "!")):
            break
    return " ".join(words)


def _sweep_lines() -> str:
    """Each shipped sweep and the first sentence of its description."""
    lines = []
    files = sorted(Path(sweeps_dir(), "sweep").glob("*.yaml"))
    width = max((len(f.stem) for f in files), default=0)
    for file in files:
        lines.append(f"{file.stem:<{width}}  {sweep_description(file.read_text())}")
    return "\n".join(lines)


OmegaConf.register_new_resolver("pgsweep.sweeps_dir", sweeps_dir, replace=True)
OmegaConf.register_new_resolver("pgsweep.stages", _stage_lines, replace=True)
OmegaConf.register_new_resolver("pgsweep.listed", _listed, replace=True)
OmegaConf.register_new_resolver("pgsweep.sweeps", _sweep_lines, replace=True)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _main(cfg: DictConfig) -> None:
    from pgsweep.pipeline import run_pipeline

    with held_until_run_starts() as held:
        try:
            # what the user typed wins over what a queried model records (its data)
            run_pipeline(cfg, chosen=override_keys(HydraConfig.get().overrides.task))
        except PgsweepError as error:
            logging.getLogger("pgsweep").debug("failed", exc_info=True)
            print(f"pgsweep: error: {error}", file=sys.stderr)
            if not held.released:  # rejected before its run: nothing of it is worth keeping
                remove_unused_output_dir()
            sys.exit(2)


def remove_unused_output_dir() -> None:
    """Remove the run's outputs/DATE/TIME/ if it holds nothing but Hydra's record of the
    command (.hydra/*.yaml and the job's log), and the folders above it (in the working
    directory) that this leaves empty.

    Hydra makes it before the job starts. A folder holding anything else, a multirun's
    job folders, and the working directory itself are left alone.
    """
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.RUN or not hydra_config.runtime.output_dir:
        return
    folder = Path(hydra_config.runtime.output_dir).resolve()
    here = Path.cwd().resolve()
    if folder == here or folder in here.parents:
        return
    record = {folder / f"{hydra_config.job.name}.log"}
    if hydra_config.output_subdir:
        record |= {folder / hydra_config.output_subdir / f"{name}.yaml" for name in ("config", "hydra", "overrides")}
    if not folder.is_dir():
        return
    contents = list(folder.rglob("*"))
    if not {p for p in contents if not p.is_dir()} <= record:
        return
    for path in sorted(contents, key=lambda p: len(p.parts), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()
    for parent in folder.parents:  # outputs/DATE/, outputs/ when they hold nothing else
        if parent == here or here not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()


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
