from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from lrsweep.storage import (
    SqlTrialStore,
    StorageError,
    StorageSettings,
    mask_url,
    open_storage,
    resolve_storage_url,
)


def test_default_is_a_sqlite_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LRSWEEP_STORAGE", raising=False)
    assert resolve_storage_url(None) == f"sqlite:///{tmp_path / 'lrsweep.db'}"
    monkeypatch.setenv("LRSWEEP_STORAGE", "other.db")
    assert resolve_storage_url(None) == f"sqlite:///{tmp_path / 'other.db'}"


@pytest.mark.parametrize(
    ("typed", "resolved"),
    [
        ("postgresql://me@db:5432/sweeps", "postgresql+psycopg://me@db:5432/sweeps"),
        ("postgresql+psycopg://me@db/sweeps", "postgresql+psycopg://me@db/sweeps"),
        ("sqlite:///relative.db", "sqlite:///relative.db"),
    ],
)
def test_urls_as_users_type_them(typed: str, resolved: str) -> None:
    assert resolve_storage_url(typed) == resolved


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("mysql://root@localhost/x", "unsupported storage"),
        ("postgresql+psycopg2://u@h/db", "driver 'psycopg2' is not installed"),
        ("postgresql://u@h", "names no database"),
        ("sqlite://", "in-memory"),
        ("postgresql://u:pw@h:notaport/db", "malformed storage URL"),
    ],
)
def test_bad_urls_are_refused(typed: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as raised:
        resolve_storage_url(typed)
    assert "pw@" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    ["postgresql://alice:s3cret@db/sweeps", "postgresql://alice:s3cret@db:notaport/sweeps"],
)
def test_passwords_are_masked_even_in_malformed_urls(url: str) -> None:
    masked = mask_url(url)
    assert "s3cret" not in masked and "***" in masked and "alice" in masked


def test_sqlite_storage_uses_wal(tmp_path: Path, disposing: Callable[[Any], Any]) -> None:
    db = tmp_path / "s.db"
    disposing(open_storage(StorageSettings(f"sqlite:///{db}")))
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_in_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="missing"):
        open_storage(StorageSettings(f"sqlite:///{tmp_path / 'no' / 's.db'}"))


def test_unreachable_postgres_is_a_clear_error_without_password() -> None:
    url = resolve_storage_url("postgresql://alice:s3cret@127.0.0.1:1/sweeps")
    with pytest.raises(StorageError, match="cannot open storage") as raised:
        open_storage(StorageSettings(url))
    assert "s3cret" not in str(raised.value)
    assert "***" in str(raised.value)


@pytest.mark.parametrize(
    ("interval", "grace", "message"),
    [(0, 30, "heartbeat interval"), (10, 10, "must exceed")],
)
def test_heartbeat_settings_are_checked(interval: int, grace: int, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        StorageSettings("sqlite:///x.db", heartbeat_interval=interval, grace_period=grace)


def test_storage_has_heartbeat_and_counts_trials_by_state(
    storage_url: str, disposing: Callable[[Any], Any]
) -> None:
    storage = disposing(open_storage(StorageSettings(resolve_storage_url(storage_url))))
    assert storage.get_heartbeat_interval() == 10
    study = optuna.create_study(storage=storage, study_name="counts")
    study.tell(study.ask(), 0.5)
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    study.ask()
    counts = SqlTrialStore(storage, "counts").counts()
    assert counts == {"COMPLETE": 1, "PRUNED": 1, "RUNNING": 1}


def test_a_schema_from_another_optuna_is_refused_with_what_to_do(
    tmp_path: Path, disposing: Callable[[Any], Any]
) -> None:
    db = tmp_path / "old.db"
    disposing(open_storage(StorageSettings(f"sqlite:///{db}")))
    with sqlite3.connect(db) as connection:  # as a study made by Optuna 3.0 would be stamped
        connection.execute("UPDATE alembic_version SET version_num = 'v3.0.0.a'")
    connection.close()
    with pytest.raises(StorageError, match="v3.0.0.a.*optuna storage upgrade"):
        open_storage(StorageSettings(f"sqlite:///{db}"))
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'v9.0.0.a'")
    connection.close()
    with pytest.raises(StorageError, match="v9.0.0.a.*made by a newer Optuna"):
        open_storage(StorageSettings(f"sqlite:///{db}"))


def test_opening_a_new_database_from_many_processes_at_once_makes_one_schema(
    new_storage_url: str, disposing: Callable[[Any], Any]
) -> None:
    """Processes (not threads, which queue on an in-process lock first) race to open a new
    database: only the first take the schema lock, and all end on one stamped schema."""
    opening = (
        "import os; from lrsweep.storage import StorageSettings, open_storage; "
        "open_storage(StorageSettings(os.environ['URL'])).engine.dispose()"
    )
    url = resolve_storage_url(new_storage_url)
    racers = [
        subprocess.Popen([sys.executable, "-c", opening], env={**os.environ, "URL": url})
        for _ in range(6)
    ]
    assert [racer.wait(timeout=120) for racer in racers] == [0] * 6
    storage = disposing(open_storage(StorageSettings(url)))
    assert storage.get_current_version() == storage.get_head_version()
    optuna.create_study(storage=storage, study_name="one")
    assert optuna.get_all_study_names(storage=storage) == ["one"]
