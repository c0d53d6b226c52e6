"""deploy/kubernetes checked without a cluster (none runs here): every manifest against the
Kubernetes 1.33 schemas (kubernetes-validate, strict: an unknown field fails), every lrsweep
container's arguments against the CLI's own parser, and the wiring between them (Services to
pods, the storage URL to PgBouncer to PostgreSQL, the password to the one Secret)."""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lrsweep.errors import UsageError
from lrsweep.sweeps.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "deploy" / "kubernetes"
KUBERNETES = "1.33.0"  # backoffLimitPerIndex and podFailurePolicy's FailIndex are GA here
SECRET = {"name": "lrsweep-postgres", "key": "password"}
IMAGES = {"lrsweep": "Dockerfile", "lrsweep-gpu": "Dockerfile.gpu"}  # lrsweep's own images
BAD_INPUT_EXIT = UsageError("").exit_code

Manifest = dict[str, Any]


def _manifests() -> list[Manifest]:
    return [
        document
        for path in sorted(FOLDER.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
    ]


def _one(kind: str, name: str) -> Manifest:
    (found,) = [m for m in _manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def _pod_templates() -> list[Manifest]:
    """The pod templates of the Deployments, the StatefulSet and the Job."""
    return [m["spec"]["template"] for m in _manifests() if "template" in m.get("spec", {})]


def _containers() -> list[Manifest]:
    return [container for pod in _pod_templates() for container in pod["spec"]["containers"]]


@pytest.mark.parametrize(
    "manifest", _manifests(), ids=lambda m: f"{m['kind']}/{m['metadata']['name']}"
)
def test_every_manifest_is_valid_kubernetes(manifest: Manifest) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_the_validator_refuses_what_a_cluster_would() -> None:
    """The check above can fail: a misspelled field and a wrong type are errors."""
    job = _one("Job", "lrsweep-workers")
    for broken in (
        {**job, "spec": {**job["spec"], "backofLimitPerIndex": 3}},
        {**job, "spec": {**job["spec"], "completions": "eight"}},
    ):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_kustomization_lists_every_manifest_and_image() -> None:
    kustomization = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    files = {p.name for p in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    own = {image["name"] for image in kustomization["images"]}
    used = {c["image"] for c in _containers()}
    assert own == used - {"postgres:16"}
    for image in own:  # each built from a Dockerfile in the repository
        dockerfile = IMAGES.get(image, f"Dockerfile.{image.removeprefix('lrsweep-')}")
        assert (REPO / dockerfile).exists(), image


@pytest.mark.parametrize("container", ["worker", "dashboard"])
def test_lrsweep_containers_run_commands_the_cli_accepts(container: str) -> None:
    (found,) = [c for c in _containers() if c["name"] == container]
    assert found["image"] in IMAGES and "command" not in found  # the image's `sweeps`
    args = build_parser().parse_args([str(arg) for arg in found["args"]])
    assert args.handler.__name__ == f"_cmd_{container}"
    if container == "worker":
        mounts = [m["mountPath"] for m in found["volumeMounts"]]
        assert any(Path(args.path).parent == Path(mount) for mount in mounts), args.path
    else:
        assert args.host == "0.0.0.0"
        (port,) = found["ports"]
        assert port["containerPort"] == args.port


def test_the_password_lives_only_in_the_secret() -> None:
    """Read from the Secret into variables, never written into a URL (a password with `@`,
    `/` or `%` would break it, and part of it would show in every masked URL)."""
    assert not [m for m in _manifests() if m["kind"] == "Secret"]  # made by the user, not here
    for container in _containers():
        for variable in container.get("env", []):
            if "PASSWORD" in variable["name"]:
                assert variable["valueFrom"]["secretKeyRef"] == SECRET, container["name"]
            value = variable.get("value", "")
            assert not re.search(r"://[^/@]*:[^/@]*@", value), (container["name"], value)
            assert "$(" not in value, (container["name"], value)
        if "LRSWEEP_STORAGE" in {variable["name"] for variable in container.get("env", [])}:
            assert "PGPASSWORD" in {variable["name"] for variable in container["env"]}


def test_pgbouncer_writes_any_password_into_its_user_list_as_its_format_asks(
    tmp_path: Path,
) -> None:
    """The container's own start command, run by sh with a hostile password; the list read
    back as PgBouncer reads it (fields in double quotes, a quote inside doubled)."""
    (container,) = _one("Deployment", "pgbouncer")["spec"]["template"]["spec"]["containers"]
    shell, flag, script = container["command"]
    script = script.replace("/run/pgbouncer", str(tmp_path)).split("&& exec")[0]
    password = 'p"a ss@w/o%rd\\'
    subprocess.run(
        [shell, flag, script],
        env={"POSTGRES_PASSWORD": password, "PATH": "/usr/bin:/bin"},
        check=True,
    )
    line = (tmp_path / "userlist.txt").read_text().rstrip("\n")
    fields = re.fullmatch(r'"((?:[^"]|"")*)" "((?:[^"]|"")*)"', line)
    assert fields is not None, line
    assert [field.replace('""', '"') for field in fields.groups()] == ["lrsweep", password]


def test_workers_wait_for_postgres_before_they_start() -> None:
    """A worker that cannot reach the database exits 2 (bad input), which fails its index for
    good; an init container waits on PostgreSQL's Service first."""
    pod = _one("Job", "lrsweep-workers")["spec"]["template"]["spec"]
    (wait,) = pod["initContainers"]
    host = re.search(r"pg_isready .*-h (\S+) -p (\d+)", " ".join(wait["command"]))
    assert host is not None
    assert _service_port(host.group(1)) == int(host.group(2))


def test_workers_reach_postgres_through_pgbouncer_in_transaction_pooling() -> None:
    ini = configparser.ConfigParser()
    ini.read_string(_one("ConfigMap", "pgbouncer")["data"]["pgbouncer.ini"])
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    urls = {
        variable["value"]
        for container in _containers()
        for variable in container.get("env", [])
        if variable["name"] == "LRSWEEP_STORAGE"
    }
    assert len(urls) == 1  # workers and dashboard on one study storage
    (host, port, database) = re.fullmatch(
        r"postgresql://[^@]+@([^:/]+):(\d+)/(\w+)", *urls
    ).groups()  # type: ignore[union-attr]
    assert host == "pgbouncer" and _service_port(host) == int(port)
    server = dict(item.split("=") for item in ini["databases"][database].split())
    assert _service_port(server["host"]) == int(server["port"])
    assert server["dbname"] == database
    postgres = _one("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "POSTGRES_DB", "value": database} in postgres["env"]


def _service_port(name: str) -> int:
    """The port a Service named `name` offers, checked to reach a container port of the pods
    its selector picks."""
    service = _one("Service", name)
    (port,) = service["spec"]["ports"]
    selector = service["spec"]["selector"].items()
    pods = [pod for pod in _pod_templates() if selector <= pod["metadata"]["labels"].items()]
    assert len(pods) == 1, name
    named = {p["name"] for c in pods[0]["spec"]["containers"] for p in c.get("ports", [])}
    assert port["targetPort"] in named, name
    return int(port["port"])


def test_the_dashboard_service_reaches_the_dashboard() -> None:
    assert _service_port("lrsweep-dashboard") == 8080
    assert _one("Service", "lrsweep-dashboard")["spec"]["type"] == "ClusterIP"  # no auth


def test_workers_are_an_indexed_job_retried_per_index_with_one_gpu_each() -> None:
    job = _one("Job", "lrsweep-workers")["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["parallelism"] == job["completions"] and job["backoffLimitPerIndex"] >= 1
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    rules = job["podFailurePolicy"]["rules"]
    fail_index = [r for r in rules if r["action"] == "FailIndex"]
    assert fail_index[0]["onExitCodes"]["values"] == [BAD_INPUT_EXIT]  # bad input: no retry
    assert any(r["action"] == "Ignore" for r in rules)  # preemption does not use up retries
