"""Named cross-process mutexes for one database: a file lock (in the temporary folder) for a
SQLite file, a PostgreSQL advisory lock otherwise. Both are released if the holder dies.

Threads of one process (the storage proxy serves many requests at once) queue on an in-process
lock first, so at most one of them holds a database connection while it waits for the
database lock: waiting claims never take every pooled connection from the requests that would
let the holder finish."""

from __future__ import annotations

import fcntl
import hashlib
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from lrsweep.storage.urls import StorageUrl

FIRST_WAIT_S, LONGEST_WAIT_S = 0.005, 0.1  # between a PostgreSQL waiter's tries


class DatabaseLock:
    """Mutex `name` shared by every process that opens the same database as `engine`."""

    def __init__(self, url: StorageUrl, name: str, engine: Engine) -> None:
        self._engine = engine
        database_file = url.sqlite_file
        self._lock_file = None if database_file is None else _lock_path(database_file, name)
        digest = hashlib.sha256(f"lrsweep:{name}".encode()).digest()
        self._advisory_key = int.from_bytes(digest[:8], "big", signed=True)
        with _REGISTRY_LOCK:
            self._in_process = _IN_PROCESS.setdefault((url.text, name), threading.Lock())

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection whose transaction holds the lock: committed when the block ends, rolled
        back if it fails, and the lock released either way. Do all the work under the lock on
        this connection. A holder that needed a second one could wait for ever behind a
        connection pooler (PgBouncer) whose every server connection is pinned by an open
        transaction of another holder that also waits for one."""
        with self._in_process:
            if self._lock_file is not None:
                with _file_locked(self._lock_file), self._engine.begin() as connection:
                    yield connection
                return
            connection = self._acquire()
            try:
                yield connection
                connection.commit()  # ends the transaction, and with it the lock
            finally:
                connection.close()  # rolled back, if the block failed: released all the same

    def _acquire(self) -> Connection:
        """A connection whose open transaction holds the lock. A waiter asks in short
        transactions (`pg_try_advisory_xact_lock`) rather than blocking in one: blocked, it
        would hold a server connection the holder's own work may need (behind a PgBouncer
        pool smaller than the workers, the holder then never got one)."""
        wait = FIRST_WAIT_S
        while True:
            connection = self._engine.connect()
            try:
                taken = connection.execute(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": self._advisory_key}
                ).scalar()
            except BaseException:
                connection.close()
                raise
            if taken:
                return connection
            connection.close()
            time.sleep(wait * random.uniform(0.5, 1.5))  # waiters spread, not in lockstep
            wait = min(2 * wait, LONGEST_WAIT_S)


_IN_PROCESS: dict[tuple[str, str], threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


@contextmanager
def _file_locked(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_path(database_file: Path, name: str) -> Path:
    """A lock file outside the user's folder (SQLite studies are local to one machine, so the
    machine's temporary folder is shared by every process that can open the file)."""
    key = hashlib.sha256(f"{database_file.resolve()}\0{name}".encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / "lrsweep-locks" / f"{key}.lock"
