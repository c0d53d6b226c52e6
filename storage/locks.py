"""Named cross-process mutexes for one database: a file lock beside a SQLite file, a
PostgreSQL advisory lock otherwise. Both are released if the holder dies."""

from __future__ import annotations

import fcntl
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from storage.urls import sqlite_path


class DatabaseLock:
    """Mutex `name` shared by every process that opens the same database."""

    def __init__(self, url: str, name: str, engine: Engine | None = None) -> None:
        self._url = url
        self._engine = engine
        database_file = sqlite_path(url)
        safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        self._lock_file = (
            None
            if database_file is None
            else database_file.with_name(f"{database_file.name}.{safe_name}-lock")
        )
        digest = hashlib.sha256(f"lrsweep:{name}".encode()).digest()
        self._advisory_key = int.from_bytes(digest[:8], "big", signed=True)

    @contextmanager
    def held(self) -> Iterator[None]:
        if self._lock_file is not None:
            with self._lock_file.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        engine = self._engine or create_engine(self._url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._advisory_key}
                )
                yield
        finally:
            if self._engine is None:
                engine.dispose()
