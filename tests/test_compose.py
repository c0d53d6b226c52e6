"""The compose files, parsed and checked (no Docker engine runs on these machines): against the
Compose specification's JSON schema (tests/schemas/compose-spec.json, as docker-compose 1.29.2
ships it in compose/config/), then for what lrsweep needs of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _compose(name: str = "docker-compose.yml") -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPO / name).read_text())  # type: ignore[no-any-return]


COMPOSE_FILES = ("docker-compose.yml", "docker-compose.gpu.yml", "docker-compose.proxy.yml")


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_follow_the_compose_specification(name: str) -> None:
    schema = json.loads((REPO / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)  # the draft it declares
    validator.validate(_compose(name))
    broken = _compose(name)
    broken["services"]["worker"]["restart_policy"] = "always"  # not a service field
    assert not validator.is_valid(broken)


def test_services_share_one_postgres_storage() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "dashboard", "worker"}
    urls = {services[name]["environment"]["LRSWEEP_STORAGE"] for name in ("dashboard", "worker")}
    assert len(urls) == 1
    (url,) = urls
    assert re.fullmatch(
        r"postgresql://\$\{POSTGRES_USER[^}]*\}:\$\{POSTGRES_PASSWORD[^}]*\}"
        r"@postgres:5432/\$\{POSTGRES_DB[^}]*\}",
        url,
    ), url


def test_postgres_keeps_data_and_reports_health() -> None:
    compose = _compose()
    postgres = compose["services"]["postgres"]
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]  # a named volume, not a bind mount
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    for name in ("dashboard", "worker"):
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"


def test_workers_scale_and_dashboard_stays_local() -> None:
    services = _compose()["services"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N works
    assert worker["command"][0] == "worker" and "--study" in worker["command"]
    (published,) = services["dashboard"]["ports"]
    assert published.startswith("127.0.0.1:")
    assert services["dashboard"]["command"][0] == "dashboard"


def test_gpu_override_reserves_one_gpu_per_worker() -> None:
    worker = _compose("docker-compose.gpu.yml")["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["count"] == 1
    # Built on an official PyTorch CUDA image, its torch kept (tests/test_packaging.py).
    assert worker["build"] == {"context": ".", "dockerfile": "Dockerfile.gpu"}
    assert (REPO / worker["build"]["dockerfile"]).exists()


def test_proxy_override_puts_workers_behind_the_grpc_proxy() -> None:
    base = _compose()["services"]
    services = _compose("docker-compose.proxy.yml")["services"]
    proxy, worker = services["proxy"], services["worker"]
    assert proxy["command"][0] == "proxy" and "ports" not in proxy  # not published off-host
    port = proxy["command"][proxy["command"].index("--port") + 1]
    assert proxy["expose"] == [port]
    assert port in " ".join(proxy["healthcheck"]["test"])
    # The proxy reaches the same database as the dashboard; workers reach only the proxy.
    assert (
        proxy["environment"]["LRSWEEP_STORAGE"]
        == base["dashboard"]["environment"]["LRSWEEP_STORAGE"]
    )
    assert proxy["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["environment"]["LRSWEEP_STORAGE"] == f"grpc://proxy:{port}"
    assert worker["depends_on"]["proxy"]["condition"] == "service_healthy"


def _strings(node: object, key: str = "") -> list[tuple[str, str]]:
    """Every (key, string value) in a parsed YAML tree."""
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in _strings(v, str(k))]
    if isinstance(node, list):
        return [pair for item in node for pair in _strings(item, key)]
    return [(key, node)] if isinstance(node, str) else []


def test_no_password_outside_the_env_file() -> None:
    for name in COMPOSE_FILES:
        for key, value in _strings(_compose(name)):
            if "PASSWORD" in key:
                assert value.startswith("${POSTGRES_PASSWORD"), (key, value)
            unreferenced = re.sub(r"\$\{[^}]*\}", "VAR", value)
            for password in re.findall(r"://[^/@:]*:([^@]*)@", unreferenced):
                assert password == "VAR", value  # only ever a reference into .env
    assert "PASSWORD" not in (REPO / "Dockerfile").read_text()
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_image_installs_the_pinned_project() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile
    assert "-c constraints.txt" in dockerfile
    assert 'ENTRYPOINT ["sweeps"]' in dockerfile
