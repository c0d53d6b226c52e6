"""optuna-dashboard, pointed at the same storage, shows the study and its learning curves."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import psycopg
import pytest
from sqlalchemy.engine import make_url

from conftest import free_port, get_json_when_up, run_sweeps, unique_study

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


@pytest.mark.postgres
def test_sigterm_while_a_request_waits_on_the_database_answers_it_then_stops(
    postgres_server_url: str,
) -> None:
    """A SIGTERM that lands inside a request is not lost (wsgiref, under
    optuna_dashboard.run_server, turned it into a 500 and served on): the request in hand is
    answered, then the dashboard exits 0."""
    study = unique_study()
    optuna.create_study(study_name=study, storage=postgres_server_url)
    port = free_port()
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "lrsweep.sweeps", "dashboard", "--port", str(port)],
        env={**os.environ, "LRSWEEP_STORAGE": postgres_server_url},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    conninfo = make_url(postgres_server_url).set(drivername="postgresql").render_as_string(False)
    answered: list[dict] = []  # type: ignore[type-arg]
    try:
        get_json_when_up(f"http://127.0.0.1:{port}/api/studies")
        with psycopg.connect(conninfo) as blocker:
            blocker.execute("LOCK TABLE studies IN ACCESS EXCLUSIVE MODE")
            asking = threading.Thread(
                target=lambda: answered.append(
                    json.loads(urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/studies", timeout=60
                    ).read())
                )
            )  # fmt: skip
            asking.start()
            _wait_for_a_query_waiting_on_a_lock(conninfo)
            dashboard.send_signal(signal.SIGTERM)
            time.sleep(1)
            assert dashboard.poll() is None, "stopped before answering the request in hand"
        asking.join(timeout=60)
        assert dashboard.wait(timeout=30) == 0
        (listed,) = answered
        assert study in {summary["study_name"] for summary in listed["study_summaries"]}
    finally:
        dashboard.kill()
        dashboard.wait()


def test_a_silent_connection_holds_neither_the_dashboard_nor_its_stop(tmp_path: Path) -> None:
    """A client that connects and sends nothing (a browser's spare connection) is dropped
    after a while: the SIGTERM that came meanwhile stops the server, and a second dashboard
    on the same port is refused in one line."""
    storage_url = f"sqlite:///{tmp_path / 'silent.db'}"
    optuna.create_study(study_name=unique_study(), storage=storage_url)
    port = free_port()
    command = [sys.executable, "-m", "lrsweep.sweeps", "dashboard", "--port", str(port)]
    environment = {**os.environ, "LRSWEEP_STORAGE": storage_url}
    dashboard = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        get_json_when_up(f"http://127.0.0.1:{port}/api/studies")
        second = subprocess.run(command, env=environment, capture_output=True, text=True)
        assert second.returncode == 2
        assert second.stderr == (
            f"error: cannot serve the dashboard on 127.0.0.1:{port}: Address already in use\n"
        )
        with socket.create_connection(("127.0.0.1", port)):
            time.sleep(1)  # the server is reading this connection's request line
            dashboard.send_signal(signal.SIGTERM)
            assert dashboard.wait(timeout=30) == 0
        assert "stopping once the request in hand is answered" in dashboard.communicate()[1]
    finally:
        dashboard.kill()
        dashboard.wait()


def _wait_for_a_query_waiting_on_a_lock(conninfo: str, timeout: float = 30) -> None:
    """Until some query on the database waits on a lock (each look in its own transaction:
    pg_stat_activity holds still within one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(conninfo, autocommit=True) as watcher:
            (waiting,) = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()  # type: ignore[misc]
        if waiting:
            return
        time.sleep(0.1)
    raise AssertionError("the dashboard's query never waited on the lock")
