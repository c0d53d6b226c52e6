"""Turn what the user typed (nothing, a file path, a SQLAlchemy URL) into a storage URL.

Users type `postgresql://user@host/db` and `sweeps.db`; Optuna wants a SQLAlchemy URL with a
driver it can import. Every URL shown to a person goes through `mask_url` first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from lrsweep.errors import StorageError

STORAGE_ENV_VAR = "LRSWEEP_STORAGE"
DEFAULT_SQLITE_FILE = "lrsweep.db"
POSTGRES_DRIVER = "psycopg"
# The one place PostgreSQL connections are configured. psycopg 3 prepares a statement it runs
# often on its server connection; a PgBouncer in transaction pooling hands the next transaction
# another server connection, where the statement does not exist ("prepared statement "_pg3_9"
# does not exist"). Unprepared, the same statements work directly, behind transaction pooling
# and behind session pooling (lrsweep's locks are transaction-scoped advisory locks).
POSTGRES_CONNECT_ARGS: Mapping[str, Any] = MappingProxyType({"prepare_threshold": None})
PROXY_SCHEME = "grpc"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def resolve_storage_url(text: str | None) -> str:
    """The SQLAlchemy URL for `text`, then $LRSWEEP_STORAGE, else ./lrsweep.db (SQLite).

    Examples:
        >>> resolve_storage_url("postgresql://me@db/sweeps")
        'postgresql+psycopg://me@db/sweeps'
        >>> resolve_storage_url("/tmp/study.db")
        'sqlite:////tmp/study.db'
    """
    text = text or os.environ.get(STORAGE_ENV_VAR) or DEFAULT_SQLITE_FILE
    if not _SCHEME.match(text):
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    url = parse_url(text)
    backend = url.get_backend_name()
    if backend == PROXY_SCHEME:
        _proxy_address(url)  # validates host and port
        return text
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise StorageError(
                "an in-memory SQLite database cannot hold a study shared by workers; "
                "give a file, e.g. sqlite:///sweeps.db"
            )
        return url.render_as_string(hide_password=False)
    if backend == "postgresql":
        # The driver the URL names, if any: SQLAlchemy 2.0 reports its default, psycopg2, for
        # a bare postgresql:// (2.1 reports psycopg), which stands for ours.
        driver = url.drivername.partition("+")[2]
        if driver and driver != POSTGRES_DRIVER:
            raise StorageError(
                f"PostgreSQL driver {driver!r} is not installed; use "
                f"postgresql:// or postgresql+{POSTGRES_DRIVER}://"
            )
        if not url.database:
            raise StorageError(f"storage URL {mask_url(text)} names no database")
        return url.set(drivername=f"postgresql+{POSTGRES_DRIVER}").render_as_string(
            hide_password=False
        )
    raise StorageError(
        f"unsupported storage {mask_url(text)}: use a SQLite file, a postgresql:// URL or "
        f"a storage proxy's grpc://host:port"
    )


def _proxy_address(parsed: URL) -> tuple[str, int] | None:
    """(host, port) of a `grpc://host:port` storage-proxy URL, None for database URLs."""
    if parsed.get_backend_name() != PROXY_SCHEME:
        return None
    if not parsed.host or parsed.port is None or parsed.database:
        masked = parsed.render_as_string(hide_password=True)
        raise StorageError(f"storage proxy URL {masked} must be grpc://host:port")
    return parsed.host, parsed.port


def parse_url(text: str) -> URL:
    try:
        return make_url(text)
    except (ArgumentError, ValueError) as exc:
        raise StorageError(f"malformed storage URL {mask_url(text)}") from exc


def mask_url(text: str) -> str:
    """The URL with any password replaced by ***, even when the URL does not parse."""
    try:
        return make_url(text).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Unparseable: blank everything between '://' user ':' and '@'.
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", text)


@dataclass(frozen=True)
class StorageUrl:
    """A resolved storage URL parsed once and passed on: what to connect to, what to show a
    person, and which kind of storage it names.

    Args:
        text: the SQLAlchemy URL, password included: for connecting and a launched worker's
            environment only, never printed (not in the repr either).
        masked: the URL with its password as ***.
        sqlite_file: the database file of a SQLite URL, else None.
        proxy: (host, port) of a `grpc://host:port` storage proxy, else None.
        password: the password, to scrub from a driver's error message.
    """

    text: str = field(repr=False)
    masked: str
    sqlite_file: Path | None = None
    proxy: tuple[str, int] | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def connect_args(self) -> dict[str, Any]:
        """What each database connection opens with: POSTGRES_CONNECT_ARGS on PostgreSQL."""
        if self.sqlite_file is not None or self.proxy is not None:
            return {}
        return dict(POSTGRES_CONNECT_ARGS)

    @classmethod
    def parse(cls, text: str) -> StorageUrl:
        """The parts of a URL `resolve_storage_url` returned."""
        return cls.of(parse_url(text), text)

    @classmethod
    def of(cls, url: URL, text: str | None = None) -> StorageUrl:
        """The parts of a URL SQLAlchemy has parsed already (an engine's)."""
        backend = url.get_backend_name()
        return cls(
            text=text or url.render_as_string(hide_password=False),
            masked=url.render_as_string(hide_password=True),
            sqlite_file=Path(url.database) if backend == "sqlite" and url.database else None,
            proxy=_proxy_address(url),
            password=url.password and str(url.password),
        )
