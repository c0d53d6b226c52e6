"""Workers, status, export, report and the dashboard through a real PgBouncer (Debian's
`pgbouncer`, which `make test` installs) in front of the test PostgreSQL, run with the
pgbouncer.ini that deploy/kubernetes ships, its address and authentication replaced: in
transaction pooling with a pool of 3 server connections, fewer than the workers, and in session
pooling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from bench.pgbouncer import running_pgbouncer, shipped_ini
from conftest import (
    assert_killed_trials_recovered,
    free_port,
    freeze_while_running,
    get_json_when_up,
    run_sweeps,
    start_worker,
    study_trials,
    unique_study,
)
from lrsweep.storage import (
    SqlTrialStore,
    StorageSettings,
    close_storage,
    open_storage,
)

pytestmark = [pytest.mark.slow, pytest.mark.races, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pgbouncer_url(postgres_server_url: str) -> Iterator[str]:
    """Transaction pooling with 3 server connections, started once a module."""
    assert shipped_ini()["pgbouncer"]["pool_mode"] == "transaction"
    with running_pgbouncer(postgres_server_url, default_pool_size="3") as url:
        yield url


def test_workers_status_export_report_and_dashboard_through_transaction_pooling(
    pgbouncer_url: str, postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    """psycopg prepares statements it runs often; behind transaction pooling the next
    transaction lands on another server connection where they do not exist, and every batch
    failed ("prepared statement "_pg3_9" does not exist") until lrsweep stopped preparing."""
    through = {"LRSWEEP_STORAGE": pgbouncer_url}
    launched = run_sweeps(
        "launch", "--study", "pooled", "--workers", "4", "--trials", "48", "--epochs", "8",
        "--folds", "1", "--seed", "0", "--data", str(data_path), "--quiet",
        cwd=tmp_path, env=through,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    assert launched.stderr.count("stopped because the study has its 48 finished trials") == 4
    trials = study_trials(postgres_server_url, "pooled")  # read past PgBouncer
    states = {t.state for t in trials}
    assert len(trials) == 48 and states <= {
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    }, states
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps))) and steps, trial.number
    status = run_sweeps("status", "--study", "pooled", cwd=tmp_path, env=through)
    assert status.returncode == 0 and "48" in status.stdout, status.stderr
    exported = run_sweeps(
        "export", "--study", "pooled", "--out", str(tmp_path / "best.json"), "--top", "1",
        cwd=tmp_path, env=through,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "best.json").exists()
    reported = run_sweeps(
        "report", "--study", "pooled", "--out", str(tmp_path / "report"), "--top", "2",
        cwd=tmp_path, env=through,
    )  # fmt: skip
    assert reported.returncode == 0, reported.stderr
    assert (tmp_path / "report" / "report.html").exists()
    _assert_dashboard_shows(through, "pooled", 48, tmp_path)


def _assert_dashboard_shows(env: dict[str, str], study: str, trials: int, cwd: Path) -> None:
    """`sweeps dashboard` on `env`'s storage lists the study with its trials and epochs."""
    port = free_port()
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "lrsweep.sweeps", "dashboard", "--port", str(port)],
        cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        listed = get_json_when_up(f"http://127.0.0.1:{port}/api/studies")
        (summary,) = [s for s in listed["study_summaries"] if s["study_name"] == study]
        detail = get_json_when_up(
            f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0"
        )
        assert len(detail["trials"]) == trials
        assert all(trial["intermediate_values"] for trial in detail["trials"])
    finally:
        dashboard.terminate()  # answers a request still in hand first (a client's retry)
        dashboard.wait(timeout=30)


def test_workers_and_status_through_session_pooling(
    postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    """Session pooling gives each client a server connection for as long as it stays
    connected: a pool as large as the workers' connections, as PgBouncer's docs size it."""
    with running_pgbouncer(
        postgres_server_url, pool_mode="session", default_pool_size="12"
    ) as url:
        through = {"LRSWEEP_STORAGE": url}
        launched = run_sweeps(
            "launch", "--study", "session", "--workers", "2", "--trials", "24", "--epochs",
            "6", "--folds", "1", "--seed", "0", "--data", str(data_path), "--quiet",
            cwd=tmp_path, env=through,
        )  # fmt: skip
        assert launched.returncode == 0, launched.stderr
        status = run_sweeps("status", "--study", "session", "--json", cwd=tmp_path, env=through)
        assert status.returncode == 0, status.stderr
    assert len(study_trials(postgres_server_url, "session")) == 24


def test_a_worker_killed_behind_pgbouncer_is_recovered_by_another(
    pgbouncer_url: str, postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    """Its trials stay RUNNING until their heartbeat expires, are failed and re-queued, and a
    second worker through the same pool runs them: nothing lost."""
    study, target = unique_study(), 16
    quick = (
        "--trials", str(target), "--epochs", "40", "--folds", "1", "--trials-per-batch", "4",
        "--heartbeat-interval", "1", "--grace-period", "3",
    )  # fmt: skip
    victim = start_worker(pgbouncer_url, study, data_path, tmp_path, *quick)
    killed = freeze_while_running(postgres_server_url, study, victim)
    victim.kill()
    victim.wait()
    survivor = start_worker(pgbouncer_url, study, data_path, tmp_path, *quick)
    _, stderr = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, stderr
    assert_killed_trials_recovered(study_trials(postgres_server_url, study), killed, target)


def test_every_step_under_the_claim_lock_needs_one_server_connection(
    postgres_server_url: str,
) -> None:
    """Behind a pool of ONE server connection (the schema made beforehand, past PgBouncer): a
    claim, an enqueue, a hand-back and a stale sweep each run on the lock's own connection. One
    that asked for a second while holding the first would wait until `query_wait_timeout` (5 s
    here) and fail."""
    name = unique_study()
    close_storage(open_storage(StorageSettings(postgres_server_url)))  # the schema, directly
    with running_pgbouncer(
        postgres_server_url, default_pool_size="1", query_wait_timeout="5"
    ) as url:
        storage = open_storage(StorageSettings(url, heartbeat_interval=1, grace_period=2))
        try:
            assert isinstance(storage, optuna.storages.RDBStorage)
            study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
            store = SqlTrialStore(storage, name)
            template = optuna.trial.create_trial(
                state=optuna.trial.TrialState.WAITING,
                params={"x": 0.5},
                distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
            )
            store.enqueue([template])
            first = store.claim([template, template], None, {"worker": "w"}, "c1")
            assert store.hand_back(study, [trial._trial_id for trial in first], "interrupted") == 2
            assert len(store.claim([template] * 3, None, {}, "c2")) == 3  # the 2 copies, 1 new
            time.sleep(3.5)  # past the grace period, no beats
            store.fail_stale_trials(study)
            assert store.counts() == {"FAIL": 5, "WAITING": 3}
        finally:
            close_storage(storage)
