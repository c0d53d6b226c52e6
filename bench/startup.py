"""Where a sweep's wall time goes: before the first trial, in study, after the last.

Runs `sweeps launch` (as `bench.compare` runs the service: `--folds 1`, no baselines, seed 0)
on a fresh SQLite file, `--repeat` times, and prints for each run the command's wall time, the
time from the command's start to the study's first trial start, from there to the last trial's
end, and from there to the command's exit (the trials' timestamps are read back from the
study; this machine's clock serves both).

    python -m bench.startup [--trials 1000] [--workers 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import optuna

from bench.compare import DEFAULT_DATA, launch_command
from lrsweep.storage import STORAGE_ENV_VAR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    args.service_args = []
    print("wall s | to first trial s | in study s | after last trial s")
    for _ in range(args.repeat):
        print(" | ".join(f"{t:.2f}" for t in timeline(args)), flush=True)


def timeline(args: argparse.Namespace) -> tuple[float, float, float, float]:
    with TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'startup.db'}"
        # Naive local time, as Optuna hands trials' timestamps back.
        started = datetime.datetime.now()
        clock = time.perf_counter()
        subprocess.run(
            launch_command("s", args.trials, args),
            check=True,
            capture_output=True,
            env={**os.environ, STORAGE_ENV_VAR: url},
        )
        wall = time.perf_counter() - clock
        trials = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    first = (min(starts) - started).total_seconds()
    in_study = (max(ends) - min(starts)).total_seconds()
    return wall, first, in_study, wall - first - in_study


if __name__ == "__main__":
    main()
