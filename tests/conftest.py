"""Shared fixtures: the real Yale copy, generated Yale-style folders, composed configs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from pgsweep.cli import config_dir

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: more intra-op threads than cores makes OpenMP spin
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the console-script subprocesses

# Tests talk only to loopback. Ray turns 127.0.0.1 into the machine's own address unless
# it believes multi-node clusters are off; then every local node (ray.cluster_utils too)
# listens and connects on 127.0.0.1. Set before anything imports ray; subprocesses inherit it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parents[1]
YALE_ROOT = Path(os.environ.get("PGSWEEP_YALE_ROOT", REPO.parent / "shared" / "data" / "yalefaces"))


@pytest.fixture(scope="session")
def yale_root() -> Path:
    """The real Yale faces (../shared/data/yalefaces). CI sets PGSWEEP_REQUIRE_YALE=1,
    so there a missing copy fails instead of skipping."""
    if not (YALE_ROOT / "subject01.happy").exists():
        if os.environ.get("PGSWEEP_REQUIRE_YALE"):
            pytest.fail(f"Yale faces not found at {YALE_ROOT}")
        pytest.skip(f"Yale faces not found at {YALE_ROOT} (set PGSWEEP_YALE_ROOT)")
    return YALE_ROOT


def write_gif(path: Path, seed: int, size: tuple[int, int] = (32, 24)) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path, format="GIF")


@pytest.fixture
def yale_like(tmp_path: Path):
    """Write a small folder in the Yale naming: 3 subjects x 4 conditions, GIF bytes."""

    def make(names: list[str] | None = None, *, suffix: str = "") -> Path:
        root = tmp_path / f"yale{random.randrange(10**9)}"
        root.mkdir()
        if names is None:
            names = [
                f"subject{s:02d}.{c}"
                for s in (1, 2, 3)
                for c in ("happy", "sad", "normal", "wink")
            ]
        for seed, name in enumerate(names):
            write_gif(root / f"{name}{suffix}", seed)
        return root

    return make


@pytest.fixture
def compose_config(tmp_path: Path):
    """Compose the real config tree with overrides, tracking into a temp SQLite store."""

    def make(*overrides: str):
        # only `train` unless a test picks its stages: the default list also runs the analyses
        stages = [] if any(o.startswith("stages=") for o in overrides) else ["stages=[train]"]
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(
                config_name="config",
                overrides=[
                    f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                    "trainer.progress_bar=false",
                    *stages,
                    *overrides,
                ],
            )

    return make


def train_digits(folder: Path, *overrides: str):
    """Train on the digits for 1 epoch into a SQLite store in `folder` and save the model file
    beside it; returns (tracking uri, the pipeline's result, the model file's path)."""
    from pgsweep.pipeline import run_pipeline

    uri = f"sqlite:///{folder}/mlflow.db"
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"tracking.uri={uri}", "trainer.progress_bar=false",
                                           "trainer.max_epochs=1", "stages=[train]", *overrides])
    result = run_pipeline(cfg)
    path = folder / "pgsweep-model.pt"
    result.model.save(path)
    return uri, result, path


@pytest.fixture(autouse=True)
def _no_tracking_environment_leaks():
    """A test that leaves MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_ID or PGSWEEP_PARENT_RUN_ID in
    os.environ sends every later subprocess of its worker (a pgsweep command) to its own store:
    fail it, naming the variable, and put the environment back."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "PGSWEEP_PARENT_RUN_ID")
    before = {name: os.environ.get(name) for name in names}
    yield
    leaked = [name for name in names if os.environ.get(name) != before[name]]
    for name in leaked:
        if before[name] is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before[name]
    assert not leaked, f"the test left {', '.join(leaked)} changed in os.environ"
