"""Trials per hour on the visible GPU: the training engine alone, then the whole service.

    python -m bench.gpu [--trials-per-batch 1024 4096] [--service-seconds 60]
                        [--service WORKERS:PROCESSES ...] [--out results.md]

1. Training alone (`bench.engine`): batches of K sampled default-space configs, 50 epochs each,
   no pruning, on the study's default split; trials per hour = K / seconds per batch.
2. The whole service, once per `--service` setting (workers on the one GPU, and each one's
   processes proposing the next batch while one trains, 0 for none): `sweeps launch` on a
   fresh SQLite file, per-epoch pruning (median), every epoch stored, one validation split,
   claiming for `--service-seconds`; trials per hour
   over the command's wall time (start-up included) and over the study (first trial start to
   last end), the GPU's busy share (nvidia-smi's utilization, sampled every 0.2 s while the
   command runs) and the workers' own account of their time (summed over workers).

Without a GPU it measures the CPU (and says so), so the same command can be checked anywhere.
Tables go to stdout and, with `--out`, to that file as they are measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from bench.compare import REPO, measure
from bench.engine import default_folds, time_engine
from lrsweep.sweeps.worker.options import WorkerOptions
from lrsweep.trainer.training import resolve_device

TARGET_TRIALS = 10_000_000  # the services run until --service-seconds, never to a target


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores; no GPU visible)"


@contextmanager
def gpu_busy_share(samples: list[float]) -> Iterator[None]:
    """Sample nvidia-smi's GPU utilization (%) into `samples` while the block runs."""
    if shutil.which("nvidia-smi") is None:
        yield
        return
    query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    sampler = subprocess.Popen(
        [*query, "-lms", "200"], stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL
    )
    try:
        yield
    finally:
        sampler.terminate()
        output, _ = sampler.communicate()
        samples += [float(line.split(",")[0]) for line in output.split() if line.strip()]


def worker_time(stderr: str) -> dict[str, float]:
    """The workers' `time:` accounts (`worker done: ...; time: 1.00 s training and storing,
    ...`), summed over workers."""
    spent: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        if line.startswith("worker done:") and "; time: " in line:
            for seconds, what in re.findall(r"([\d.]+) s ([^,]+)", line.split("; time: ")[1]):
                spent[what.strip()] += float(seconds)
    return dict(spent)


def service_row(
    seconds: float, workers: int, processes: int, batch: int | None, data: str | None
) -> str:
    """One `sweeps launch` on a fresh SQLite file: its table row."""
    with TemporaryDirectory(prefix="lrsweep-gpu-") as folder:
        url = f"sqlite:///{Path(folder) / 'gpu.db'}"
        study = f"gpu_{uuid.uuid4().hex[:6]}"
        command = [
            sys.executable, "-m", "lrsweep.sweeps", "launch", "--study", study,
            "--trials", str(TARGET_TRIALS), "--timeout", str(seconds),
            "--workers", str(workers), "--seed", "0", "--no-baselines", "--quiet",
            "--folds", "1", "--proposal-processes", str(processes),
        ]  # fmt: skip
        if batch:
            command += ["--trials-per-batch", str(batch)]
        if data:
            command += ["--data", data]
        busy: list[float] = []
        started = time.perf_counter()
        with gpu_busy_share(busy):
            done = subprocess.run(
                command,
                cwd=REPO,
                env={**os.environ, "LRSWEEP_STORAGE": url},
                capture_output=True,
                text=True,
            )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"sweeps launch failed ({done.returncode}):\n{done.stderr}")
        measured = measure(url, study, wall)
    share = f"{statistics.mean(busy):.0f}%" if busy else "n/a"
    batch = batch or WorkerOptions(target_trials=TARGET_TRIALS).trials_per_batch_for(
        resolve_device(None), folds=1
    )
    spent = worker_time(done.stderr)
    accounted = ", ".join(
        f"{what} {s:.1f} s" for what, s in sorted(spent.items(), key=lambda item: -item[1])
    )
    return (
        f"| {workers} worker(s), {processes} proposal process(es) each, {batch} trials a batch "
        f"| {measured.finished:,} | {measured.trials_per_s * 3600:,.0f} | "
        f"{measured.study_trials_per_s * 3600:,.0f} | {share} | {wall:.1f} s | {accounted} |"
    )


def parse_service(text: str) -> tuple[int, int]:
    """`WORKERS:PROCESSES`, e.g. `4:2`: 4 workers, each with 2 proposal processes."""
    workers, _, processes = text.partition(":")
    if not workers.isdigit() or not processes.isdigit():
        raise argparse.ArgumentTypeError(f"expected WORKERS:PROCESSES, got {text!r}")
    return int(workers), int(processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials-per-batch", type=int, nargs="*", default=[1024, 4096])
    parser.add_argument("--service-seconds", type=float, default=60.0)
    parser.add_argument(
        "--service", type=parse_service, nargs="*", default=[(1, 0), (1, 4), (4, 2)]
    )
    parser.add_argument("--service-batch", type=int, help="--trials-per-batch of the service")
    parser.add_argument("--data", default=os.environ.get("IONOSPHERE_CSV"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    out = args.out.open("a") if args.out else None

    def emit(line: str) -> None:
        print(line, flush=True)
        if out:
            print(line, file=out, flush=True)

    device = resolve_device(args.device)
    folds = default_folds(1, str(device), args.data)
    emit(
        f"device: {device_name(device)}, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )
    if args.trials_per_batch:
        emit("\n| training alone | trials per hour | ms per trial |\n|---|---|---|")
    for size in args.trials_per_batch:
        timing = time_engine(folds, size, batches=2)
        emit(f"| {size} per batch | {timing.trials_per_hour:,.0f} | {timing.ms_per_trial:.3f} |")
    if args.service:
        emit(
            "\n| whole service | trials | per hour, wall | per hour, in study | GPU busy | wall "
            "| workers' time |\n|---|---|---|---|---|---|---|"
        )
    for workers, processes in args.service:
        row = service_row(args.service_seconds, workers, processes, args.service_batch, args.data)
        emit(row)


if __name__ == "__main__":
    main()
