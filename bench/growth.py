"""Does a worker stay as cheap and as small at trial 20,000 as at trial 2,000?

One real `sweeps worker` process sweeps a fresh SQLite study (`--folds 1`, median pruning, every
epoch stored) up to `--trials`. This script watches it from outside: each second it reads the
study's finished count from the database and the worker's resident memory from /proc. It prints,
for each window of `--window` trials, the time per trial in that window and the worker's
resident memory at its end (and its peak so far), and at the end the ratios between the window
starting at `--early` trials and the last full one.

    python -m bench.growth [--trials 20000] [--early 2000] [--window 1000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

POLL_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--early", type=int, default=2_000)
    parser.add_argument("--window", type=int, default=1_000)
    args = parser.parse_args()
    with TemporaryDirectory() as directory:
        database = Path(directory) / "growth.db"
        worker = subprocess.Popen(
            [sys.executable, "-m", "lrsweep.sweeps", "worker", "--storage", str(database)]
            + ["--study", "growth", "--trials", str(args.trials), "--folds", "1"]
            + ["--no-baselines", "--seed", "0", "--quiet"],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        marks = watch(worker, database, args.trials, args.window)
    if worker.returncode != 0:
        raise SystemExit(f"the worker exited with {worker.returncode}")
    windows = [
        (n0, n1, (t1 - t0) / (n1 - n0), rss)
        for (n0, t0, _), (n1, t1, rss) in zip(marks, marks[1:], strict=False)
    ]
    print("trials | time per trial in window | RSS at its end (peak so far)")
    for n0, n1, per_trial, (rss, peak) in windows:
        print(f"{n0}-{n1} | {per_trial * 1e3:.2f} ms | {rss / 1024:.0f} MiB ({peak / 1024:.0f})")
    # The last window holds the worker's exit: compare the one before it.
    early = next((w for w in windows[:-2] if w[0] >= args.early), None)
    if early is not None:
        late = windows[-2]
        print(
            f"trials {late[0]}-{late[1]} against {early[0]}-{early[1]}: cost per trial "
            f"{late[2] / early[2]:.2f}x, RSS {late[3][0] / early[3][0]:.2f}x, "
            f"peak RSS {late[3][1] / early[3][1]:.2f}x"
        )


Mark = tuple[int, float, tuple[int, int]]


def watch(worker: subprocess.Popen[bytes], database: Path, target: int, window: int) -> list[Mark]:
    """(finished trials, seconds, (RSS, peak RSS) in KiB) each time the count crosses a window
    edge."""
    marks: list[Mark] = []
    started = time.perf_counter()
    next_edge = 0
    while worker.poll() is None:
        finished = _finished(database)
        if finished >= next_edge:
            memory = (_status_kib(worker.pid, "VmRSS"), _status_kib(worker.pid, "VmHWM"))
            marks.append((finished, time.perf_counter() - started, memory))
            next_edge = (finished // window + 1) * window
        time.sleep(POLL_S)
    if marks and marks[-1][0] < target:
        marks.append((_finished(database), time.perf_counter() - started, marks[-1][2]))
    return marks


def _finished(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            row = connection.execute(
                "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
            ).fetchone()
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    return int(row[0])


def _status_kib(pid: int, field: str) -> int:
    """A memory line of /proc/PID/status (0 once the process has exited)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
