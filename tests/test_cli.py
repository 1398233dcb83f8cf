"""The `pgsweep` command as a user meets it: start-up, interrupts, exit status, output."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

HEAVY = {"torch", "pytorch_lightning", "lightning", "lightning_fabric", "mlflow", "ray", "torch_pruning"}


def _command() -> list[str]:
    script = Path(sys.executable).with_name("pgsweep")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pgsweep"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=_env())


def _runs(db: Path) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


# ---------------------------------------------------------------- start-up

_PROBE = """
import sys
from pgsweep.cli import main
sys.argv = ["pgsweep", *sys.argv[1:]]
try:
    main()
except SystemExit as stop:
    print("EXIT", stop.code)
print("HEAVY", sorted({m.split(".")[0] for m in sys.modules} & %r))
""" % HEAVY


@pytest.mark.parametrize(
    "args, status",
    [
        (["--help"], 0),
        (["trainer.max_epochs=0"], 2),  # pgsweep's own config check
        (["stages=[evaluate]"], 2),  # a query without model_ref
        (["trainer.max_epoch=5"], 2),  # found by Hydra: a mistyped key
        (["analysis.norm=l3"], 2),  # a stage's own config section
        (["stages=[train,prune]", "prune.final_fraction=1.5"], 2),  # prune's section: no torch_pruning either
        (["adversarial.step_kind=bad"], 2),
    ],
)
def test_help_and_config_errors_import_no_heavy_library(tmp_path, args, status):
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=_env())
    lines = done.stdout.splitlines()
    assert f"EXIT {status}" in lines, done.stdout + done.stderr
    assert lines[-1] == "HEAVY []", done.stdout
    assert list(tmp_path.iterdir()) == []  # no store, and no outputs/DATE/TIME/ of a rejected command


def test_help_lists_the_stages_groups_sweeps_and_model_ref(tmp_path):
    from pgsweep.pipeline import STAGES

    done = _run(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    sections = {}
    for block in done.stdout.split("\n== ")[1:]:
        title, _, body = block.partition(" ==\n")
        sections[title.split(":")[0]] = body
    listed = {line.split()[0] for line in sections["Stages"].splitlines() if line.strip()}
    assert listed == set(STAGES)
    assert "stages=[train,rank,knockout,diagrams,features,adversarial]" in done.stdout
    sweeps = {p.stem for p in (Path(__file__).resolve().parents[1] / "sweeps" / "sweep").glob("*.yaml")}
    assert {line.split()[0] for line in sections["Shipped sweeps"].splitlines() if line.strip()} == sweeps
    assert "data: digits, folder, yale" in sections["Config groups"]
    assert "model_ref names a model trained earlier" in sections["model_ref"]
    assert list(tmp_path.iterdir()) == []


def test_every_top_level_setting_can_be_set_on_the_command_line(compose_config):
    """A top-level key that shares its name with a config group (conf/NAME/) is read by Hydra
    as a group choice: `report=true` failed with a traceback while the rules were conf/report/."""
    from omegaconf import OmegaConf

    from pgsweep.cli import config_dir

    top = OmegaConf.load(Path(config_dir()) / "config.yaml")
    scalars = {key: value for key, value in top.items() if key not in ("defaults", "hydra")
               and not OmegaConf.is_config(value)}
    assert {"seed", "report", "threads", "recompute"} <= set(scalars)  # a loop over nothing cannot pass
    for key, value in scalars.items():
        given = {True: "false", False: "true"}.get(value) if isinstance(value, bool) else \
            str(value + 1) if isinstance(value, int) else "another"
        assert str(compose_config(f"{key}={given}")[key]).lower() == given, key


def _model_file(folder: Path) -> Path:
    """A digits thesis convnet with random weights, recording the default digits split as its data."""
    from pgsweep.context import data_provenance
    from pgsweep.data import load_dataset, stratified_split
    from pgsweep.models.checkpoint import TrainedModel
    from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet
    from pgsweep.settings import DataSettings

    data = DataSettings(val_fraction=0.1)
    images = load_dataset(data.name, data.root, data.image_size)
    split = stratified_split(images.labels.numpy(), images.content_ids, images.class_names, data.test_fraction,
                             data.val_fraction, data.split_seed, data.group_duplicates)
    model = TrainedModel(ThesisConvNet(ConvNetSpec(num_classes=10)), images.class_names,
                         data_provenance(data, images, split))
    return model.save(folder / "model" / "pgsweep-model.pt")


@pytest.mark.parametrize("args", [
    ["stages=[knockout]", "analysis.knockout.classes=[eleven]"],  # found after the data and model load
    ["stages=[train]", "trainer.accelerator=gpu"],  # found by the trainer's own check
])
def test_input_rejected_after_loading_is_one_line_and_leaves_no_folder(tmp_path, args):
    import torch

    if "trainer.accelerator=gpu" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: trainer.accelerator=gpu is not an error here")
    workdir = tmp_path / "work"
    workdir.mkdir()
    if "stages=[knockout]" in args:
        args = [*args, f"model_ref={_model_file(tmp_path)}"]
    done = _run(workdir, *args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stdout + done.stderr
    assert done.stderr.startswith("pgsweep: error: ")
    assert list(workdir.iterdir()) == []  # neither a store nor Hydra's outputs/DATE/TIME/


def test_a_rejected_command_keeps_an_output_folder_holding_anything_else(tmp_path):
    """Only Hydra's own record of the command is removed, never a file someone else put there."""
    folder = tmp_path / "outputs" / "run"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    done = _run(tmp_path, "trainer.max_epochs=0", "hydra.run.dir=outputs/run")
    assert done.returncode == 2
    assert (folder / "notes.txt").read_text() == "mine" and (folder / ".hydra" / "config.yaml").exists()
    plain = _run(tmp_path, "trainer.max_epochs=0", "hydra.run.dir=outputs/other")
    assert plain.returncode == 2 and sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["run"]


# ---------------------------------------------------------------- interrupts

def _logged_epochs(db: Path) -> int:
    """Epochs of train_loss in the store so far, read-only (never creates the file)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT count(*) FROM metrics WHERE key = 'train_loss'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _start_and_signal(tmp_path: Path, signum: int, *args: str) -> tuple[int, str]:
    """Start pgsweep, send `signum` once it has logged an epoch, return (status, stderr)."""
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        process = subprocess.Popen([*_command(), *args], cwd=tmp_path, stdout=out, stderr=err, env=_env())
        try:
            deadline = time.time() + 300
            while _logged_epochs(tmp_path / "mlflow.db") < 1:
                assert process.poll() is None, (tmp_path / "err.txt").read_text()
                assert time.time() < deadline, "training never logged an epoch"
                time.sleep(0.2)
            process.send_signal(signum)
            status = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    return status, (tmp_path / "err.txt").read_text()


def test_ctrl_c_during_training_marks_the_run_killed_and_exits_130(tmp_path):
    status, stderr = _start_and_signal(tmp_path, signal.SIGINT, "trainer.max_epochs=300", "stages=[train]")
    assert status == 130, stderr
    assert [line for line in stderr.splitlines() if line.startswith("pgsweep:")] == [
        "pgsweep: interrupted by SIGINT; stopped (an MLflow run in progress is marked KILLED)"
    ], stderr
    assert "Traceback" not in stderr
    # one line on the terminal (stdout and stderr), not a tracking warning before it
    terminal = (tmp_path / "out.txt").read_text() + stderr
    assert [line for line in terminal.splitlines() if "interrupted" in line.lower() or "KILLED" in line] == [
        "pgsweep: interrupted by SIGINT; stopped (an MLflow run in progress is marked KILLED)"], terminal
    (run,) = _runs(tmp_path / "mlflow.db")
    assert run.info.status == "KILLED"


def test_sigterm_stops_a_multirun_with_143_and_the_run_killed(tmp_path):
    status, stderr = _start_and_signal(
        tmp_path, signal.SIGTERM, "-m", "seed=0,1", "trainer.max_epochs=300", "stages=[train]"
    )
    assert status == 143, stderr
    assert "pgsweep: interrupted by SIGTERM" in stderr
    runs = _runs(tmp_path / "mlflow.db")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (job,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert job.info.status == "KILLED"  # the second job never started
    assert parent.info.status == "KILLED"  # the multirun's parent run ends with it


# ---------------------------------------------------------------- the README's commands

def test_readme_yale_train_then_evaluate_quietly(tmp_path, yale_root):
    """`pgsweep experiment=thesis_yale data.root=...` then `pgsweep stages=[evaluate] model_ref=RUN_ID`."""
    trained = _run(tmp_path, "experiment=thesis_yale", f"data.root={yale_root}", "trainer.max_epochs=2")
    assert trained.returncode == 0, trained.stderr
    output = trained.stdout + trained.stderr
    assert "Epoch 0" not in output  # no progress bar into a pipe
    assert "Creating initial MLflow database tables" not in output
    (run,) = _runs(tmp_path / "mlflow.db")

    queried = _run(tmp_path, "stages=[evaluate]", f"model_ref={run.info.run_id}")
    assert queried.returncode == 0, queried.stderr
    assert "Downloading artifacts" not in queried.stdout + queried.stderr
    evaluation = next(r for r in _runs(tmp_path / "mlflow.db") if r.info.run_id != run.info.run_id)
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.params["data.name"] == "yale"
    assert evaluation.data.params["split.test"] == "41" and evaluation.data.params["split.source"] == "model"
    assert evaluation.data.metrics["eval_test_misclassified"] == run.data.metrics["final_test_misclassified"]
