"""Side by side, in one run: the hand-written Optuna loop against `sweeps launch`.

    .venv/bin/python -m bench.compare --sizes 200 1000 --storages sqlite postgres
    .venv/bin/python -m bench.compare --pooling 1000 --workers 4  # direct, PgBouncer, proxy

Each pair runs the same number of worker processes on the same storage kind, study size, data,
validation split (`--folds 1`: one model per trial, as the hand-written loop trains; a later
`--service-args --folds 5` overrides it), search space and pruner (median), one after the
other on this machine, and prints a Markdown table: trials per second (finished trials / wall
time, process start-up included), the ratio, the best validation accuracy, and the time from
the study's first trial to the first trial completing at >= 95% validation accuracy.

`--pooling N` runs the service alone, N trials each, straight to PostgreSQL, through a real
PgBouncer in transaction pooling (the shipped pgbouncer.ini, `--pool-size` server connections)
and through `sweeps proxy`, counting the client connections PostgreSQL holds for the study's
database every 50 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import optuna
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ionosphere.csv"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_ACCURACY = 0.95


@dataclass(frozen=True)
class Measured:
    finished: int
    wall_s: float
    best: float | None
    to_target_s: float | None
    study_s: float

    @property
    def trials_per_s(self) -> float:
        """Including process start-up (imports, connecting): what a user waits for."""
        return self.finished / self.wall_s

    @property
    def study_trials_per_s(self) -> float:
        """From the first trial's start to the last trial's end: the sweep itself."""
        return self.finished / self.study_s


def measure(url: str, study_name: str, wall_s: float) -> Measured:
    storage = optuna.storages.RDBStorage(url)
    try:  # its connections closed after, not left open in this process's pool
        study = optuna.load_study(study_name=study_name, storage=storage)
        trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    finally:
        storage.engine.dispose()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    start = min(at for at in (t.datetime_start for t in trials) if at is not None)
    end = max(at for at in (t.datetime_complete for t in trials) if at is not None)
    reached = [
        t.datetime_complete
        for t in finished
        if t.state == TrialState.COMPLETE and t.value is not None and t.value >= TARGET_ACCURACY
    ]
    hits = [at for at in reached if at is not None]
    complete = [t.value for t in finished if t.state == TrialState.COMPLETE and t.value]
    return Measured(
        finished=len(finished),
        wall_s=wall_s,
        best=max(complete, default=None),
        to_target_s=(min(hits) - start).total_seconds() if hits else None,
        study_s=(end - start).total_seconds(),
    )


def run_processes(commands: list[list[str]], env: dict[str, str]) -> float:
    started = time.perf_counter()
    processes = [subprocess.Popen(c, cwd=REPO, env=env) for c in commands]
    codes = [p.wait() for p in processes]
    if any(codes):
        raise SystemExit(f"benchmark process failed with {codes}")
    return time.perf_counter() - started


def run_handwritten(url: str, trials: int, workers: int, data: Path) -> Measured:
    study = f"handwritten_{uuid.uuid4().hex[:6]}"
    commands = [
        [
            sys.executable,
            "-m",
            "bench.handwritten",
            "--storage",
            url,
            "--study",
            study,
            "--trials",
            str(trials),
            "--seed",
            str(i),
            "--data",
            str(data),
        ]
        for i in range(workers)
    ]
    # Create the study first so the workers do not race to create it.
    optuna.create_study(storage=url, study_name=study, direction="maximize")
    return measure(url, study, run_processes(commands, dict(os.environ)))


def launch_command(study: str, trials: int, args: argparse.Namespace) -> list[str]:
    """`sweeps launch` with the benchmark's worker count, data and extra flags."""
    return [
        sys.executable, "-m", "lrsweep.sweeps", "launch", "--study", study, "--workers",
        str(args.workers), "--trials", str(trials), "--data", str(args.data), "--seed", "0",
        "--no-baselines", "--quiet", "--folds", "1", *args.service_args,
    ]  # fmt: skip


def run_service(
    url: str,
    trials: int,
    args: argparse.Namespace,
    worker_url: str | None = None,
    while_running: AbstractContextManager[object] | None = None,
) -> Measured:
    """`sweeps launch` on `worker_url` (default `url`), measured in the database at `url`;
    `while_running` is entered for the launch alone."""
    study = f"service_{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "LRSWEEP_STORAGE": worker_url or url}
    with while_running or nullcontext():
        wall_s = run_processes([launch_command(study, trials, args)], env)
    return measure(url, study, wall_s)


class ServerConnections:
    """The client connections PostgreSQL holds for one database, counted every 50 ms in a
    thread while the block runs (this counter's own excluded)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._count, daemon=True)

    def __enter__(self) -> ServerConnections:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _count(self) -> None:
        import psycopg

        with psycopg.connect(self._conninfo, autocommit=True) as connection:
            while not self._stop.wait(0.05):
                (count,) = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ).fetchone()  # type: ignore[misc]
                self.counts.append(int(count))


@contextmanager
def running_proxy(database_url: str, port: int = 13999) -> Iterator[str]:
    """`sweeps proxy` in front of `database_url` until the block exits."""
    import socket

    env = {**os.environ, "LRSWEEP_STORAGE": database_url}
    proxy = subprocess.Popen(
        [sys.executable, "-m", "lrsweep.sweeps", "proxy", "--port", str(port)], cwd=REPO, env=env
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proxy.terminate()
        proxy.wait()


@contextmanager
def storage_url(kind: str, postgres_admin: str, folder: Path) -> Iterator[str]:
    """A fresh SQLite file or a throwaway PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'{uuid.uuid4().hex[:6]}.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(postgres_admin)
    name = f"lrsweep_bench_{uuid.uuid4().hex[:8]}"
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fmt(value: float | None, pattern: str) -> str:
    return "not reached" if value is None else pattern.format(value)


def compare(args: argparse.Namespace) -> None:
    print(
        "| storage | trials | trials/s, wall (hand / service) | ratio | "
        "trials/s, in study (hand / service) | ratio | best acc (hand / service) | "
        "to 95% (hand / service) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with TemporaryDirectory() as tmp:
        for kind in args.storages:
            for size in args.sizes:
                with storage_url(kind, args.postgres_url, Path(tmp)) as url:
                    hand = run_handwritten(url, size, args.workers, args.data)
                    service = run_service(url, size, args)
                print(
                    f"| {kind} | {size} | {hand.trials_per_s:.2f} / {service.trials_per_s:.1f} | "
                    f"{service.trials_per_s / hand.trials_per_s:.1f}x | "
                    f"{hand.study_trials_per_s:.2f} / {service.study_trials_per_s:.1f} | "
                    f"{service.study_trials_per_s / hand.study_trials_per_s:.1f}x | "
                    f"{_fmt(hand.best, '{:.4f}')} / {_fmt(service.best, '{:.4f}')} | "
                    f"{_fmt(hand.to_target_s, '{:.1f}s')} / "
                    f"{_fmt(service.to_target_s, '{:.1f}s')} |",
                    flush=True,
                )


def via_poolers(args: argparse.Namespace) -> None:
    """The service on PostgreSQL: straight to the database, through PgBouncer in transaction
    pooling and through `sweeps proxy`, one after the other on one database."""
    from bench.pgbouncer import running_pgbouncer

    with TemporaryDirectory() as tmp, storage_url("postgres", args.postgres_url, Path(tmp)) as url:
        paths: dict[str, AbstractContextManager[str]] = {
            "PostgreSQL direct": nullcontext(url),
            f"PgBouncer, transaction pool of {args.pool_size}": running_pgbouncer(
                url, default_pool_size=str(args.pool_size)
            ),
            "sweeps proxy": running_proxy(url),
        }
        rows = []
        for name, path in paths.items():
            connections = ServerConnections(url)
            with path as worker_url:
                measured = run_service(url, args.pooling, args, worker_url, connections)
            rows.append((name, measured, connections.counts))
    print(
        f"| path ({args.workers} workers) | trials | trials/s, wall | trials/s, in study | "
        "server connections, most / mean | best acc |"
    )
    print("|---|---|---|---|---|---|")
    for name, measured, counts in rows:
        print(
            f"| {name} | {measured.finished} | {measured.trials_per_s:.1f} | "
            f"{measured.study_trials_per_s:.1f} | {max(counts)} / "
            f"{sum(counts) / len(counts):.1f} | {_fmt(measured.best, '{:.4f}')} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument(
        "--storages", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("IONOSPHERE_CSV", DEFAULT_DATA))
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument(
        "--pooling",
        "--proxy",
        type=int,
        metavar="N",
        help="service only: direct vs PgBouncer vs sweeps proxy",
    )
    parser.add_argument(
        "--pool-size", type=int, default=3, help="PgBouncer's server connections (default 3)"
    )
    parser.add_argument(
        "--service-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="extra flags for `sweeps launch` (e.g. --trials-per-batch 32)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.pooling:
        via_poolers(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
