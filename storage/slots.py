"""Exactly N trials across all workers: a cross-process lock around "count, then ask".

Optuna's MaxTrialsCallback counts after the fact, so two workers that both see N-1 finished
trials both start one and the study ends with N+1. Workers here take a lock (a PostgreSQL
advisory lock, or a file lock for a SQLite file), count trials by state in one SQL query,
and create the next trial before releasing it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from sqlalchemy import text

from storage.locks import DatabaseLock


class TrialSlots:
    """Trial counts of one study and the lock that serialises creating its trials."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self._engine = storage.engine
        self.study_id = storage.get_study_id_from_name(study_name)
        self._lock = DatabaseLock(storage.url, f"claim-{study_name}", engine=storage.engine)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the study's claim lock: no other worker creates a trial meanwhile."""
        with self._lock.held():
            yield

    def counts(self) -> Counter[str]:
        """Trials by state name (COMPLETE, PRUNED, RUNNING, WAITING, FAIL) in one query."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                text("SELECT state, COUNT(*) FROM trials WHERE study_id = :id GROUP BY state"),
                {"id": self.study_id},
            )
            return Counter({str(state): int(count) for state, count in rows})

    def finished_trial_ids(self) -> set[int]:
        """Ids of COMPLETE and PRUNED trials: cheap to diff against what a worker holds."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT trial_id FROM trials WHERE study_id = :id "
                    "AND state IN ('COMPLETE', 'PRUNED')"
                ),
                {"id": self.study_id},
            )
            return {int(trial_id) for (trial_id,) in rows}
