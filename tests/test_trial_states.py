"""Trial states as they happen, and what a worker does when the storage surprises it: real
studies (SQLite and PostgreSQL), real training, signals sent for real inside storage calls."""

from __future__ import annotations

import os
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from conftest import unique_study
from lrsweep.storage import (
    SqlTrialStore,
    StorageLost,
    StorageSettings,
    heartbeat,
    resolve_storage_url,
)
from lrsweep.storage.heartbeat import Heartbeat
from lrsweep.storage.outage import (
    InterruptRequested,
    held_signals,
    is_transient,
    retrying,
    signals_held,
)
from lrsweep.sweeps.study.objective import objective
from lrsweep.sweeps.study.open import OpenStudy, create_or_join, fold_tensors
from lrsweep.sweeps.study.options import DataOptions
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.sweeps.worker.batch import TrialBatch
from lrsweep.sweeps.worker.history import StudyHistory
from lrsweep.sweeps.worker.loop import hand_back, run_worker
from lrsweep.sweeps.worker.options import WorkerOptions
from lrsweep.sweeps.worker.proposals import ClaimedTrial, propose
from lrsweep.sweeps.worker.sampling import make_sampler
from lrsweep.trainer.data import cached_dataset
from lrsweep.trainer.training import EpochResult, Tensors
from lrsweep.trainer.vectorized import BatchTraining

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
    history = StudyHistory(opened.study.pruner)
    proposals = propose(opened.settings, make_sampler(0), "x", history.sampler_view(), count)
    started = opened.store.claim(proposals, None, {"worker": "test"}, uuid.uuid4().hex)
    return [ClaimedTrial.of(opened.settings, trial) for trial in started]


def _claim_constant_lrs(opened: OpenStudy, rates: tuple[float, ...]) -> list[ClaimedTrial]:
    """Claim one constant-lr trial per rate (1e6 diverges in its first epoch)."""
    proposals = [
        optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params={"scheduler": "constant", "lr": rate, "momentum": 0.9},
            distributions={
                "scheduler": CategoricalDistribution(["constant"]),
                "lr": FloatDistribution(1e-4, 1e7, log=True),
                "momentum": FloatDistribution(0.0, 0.99),
            },
        )
        for rate in rates
    ]
    started = opened.store.claim(proposals, None, {"worker": "test"}, uuid.uuid4().hex)
    return [ClaimedTrial.of(opened.settings, trial) for trial in started]


def _folds(opened: OpenStudy, data_path: Path) -> list[Tensors]:
    return fold_tensors(opened.settings, cached_dataset(str(data_path)), "cpu")


def test_a_trial_failed_meanwhile_is_reported_lost_and_kept_out_of_the_history(
    opened: OpenStudy, data_path: Path
) -> None:
    claimed = _claim(opened, 3)
    stale = claimed[1]
    # Another worker's stale check fails it (and would queue a copy) while this batch trains.
    opened.storage.set_trial_state_values(stale.trial_id, TrialState.FAIL)
    history = StudyHistory(opened.study.pruner)
    batch = TrialBatch(opened, claimed, _folds(opened, data_path), history)
    outcome = batch.run()
    assert outcome.lost == (stale.number,)
    assert batch.unfinished() == []  # nothing of this batch is left to hand back
    assert sum(outcome.by_reason.values()) == 2
    held = {t.number: t.state for t in history.sampler_view()}
    assert stale.number not in held
    assert (
        list(held.values())
        == [TrialState.COMPLETE] * 2
        == [TrialState.COMPLETE] * (history.finished.completed)
    )
    stored = {t.number: t for t in opened.study.get_trials()}
    assert stored[stale.number].state == TrialState.FAIL
    assert stored[stale.number].intermediate_values == {}  # nothing written into it


@pytest.mark.parametrize("interval, writes", [(0.0, EPOCHS), (3600.0, 1)])
def test_epochs_are_written_together_and_every_one_is_stored(
    opened: OpenStudy,
    data_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    interval: float,
    writes: int,
) -> None:
    """Within the store interval a batch's epochs wait and go in one transaction (the last
    epoch is written at once); with none, each epoch is its own. Either way every epoch of
    every trial is stored."""
    import lrsweep.sweeps.worker.batch

    calls: list[int] = []
    real_write = SqlTrialStore.write_epoch

    def counted(self: SqlTrialStore, *args: Any) -> Any:
        calls.append(1)
        return real_write(self, *args)

    monkeypatch.setattr(SqlTrialStore, "write_epoch", counted)
    monkeypatch.setattr(lrsweep.sweeps.worker.batch, "STORE_INTERVAL_S", interval)
    claimed = _claim(opened, 3)
    batch = TrialBatch(
        opened, claimed, _folds(opened, data_path), StudyHistory(opened.study.pruner)
    )
    batch.run()
    assert len(calls) == writes
    assert batch.unfinished() == []
    for trial in opened.study.get_trials():
        assert trial.state == TrialState.COMPLETE
        assert sorted(trial.intermediate_values) == list(range(EPOCHS))


def test_a_ctrl_c_mid_batch_stores_every_epoch_computed_before_it_stops(
    opened: OpenStudy, data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGINT held after epoch 2 of a batch whose epochs wait to be written: the epochs
    computed so far are stored, then the batch stops (its trials are left to hand back)."""
    import lrsweep.sweeps.worker.batch

    class InterruptedAfterEpoch2(BatchTraining):
        def epochs(self) -> Iterator[Mapping[int, EpochResult]]:
            for results in super().epochs():
                if next(iter(results.values())).epoch == 2:
                    signal.raise_signal(signal.SIGINT)
                yield results

    monkeypatch.setattr(lrsweep.sweeps.worker.batch, "BatchTraining", InterruptedAfterEpoch2)
    monkeypatch.setattr(lrsweep.sweeps.worker.batch, "STORE_INTERVAL_S", 3600.0)
    claimed = _claim(opened, 3)
    batch = TrialBatch(
        opened, claimed, _folds(opened, data_path), StudyHistory(opened.study.pruner)
    )
    with pytest.raises(KeyboardInterrupt), signals_held():  # delivered as the block exits
        with pytest.raises(InterruptRequested):
            batch.run()
    assert batch.unfinished() == claimed
    for trial in opened.study.get_trials():
        assert trial.state == TrialState.RUNNING
        assert sorted(trial.intermediate_values) == [0, 1, 2]


def test_a_broken_heartbeat_stops_the_batch_and_hands_it_back(
    opened: OpenStudy, data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: SqlTrialStore, trial_ids: object) -> None:
        raise PermissionError("permission denied for table trial_heartbeats")

    monkeypatch.setattr(SqlTrialStore, "record_heartbeats", broken)
    options = WorkerOptions(target_trials=8, data=DataOptions(str(data_path)), quiet=True)
    with pytest.raises(StorageLost, match="heartbeat failed .*PermissionError"):
        run_worker(opened, options)
    trials = opened.study.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and not [t for t in trials if t.state == TrialState.RUNNING]
    for trial in failed:
        assert "heartbeat failed" in trial.user_attrs["fail_reason"]
        assert trial.intermediate_values == {}  # stopped before training, not trained on
    assert {t.state for t in trials} == {TrialState.FAIL, TrialState.WAITING}


def _deliver_signals_to_the_main_thread() -> None:
    """Block SIGINT in the calling thread: the kernel then delivers this process's SIGINTs to
    the main thread, which is woken from a blocking call to run the handler (Python runs
    handlers in the main thread only)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _interrupt_twice_once(entered: threading.Event, sent: threading.Event) -> threading.Thread:
    """Once `entered` is set (the main thread is then inside the window under test), send
    this process SIGINT twice, then set `sent` (which lets the window end)."""

    def send() -> None:
        _deliver_signals_to_the_main_thread()
        assert entered.wait(timeout=60)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        sent.set()

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_signals_inside_a_storage_call_are_delivered_when_it_returns() -> None:
    entered, sent, finished = threading.Event(), threading.Event(), threading.Event()

    def storage_call() -> None:
        entered.set()
        assert sent.wait(timeout=60)
        time.sleep(0.05)  # the signals are pending now; the call still runs to its end
        finished.set()

    sender = _interrupt_twice_once(entered, sent)
    with pytest.raises(KeyboardInterrupt):
        retrying(storage_call, "a test call")
    sender.join()
    assert finished.is_set()


class _BlockingStderr:
    """stderr whose first write blocks until the test's signals were sent."""

    def __init__(self, entered: threading.Event, sent: threading.Event) -> None:
        self.entered, self.sent, self.lines = entered, sent, []

    def write(self, text: str) -> int:
        if not self.entered.is_set():
            self.entered.set()
            assert self.sent.wait(timeout=60)
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("window", ["storage call", "backoff", "message"])
def test_two_ctrl_cs_anywhere_in_a_hand_back_still_hand_every_trial_back(
    window: str, opened: OpenStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Ctrl-C (two here) inside a hand-back: in its storage call, in the backoff
    after a transient failure, or while it writes its message. The hand-back completes, then
    the interrupt is raised."""
    from sqlalchemy.exc import OperationalError

    claimed = _claim(opened, 4)
    entered, sent = threading.Event(), threading.Event()
    real = SqlTrialStore.hand_back
    attempts: list[int] = []

    def hand_back_in_window(self: SqlTrialStore, *args: Any) -> None:
        attempts.append(1)
        if window == "storage call":
            entered.set()
            assert sent.wait(timeout=60)
        if window == "backoff":
            if len(attempts) == 1:
                entered.set()  # the signals arrive while `retrying` backs off
                raise OperationalError("UPDATE trials", {}, Exception("connection closed"))
            assert sent.wait(timeout=60)
        real(self, *args)

    monkeypatch.setattr(SqlTrialStore, "hand_back", hand_back_in_window)
    if window == "message":
        monkeypatch.setattr(sys, "stderr", _BlockingStderr(entered, sent))
    sender = _interrupt_twice_once(entered, sent)
    with pytest.raises(KeyboardInterrupt):
        hand_back(opened, claimed, "interrupted")
    sender.join()
    assert sent.is_set()
    trials = {t.number: t for t in opened.study.get_trials()}
    for trial in claimed:
        failed = trials[trial.number]
        assert (
            failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"] == "interrupted"
        )
        assert trials[failed.user_attrs["retried_as"]].state == TrialState.WAITING


def test_a_batch_that_fails_mid_way_still_stores_the_epochs_it_had_not_written(
    opened: OpenStudy, data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epochs waiting to be written when the heartbeat breaks (after epoch 2): one last write
    stores them, so the trial that diverged at epoch 0 keeps its result and is not handed
    back; the others keep their three epochs and are left to hand back."""
    import lrsweep.sweeps.worker.batch

    failing = Heartbeat()

    class HeartbeatBreaksAfterEpoch2(BatchTraining):
        def epochs(self) -> Iterator[Mapping[int, EpochResult]]:
            for results in super().epochs():
                if next(iter(results.values())).epoch == 3:
                    failing.error = PermissionError("permission denied for table trial_heartbeats")
                yield results

    @contextmanager
    def broken_heartbeat(*_: object) -> Iterator[Heartbeat]:
        yield failing

    monkeypatch.setattr(lrsweep.sweeps.worker.batch, "BatchTraining", HeartbeatBreaksAfterEpoch2)
    monkeypatch.setattr(lrsweep.sweeps.worker.batch, "heartbeat", broken_heartbeat)
    monkeypatch.setattr(lrsweep.sweeps.worker.batch, "STORE_INTERVAL_S", 3600.0)
    claimed = _claim_constant_lrs(opened, (0.05, 1e6, 0.1))
    batch = TrialBatch(
        opened, claimed, _folds(opened, data_path), StudyHistory(opened.study.pruner)
    )
    with pytest.raises(StorageLost, match="heartbeat failed"):
        batch.run()
    assert batch.unfinished() == [claimed[0], claimed[2]]
    trials = {t.number: t for t in opened.study.get_trials()}
    diverged = trials[claimed[1].number]
    assert diverged.state == TrialState.PRUNED and diverged.user_attrs["stop_reason"] == "diverged"
    for index in (0, 2):
        trial = trials[claimed[index].number]
        assert trial.state == TrialState.RUNNING
        assert sorted(trial.intermediate_values) == [0, 1, 2]


def test_a_heartbeat_that_breaks_mid_batch_stops_the_batch_at_the_next_epoch(
    opened: OpenStudy, data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat thread meets a non-transient error after the batch's first epoch: the
    batch stops at the next epoch instead of training on while its trials go stale."""
    import lrsweep.sweeps.worker.batch

    failing = Heartbeat()
    real_write = SqlTrialStore.write_epoch

    def write_then_break_heartbeat(self: SqlTrialStore, *args: Any) -> Any:
        written = real_write(self, *args)
        failing.error = PermissionError("permission denied for table trial_heartbeats")
        return written

    @contextmanager
    def broken_heartbeat(*_: object) -> Iterator[Heartbeat]:
        yield failing

    monkeypatch.setattr(SqlTrialStore, "write_epoch", write_then_break_heartbeat)
    monkeypatch.setattr(lrsweep.sweeps.worker.batch, "heartbeat", broken_heartbeat)
    monkeypatch.setattr(
        lrsweep.sweeps.worker.batch, "STORE_INTERVAL_S", 0.0
    )  # every epoch written
    claimed = _claim(opened, 3)
    batch = TrialBatch(
        opened, claimed, _folds(opened, data_path), StudyHistory(opened.study.pruner)
    )
    with pytest.raises(StorageLost, match="heartbeat failed .*permission denied"):
        batch.run()
    assert batch.unfinished() == claimed
    for trial in opened.study.get_trials():
        assert trial.state == TrialState.RUNNING and sorted(trial.intermediate_values) == [0]


def test_a_heartbeat_thread_that_breaks_reports_it_through_check(
    opened: OpenStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread itself: after the first beat, a non-transient error is kept for `check()`
    instead of the thread dying silently."""
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


def test_a_third_ctrl_c_goes_through_at_once() -> None:
    """Held signals wait for the storage call; a user who insists (a third) is not held."""
    entered, sent = threading.Event(), threading.Event()

    def stuck_call() -> None:
        entered.set()
        for _ in range(600):  # a call that would hold the worker for a minute (in short
            time.sleep(0.1)  # steps: a signal taken by one of torch's threads wakes no sleep)

    def send_three() -> None:
        _deliver_signals_to_the_main_thread()
        assert entered.wait(timeout=60)
        for count in range(3):
            os.kill(os.getpid(), signal.SIGINT)
            # Wait until it is held: two pending SIGINTs would reach Python as one.
            deadline = time.monotonic() + 30
            while count < 2 and held_signals() <= count and time.monotonic() < deadline:
                time.sleep(0.01)
        sent.set()

    sender = threading.Thread(target=send_three)
    sender.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        retrying(stuck_call, "a stuck call")
    sender.join()
    assert sent.is_set() and time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("code", "details", "transient"),
    [
        ("UNAVAILABLE", "failed to connect to all addresses", True),
        ("UNKNOWN", "Exception calling application: (psycopg.OperationalError) gone", True),
        (
            "UNKNOWN",
            "Exception calling application: An exception is raised during the commit. This "
            "typically happens due to invalid data in the commit",
            True,
        ),
        ("UNKNOWN", "Exception calling application: division by zero", False),
        ("NOT_FOUND", "no such study", False),
    ],
)
def test_a_database_outage_behind_the_proxy_is_transient(
    code: str, details: str, transient: bool
) -> None:
    import grpc

    class Refused(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode[code]

        def details(self) -> str:
            return details

    assert is_transient(Refused()) is transient


def test_a_cross_validated_batch_finishes_diverged_and_pruned_trials_whole(
    storage_url: str, data_path: Path
) -> None:
    """Three folds per trial: a trial whose folds diverge ends as diverged, trials the pruner
    stops end at that epoch with all their folds, and each reports the objective of its fold
    means."""
    dataset = cached_dataset(str(data_path))
    prune_everything = {"class": "ThresholdPruner", "lower": 0.999}
    settings = StudySettings(
        data_sha256=dataset.sha256, epochs=4, folds=3, pruner_spec=prune_everything
    )
    opened = create_or_join(
        StorageSettings(resolve_storage_url(storage_url)), unique_study(), settings, dataset
    )
    claimed = _claim_constant_lrs(opened, (0.05, 1e6, 0.1))
    batch = TrialBatch(
        opened, claimed, _folds(opened, data_path), StudyHistory(opened.study.pruner)
    )
    outcome = batch.run()
    assert outcome.by_reason == {"diverged": 1, "pruned": 2}
    assert batch.unfinished() == []
    trials = {t.number: t for t in opened.study.get_trials()}
    diverged = trials[claimed[1].number]
    assert diverged.state == TrialState.PRUNED
    assert diverged.user_attrs["stop_reason"] == "diverged"
    for trial in (trials[claimed[0].number], trials[claimed[2].number]):
        assert trial.state == TrialState.PRUNED and trial.user_attrs["stop_reason"] == "pruned"
        assert list(trial.intermediate_values) == [0]  # all three folds stopped at epoch 0
        folds = trial.user_attrs["fold_accuracies"]
        assert len(folds) == 3
        expected = objective(statistics.fmean(folds), trial.user_attrs["validation_loss"])
        assert trial.value == trial.intermediate_values[0] == pytest.approx(expected, abs=1e-12)
    assert isinstance(opened.storage, optuna.storages.RDBStorage)
    opened.storage.engine.dispose()
