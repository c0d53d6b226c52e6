"""Exactly N trials across all workers: a cross-process lock around "count, then ask".

Optuna's MaxTrialsCallback counts after the fact, so two workers that both see N-1 finished
trials both start one and the study ends with N+1. Workers here take a lock (a PostgreSQL
advisory lock, or a file lock beside a SQLite file), count trials by state in one SQL query,
and create the next trial before releasing it.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from sqlalchemy import text

from storage.urls import sqlite_path


class TrialSlots:
    """Trial counts of one study and the lock that serialises creating its trials."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self._engine = storage.engine
        self._study_id = storage.get_study_id_from_name(study_name)
        self._lock_key = _advisory_key(study_name)
        self._lock_file: Path | None = None
        database_file = sqlite_path(storage.url)
        if database_file is not None:
            self._lock_file = database_file.with_name(database_file.name + ".claim-lock")

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the study's claim lock: no other worker creates a trial meanwhile."""
        if self._lock_file is not None:
            with self._lock_file.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        else:
            with self._engine.begin() as connection:
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._lock_key})
                yield

    def counts(self) -> Counter[str]:
        """Trials by state name (COMPLETE, PRUNED, RUNNING, WAITING, FAIL) in one query."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                text("SELECT state, COUNT(*) FROM trials WHERE study_id = :id GROUP BY state"),
                {"id": self._study_id},
            )
            return Counter({str(state): int(count) for state, count in rows})


def _advisory_key(study_name: str) -> int:
    digest = hashlib.sha256(f"lrsweep:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
