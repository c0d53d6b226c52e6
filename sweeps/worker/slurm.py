"""Workers as a SLURM job array: one array task per worker (one GPU each on GPU partitions),
each an independent `sweeps worker` on the shared study, as Optuna runs on any cluster. SLURM
schedules, restarts and cancels them; lrsweep writes no scheduler of its own.

The storage URL reaches the tasks through the submitting environment (`--export=ALL`), never
through the script or a command line, where `scontrol show job` and `ps` would show its
password. A cancelled task (`scancel`, a time limit, preemption) gets SIGTERM first and hands
its running trials back like a Ctrl-C; one killed outright leaves them to the heartbeat, which
re-queues them for the other tasks.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from lrsweep.errors import InvalidInputError, UsageError, require_positive
from lrsweep.storage import STORAGE_ENV_VAR, StorageSettings
from lrsweep.sweeps.flags import option, to_argv
from lrsweep.sweeps.study.options import StudyOptions
from lrsweep.sweeps.worker.launch import WORKER_COMMAND, worker_flags
from lrsweep.sweeps.worker.options import MAX_PROPOSAL_PROCESSES, WorkerOptions

TASK_INDEX = "${SLURM_ARRAY_TASK_ID}"


@dataclass(frozen=True)
class SlurmOptions:
    """The job array's shape and where SLURM puts it.

    Args:
        tasks: array tasks, so workers (they may run at once or as resources free up).
        gpus_per_task: GPUs each task asks for; 0 for CPU-only partitions.
        cpus_per_task: cores each task asks for (None: 1 on a CPU, and on a GPU one more
            for each proposal process a worker starts by default).
        partition: the partition to submit to (None: the cluster's default).
        time_limit: each task's wall-clock limit in SLURM's format, e.g. 4:00:00.
        sbatch_args: further sbatch options, e.g. "--account=lab --qos=long".
        logs: the folder of the tasks' logs and of the submitted script.
        dry_run: print the script instead of submitting it (and leave the study untouched).
    """

    tasks: int = option(
        1,
        "--tasks",
        parse=int,
        metavar="N",
        help="array tasks, one worker each (default {default})",
    )
    gpus_per_task: int = option(
        1,
        "--gpus-per-task",
        parse=int,
        metavar="G",
        help="GPUs per task (default {default}; 0 on CPU-only partitions)",
    )
    cpus_per_task: int | None = option(
        None,
        "--cpus-per-task",
        parse=int,
        metavar="C",
        help=f"cores per task (default: 1, or {1 + MAX_PROPOSAL_PROCESSES} with a GPU: the "
        "worker and its proposal processes)",
    )
    partition: str | None = option(None, "--partition", help="SLURM partition (default: its own)")
    time_limit: str | None = option(
        None, "--time", metavar="LIMIT", help="each task's time limit, e.g. 4:00:00"
    )
    sbatch_args: tuple[str, ...] = option(
        (),
        "--sbatch-args",
        parse=lambda text: tuple(shlex.split(text)),
        metavar="'ARGS'",
        help="further sbatch options, e.g. --sbatch-args='--account=lab --qos=long'",
    )
    logs: str = option(
        "slurm-logs", "--logs", metavar="DIR", help="folder of the tasks' logs (default {default})"
    )
    dry_run: bool = option(False, "--dry-run", help="print the job script, submit nothing")

    def __post_init__(self) -> None:
        require_positive("--tasks", self.tasks)
        if self.gpus_per_task < 0:
            raise InvalidInputError(f"--gpus-per-task must be >= 0; got {self.gpus_per_task}")
        if self.cpus_per_task is not None:
            require_positive("--cpus-per-task", self.cpus_per_task)

    @property
    def cores(self) -> int:
        if self.cpus_per_task is not None:
            return self.cpus_per_task
        return 1 + MAX_PROPOSAL_PROCESSES if self.gpus_per_task else 1


def job_name(study_name: str) -> str:
    return f"lrsweep-{study_name}"


def job_script(
    storage: StorageSettings,
    study_name: str,
    study: StudyOptions,
    options: WorkerOptions,
    slurm: SlurmOptions,
) -> str:
    """The sbatch script of the array: each task logs where it runs, then becomes the worker
    (`exec`, so SLURM's signals reach it), its sampler seed the base seed plus its index. The
    new-study flags travel too: tasks of a script submitted by hand may create the study.
    Refuses a SQLite study: tasks on several nodes cannot share one file (each node would
    serialize its claims with a lock file of its own, and SQLite over NFS corrupts)."""
    if storage.parsed.sqlite_file is not None:
        raise UsageError(
            f"sweeps slurm needs a PostgreSQL study that every node reaches (--storage or "
            f"${STORAGE_ENV_VAR}), not the SQLite file {storage.masked_url}"
        )
    logs = Path(slurm.logs).resolve()
    directives = [
        f"--job-name={job_name(study_name)}",
        f"--array=0-{slurm.tasks - 1}",
        "--ntasks=1",
        f"--cpus-per-task={slurm.cores}",
        *([f"--gpus-per-task={slurm.gpus_per_task}"] if slurm.gpus_per_task else []),
        *([f"--partition={slurm.partition}"] if slurm.partition else []),
        *([f"--time={slurm.time_limit}"] if slurm.time_limit else []),
        f"--output={logs}/%x-%A_%a.out",
        f"--chdir={Path.cwd()}",
        "--export=ALL",  # the storage URL, from the submitting environment only
        *slurm.sbatch_args,
    ]
    flags = [*worker_flags(storage, study_name, replace(options, seed=None)), *to_argv(study)]
    seed = [] if options.seed is None else [f"--seed=$(({options.seed} + {TASK_INDEX}))"]
    worker = shlex.join([*WORKER_COMMAND, *flags])
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {shlex.quote(directive)}" for directive in directives),
        f"# lrsweep workers on study {study_name!r}; submit with ${STORAGE_ENV_VAR} set:",
        "# the storage URL comes from the environment, never from this file.",
        "set -eu",
        f': "${{{STORAGE_ENV_VAR}:?set {STORAGE_ENV_VAR} to the study storage before sbatch}}"',
        # $$ stays the worker's pid through exec: the name it writes on the trials it claims.
        f'echo "lrsweep task {TASK_INDEX} of job ${{SLURM_ARRAY_JOB_ID}}: worker $(hostname):$$'
        ' (GPUs: ${CUDA_VISIBLE_DEVICES:-none})"',
        "export OMP_NUM_THREADS=1",
        " ".join(["exec", worker, *seed]),
        "",
    ]
    return "\n".join(lines)


def find_sbatch() -> str:
    """sbatch's path; UsageError off a SLURM login node."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UsageError(
            "sbatch not found: submit from a SLURM login node, or print the job script with "
            "--dry-run"
        )
    return sbatch


def write_job(
    storage: StorageSettings,
    study_name: str,
    study: StudyOptions,
    options: WorkerOptions,
    slurm: SlurmOptions,
) -> Path:
    """Write the job script into the logs folder and have sbatch check it (`--test-only`:
    partition, time, account) without submitting; its path. Raises UsageError when sbatch
    would refuse it, before the caller touches the study."""
    logs = Path(slurm.logs).resolve()
    logs.mkdir(parents=True, exist_ok=True)  # SLURM does not create its output folder
    script = logs / f"{job_name(study_name)}.sbatch"
    script.write_text(job_script(storage, study_name, study, options, slurm))
    _sbatch(storage, "--test-only", str(script))
    return script


def submit(storage: StorageSettings, script: Path) -> str:
    """Submit a script `write_job` wrote, the storage URL in sbatch's environment; the job id.
    Raises UsageError when sbatch refuses it."""
    return _sbatch(storage, "--parsable", str(script)).strip().split(";")[0]


def _sbatch(storage: StorageSettings, *arguments: str) -> str:
    submitted = subprocess.run(
        [find_sbatch(), *arguments],
        env={**os.environ, STORAGE_ENV_VAR: storage.url},
        capture_output=True,
        text=True,
        check=False,
    )
    if submitted.returncode != 0:
        reason = " ".join(submitted.stderr.split()) or f"exit {submitted.returncode}"
        raise UsageError(f"sbatch refused the job: {reason}")
    return submitted.stdout
