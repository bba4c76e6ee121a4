"""docker-compose.yml, the Dockerfiles and .dockerignore, checked without a Docker engine.

`docker-compose config` (the Debian package `make test` installs) validates and resolves the
compose file; the rest is read from the files: everything they mount, build from or copy
exists, the ports and names they refer to each other by agree, and the health checks ask a
route the API really has.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILES = [REPO / "deploy" / "Dockerfile", REPO / "deploy" / "Dockerfile.gpu"]
SERVICES = {"service", "prometheus", "grafana", "locust-master", "locust-worker"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The file as docker-compose itself understands it (it exits non-zero on any error)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (`make test` installs it)")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def api_routes() -> set[str]:
    from service.api.app import create_app
    from service.api.backends import Backends
    from service.api.catalog import Catalog
    from service.api.settings import ApiSettings
    from service.contracts import ServedModel

    model = ServedModel("m", "es-en/transformer", 1, "transformer", "es", "en", 1, default=True)
    app = create_app(ApiSettings(), Backends(Catalog([model]), SimpleNamespace()))
    return set(app.openapi()["paths"])


def probed_path(command: str) -> str:
    """The path of the http://127.0.0.1:8000/... URL a health check command asks."""
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):8000(/[A-Za-z0-9_/-]*)", command)
    assert match, command
    return match[1]


def test_compose_config_is_valid(resolved):
    assert set(resolved["services"]) == SERVICES


def test_mounted_and_built_files_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./"), f"{name}: {volume} is not a bind mount of the repo"
            assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
        if "build" in service:
            context = REPO / service["build"]["context"]
            assert context.is_dir()
            assert (context / service["build"]["dockerfile"]).is_file()


def test_locust_runs_the_project_locustfile(compose):
    services = compose["services"]
    mounts = dict(v.split(":")[1::-1] for v in services["locust-master"]["volumes"])
    for name in ("locust-master", "locust-worker"):
        args = shlex.split(services[name]["command"])
        locustfile = Path(args[args.index("-f") + 1])
        source = mounts[str(locustfile.parent)]
        assert (REPO / source / locustfile.name).is_file()
        data = Path(services[name]["environment"]["LOADTEST_DATA"])
        assert (REPO / mounts[str(data.parent)] / data.name).is_file()
    master = shlex.split(services["locust-master"]["command"])
    assert "--master" in master
    assert master[master.index("--host") + 1] == "http://service:8000"
    worker = shlex.split(services["locust-worker"]["command"])
    assert "--worker" in worker
    assert worker[worker.index("--master-host") + 1] == "locust-master"
    assert services["locust-master"]["depends_on"]["service"]["condition"] == "service_healthy"


def test_ports_are_published_on_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert {"127.0.0.1:8000:8000", "127.0.0.1:8080:8080"} <= set(
        compose["services"]["service"]["ports"]
    )


def test_prometheus_scrapes_the_service(compose):
    services = compose["services"]
    [mount] = services["prometheus"]["volumes"]
    config = yaml.safe_load((REPO / mount.split(":")[0]).read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert "service:8080" in targets, targets
    datasources = REPO / "deploy/grafana/provisioning/datasources"
    urls = {
        source["url"]
        for path in datasources.glob("*.y*ml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    }
    assert "http://prometheus:9090" in urls


def test_health_checks_ask_real_routes(compose):
    routes = api_routes()
    check = compose["services"]["service"]["healthcheck"]["test"]
    assert probed_path(" ".join(check)) == "/readyz"
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        healthcheck = text[text.index("HEALTHCHECK") :].split("\n\n")[0]
        assert probed_path(healthcheck) in routes, dockerfile
    assert {"/healthz", "/readyz"} <= routes


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            instruction, _, args = full.partition(" ")
            logical.append((instruction.upper(), args.strip()))
    return logical


def dockerignored(relative: str, patterns: list[str]) -> bool:
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        or fnmatch.fnmatch(Path(prefix).name, pattern.removeprefix("**/"))
        for pattern in patterns
        for prefix in prefixes
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(dockerfile):
    import tomllib

    from service.serving.cli import serve_command

    instructions = dockerfile_instructions(dockerfile)
    kinds = [kind for kind, _ in instructions]
    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    for kind, args in instructions:
        if kind == "COPY":
            *sources, _ = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such file"
                assert not dockerignored(source, ignore), f"COPY {source}: .dockerignore drops it"

    users = [args for kind, args in instructions if kind == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the service must not run as root"
    exposed = {port for kind, args in instructions if kind == "EXPOSE" for port in args.split()}
    assert {"8000", "8080"} <= exposed
    assert "HEALTHCHECK" in kinds

    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in pins
    installs = " ".join(args for kind, args in instructions if kind == "RUN")
    assert "torch==2.13.0" in installs and "download.pytorch.org/whl/" in installs

    [cmd] = [yaml.safe_load(args) for kind, args in instructions if kind == "CMD"]
    assert cmd[:4] == ["python", "-m", "service", "serve"]
    options = {name for param in typer_params(serve_command) for name in param}
    for arg in cmd[4:]:
        if arg.startswith("--"):
            assert arg in options, f"`python -m service serve` has no option {arg}"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    config = cmd[cmd.index("--config") + 1]
    if dockerfile.name == "Dockerfile":
        assert (REPO / config).is_file()


def typer_params(command) -> list[list[str]]:
    import typer.main

    click_command = typer.main.get_command(_single_command_app(command))
    return [param.opts for param in click_command.params]


def _single_command_app(command):
    import typer

    app = typer.Typer()
    app.command()(command)
    return app


def test_dockerignore_keeps_the_build_lean():
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "runs", "results", "**/__pycache__", ".pytest_cache"} <= patterns
    for needed in ("pyproject.toml", "service", "deploy", "model_store"):
        assert not dockerignored(needed, sorted(patterns)), needed
