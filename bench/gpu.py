"""Trials per hour on the visible GPU: the training engine alone, then the whole service.

    .venv/bin/python -m bench.gpu [--trials-per-batch 1024 4096] [--service-trials 20000]

1. Training alone (`bench.engine`): batches of K sampled default-space configs, 50 epochs each,
   no pruning, on the study's default split; trials per hour = K / seconds per batch.
2. The whole service: `sweeps launch` (one worker per GPU; one on a CPU) on a fresh SQLite
   file, per-epoch pruning (median) and every epoch stored, one validation split; per hour over the
   command's wall time (start-up included) and over the study (first trial start to last end).

Runs with the packages the project pins. Without a GPU it measures the CPU (and says so), so
the same command can be checked anywhere.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from bench.compare import REPO, measure
from bench.engine import default_folds, time_engine
from lrsweep.trainer.training import resolve_device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads; no GPU visible)"


def service_rate(trials: int, workers: int, trials_per_batch: int | None, data: str | None) -> str:
    """The service's trials per hour on a fresh SQLite file, wall and in study."""
    with TemporaryDirectory(prefix="lrsweep-gpu-") as folder:
        url = f"sqlite:///{Path(folder) / 'gpu.db'}"
        study = f"gpu_{uuid.uuid4().hex[:6]}"
        command = [
            sys.executable, "-m", "lrsweep.sweeps", "launch", "--study", study,
            "--trials", str(trials),
            "--workers", str(workers), "--seed", "0", "--no-baselines", "--quiet", "--folds", "1",
        ]  # fmt: skip
        if trials_per_batch:
            command += ["--trials-per-batch", str(trials_per_batch)]
        if data:
            command += ["--data", data]
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, env={**os.environ, "LRSWEEP_STORAGE": url}, check=True)
        measured = measure(url, study, time.perf_counter() - started)
    return (
        f"| whole service, {measured.finished} trials | {measured.trials_per_s * 3600:,.0f} "
        f"wall / {measured.study_trials_per_s * 3600:,.0f} in study | best "
        f"{measured.best or 0:.4f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials-per-batch", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--service-trials", type=int, default=20000)
    parser.add_argument(
        "--service-batch", type=int, help="service --trials-per-batch (default: its own)"
    )
    parser.add_argument("--data", default=os.environ.get("IONOSPHERE_CSV"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    folds = default_folds(1, str(device))
    print(f"device: {device_name(device)}, torch {torch.__version__}")
    print("| what | trials per hour | |")
    print("|---|---|---|")
    for size in args.trials_per_batch:
        timing = time_engine(folds, size, batches=2)
        print(
            f"| training alone, {size} per batch | {timing.trials_per_hour:,.0f} | "
            f"{timing.ms_per_trial:.3f} ms per trial |",
            flush=True,
        )
    if args.service_trials:
        workers = torch.cuda.device_count() if device.type == "cuda" else 1  # one per GPU
        print(
            service_rate(args.service_trials, workers, args.service_batch, args.data), flush=True
        )


if __name__ == "__main__":
    main()
