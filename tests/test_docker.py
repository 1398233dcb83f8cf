"""docker/ checked statically (no image can be built here): the compose file parses, names
only services, volumes, paths and config keys that exist, publishes only on 127.0.0.1,
takes secrets only from the environment, and calls the real CLIs with arguments they accept."""

from __future__ import annotations

import re
import shlex
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def _environment(service: dict) -> dict[str, str]:
    """The service's environment with ${VAR...} as compose substitutes it from a user's env."""
    fake = {"POSTGRES_PASSWORD": "pw", "RAY_AUTH_TOKEN": "tok", "PGSWEEP_VARIANT": "cpu"}
    return {k: _VARIABLE.sub(lambda m: fake.get(m.group(1), ""), str(v)) for k, v in service.get("environment", {}).items()}


def _command(name: str) -> list[str]:
    command = SERVICES[name]["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_services_volumes_and_paths_exist():
    assert {"postgres", "mlflow", "ray-head", "ray-worker", "sweep"} <= set(SERVICES)
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in COMPOSE["volumes"], f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == REPO and (context / build["dockerfile"]).is_file()
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies a missing {source}"
    extras = re.search(r'pip install --no-cache-dir "\.\[([\w,-]+)\]"', dockerfile).group(1).split(",")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) <= set(declared)


def test_the_image_is_cpu_by_default_gpu_by_argument_and_not_root():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in dockerfile and "FROM base-${VARIANT}" in dockerfile
    assert re.search(r"FROM nvidia/cuda:\S+ AS base-gpu", dockerfile)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'torch==2\.13\.0', dockerfile)  # pinned as pyproject pins it


def test_servers_publish_on_loopback_and_secrets_come_from_the_environment():
    published = [(name, port) for name, s in SERVICES.items() for port in s.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for _, port in published), published
    text = (DOCKER / "docker-compose.yml").read_text()
    for key, value in re.findall(r"^\s*(\w*(?:PASSWORD|TOKEN)\w*): (.+)$", text, re.M):
        assert value.startswith("${") and ":?" in value, f"{key} must come from the environment: {value}"
    assert "postgresql://mlflow:${POSTGRES_PASSWORD" in text  # the store URI carries no literal password
    for name in ("postgres", "mlflow", "ray-head"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert "/health" not in str(SERVICES["mlflow"]["healthcheck"]) and "api/2.0/mlflow" in str(SERVICES["mlflow"]["healthcheck"])


def test_mlflow_command_is_the_real_cli_with_accepted_arguments(monkeypatch):
    from mlflow.cli import server

    command = _command("mlflow")
    assert command[:2] == ["mlflow", "server"]
    for key, value in _environment(SERVICES["mlflow"]).items():
        monkeypatch.setenv(key, value)
    context = server.make_context("server", command[2:])  # click parses it as `mlflow server` would
    assert context.params["backend_store_uri"] == "postgresql://mlflow:pw@postgres:5432/mlflow"
    assert context.params["workers"] == "1" and context.params["host"] == "0.0.0.0"
    assert context.params["app_name"] == "pgsweep"  # the image installs pgsweep, so its mlflow.app entry point
    assert "mlflow:5000" in context.params["allowed_hosts"].split(",")


@pytest.mark.parametrize("name", ["ray-head", "ray-worker"])
def test_ray_commands_are_the_real_cli_with_accepted_arguments(name):
    from ray.scripts.scripts import start

    command = _command(name)
    assert command[:2] == ["ray", "start"]
    context = start.make_context("start", command[2:])
    assert context.params["block"] is True
    if name == "ray-head":
        assert context.params["head"] and context.params["port"] == 6379
    else:
        assert context.params["address"] == "ray-head:6379"


def test_the_sweep_service_composes_and_every_job_checks():
    from hydra import compose, initialize_config_dir

    from pgsweep.cli import config_dir
    from pgsweep.multirun import check_jobs

    command = _command("sweep")
    assert command[:2] == ["pgsweep", "-m"]  # the console script pyproject declares, in multirun mode
    overrides = command[2:]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        settings = check_jobs(cfg)
    assert len(settings) == 9 and settings[0].tracking.uri == "http://mlflow:5000"
    assert cfg.hydra.launcher.ray.init.object_store_memory is None  # so it can join the cluster
    assert _environment(SERVICES["sweep"])["RAY_ADDRESS"] == "ray-head:6379"


@pytest.mark.slow
def test_mlflow_allowed_hosts_let_the_service_name_through(tmp_path):
    """The compose file's --allowed-hosts on a real server: Host mlflow:5000 gets answers, not 403."""
    import urllib.error

    from servers import free_port, mlflow_server

    port = free_port()  # the compose file's hosts, and this test's own address to see it start
    allowed = next(a for a in _command("mlflow") if a.startswith("--allowed-hosts=")) + f",127.0.0.1:{port}"
    request = lambda uri, host: urllib.request.urlopen(  # noqa: E731
        urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host}),
        timeout=10)
    with mlflow_server(tmp_path, f"sqlite:///{tmp_path}/m.db", extra=[allowed], port=port) as uri:
        assert request(uri, "mlflow:5000").status == 200
        with pytest.raises(urllib.error.HTTPError, match="403"):
            request(uri, "elsewhere:5000")


def test_ray_cluster_launcher_example_is_a_valid_cluster_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = (DOCKER / "ray-cluster.yaml").read_text()
    config = prepare_config(yaml.safe_load(text))
    validate_config(config)  # Ray's own schema, as `ray up` checks it
    assert config["docker"]["image"].startswith("pgsweep:")
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head  # reached through `ray dashboard` (ssh), not published
    assert "--env=RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "--env=RAY_AUTH_TOKEN" in config["docker"]["run_options"]  # its value stays in the environment
