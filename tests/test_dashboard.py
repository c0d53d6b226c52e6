"""optuna-dashboard, pointed at the same storage, shows the study and its learning curves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, get_json_when_up, run_sweeps

pytestmark = [pytest.mark.slow, pytest.mark.races]


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port`, read from /proc/net/tcp."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            addresses.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return addresses


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
    port = free_port()
    # `sweeps dashboard` with no --host: its own default bind is what is checked.
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "lrsweep.sweeps", "dashboard", "--storage", "lrsweep.db"]
        + ["--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        studies = get_json_when_up(f"http://127.0.0.1:{port}/api/studies")
        (summary,) = studies["study_summaries"]
        assert summary["study_name"] == "dash"
        assert _listening_addresses(port) == {"127.0.0.1"}  # this machine only by default
        detail = get_json_when_up(
            f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0"
        )
        assert detail["has_intermediate_values"]
        assert detail["objective_names"] == ["validation accuracy"]  # its axis, not "Objective 0"
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
    # the study's metric name, where Optuna says "value" for a study without one
    assert best["value"] == {"validation accuracy": pytest.approx(source["objective"])}  # type: ignore[index]
