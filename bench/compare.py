"""Side by side, in one run: the hand-written Optuna loop against `sweeps launch`.

    .venv/bin/python -m bench.compare --sizes 200 1000 --storages sqlite postgres
    .venv/bin/python -m bench.compare --proxy 1000        # PostgreSQL direct vs `sweeps proxy`

Each pair runs the same number of worker processes on the same storage kind, study size, data,
validation split (`--folds 1`: one model per trial, as the hand-written loop trains; a later
`--service-args --folds 5` overrides it), search space and pruner (median), one after the
other on this machine, and prints a Markdown table: trials per second (finished trials / wall
time, process start-up included), the ratio, the best validation accuracy, and the time from
the study's first trial to the first trial completing at >= 95% validation accuracy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
    study = optuna.load_study(study_name=study_name, storage=url)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
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
    url: str, trials: int, args: argparse.Namespace, worker_url: str | None = None
) -> Measured:
    """`sweeps launch` on `worker_url` (default `url`), measured in the database at `url`."""
    study = f"service_{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "LRSWEEP_STORAGE": worker_url or url}
    return measure(url, study, run_processes([launch_command(study, trials, args)], env))


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


def via_proxy(args: argparse.Namespace) -> None:
    """The service on PostgreSQL, straight to the database and through `sweeps proxy`."""
    with TemporaryDirectory() as tmp, storage_url("postgres", args.postgres_url, Path(tmp)) as url:
        direct = run_service(url, args.proxy, args)
        with running_proxy(url) as proxy_url:
            proxied = run_service(url, args.proxy, args, worker_url=proxy_url)
    print("| path | trials | trials/s, wall | trials/s, in study | best acc |")
    print("|---|---|---|---|---|")
    for name, measured in (("PostgreSQL direct", direct), ("via sweeps proxy", proxied)):
        print(
            f"| {name} | {measured.finished} | {measured.trials_per_s:.1f} | "
            f"{measured.study_trials_per_s:.1f} | {_fmt(measured.best, '{:.4f}')} |"
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
    parser.add_argument("--proxy", type=int, metavar="N", help="service only, direct vs proxy")
    parser.add_argument(
        "--service-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="extra flags for `sweeps launch` (e.g. --trials-per-batch 32)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.proxy:
        via_proxy(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
