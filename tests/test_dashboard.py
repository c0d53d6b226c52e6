"""optuna-dashboard, pointed at the same storage, shows the study and its learning curves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_sweeps

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port`, read from /proc/net/tcp."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            addresses.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return addresses


def _get_json(url: str, deadline: float) -> dict:  # type: ignore[type-arg]
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_dashboard_shows_study_with_intermediate_values(tmp_path: Path, data_path: Path) -> None:
    made = run_sweeps(
        "worker",
        "--study",
        "dash",
        "--data",
        str(data_path),
        "--trials",
        "3",
        "--epochs",
        "6",
        "--pruner",
        "none",
        "--quiet",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    port = _free_port()
    dashboard = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("optuna-dashboard")),
            f"sqlite:///{tmp_path / 'lrsweep.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", deadline)
        (summary,) = studies["study_summaries"]
        assert summary["study_name"] == "dash"
        assert _listening_addresses(port) == {"127.0.0.1"}  # local only unless --host
        detail = _get_json(
            f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0", deadline
        )
        assert detail["has_intermediate_values"]
        assert len(detail["trials"]) == 3
        for trial in detail["trials"]:
            assert [point["step"] for point in trial["intermediate_values"]] == list(range(6))
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)


def test_optuna_cli_reads_the_same_storage(tmp_path: Path, data_path: Path) -> None:
    made = run_sweeps(
        "worker",
        "--study",
        "cli",
        "--data",
        str(data_path),
        "--trials",
        "4",
        "--epochs",
        "4",
        "--pruner",
        "none",
        "--quiet",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    optuna_cli = str(Path(sys.executable).with_name("optuna"))
    url = f"sqlite:///{tmp_path / 'lrsweep.db'}"

    def optuna_json(*args: str) -> object:
        done = subprocess.run(
            [optuna_cli, *args, "--storage", url, "-f", "json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    (study,) = optuna_json("studies")  # type: ignore[misc]
    assert study["name"] == "cli" and study["n_trials"] == 4
    best = optuna_json("best-trial", "--study-name", "cli")
    exported = run_sweeps("export", "--study", "cli", "--out", "b.json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    source = json.loads((tmp_path / "b.json").read_text())["source"]
    assert best["number"] == source["trial_number"]  # type: ignore[index]
    assert best["value"] == pytest.approx(source["validation_accuracy"])  # type: ignore[index]
