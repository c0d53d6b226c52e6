"""Faults a sweep must survive, injected for real: kill -9, SIGTERM, SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from optuna.trial import TrialState

from conftest import (
    assert_killed_trials_recovered,
    freeze_while_running,
    start_worker,
    study_trials,
    unique_study,
    wait_for_running,
)

pytestmark = [pytest.mark.slow, pytest.mark.races]


def _worker(
    storage_url: str, study: str, data: Path, trials: int, cwd: Path, *extra: str
) -> subprocess.Popen[str]:
    """A worker with small batches and a fast heartbeat (1 s, dead after 3 s)."""
    return start_worker(
        storage_url,
        study,
        data,
        cwd,
        "--trials",
        str(trials),
        "--epochs",
        "40",
        "--folds",  # faults, not folds, are under test here: one split keeps them quick
        "1",
        "--trials-per-batch",
        "4",
        "--heartbeat-interval",
        "1",
        "--grace-period",
        "3",
        *extra,
    )


def test_killed_worker_trials_are_failed_and_rerun_by_another(
    storage_url: str, data_path: Path, tmp_path: Path
) -> None:
    study, target = unique_study(), 16
    victim = _worker(storage_url, study, data_path, target, tmp_path)
    killed = freeze_while_running(storage_url, study, victim)
    victim.kill()  # SIGKILL: no cleanup, its trials stay RUNNING until their heartbeat expires
    victim.wait()
    survivor = _worker(storage_url, study, data_path, target, tmp_path)
    _, stderr = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, stderr

    assert_killed_trials_recovered(study_trials(storage_url, study), killed, target)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signalled_worker_stops_fast_and_requeues_its_trials(
    sig: signal.Signals, code: int, data_path: Path, tmp_path: Path
) -> None:
    storage_url, study = f"sqlite:///{tmp_path / 's.db'}", unique_study()
    worker = _worker(storage_url, study, data_path, 50, tmp_path)
    freeze_while_running(storage_url, study, worker)  # the signal lands mid-batch
    worker.send_signal(sig)
    worker.send_signal(signal.SIGCONT)
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted"
    trials = study_trials(storage_url, study)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # It stopped at once, not after finishing its work.
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) < 50
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted
    waiting = {t.system_attrs["failed_trial"]: t for t in trials if t.state == TrialState.WAITING}
    for trial in interrupted:
        assert trial.user_attrs["fail_reason"] == "interrupted"
        assert waiting[trial.number].params == trial.params

    # The re-queued trials run first when a worker resumes the study, and it still ends at N.
    resumed = _worker(storage_url, study, data_path, 20, tmp_path)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    trials = study_trials(storage_url, study)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 20
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def _postgres_cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
    )
    if action == "start":
        for _ in range(60):
            ready = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"])
            if ready.returncode == 0:
                return
            time.sleep(0.5)


@pytest.mark.postgres
def test_workers_ride_out_a_postgres_restart(
    postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    """Stop the real server for 12 s mid-sweep: workers wait, say so, and lose nothing."""
    study, target = unique_study(), 80  # long enough to span the outage
    workers = [
        _worker(postgres_server_url, study, data_path, target, tmp_path, "--grace-period", "60")
        for _ in range(2)
    ]
    # Both workers have joined (one still connecting when the server stops would be refused,
    # rightly: a database never reached is bad input), and are held mid-batch while the server
    # stops, so the outage certainly meets one.
    wait_for_running(postgres_server_url, study, workers=2)
    freeze_while_running(postgres_server_url, study, *workers)
    try:
        _postgres_cluster("stop")
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
        time.sleep(12)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
        _postgres_cluster("start")
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
    stderr = "".join(err for _, err in outputs)
    assert "database unreachable" in stderr and "reachable again" in stderr
    trials = study_trials(postgres_server_url, study)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == target
    # Nothing computed during the outage was thrown away: no trial failed or was re-run.
    assert len(trials) == target
    assert sorted(t.number for t in trials) == list(range(target))
    for trial in finished:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps)))
        if trial.state == TrialState.COMPLETE:
            assert len(steps) == 40


def test_eight_workers_share_one_study_without_losing_anything(
    storage_url: str, data_path: Path, tmp_path: Path
) -> None:
    study, target = unique_study(), 48
    workers = [
        # 8 processes on 2 cores can starve a heartbeat thread for seconds: a normal grace
        # period, so only real deaths count as deaths.
        _worker(
            storage_url,
            study,
            data_path,
            target,
            tmp_path,
            "--epochs",
            "10",
            "--grace-period",
            "30",
        )
        for _ in range(8)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr
        assert "locked" not in stderr
    trials = study_trials(storage_url, study)
    assert len(trials) == target
    assert sorted(t.number for t in trials) == list(range(target))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps)))
        if trial.state == TrialState.COMPLETE:
            assert len(steps) == 10


def test_workers_wait_out_a_locked_sqlite_file(data_path: Path, tmp_path: Path) -> None:
    """Another process holds the SQLite file exclusively for 8 s mid-sweep: writers wait."""
    import sqlite3

    storage_url, study, target = f"sqlite:///{tmp_path / 's.db'}", unique_study(), 60
    # Heartbeats stall with everything else while the file is locked; a grace period longer
    # than the outage keeps the other worker from declaring these trials dead (as with the
    # defaults, 10 s / 30 s, for an outage under 20 s).
    workers = [
        _worker(storage_url, study, data_path, target, tmp_path, "--grace-period", "60")
        for _ in range(2)
    ]
    wait_for_running(storage_url, study)
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None, timeout=60)
    blocker.execute("BEGIN EXCLUSIVE")
    locked_at = datetime.now()  # local and naive, as Optuna reads trials' times back
    held = {
        row[0] for row in blocker.execute("SELECT trial_id FROM trials WHERE state = 'RUNNING'")
    }
    time.sleep(8)
    released_at = datetime.now()
    blocker.execute("COMMIT")
    blocker.close()
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
    trials = study_trials(storage_url, study)
    assert len(trials) == target
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    # Nothing finished while the file was locked, and the trials running when it was locked
    # finished after it was released: their writes waited for the lock, then landed.
    completed = {t._trial_id: t.datetime_complete for t in trials}
    assert held and all(completed[trial_id] >= released_at for trial_id in held)
    assert not [t for t in completed.values() if t and locked_at < t < released_at]


def test_a_worker_started_ignoring_sigint_keeps_ignoring_it(
    data_path: Path, tmp_path: Path
) -> None:
    """`sweeps worker ... &` in a script starts with SIGINT ignored: a SIGINT then must not stop
    the batch and hand its trials back (the worker would go on, with failed copies behind it)."""
    storage_url, study = f"sqlite:///{tmp_path / 's.db'}", unique_study()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the child
    try:
        worker = _worker(storage_url, study, data_path, 12, tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    wait_for_running(storage_url, study)
    worker.send_signal(signal.SIGINT)
    _, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 0, stderr
    assert "handed back" not in stderr
    states = [t.state for t in study_trials(storage_url, study)]
    assert states.count(TrialState.FAIL) == 0 and len(states) == 12
