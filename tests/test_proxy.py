"""Workers behind `sweeps proxy` (Optuna's gRPC storage proxy) on a real PostgreSQL: the same
exact trial count, stored epochs, heartbeats and dead-worker recovery as workers on SQL."""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from sqlalchemy import create_engine, text

from conftest import (
    assert_killed_trials_recovered,
    free_port,
    freeze_while_running,
    opened_storage,
    run_sweeps,
    start_worker,
    study_trials,
    unique_study,
)
from conftest import wait_for_running as wait_for_running_in
from lrsweep.storage import resolve_storage_url
from lrsweep.storage.bulk import Finished
from lrsweep.storage.proxy import EPOCH_ANSWER_KEY, ProxiedTrialStore, connect_proxy, template_json
from lrsweep.storage.trial_store import SqlTrialStore
from lrsweep.sweeps.study.attributes import LR_USED_ATTR
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.sweeps.study.space import SEARCHABLE_SCHEDULERS, SearchSpace
from lrsweep.sweeps.worker.proposals import propose

pytestmark = [pytest.mark.slow, pytest.mark.races, pytest.mark.postgres]

FAST_HEARTBEAT = ("--heartbeat-interval", "1", "--grace-period", "3")


@pytest.fixture
def proxy_url(
    postgres_server_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A running `sweeps proxy` on loopback in front of the test database (its heartbeat flags
    FAST_HEARTBEAT, or the test's through indirect parametrization)."""
    heartbeat = getattr(request, "param", FAST_HEARTBEAT)
    port = free_port()
    log = (tmp_path / "proxy.log").open("w")
    proxy = subprocess.Popen(
        [sys.executable, "-m", "lrsweep.sweeps", "proxy", "--port", str(port), *heartbeat],
        env={**os.environ, "LRSWEEP_STORAGE": postgres_server_url},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proxy.poll() is None, (tmp_path / "proxy.log").read_text()
            assert time.monotonic() < deadline, "the proxy did not start listening"
            time.sleep(0.2)
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proxy.terminate()
        assert proxy.wait(timeout=10) == 143
        log.close()
        assert "Traceback" not in (tmp_path / "proxy.log").read_text()


def _proxied_worker(
    proxy: str, study: str, data: Path, cwd: Path, trials: int, epochs: int, seed: int
) -> subprocess.Popen[str]:
    return start_worker(
        proxy,
        study,
        data,
        cwd,
        *("--trials", str(trials), "--epochs", str(epochs), "--seed", str(seed)),
        *("--trials-per-batch", "4", "--folds", "1", *FAST_HEARTBEAT),
    )


def _heartbeat_trial_ids(database_url: str) -> set[int]:
    engine = create_engine(resolve_storage_url(database_url))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT trial_id FROM trial_heartbeats"))
        ids = {int(trial_id) for (trial_id,) in rows}
    engine.dispose()
    return ids


def test_three_workers_through_the_proxy_finish_the_study_exactly(
    proxy_url: str, postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    study, target, epochs = unique_study(), 45, 10
    workers = [
        _proxied_worker(proxy_url, study, data_path, tmp_path, target, epochs, seed)
        for seed in range(3)
    ]
    ran = 0
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
        ran += int(stderr.rsplit("worker done: ", 1)[1].split()[0])
    assert ran == target  # no worker ran a trial twice, none ran one past the target

    trials = study_trials(postgres_server_url, study)  # read from PostgreSQL, not the proxy
    assert len(trials) == target
    assert sorted(t.number for t in trials) == list(range(target))
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps))) and steps, trial.number
        if trial.state == TrialState.COMPLETE:
            assert len(steps) == epochs and trial.value == trial.intermediate_values[epochs - 1]
        # Of the proxy's reserved keys only the claim id is stored, one claim per batch.
        assert [key for key in trial.system_attrs if key.startswith("lrsweep:")] == [
            "lrsweep:claim"
        ]
    # Heartbeats went through the proxy into Optuna's own table, from the first moment.
    assert {t._trial_id for t in trials} <= _heartbeat_trial_ids(postgres_server_url)

    late = _proxied_worker(proxy_url, study, data_path, tmp_path, target, epochs, seed=9)
    _, stderr = late.communicate(timeout=120)
    assert late.returncode == 0 and "worker done: 0 trials" in stderr, stderr


def test_a_killed_worker_behind_the_proxy_is_recovered_while_two_others_finish_exactly(
    proxy_url: str, postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    study, target = unique_study(), 24
    victim = _proxied_worker(proxy_url, study, data_path, tmp_path, target, epochs=40, seed=0)
    killed = freeze_while_running(postgres_server_url, study, victim)
    survivors = [
        _proxied_worker(proxy_url, study, data_path, tmp_path, target, epochs=40, seed=seed)
        for seed in (1, 2)
    ]
    victim.kill()
    victim.wait()
    for survivor in survivors:
        _, stderr = survivor.communicate(timeout=300)
        assert survivor.returncode == 0, stderr

    trials = study_trials(postgres_server_url, study)
    assert_killed_trials_recovered(trials, killed, target)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no number twice


def test_forty_concurrent_claims_through_one_proxy_neither_starve_nor_overshoot(
    proxy_url: str, postgres_server_url: str
) -> None:
    """Claims queue for the claim lock inside the proxy, not on pooled connections: 40 at
    once against a target of 30 all answer, and exactly 30 trials start."""
    study = unique_study()
    with opened_storage(postgres_server_url) as storage:
        optuna.create_study(storage=storage, study_name=study)
    host, port = proxy_url.removeprefix("grpc://").split(":")
    proposal = optuna.trial.create_trial(
        state=TrialState.RUNNING,
        params={"lr": 0.1},
        distributions={"lr": FloatDistribution(0.01, 1.0)},
    )
    barrier = threading.Barrier(40)

    def claim(index: int) -> int:
        client = connect_proxy(host, int(port), heartbeat_interval=1)
        try:
            store = ProxiedTrialStore(client, study)
            barrier.wait(timeout=60)
            return len(store.claim([proposal], 30, {"worker": f"w{index}"}, f"claim-{index}"))
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=40) as pool:
        claimed = list(pool.map(claim, range(40)))
    assert sum(claimed) == 30 and set(claimed) == {0, 1}
    trials = study_trials(postgres_server_url, study)
    assert len(trials) == 30 and {t.state for t in trials} == {TrialState.RUNNING}
    assert sorted(t.number for t in trials) == list(range(30))


def test_stopped_worker_behind_the_proxy_hands_its_trials_back(
    proxy_url: str, postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    study = unique_study()
    worker = _proxied_worker(proxy_url, study, data_path, tmp_path, 30, epochs=40, seed=0)
    wait_for_running_in(postgres_server_url, study)
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 143, stderr
    trials = study_trials(postgres_server_url, study)
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted and not [t for t in trials if t.state == TrialState.RUNNING], (
        [t.state for t in trials],
        stderr,
    )
    by_number = {t.number: t for t in trials}
    for trial in interrupted:  # annotated through the proxy after the trial had failed
        assert trial.user_attrs["fail_reason"] == "interrupted"
        retry = by_number[trial.user_attrs["retried_as"]]
        assert retry.state == TrialState.WAITING and retry.params == trial.params


def test_no_proxy_at_the_address_is_one_clear_line(tmp_path: Path, data_path: Path) -> None:
    url = f"grpc://127.0.0.1:{free_port()}"
    result = run_sweeps(
        "worker", "--study", "x", "--data", str(data_path), "--storage", url, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: no storage proxy answering at {url} (start one with `sweeps proxy`)"
    )


def _proxied_store(proxy_url: str, study: str) -> ProxiedTrialStore:
    host, port = proxy_url.removeprefix("grpc://").split(":")
    return ProxiedTrialStore(connect_proxy(host, int(port), heartbeat_interval=1), study)


# Preparing 20 MiB of results takes seconds: a proxy failing trials silent for 3 s would fail
# these as stale first.
@pytest.mark.parametrize("proxy_url", [("--grace-period", "300")], indirect=True)
def test_a_4096_trial_batch_over_every_schedule_claims_and_finishes_through_the_proxy(
    proxy_url: str, postgres_server_url: str
) -> None:
    """Requests past gRPC's default 4 MiB: the claim of 4096 trials over all schedule kinds,
    and their final write with every fold's lr of every epoch (what plateau trials record)."""
    study, trials, folds, epochs = unique_study(), 4096, 5, 50
    with opened_storage(postgres_server_url) as storage:
        optuna.create_study(storage=storage, study_name=study, direction="maximize")
    settings = StudySettings("digest", space=SearchSpace(schedulers=SEARCHABLE_SCHEDULERS))
    proposals = propose(settings, optuna.samplers.RandomSampler(seed=0), study, [], trials)
    assert {p.params["scheduler"] for p in proposals} == set(SEARCHABLE_SCHEDULERS)
    claim_bytes = len(json.dumps([template_json(p) for p in proposals]))
    assert claim_bytes > 4 << 20
    store = _proxied_store(proxy_url, study)
    claimed = store.claim(proposals, None, {"worker": "big"}, "claim-big")
    assert len(claimed) == trials
    rng = random.Random(0)
    lrs = {  # as plateau trials record them: [epoch][fold], halved now and then
        t._trial_id: [
            [lr0 * 0.5 ** (epoch // rng.randint(5, 20)) for lr0 in start]
            for epoch in range(epochs)
        ]
        for t in claimed
        for start in [[rng.uniform(1e-3, 1.0) for _ in range(folds)]]
    }
    finished = [
        Finished(t._trial_id, TrialState.COMPLETE, 0.9, {LR_USED_ATTR: lrs[t._trial_id]})
        for t in claimed
    ]
    assert len(json.dumps([o.user_attrs for o in finished])) > 16 << 20
    written = store.write_epoch([(t._trial_id, 0, 0.9) for t in claimed], finished=finished)
    assert written.finished == {t._trial_id for t in claimed} and not written.lost
    stored = study_trials(postgres_server_url, study)
    assert {t.state for t in stored} == {TrialState.COMPLETE} and len(stored) == trials
    assert all(t.user_attrs[LR_USED_ATTR] == lrs[t._trial_id] for t in stored)


def _without_epoch_answers(store: ProxiedTrialStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy's answers never reach `store` (as after a proxy restart)."""
    client = store._client
    get_trial = client.get_trial

    def forgetful(trial_id: int) -> optuna.trial.FrozenTrial:
        trial = copy.copy(get_trial(trial_id))
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != EPOCH_ANSWER_KEY}
        return trial

    monkeypatch.setattr(client, "get_trial", forgetful)


@pytest.mark.parametrize("through", ["sql", "proxy", "proxy without answers"])
def test_a_trial_failed_meanwhile_is_noticed_at_the_next_write_over_sql_and_the_proxy(
    through: str, proxy_url: str, postgres_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = unique_study()
    with opened_storage(postgres_server_url) as storage:
        optuna.create_study(storage=storage, study_name=study, direction="maximize")
        store = (
            SqlTrialStore(storage, study) if through == "sql" else _proxied_store(proxy_url, study)
        )
        if through == "proxy without answers":
            _without_epoch_answers(store, monkeypatch)  # type: ignore[arg-type]
        proposal = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params={"lr": 0.1},
            distributions={"lr": FloatDistribution(0.01, 1.0)},
        )
        kept, failed = (t._trial_id for t in store.claim([proposal] * 2, None, {}, "c"))
        storage.set_trial_state_values(failed, TrialState.FAIL)  # as another worker's check
        # An epoch that finishes nothing still says which trials were lost.
        written = store.write_epoch([(kept, 0, 0.5), (failed, 0, 0.5)])
        assert written.lost == {failed} and not written.finished
        assert store.write_epoch([(kept, 1, 0.6)]).lost == frozenset()
        done = store.write_epoch(
            [(kept, 2, 0.7)], finished=[Finished(kept, TrialState.COMPLETE, 0.7, {})]
        )
        assert done.finished == {kept} and not done.lost


SLOW_TO_DECLARE_DEAD = ("--heartbeat-interval", "1", "--grace-period", "300")


@pytest.mark.parametrize("proxy_url", [SLOW_TO_DECLARE_DEAD], indirect=True)
def test_workers_on_sql_and_behind_the_proxy_share_one_study_exactly(
    proxy_url: str, postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    """The worker on SQL is held while it holds trials until the one behind the proxy has
    claimed some, so both take part; nobody is declared dead meanwhile (grace 300 s)."""
    study, target, epochs = unique_study(), 40, 10

    def worker(url: str, seed: int) -> subprocess.Popen[str]:
        return start_worker(
            url, study, data_path, tmp_path,
            *("--trials", str(target), "--epochs", str(epochs), "--seed", str(seed)),
            *("--trials-per-batch", "2", "--folds", "1", *SLOW_TO_DECLARE_DEAD),
        )  # fmt: skip

    on_sql = worker(postgres_server_url, 0)
    freeze_while_running(postgres_server_url, study, on_sql)
    behind_proxy = worker(proxy_url, 1)
    wait_for_running_in(postgres_server_url, study, workers=2)
    on_sql.send_signal(signal.SIGCONT)
    workers = [on_sql, behind_proxy]
    ran = []
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
        ran.append(int(stderr.rsplit("worker done: ", 1)[1].split()[0]))
    assert sum(ran) == target and all(ran), ran  # both took part, neither ran one twice
    trials = study_trials(postgres_server_url, study)
    assert sorted(t.number for t in trials) == list(range(target))
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({t.user_attrs["worker"] for t in trials}) == 2
