"""Real servers for the tests: a fresh PostgreSQL database and an MLflow server on loopback.

PostgreSQL runs on 127.0.0.1:5432 (trust auth, database `test`) on the development and
CI machines. Without it the tests that need it skip, except where
PGSWEEP_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin():
    import psycopg

    return psycopg.connect(f"{POSTGRES}/test", autocommit=True, connect_timeout=5)


def require_postgres() -> None:
    try:
        _admin().close()
    except Exception as error:
        message = f"no PostgreSQL at 127.0.0.1:5432 (database test, trust auth): {str(error).strip()[:200]}"
        if os.environ.get("PGSWEEP_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database for this test run; dropped afterwards. Yields its URI."""
    require_postgres()
    name = f"pgsweep_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rest(uri: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """One MLflow REST call: GET with query parameters, or POST with a JSON body."""
    url = f"{uri}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def download(uri: str, run_id: str, path: str) -> bytes:
    query = urllib.parse.urlencode({"run_uuid": run_id, "path": path})
    with urllib.request.urlopen(f"{uri}/get-artifact?{query}", timeout=30) as response:
        return response.read()


@contextmanager
def mlflow_server(folder: Path, backend_store_uri: str, extra: list[str] = (), port: int | None = None,
                  command: str = "server", app: str | None = "pgsweep") -> Iterator[str]:
    """`mlflow server` (or `mlflow ui`) on 127.0.0.1 with artifacts under `folder`; stopped by
    its PID. app: its --app-name, pgsweep's app as the README and docker/ run it by default."""
    port = port or free_port()
    log = open(folder / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), command, "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(folder / "artifacts"),
         "--workers", "1", *(["--app-name", app] if app else []), *extra],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT,
        # one worker and no job runner: about 0.5 GB
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:  # a real API answers, not just /health
            try:
                rest(uri, "experiments/search", max_results=1)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    log.flush()
                    pytest.fail(f"mlflow {command} did not start:\n" + (folder / "mlflow-server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield uri
    finally:
        os.kill(server.pid, signal.SIGTERM)  # it stops its own uvicorn worker
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
