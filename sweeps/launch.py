"""Start K local worker processes on one study: one per GPU when there are GPUs, else CPUs.

Each child is `python -m sweeps worker` with its own sampler seed (base seed + index, so seeded
workers do not all propose the same first trials) and, on GPU hosts, its own
CUDA_VISIBLE_DEVICES. The storage URL travels in the environment, never on a command line
where `ps` would show its password.

Children run in a process group of their own, so a Ctrl-C at the terminal reaches them once,
forwarded by the launcher: a second signal on top of the terminal's would interrupt the
hand-back of their trials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from storage import STORAGE_ENV_VAR
from trainer import InvalidInputError


@dataclass(frozen=True)
class LaunchPlan:
    """K workers and the GPU (if any) each one sees."""

    workers: int
    gpus: tuple[str | None, ...]

    @classmethod
    def for_this_machine(cls, workers: int | None, device: str | None) -> LaunchPlan:
        """One worker per GPU when CUDA is usable, else one per CPU core (or `workers`)."""
        if workers is not None and workers < 1:
            raise InvalidInputError(f"--workers must be >= 1; got {workers}")
        gpu_count = 0
        if device != "cpu" and any(Path("/dev").glob("nvidia[0-9]*")):
            import torch  # only on GPU hosts: importing torch costs a second or two

            gpu_count = torch.cuda.device_count()
        if gpu_count:
            count = workers or gpu_count
            return cls(count, tuple(str(i % gpu_count) for i in range(count)))
        count = workers or os.cpu_count() or 1
        return cls(count, (None,) * count)


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def launch_workers(
    plan: LaunchPlan, storage_url: str, worker_args: Sequence[str], base_seed: int | None
) -> int:
    """Run the plan's workers to the end; return 0, or the first failing worker's exit code.

    SIGINT, SIGTERM and SIGHUP (a closed terminal) are forwarded to every child once, from
    before the first one starts; a child that cannot be started stops the ones that did.
    """
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        # Workers hand their trials back on SIGINT and SIGTERM; a closed terminal is a SIGTERM.
        sent = signal.SIGTERM if signum == signal.SIGHUP else signum
        for child in children:
            if child.poll() is None:
                child.send_signal(sent)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        for index, gpu in enumerate(plan.gpus):
            env = {**os.environ, STORAGE_ENV_VAR: storage_url, "OMP_NUM_THREADS": "1"}
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            seed_args = [] if base_seed is None else ["--seed", str(base_seed + index)]
            command = [sys.executable, "-m", "sweeps", "worker", *worker_args, *seed_args]
            children.append(subprocess.Popen(command, env=env, process_group=0))
        codes = [child.wait() for child in children]
    except BaseException:
        forward(signal.SIGTERM, None)
        for child in children:
            child.wait()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return next((code for code in codes if code != 0), 0)
