"""Turn what the user typed (nothing, a file path, a SQLAlchemy URL) into a storage URL.

Users type `postgresql://user@host/db` and `sweeps.db`; Optuna wants a SQLAlchemy URL with a
driver it can import. Every URL shown to a person goes through `mask_url` first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from lrsweep.storage.errors import StorageError

STORAGE_ENV_VAR = "LRSWEEP_STORAGE"
DEFAULT_SQLITE_FILE = "lrsweep.db"
POSTGRES_DRIVER = "psycopg"
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
        proxy_address(text)  # validates host and port
        return text
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise StorageError(
                "an in-memory SQLite database cannot hold a study shared by workers; "
                "give a file, e.g. sqlite:///sweeps.db"
            )
        return url.render_as_string(hide_password=False)
    if backend == "postgresql":
        if url.get_driver_name() in ("psycopg2", "pg8000", "asyncpg"):
            raise StorageError(
                f"PostgreSQL driver {url.get_driver_name()!r} is not installed; use "
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


def proxy_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a `grpc://host:port` storage-proxy URL, None for database URLs."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != PROXY_SCHEME:
        return None
    if not parsed.host or parsed.port is None or parsed.database:
        raise StorageError(f"storage proxy URL {mask_url(url)} must be grpc://host:port")
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


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, None for other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)
