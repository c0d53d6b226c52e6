"""What a worker does to its study's trials, over either path to the database.

`SqlTrialStore` talks SQL to the database itself. `lrsweep.storage.proxy.ProxiedTrialStore` goes
through Optuna's gRPC storage proxy (`sweeps proxy`), whose server side runs the same
`SqlTrialStore` methods. Workers, claims and batches use only this interface.

The study's claim lock is taken here and nowhere else: around each claim (count, cap, start),
each hand-back and each stale-trial sweep, so no claim counts the study between a failure and
the queued copy that is owed its place, and the study ends with exactly its target.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select

from lrsweep.storage import bulk, reads
from lrsweep.storage.bulk import EpochValues, EpochWrite, Finished, SystemAttrs
from lrsweep.storage.locks import DatabaseLock
from lrsweep.storage.optuna_rdb import stale_trial_ids
from lrsweep.storage.requeue import DEFAULT_MAX_RETRY, RequeueStaleTrials, hand_back
from lrsweep.storage.urls import StorageUrl

FINISHED_STATES = ("COMPLETE", "PRUNED")


def finished_count(counts: Counter[str]) -> int:
    """Finished trials in `TrialStore.counts()`: what a study's target counts."""
    return sum(counts[state] for state in FINISHED_STATES)


class TrialStore(ABC):
    """One study's trials as a worker reads and writes them."""

    study_id: int

    @abstractmethod
    def counts(self) -> Counter[str]:
        """Trials by state name (COMPLETE, PRUNED, RUNNING, WAITING, FAIL)."""

    @abstractmethod
    def states_from(self, first_id: int) -> dict[int, TrialState]:
        """The state of each trial of the study with an id >= `first_id`, read at one moment
        (one statement), so that a trial missing from the answer was created after it and has
        a higher id: every insert into a study commits under its claim lock."""

    @abstractmethod
    def trials_by_id(self, trial_ids: Collection[int]) -> Iterator[FrozenTrial]:
        """The study's trials with these ids, in id order, read in chunks as iterated."""

    @abstractmethod
    def claim(
        self,
        proposals: Sequence[FrozenTrial],
        cap: int | None,
        user_attrs: Mapping[str, Any],
        claim_id: str,
    ) -> list[FrozenTrial]:
        """Under the claim lock, start WAITING trials, then `proposals`, at most as many as
        there are proposals and as the study's target `cap` allows, each with `user_attrs`
        (`bulk.claim_trials`). `claim_id`, made once per claim, makes a retry idempotent."""

    @abstractmethod
    def enqueue(self, templates: Sequence[FrozenTrial]) -> None:
        """Under the claim lock, add WAITING trials with fixed parameters (baselines)."""

    @abstractmethod
    def write_epoch(
        self,
        values: EpochValues,
        system_attrs: SystemAttrs = (),
        finished: Sequence[Finished] = (),
    ) -> EpochWrite:
        """Store epochs of a batch and finish the trials that ended in them, in one
        transaction (`bulk.write_epoch`); idempotent, so it may be retried."""

    @abstractmethod
    def fail_stale_trials(self, study: optuna.Study) -> None:
        """Under the claim lock, fail dead workers' trials and queue their copies."""

    @abstractmethod
    def hand_back(self, study: optuna.Study, trial_ids: Sequence[int], reason: str) -> int:
        """Under the claim lock, fail trials this worker gives up on (those still RUNNING)
        and queue copies; returns how many."""

    @abstractmethod
    def record_heartbeats(self, trial_ids: Sequence[int]) -> None:
        """Say that a batch's trials are still being worked on (one request or statement)."""

    @property
    @abstractmethod
    def heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats; None when the storage does not track them."""


class SqlTrialStore(TrialStore):
    """Direct SQL: the claim lock in the database (or beside a SQLite file), one transaction
    per claim and per write of a batch's epochs."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self._storage = storage
        self.study_id = storage.get_study_id_from_name(study_name)
        url = StorageUrl.of(storage.engine.url)  # parsed by SQLAlchemy already
        self._lock = DatabaseLock(url, f"claim-{study_name}", storage.engine)
        callback = storage.get_heartbeat_stale_trial_callback()
        self._max_retry = (
            callback.max_retry if isinstance(callback, RequeueStaleTrials) else DEFAULT_MAX_RETRY
        )

    def counts(self) -> Counter[str]:
        with self._storage.engine.connect() as connection:
            return bulk.counts(connection, self.study_id)

    def states_from(self, first_id: int) -> dict[int, TrialState]:
        trials = bulk.TRIALS
        with self._storage.engine.connect() as connection:
            rows = connection.execute(
                select(trials.c.trial_id, trials.c.state).where(
                    trials.c.study_id == self.study_id, trials.c.trial_id >= first_id
                )
            )
            return {int(trial_id): TrialState(state) for trial_id, state in rows}

    def trials_by_id(self, trial_ids: Collection[int]) -> Iterator[FrozenTrial]:
        if not trial_ids:
            return
        with self._storage.engine.connect() as connection:
            yield from reads.trials_by_id(connection, trial_ids)

    def claim(
        self,
        proposals: Sequence[FrozenTrial],
        cap: int | None,
        user_attrs: Mapping[str, Any],
        claim_id: str,
    ) -> list[FrozenTrial]:
        with self._lock.transaction() as connection:
            return bulk.claim_trials(
                connection, self.study_id, proposals, cap, user_attrs, claim_id
            )

    def enqueue(self, templates: Sequence[FrozenTrial]) -> None:
        with self._lock.transaction() as connection:
            bulk.enqueue_trials(connection, self.study_id, templates)

    def write_epoch(
        self,
        values: EpochValues,
        system_attrs: SystemAttrs = (),
        finished: Sequence[Finished] = (),
    ) -> EpochWrite:
        return bulk.write_epoch(self._storage, values, system_attrs, finished)

    def fail_stale_trials(self, study: optuna.Study) -> None:
        """Optuna's `fail_stale_trials`, with the copies queued in the same transaction. The
        stale list is read before the lock (as Optuna reads it), and each trial on it failed
        only if, under the lock, it is still RUNNING and still silent (`bulk.fail_if_running`)."""
        stale = stale_trial_ids(self._storage, self.study_id)
        if stale:
            self._hand_back(stale, RequeueStaleTrials.REASON, silent_for_s=self._grace_period_s)

    def hand_back(self, study: optuna.Study, trial_ids: Sequence[int], reason: str) -> int:
        return self._hand_back(trial_ids, reason)

    def _hand_back(
        self, trial_ids: Sequence[int], reason: str, silent_for_s: float | None = None
    ) -> int:
        with self._lock.transaction() as connection:
            return hand_back(
                connection,
                self.study_id,
                trial_ids,
                reason,
                self._max_retry,
                silent_for_s=silent_for_s,
            )

    @property
    def _grace_period_s(self) -> float:
        """Optuna's: the storage's grace period, else twice its heartbeat interval."""
        storage = self._storage
        return storage.grace_period or 2 * (storage.heartbeat_interval or 0)

    def record_heartbeats(self, trial_ids: Sequence[int]) -> None:
        bulk.record_heartbeats(self._storage, trial_ids)

    @property
    def heartbeat_interval(self) -> int | None:
        return self._storage.get_heartbeat_interval()
