"""Workers, status and export through a real PgBouncer in transaction pooling (Debian's
`pgbouncer`, which `make test` installs) in front of the test PostgreSQL, with a pool of 3 server
connections: fewer than the workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import psycopg
import pytest
from sqlalchemy.engine import make_url

from conftest import (
    assert_killed_trials_recovered,
    free_port,
    freeze_while_running,
    run_sweeps,
    start_worker,
    study_trials,
    unique_study,
)

pytestmark = [pytest.mark.slow, pytest.mark.races, pytest.mark.postgres]
PGBOUNCER = Path("/usr/sbin/pgbouncer")


@pytest.fixture(scope="module")
def pgbouncer_url(postgres_server_url: str) -> Iterator[str]:
    """The test database through a PgBouncer in transaction pooling, started once a module."""
    assert PGBOUNCER.exists(), "pgbouncer is not installed: `make test` installs it with apt"
    server = make_url(postgres_server_url)
    folder = Path(tempfile.mkdtemp(prefix="lrsweep-pgbouncer-"))
    folder.chmod(0o755)  # read by the postgres user: PgBouncer will not run as root
    port = free_port()
    (folder / "users.txt").write_text(f'"{server.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        textwrap.dedent(f"""\
            [databases]
            * = host={server.host} port={server.port or 5432}
            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = {port}
            unix_socket_dir =
            auth_type = trust
            auth_file = {folder}/users.txt
            pool_mode = transaction
            default_pool_size = 3
            max_client_conn = 200
            ignore_startup_parameters = extra_float_digits,options
            """)
    )
    command = [str(PGBOUNCER), str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    bouncer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = server.set(port=port).render_as_string(hide_password=False)
    conninfo = server.set(drivername="postgresql", port=port).render_as_string(hide_password=False)
    deadline = time.monotonic() + 15
    while True:
        try:
            psycopg.connect(conninfo, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            assert bouncer.poll() is None, bouncer.stderr.read() if bouncer.stderr else ""
            assert time.monotonic() < deadline, "PgBouncer did not accept connections"
            time.sleep(0.1)
    try:
        yield url
    finally:
        bouncer.terminate()
        bouncer.wait(timeout=10)
        shutil.rmtree(folder)


def test_workers_status_and_export_through_transaction_pooling(
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
