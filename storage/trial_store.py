"""What a worker does to its study's trials, over either path to the database.

`SqlTrialStore` talks SQL to the database itself: the claim lock lives in the database and
each batch's writes are one transaction. `storage.proxy.ProxiedTrialStore` goes through
Optuna's gRPC storage proxy (`sweeps proxy`), for workers that cannot or should not each hold
database connections. Workers, claims and batches use only this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from storage import bulk
from storage.bulk import Finished
from storage.retry import hand_back
from storage.slots import TrialSlots

EpochValues = Sequence[tuple[int, int, float]]
"""(trial_id, step, validation accuracy) of one epoch."""
SystemAttrs = Sequence[tuple[int, str, Any]]
"""(trial_id, key, value) system attributes, such as the pruner's rung marks."""
FINISHED_STATES = ("COMPLETE", "PRUNED")


def finished_count(counts: Counter[str]) -> int:
    """Finished trials in `TrialStore.counts()`: what a study's target counts."""
    return sum(counts[state] for state in FINISHED_STATES)


class TrialStore(ABC):
    """One study's trials as a worker reads and writes them."""

    study_id: int

    @abstractmethod
    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the study's claim lock while counting and creating trials."""

    @abstractmethod
    def counts(self) -> Counter[str]:
        """Trials by state name (COMPLETE, PRUNED, RUNNING, WAITING, FAIL)."""

    @abstractmethod
    def finished_trial_ids(self) -> set[int]:
        """Ids of COMPLETE and PRUNED trials."""

    @abstractmethod
    def create_trials(
        self, templates: Sequence[FrozenTrial], cap: int | None
    ) -> list[FrozenTrial]:
        """RUNNING trials from `templates`, each with a first heartbeat. `cap` is the study's
        target: trials that would take the study past it are not created."""

    @abstractmethod
    def write_epoch(self, values: EpochValues, system_attrs: SystemAttrs = ()) -> None:
        """Store one epoch's validation accuracies (and pruner marks) of running trials."""

    @abstractmethod
    def finish_trials(self, outcomes: Sequence[Finished]) -> None:
        """Finish the trials that are still RUNNING (one failed meanwhile as stale keeps
        its state)."""

    @abstractmethod
    def hand_back(self, study: optuna.Study, trial_ids: Sequence[int], reason: str) -> None:
        """Fail trials this worker gives up on and queue copies (`storage.retry.hand_back`),
        under the claim lock."""

    @abstractmethod
    def record_heartbeat(self, trial_id: int) -> None:
        """Say that `trial_id` is still being worked on."""

    @property
    @abstractmethod
    def heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats; None when the storage does not track them."""


class SqlTrialStore(TrialStore):
    """Direct SQL: a database lock around claims, one transaction per batch write."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self._storage = storage
        self._slots = TrialSlots(storage, study_name)
        self.study_id = self._slots.study_id

    def exclusive(self) -> AbstractContextManager[None]:
        return self._slots.exclusive()

    def counts(self) -> Counter[str]:
        return self._slots.counts()

    def finished_trial_ids(self) -> set[int]:
        return self._slots.finished_trial_ids()

    def create_trials(
        self, templates: Sequence[FrozenTrial], cap: int | None
    ) -> list[FrozenTrial]:
        # The caller holds the claim lock and has already counted against the cap.
        return bulk.create_trials(self._storage, self.study_id, templates)

    def write_epoch(self, values: EpochValues, system_attrs: SystemAttrs = ()) -> None:
        bulk.write_epoch(self._storage, values, system_attrs)

    def finish_trials(self, outcomes: Sequence[Finished]) -> None:
        bulk.finish_trials(self._storage, outcomes)

    def hand_back(self, study: optuna.Study, trial_ids: Sequence[int], reason: str) -> None:
        with self.exclusive():
            hand_back(study, trial_ids, reason, self._storage)

    def record_heartbeat(self, trial_id: int) -> None:
        self._storage.record_heartbeat(trial_id)

    @property
    def heartbeat_interval(self) -> int | None:
        return self._storage.get_heartbeat_interval()
