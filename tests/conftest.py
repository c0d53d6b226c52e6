"""Shared fixtures: the real ionosphere file, real SQLite files, a throwaway PostgreSQL database,
and a helper that runs the real `sweeps` command in a subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from lrsweep.trainer import ScheduleConfig, build

S = TypeVar("S")

# Workers started by the tests must see Ctrl-C as a terminal's user would, even when this test
# run was itself started in the background (`cmd &` in a script starts with SIGINT ignored, and
# children inherit an ignored signal): a handled signal is reset to the default in a child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
REPO = Path(__file__).resolve().parents[1]
SHARED_CSV = REPO.parent / "shared" / "data" / "ionosphere.csv"
POSTGRES_ADMIN_URL = os.environ.get(
    "LRSWEEP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def data_path() -> Path:
    path = Path(os.environ.get("IONOSPHERE_CSV") or SHARED_CSV)
    assert path.is_file(), f"tests need the ionosphere CSV at {path} (or $IONOSPHERE_CSV)"
    return path


def write_sklearn_csv(name: str, path: Path) -> Path:
    """A data set that ships inside scikit-learn (no download) as a CSV with a header: its
    feature names, then `target` (class numbers, or their names for breast cancer)."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame
    if name == "breast_cancer":  # string labels, as many real files have them
        frame["target"] = frame["target"].map(dict(enumerate(bunch.target_names)))
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def sklearn_csv(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`sklearn_csv("wine")`: the path of that data set written as a CSV (once a session)."""
    folder = tmp_path_factory.mktemp("sklearn")

    def written(name: str) -> Path:
        path = folder / f"{name}.csv"
        return path if path.exists() else write_sklearn_csv(name, path)

    return written


@contextmanager
def _new_postgres_database() -> Iterator[str]:
    """A database created on the real server, dropped at the end; its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(POSTGRES_ADMIN_URL)
    name = f"lrsweep_test_{uuid.uuid4().hex[:10]}"
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A database for this test session."""
    with _new_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every storage kind, as a database no one has opened yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.db'}"
        return
    with _new_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage kind the product supports; each test gets its own study space."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return str(request.getfixturevalue("postgres_server_url"))


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run_sweeps(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> Completed:
    """Run `python -m sweeps ARGS` as a user would, capturing its output."""
    process = subprocess.run(
        [sys.executable, "-m", "lrsweep.sweeps", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Completed(process.returncode, process.stdout, process.stderr)


def refused_with_imports(*args: str, cwd: Path) -> tuple[list[str], set[str]]:
    """Run `python -X importtime -m sweeps ARGS`, which must be refused (exit 2): the lines it
    said on stderr, and the modules it imported first."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lrsweep.sweeps", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    return lines, imported


def assert_refused(result: Completed, message: str) -> None:
    """Bad input as users must see it: exit 2, one `error:` line holding `message`, no
    traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], result.stderr


def space_file(folder: Path, text: str, name: str = "space.toml") -> Path:
    """A search-space file (TOML, or YAML by its name) with `text`."""
    path = folder / name
    path.write_text(text)
    return path


def start_worker(
    storage_url: str, study: str, data: Path, cwd: Path, *args: str
) -> subprocess.Popen[str]:
    """A real `sweeps worker` process on `study`; the storage URL goes in the environment."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lrsweep.sweeps",
            "worker",
            "--study",
            study,
            "--data",
            str(data),
            *args,
        ],
        cwd=cwd,
        env={**os.environ, "LRSWEEP_STORAGE": storage_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def torch_lrs(
    config: ScheduleConfig, lr0: float, epochs: int, accuracies: list[float] | None = None
) -> list[float]:
    """Learning rates the real torch scheduler gives when stepped once per epoch (`plateau`:
    with each epoch's accuracy, default a constant one)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr0)
    scheduler = build(optimizer, config)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if config.reads_metric:
            scheduler.step(accuracies[epoch] if accuracies else 0.5)  # type: ignore[arg-type]
        else:
            scheduler.step()
    return lrs


def unique_study() -> str:
    return f"study_{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json_when_up(url: str, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    """GET a JSON document from a server that may still be starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def assert_real_image(path: Path, min_size: tuple[int, int] = (300, 200)) -> None:
    """A PNG that opens, is at least `min_size` and is not blank (many distinct colours)."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is {image.format}, not PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1], image.size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) >= 16, f"{path} looks blank"


@pytest.fixture
def disposing() -> Iterator[Callable[[S], S]]:
    """Register a storage (or an opened study) to have its connections closed after the test."""
    held: list[object] = []

    def register(opened: S) -> S:
        held.append(opened)
        return opened

    yield register
    for opened in held:
        storage = getattr(opened, "storage", opened)
        getattr(storage, "engine", None) and storage.engine.dispose()


@contextmanager
def opened_storage(storage_url: str) -> Iterator[optuna.storages.RDBStorage]:
    """Optuna's own storage on a test database, its connections closed afterwards."""
    from lrsweep.storage import resolve_storage_url

    storage = optuna.storages.RDBStorage(resolve_storage_url(storage_url))
    try:
        yield storage
    finally:
        storage.engine.dispose()


def study_trials(storage_url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """Every trial of `study`, read straight from the database through Optuna."""
    with opened_storage(storage_url) as storage:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def wait_for_running(storage_url: str, study: str, timeout: float = 120, workers: int = 1) -> None:
    """Until a trial runs and `workers` different workers have claimed trials. One storage for
    the whole wait, so each poll is one query: a fast worker's batches are not missed."""
    deadline = time.monotonic() + timeout
    with opened_storage(storage_url) as storage:
        while time.monotonic() < deadline:
            try:
                trials = optuna.load_study(study_name=study, storage=storage).get_trials(
                    deepcopy=False
                )
                claimed_by = {t.user_attrs.get("worker") for t in trials}
                if (
                    any(t.state == TrialState.RUNNING for t in trials)
                    and len(claimed_by) >= workers
                ):
                    return
            except KeyError:
                pass  # the study is not created yet
            time.sleep(0.02)
    raise AssertionError("no trial started running")


def worker_name(process: subprocess.Popen[str]) -> str:
    """The name a worker process writes on the trials it claims."""
    return f"{socket.gethostname()}:{process.pid}"


def freeze_while_running(
    storage_url: str, study: str, *workers: subprocess.Popen[str], timeout: float = 120
) -> set[int]:
    """Stop `workers` (SIGSTOP) at a moment they hold RUNNING trials and no database lock, and
    return the numbers of those trials.

    A fast machine can finish a batch between a poll and a kill: the worker is frozen first and
    its trials read afterwards, so the test acts on trials that are certainly still held. A
    worker frozen inside a transaction or a claim would stall every other process, so such a
    moment is let go and the next one tried."""
    names = {worker_name(worker) for worker in workers}
    deadline = time.monotonic() + timeout
    with opened_storage(storage_url) as storage:
        while time.monotonic() < deadline:
            for worker in workers:
                assert worker.poll() is None, f"a worker exited ({worker.returncode}) first"
                worker.send_signal(signal.SIGSTOP)
            held: set[int] = set()
            try:
                if not _database_busy(storage):
                    trials = optuna.load_study(study_name=study, storage=storage).get_trials(
                        deepcopy=False
                    )
                    held = {
                        t.number
                        for t in trials
                        if t.state == TrialState.RUNNING and t.user_attrs.get("worker") in names
                    }
            except (KeyError, optuna.exceptions.StorageInternalError):
                pass  # the study is not created yet, or the file is locked
            if held:
                return held
            for worker in workers:
                worker.send_signal(signal.SIGCONT)
            time.sleep(0.005)
    raise AssertionError(f"{sorted(names)} never held a running trial")


def _database_busy(storage: optuna.storages.RDBStorage) -> bool:
    """Whether any process is inside a write transaction or holds one of lrsweep's locks."""
    import sqlalchemy

    if storage.engine.dialect.name == "postgresql":
        with storage.engine.connect() as connection:
            others = connection.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    " AND state IS DISTINCT FROM 'idle'"
                )
            ).scalar_one()
        return bool(others)
    for lock_file in (Path(tempfile.gettempdir()) / "lrsweep-locks").glob("*.lock"):
        with lock_file.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    probe = sqlite3.connect(storage.engine.url.database, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()
    return False


def assert_killed_trials_recovered(
    trials: list[FrozenTrial], killed: set[int], target: int
) -> None:
    """Exactly `target` finished, nothing left running or waiting, and each killed trial FAILED
    with its reason and re-run (same parameters) by the trial it names."""
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == target
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    by_number = {t.number: t for t in trials}
    for number in killed:
        failed = by_number[number]
        assert failed.state == TrialState.FAIL
        assert "worker died" in failed.user_attrs["fail_reason"]
        retry = by_number[failed.user_attrs["retried_as"]]
        assert retry.params == failed.params
        assert retry.system_attrs["failed_trial"] == number
        assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
