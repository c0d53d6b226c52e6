"""Open an Optuna RDB storage with settings that make shared studies safe.

SQLite gets WAL and a long busy timeout so several local processes can write; PostgreSQL gets
pool pre-ping so workers survive dropped connections. Heartbeats are always on: a trial whose
worker died is failed after the grace period and re-queued (`lrsweep.storage.requeue`).
"""

from __future__ import annotations

import sqlite3
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from lrsweep.errors import StorageError
from lrsweep.storage.locks import DatabaseLock
from lrsweep.storage.proxy import ProxiedTrialStore, ProxyClient, connect_proxy
from lrsweep.storage.requeue import RequeueStaleTrials
from lrsweep.storage.trial_store import SqlTrialStore, TrialStore
from lrsweep.storage.urls import StorageUrl

SQLITE_BUSY_TIMEOUT_S = 60.0
ALEMBIC_VERSION = "alembic_version"  # the table whose row Optuna writes last when it sets up


@dataclass(frozen=True)
class StorageSettings:
    """Where the study lives and how dead workers are detected.

    Args:
        url: a SQLAlchemy URL, as returned by `resolve_storage_url`.
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without a heartbeat after which a trial counts as dead.
        max_retry: how many times a dead worker's trial is re-queued.
    """

    url: str = field(repr=False)  # its password too: `parsed.masked` is for people
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 3
    parsed: StorageUrl = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed", StorageUrl.parse(self.url))  # once, passed on
        if self.heartbeat_interval < 1:
            raise StorageError(f"heartbeat interval must be >= 1 s; got {self.heartbeat_interval}")
        if self.grace_period <= self.heartbeat_interval:
            raise StorageError(
                f"grace period ({self.grace_period} s) must exceed the heartbeat interval "
                f"({self.heartbeat_interval} s)"
            )
        if self.max_retry < 0:
            raise StorageError(f"max retry must be >= 0; got {self.max_retry}")

    @property
    def masked_url(self) -> str:
        return self.parsed.masked


def open_storage(
    settings: StorageSettings,
    *,
    storage_class: type[optuna.storages.RDBStorage] = optuna.storages.RDBStorage,
    pool_size: int | None = None,
) -> optuna.storages.BaseStorage:
    """Connect (creating Optuna's tables if needed); an unreachable database is a StorageError.

    A `grpc://host:port` URL connects to a storage proxy (`sweeps proxy`) instead. `pool_size`
    sizes a PostgreSQL connection pool for a process with that many threads.
    """
    url = settings.parsed
    if url.proxy is not None:
        return connect_proxy(*url.proxy, heartbeat_interval=settings.heartbeat_interval)
    engine_kwargs: dict[str, Any]
    database_file = url.sqlite_file
    if database_file is not None:
        _enable_wal(database_file, settings.masked_url)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    else:
        engine_kwargs = {"pool_pre_ping": True, "connect_args": url.connect_args}
        if pool_size is not None:
            engine_kwargs["pool_size"] = pool_size
    try:
        storage = _create_schema_once(url, settings, engine_kwargs, storage_class)
    except (SQLAlchemyError, OSError) as exc:
        reason = describe_database_error(exc, url.password)
        raise StorageError(f"cannot open storage {settings.masked_url}: {reason}") from exc
    if database_file is not None:
        event.listen(storage.engine, "connect", _sqlite_synchronous_normal)
        storage.engine.dispose()  # pooled connections predate the listener
    return storage


def close_storage(storage: optuna.storages.BaseStorage) -> None:
    """Close a database storage's pooled connections (a proxy client holds none)."""
    if isinstance(storage, optuna.storages.RDBStorage):
        storage.engine.dispose()


def open_trial_store(storage: optuna.storages.BaseStorage, study_name: str) -> TrialStore:
    """The trial store for `storage`: SQL for a database, storage calls for a proxy."""
    if isinstance(storage, optuna.storages.RDBStorage):
        return SqlTrialStore(storage, study_name)
    if isinstance(storage, ProxyClient):
        return ProxiedTrialStore(storage, study_name)
    raise TypeError(f"lrsweep workers need an RDB or proxy storage, not {type(storage).__name__}")


def _sqlite_synchronous_normal(connection: sqlite3.Connection, _record: object) -> None:
    """In WAL mode, NORMAL skips the fsync per commit and still never corrupts the file; a
    power cut (not a crash) can lose the last commits. Workers commit every quarter second."""
    connection.execute("PRAGMA synchronous=NORMAL")


def _create_schema_once(
    url: StorageUrl,
    settings: StorageSettings,
    engine_kwargs: dict[str, Any],
    storage_class: type[optuna.storages.RDBStorage],
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage, its tables made if need be, its schema version checked.

    Workers starting together on a new database would race to create Optuna's tables, so that
    is done under a lock; once Optuna has stamped its schema version (its last step), a worker
    opens the storage without it. Optuna's own version check is replaced by one on one
    connection: it reads the stamp on a second connection while its first holds a transaction,
    and behind a PgBouncer pool no larger than the workers starting together, every server
    connection was held by one of those first transactions until PgBouncer gave up (120 s).
    Creating the tables still takes up to three at once (the lock's, and two of Optuna's)."""
    probe = create_engine(url.text, poolclass=NullPool, connect_args=engine_kwargs["connect_args"])
    try:
        if _schema_stamped(probe):
            storage = _rdb_storage(settings, engine_kwargs, storage_class, tables_exist=True)
        else:
            with DatabaseLock(url, "schema", probe).transaction():
                storage = _rdb_storage(settings, engine_kwargs, storage_class, tables_exist=False)
    finally:
        probe.dispose()
    current, head = storage.get_current_version(), storage.get_head_version()
    if current != head:
        storage.engine.dispose()
        remedy = (
            "run `optuna storage upgrade --storage URL`"
            if current in storage.get_all_versions()
            else "it was made by a newer Optuna: install that one"
        )
        raise StorageError(
            f"cannot open storage {settings.masked_url}: its tables are at Optuna schema version "
            f"{current}, this Optuna needs {head}; {remedy}"
        )
    return storage


def _schema_stamped(engine: Engine) -> bool:
    with engine.connect() as connection:
        if not inspect(connection).has_table(ALEMBIC_VERSION):
            return False
        return connection.execute(text(f"SELECT 1 FROM {ALEMBIC_VERSION}")).first() is not None


def _rdb_storage(
    settings: StorageSettings,
    engine_kwargs: dict[str, Any],
    storage_class: type[optuna.storages.RDBStorage],
    *,
    tables_exist: bool,
) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():
        # Heartbeats are marked experimental; they are the documented way to fail and re-run
        # a dead worker's trial.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return storage_class(
            settings.url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.grace_period,
            heartbeat_stale_trial_callback=RequeueStaleTrials(settings.max_retry),
            skip_table_creation=tables_exist,
            skip_compatibility_check=True,  # checked after, on one connection
        )


def _enable_wal(database_file: Any, masked: str) -> None:
    """WAL lets readers and one writer proceed together; the mode persists in the file."""
    if not database_file.parent.is_dir():
        raise StorageError(f"cannot open storage {masked}: folder {database_file.parent} missing")
    try:
        with sqlite3.connect(database_file, timeout=SQLITE_BUSY_TIMEOUT_S) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
        connection.close()
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot open storage {masked}: {exc}") from exc


def describe_database_error(exc: BaseException, password: str | None) -> str:
    """The first line of the driver's own message, with the password scrubbed out."""
    original = getattr(exc, "orig", None) or exc
    message = (str(original).strip().splitlines() or [type(original).__name__])[0]
    return message.replace(password, "***") if password else message
