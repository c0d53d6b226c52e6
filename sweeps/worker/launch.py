"""Start K local worker processes on one study: one per GPU when there are GPUs, else CPUs.

Each child is `python -m lrsweep.sweeps worker` with its own sampler seed (base seed + index,
so seeded workers do not all propose the same first trials) and, on GPU hosts, its own
CUDA_VISIBLE_DEVICES. The storage URL travels in the environment, never on a command line
where `ps` would show its password.

The children start first and import torch while the launcher validates the data and creates
the study; they join it when the launcher says go on their stdin (a closed stdin instead tells
them to exit: the study could not be made). Children run in a session (so a process group) of
their own, so a Ctrl-C at the terminal reaches them once, forwarded by the launcher: a second
signal on top of the terminal's would interrupt the hand-back of their trials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from lrsweep.errors import require_positive
from lrsweep.storage import STORAGE_ENV_VAR, StorageSettings
from lrsweep.sweeps.study.open import OpenStudy, open_for_sweep
from lrsweep.sweeps.study.options import StudyOptions
from lrsweep.sweeps.worker.options import WorkerOptions
from lrsweep.sweeps.worker.progress import StudyProgress, wants_progress
from lrsweep.sweeps.worker.trackers import prepare_trackers


@dataclass(frozen=True)
class LaunchPlan:
    """K workers and the GPU (if any) each one sees."""

    workers: int
    gpus: tuple[str | None, ...]

    @classmethod
    def for_this_machine(cls, workers: int | None, device: str | None) -> LaunchPlan:
        """One worker per GPU when CUDA is usable, else one per CPU core (or `workers`)."""
        if workers is not None:
            require_positive("--workers", workers)
        gpu_count = 0
        if device != "cpu" and any(Path("/dev").glob("nvidia[0-9]*")):
            import torch  # only on GPU hosts: importing torch costs a second or two

            gpu_count = torch.cuda.device_count()
        if gpu_count:
            count = workers or gpu_count
            names = visible_gpus(gpu_count, os.environ.get("CUDA_VISIBLE_DEVICES"))
            return cls(count, tuple(names[i % gpu_count] for i in range(count)))
        count = workers or os.cpu_count() or 1
        return cls(count, (None,) * count)


def visible_gpus(count: int, visible: str | None) -> list[str]:
    """The `count` GPUs this process sees, as CUDA_VISIBLE_DEVICES names them for a child: the
    parent's own list when it has one (a child told "0" would use the machine's first GPU,
    which the user may have excluded), else the indices 0..count-1."""
    if visible:
        return [name.strip() for name in visible.split(",")][:count]
    return [str(index) for index in range(count)]


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
LAUNCHED_FLAG = "--launched"  # a child: wait for GO on stdin, then work; EOF: exit quietly
# Set on the workers of `launch` and `slurm`, which set the trackers up once before starting
# them: a worker started by hand sets them up itself (refused in one line if it cannot).
TRACKERS_PREPARED_FLAG = "--trackers-prepared"
GO = b"go\n"
WORKER_COMMAND = (sys.executable, "-m", "lrsweep.sweeps", "worker")  # a worker process, as started


class StartedWorkers:
    """Worker processes started, importing torch and the rest while the launcher prepares the
    study, and waiting for `run` to let them join it."""

    def __init__(self, children: list[subprocess.Popen[bytes]]) -> None:
        self._children = children

    def run(self) -> int:
        """Let the workers go and run them to the end; return 0, or the first failing worker's
        exit code. SIGINT, SIGTERM and SIGHUP (a closed terminal) are forwarded to every child
        once."""
        children = self._children

        def forward(signum: int, _frame: FrameType | None) -> None:
            # Workers hand their trials back on SIGINT and SIGTERM; a closed terminal is a
            # SIGTERM.
            sent = signal.SIGTERM if signum == signal.SIGHUP else signum
            for child in children:
                if child.poll() is None:
                    child.send_signal(sent)

        # A signal the launcher was started ignoring (SIGHUP under nohup, SIGINT under `&` in a
        # script) stays ignored, for it and, inherited, for its workers.
        previous = {
            sig: signal.signal(sig, forward)
            for sig in FORWARDED
            if signal.getsignal(sig) is not signal.SIG_IGN
        }
        try:
            for child in children:
                _send_and_close(child, GO)
            codes = [child.wait() for child in children]
        except BaseException:
            forward(signal.SIGTERM, None)
            for child in children:
                child.wait()
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for index, code in enumerate(codes):
            if code < 0:  # killed by a signal: say so, and exit as a shell would (128 + N)
                print(f"worker {index} was killed by signal {-code}", file=sys.stderr)
        return next((code if code > 0 else 128 - code for code in codes if code != 0), 0)


@contextmanager
def started_workers(
    plan: LaunchPlan, storage_url: str, worker_argvs: Sequence[Sequence[str]]
) -> Iterator[StartedWorkers]:
    """Start the plan's workers at once, worker i with `worker_argvs[i]`: their imports (about
    a second each) overlap the launcher's own work. If the block fails before `run`, they are
    told to exit (their stdin closes) and waited for; nothing of theirs touched the study."""
    children: list[subprocess.Popen[bytes]] = []
    try:
        for gpu, argv in zip(plan.gpus, worker_argvs, strict=True):
            env = {**os.environ, STORAGE_ENV_VAR: storage_url, "OMP_NUM_THREADS": "1"}
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            command = [*WORKER_COMMAND, *argv, LAUNCHED_FLAG]
            children.append(
                subprocess.Popen(command, env=env, stdin=subprocess.PIPE, start_new_session=True)
            )
        yield StartedWorkers(children)
    except BaseException:
        for child in children:
            _send_and_close(child, b"")
        for child in children:
            child.wait()
        raise


@dataclass(frozen=True)
class Launched:
    """A sweep's workers run to their end: the study, their exit code, how many ran."""

    opened: OpenStudy
    exit_code: int
    workers: int


def launch(
    storage: StorageSettings,
    study_name: str,
    study: StudyOptions,
    options: WorkerOptions,
    workers: int | None = None,
    *,
    baselines: bool = False,
) -> Launched:
    """Run `workers` processes (default: one per GPU, else per core) on the study, created or
    joined here while they start. Each gets `options` (the sampler seed plus its index); under
    a progress bar their own per-batch lines would tear it, so they go quiet. Trackers are set
    up first (`prepare_trackers`): one that cannot be is refused before anything starts."""
    prepare_trackers(options.trackers, study_name)
    plan = LaunchPlan.for_this_machine(workers, options.device)
    if any(gpu is not None for gpu in plan.gpus):  # the machine's cores, shared by its workers
        processes = options.proposal_processes_for(on_gpu=True, workers=plan.workers)
        options = replace(options, proposal_processes=processes)
    show_progress = wants_progress()
    argvs = worker_argvs(storage, study_name, options, plan.workers, quiet=show_progress)
    with started_workers(plan, storage.url, argvs) as started:
        opened = open_for_sweep(
            storage,
            study_name,
            study,
            options.data,
            baselines=baselines,
        )
        print(
            f"starting {plan.workers} workers on study {study_name!r} ({storage.masked_url})",
            file=sys.stderr,
        )
        with StudyProgress(opened, options.target_trials) if show_progress else nullcontext():
            code = started.run()
    return Launched(opened, code, plan.workers)


def worker_argvs(
    storage: StorageSettings, study_name: str, options: WorkerOptions, count: int, *, quiet: bool
) -> list[list[str]]:
    """The flags of each of `count` launched workers: `worker_flags` with the sampler seed plus
    the worker's index (so seeded workers do not all propose the same first trials), and
    --quiet when asked."""
    return [
        worker_flags(
            storage,
            study_name,
            replace(options, seed=_plus(options.seed, index), quiet=options.quiet or quiet),
        )
        for index in range(count)
    ]


def worker_flags(storage: StorageSettings, study_name: str, options: WorkerOptions) -> list[str]:
    """The flags of a worker started elsewhere: the study and heartbeat settings (the URL goes
    through the environment) and `options`; its trackers were set up by the caller."""
    return [
        f"--study={study_name}",
        f"--heartbeat-interval={storage.heartbeat_interval}",
        f"--grace-period={storage.grace_period}",
        *options.to_argv(),
        *([TRACKERS_PREPARED_FLAG] if options.trackers else []),
    ]


def _plus(seed: int | None, index: int) -> int | None:
    return None if seed is None else seed + index


def _send_and_close(child: subprocess.Popen[bytes], message: bytes) -> None:
    assert child.stdin is not None
    if child.stdin.closed:
        return
    try:
        child.stdin.write(message)
        child.stdin.close()
    except BrokenPipeError:  # the child has exited already; its exit code says why
        pass


def released_by_launcher() -> bool:
    """In a launched worker: wait for the launcher's GO (True), or its end of stdin (False:
    the launcher failed before the study was ready and reports why itself)."""
    return sys.stdin.buffer.readline() == GO
