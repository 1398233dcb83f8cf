"""The repository around the code: the Makefile's set-up, ignored files, what the README states."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
DOCS = {page.relative_to(REPO).as_posix(): page.read_text() for page in sorted((REPO / "docs").rglob("*.md"))}


def _other_python() -> str | None:
    """An installed Python that is not 3.11, if this machine has one."""
    candidates = [shutil.which(f"python3.{minor}") for minor in (12, 13, 10)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[023]*/bin/python3")))
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() != "(3, 11)":
            return candidate
    return None


def _make(folder: Path, *args: str) -> subprocess.CompletedProcess:
    # PIP_NO_INDEX: nothing is downloaded; the install itself is not what is tested here
    env = {**os.environ, "PIP_NO_INDEX": "1", "MAKEFLAGS": ""}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=folder, capture_output=True,
                          text=True, timeout=300, env=env)


def test_makefile_refuses_another_python_and_replaces_a_venv_made_with_one(tmp_path):
    other = _other_python()
    if other is None or shutil.which("make") is None:
        pytest.skip("needs make and a Python other than 3.11")
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")  # the install after the venv fails fast: no project
    refused = _make(tmp_path, ".venv/.installed", f"PYTHON={other}")
    assert refused.returncode != 0
    assert "is not Python 3.11, which pgsweep needs: pass PYTHON=python3.11" in refused.stderr
    assert not (tmp_path / ".venv").exists()

    # what an older Makefile left behind: a .venv from the wrong Python, never finished
    subprocess.run([other, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    python311 = shutil.which("python3.11") or "python3"
    again = _make(tmp_path, ".venv/.installed", f"PYTHON={python311}")
    assert ".venv is not a Python 3.11 environment: recreating it" in again.stdout, again.stdout + again.stderr
    version = subprocess.run([str(tmp_path / ".venv/bin/python"), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True)
    assert version.stdout.strip() == "(3, 11)"


def test_files_the_readmes_commands_create_are_ignored():
    stores = set(re.findall(r"sqlite:///([\w.-]+\.db)", README + "".join(DOCS.values())))
    assert {"mlflow.db", "server.db"} <= stores
    for name in [*sorted(stores), "mlartifacts/x", "outputs/x", "multirun/x"]:
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO)
        assert ignored.returncode == 0, f"{name} is not git-ignored"


def test_docs_state_the_bench_default_round_count():
    bench = (REPO / "benchmarks" / "bench_engine.py").read_text()
    default = re.search(r'"--rounds", type=int, default=(\d+)', bench).group(1)
    section = DOCS["docs/performance.md"].split("## The PG engine", 1)[1].split("##", 1)[0]
    assert re.findall(r"(\d+) rounds", section) == [default]


def test_make_ui_starts_one_small_server_on_loopback(tmp_path):
    """`make ui`'s own command: pgsweep's app (its UI opens experiments in the model-training
    view, tests/test_mlflow_ui.py), one uvicorn worker and no job runner (mlflow's defaults
    started 16 processes), on 127.0.0.1 only."""
    import signal
    import time
    import urllib.request

    import ray  # noqa: F401  (puts Ray's bundled psutil on the path)
    import psutil

    from pgsweep.mlflow_ui import default_view_script
    from servers import free_port

    port = free_port()
    dry = _make(REPO, "-n", "ui", f"PORT={port}")
    (line,) = [line for line in dry.stdout.splitlines() if "mlflow ui " in line]
    for part in ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false", "mlflow ui --app-name pgsweep ", "--workers 1",
                 "--host 127.0.0.1", f"--port {port}"):
        assert part in line, line
    # a plain link, no workflowType (it would pin that one page's view) and nothing to click first
    echoed = [line for line in dry.stdout.splitlines() if line.startswith("echo ")]
    assert echoed == [f'echo "MLflow UI: http://127.0.0.1:{port}/#/experiments (Ctrl-C stops it)"'], echoed

    command = line.replace(".venv/bin/", f"{REPO}/.venv/bin/")  # run where its mlflow.db may be made
    server = subprocess.Popen(command, shell=True, cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "mlflow ui did not start"
                time.sleep(0.5)
        tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        pythons = [p for p in tree if "python" in p.name()]
        assert len(pythons) <= 2, [" ".join(p.cmdline())[:80] for p in pythons]
        addresses = {c.laddr.ip for p in tree for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        assert addresses == {"127.0.0.1"}, addresses
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert default_view_script() in response.read().decode()  # pgsweep's app, not plain mlflow ui
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the group this test started
        server.wait(timeout=60)
