"""A local MLflow server in front of a store that takes one writer at a time.

A multirun whose jobs run side by side on this machine (hydra/launcher=joblib) has many
processes logging at once; a local SQLite store takes one writer at a time. So the
driver starts `mlflow server` on loopback, on a free port, with one worker, in front of
the same store, and each job's clients talk to it (served_uri): its runs, metrics and
params land in the same SQLite file, and its artifacts, written by the job itself, where
they land without the server (mlartifacts/ beside the file, or the experiment's own
location). The server runs in a session of its own, so a Ctrl-C meant for the jobs does
not stop it before they have marked their runs; the driver stops it when the jobs are over.

Only the `mlflow` command is run here; this module imports no MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pgsweep.errors import ConfigError

log = logging.getLogger(__package__)

# Set in each job's process (pgsweep.multirun): {"store": URI, "server": URL}
SERVER_ENV = "PGSWEEP_STORE_SERVER"
START_SECONDS = 180  # a cold start on a loaded machine takes tens of seconds


def _same_store(uri: str) -> str:
    """A store URI in one spelling: a SQLite file by its absolute path (jobs share the driver's
    working directory, so sqlite:///mlflow.db and sqlite:////abs/mlflow.db are the same file)."""
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).expanduser().resolve())
    return uri


def served_uri(uri: str) -> str:
    """The URI a client of `uri` talks to: the local server in front of that store while a
    multirun's jobs run side by side, else `uri` itself."""
    served = os.environ.get(SERVER_ENV)
    if not served or uri.startswith(("http://", "https://")):
        return uri
    served = json.loads(served)
    return served["server"] if _same_store(uri) == served["store"] else uri


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    """True once the tracking API answers (not just /health: the store is open)."""
    try:
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10) as reply:
            reply.read()
        return True
    except (urllib.error.URLError, OSError):
        return False


class LocalServer:
    """`mlflow server` on 127.0.0.1 in front of `store`; stop() ends it and every process it started.

    artifact_root: where runs of experiments the server creates keep their artifacts (a
    folder or a URI); the experiments pgsweep creates name their own location.
    """

    def __init__(self, store: str, artifact_root: str, log_file: Path) -> None:
        self.store = _same_store(store)
        self.log_file = log_file
        self.process: subprocess.Popen | None = None
        self.url = ""
        root = artifact_root if "://" in artifact_root else Path(artifact_root).expanduser().resolve().as_uri()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            for _ in range(3):  # a port taken between choosing it and the server binding it: another one
                if self._start(root):
                    return
        except BaseException:  # Ctrl-C while it starts: no server left behind
            self.stop()
            raise
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] if log_file.exists() else []
        raise ConfigError(f"the local MLflow server for the jobs did not start (log: {log_file})"
                          + (f": {tail[0][:300]}" if tail else ""))

    def _start(self, artifact_root: str) -> bool:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(self.log_file, "a") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1", "--backend-store-uri", self.store, "--no-serve-artifacts",
                 "--default-artifact-root", artifact_root],
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                # one worker and no job runner: a small server; not a job's environment
                env={**{k: v for k, v in os.environ.items() if k != SERVER_ENV},
                     "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )
        deadline = time.monotonic() + START_SECONDS
        while self.process.poll() is None and time.monotonic() < deadline:
            if _answers(self.url):
                return True
            time.sleep(0.5)
        self.stop()
        return False

    @property
    def environment(self) -> dict[str, str]:
        """What a job's process needs in os.environ to log through this server (served_uri)."""
        # MLflow prints a link into the UI for each run a client ends on a server: this one goes away
        return {SERVER_ENV: json.dumps({"store": self.store, "server": self.url}),
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 30 s; idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        for signum, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:  # already gone
                pass
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            break
        try:  # its uvicorn worker, if it outlived the server's own process
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
