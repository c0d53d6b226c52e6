"""Trial states as they happen, and what a worker does when the storage surprises it: real
studies (SQLite and PostgreSQL), real training, signals sent for real inside storage calls."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import study_trials, unique_study
from storage import SqlTrialStore, StorageLost, StorageSettings, heartbeat, resolve_storage_url
from storage.locks import DatabaseLock
from storage.outage import retrying
from sweeps.history import StudyHistory
from sweeps.proposals import ClaimedTrial, propose
from sweeps.settings import StudySettings
from sweeps.study import OpenStudy, create_or_join
from sweeps.trial_batch import run_trial_batch
from sweeps.worker import WorkerOptions, hand_back, run_worker
from trainer.data import cached_dataset
from trainer.training import split_tensors

EPOCHS = 6


@pytest.fixture
def opened(storage_url: str, data_path: Path) -> Iterator[OpenStudy]:
    dataset = cached_dataset(str(data_path))
    settings = StudySettings(data_sha256=dataset.sha256, epochs=EPOCHS, pruner="none")
    study = create_or_join(
        StorageSettings(resolve_storage_url(storage_url)), unique_study(), settings, dataset
    )
    yield study
    storage = study.storage
    assert isinstance(storage, optuna.storages.RDBStorage)
    storage.engine.dispose()


def _claim(opened: OpenStudy, count: int) -> list[ClaimedTrial]:
    history = StudyHistory(opened.storage, opened.store.study_id)
    proposals = propose(
        opened.settings, opened.study.sampler, "x", history.sampler_view(50), count
    )
    started = opened.store.claim(proposals, None, {"worker": "test"})
    return [ClaimedTrial.of(opened.settings, trial) for trial in started]


def _tensors(opened: OpenStudy, data_path: Path):  # type: ignore[no-untyped-def]
    return split_tensors(cached_dataset(str(data_path)), opened.settings.validation_rows, "cpu")


def test_a_trial_failed_meanwhile_is_reported_lost_and_kept_out_of_the_history(
    opened: OpenStudy, data_path: Path
) -> None:
    claimed = _claim(opened, 3)
    stale = claimed[1]
    # Another worker's stale check fails it (and would queue a copy) while this batch trains.
    opened.storage.set_trial_state_values(stale.trial_id, TrialState.FAIL)
    history = StudyHistory(opened.storage, opened.store.study_id)
    outcome = run_trial_batch(opened, claimed, _tensors(opened, data_path), history)
    assert outcome.lost == (stale.number,)
    assert sum(outcome.by_reason.values()) == 2
    held = {t.number: t.state for t in history.population}
    assert stale.number not in held
    assert set(held.values()) == {TrialState.COMPLETE}
    stored = {t.number: t for t in opened.study.get_trials()}
    assert stored[stale.number].state == TrialState.FAIL
    assert stored[stale.number].intermediate_values == {}  # nothing written into it


def test_a_broken_heartbeat_stops_the_batch_and_hands_it_back(
    opened: OpenStudy, data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: SqlTrialStore, trial_ids: object) -> None:
        raise PermissionError("permission denied for table trial_heartbeats")

    monkeypatch.setattr(SqlTrialStore, "record_heartbeats", broken)
    options = WorkerOptions(target_trials=8, data=str(data_path), quiet=True)
    with pytest.raises(StorageLost, match="heartbeat failed .*PermissionError"):
        run_worker(opened, options)
    trials = opened.study.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and not [t for t in trials if t.state == TrialState.RUNNING]
    for trial in failed:
        assert "heartbeat failed" in trial.user_attrs["fail_reason"]
        assert trial.intermediate_values == {}  # stopped before training, not trained on
    assert {t.state for t in trials} == {TrialState.FAIL, TrialState.WAITING}


def _interrupt_twice_while(blocked: threading.Event) -> threading.Thread:
    """Send this process SIGINT twice once `blocked` is set (the main thread is then inside a
    storage call), then let the call go on."""

    def send() -> None:
        blocked.wait(timeout=30)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_signals_inside_a_storage_call_are_delivered_when_it_returns() -> None:
    blocked, release, finished = threading.Event(), threading.Event(), threading.Event()

    def storage_call() -> None:
        blocked.set()
        release.wait(timeout=30)
        finished.set()

    sender = _interrupt_twice_while(blocked)
    threading.Timer(1.0, release.set).start()
    with pytest.raises(KeyboardInterrupt):
        retrying(storage_call, "a test call")
    sender.join()
    assert finished.is_set()  # the call ran to its end before the interrupt was raised


def test_a_hand_back_interrupted_twice_still_hands_every_trial_back(
    opened: OpenStudy, storage_url: str
) -> None:
    claimed = _claim(opened, 4)
    # Another worker holds the claim lock, so the hand-back waits inside its storage call
    # while two Ctrl-Cs arrive.
    url = resolve_storage_url(storage_url)
    lock = DatabaseLock(url, f"claim-{opened.study.study_name}")
    holding, waiting = threading.Event(), threading.Event()

    def hold() -> None:
        with lock.held():
            holding.set()
            waiting.wait(timeout=30)
            time.sleep(1.0)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(timeout=30)
    sender = _interrupt_twice_while(waiting)
    waiting.set()
    with pytest.raises(KeyboardInterrupt):
        hand_back(opened, claimed, "interrupted")
    sender.join()
    holder.join()
    trials = study_trials(storage_url, opened.study.study_name)
    states = {t.number: t.state for t in trials}
    assert [states[c.number] for c in claimed] == [TrialState.FAIL] * len(claimed)
    assert sum(state == TrialState.WAITING for state in states.values()) == len(claimed)


def test_a_heartbeat_that_breaks_mid_batch_is_raised_at_the_next_epoch(
    opened: OpenStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread meets a non-transient error after the first beat: `check()` raises it
    instead of the thread dying silently while training goes on."""
    calls: list[int] = []
    broke = threading.Event()

    def second_call_breaks(self: SqlTrialStore, trial_ids: object) -> None:
        calls.append(1)
        if len(calls) > 1:
            broke.set()
            raise PermissionError("permission denied for table trial_heartbeats")

    monkeypatch.setattr(SqlTrialStore, "record_heartbeats", second_call_breaks)
    monkeypatch.setattr(SqlTrialStore, "heartbeat_interval", property(lambda self: 1))
    with heartbeat(opened.store, [1, 2]) as beat:
        beat.check()  # the first beat went through
        assert broke.wait(timeout=30)
        deadline = time.monotonic() + 30
        while beat.error is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the thread records the error right after the call raised
        with pytest.raises(StorageLost, match="heartbeat failed .*permission denied"):
            beat.check()
