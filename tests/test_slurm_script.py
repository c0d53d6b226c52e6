"""`sweeps slurm --dry-run`: the job script users submit themselves, read as bash and sbatch
read it (tests/test_slurm.py submits it to a real SLURM)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import assert_refused, run_sweeps
from lrsweep.sweeps.cli import build_parser

URL = "postgresql://lrsweep:hunter2@db.example.org/sweeps"


def _dry_run(tmp_path: Path, *flags: str) -> str:
    printed = run_sweeps(
        "slurm", "--study", "big one", "--dry-run", *flags,
        cwd=tmp_path, env={"LRSWEEP_STORAGE": URL},
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    return printed.stdout


def _directives(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if "#SBATCH" in line]


def _worker_argv(script: str, task: int) -> list[str]:
    """The worker's argv as bash expands the script's exec line for array task `task`."""
    (line,) = [line for line in script.splitlines() if line.startswith("exec ")]
    expanded = subprocess.run(
        ["bash", "-c", "printf '%s\\n' " + line.removeprefix("exec ")],
        env={"SLURM_ARRAY_TASK_ID": str(task), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    return expanded.stdout.splitlines()


def test_the_script_starts_one_worker_per_task_with_its_seed(
    tmp_path: Path, data_path: Path
) -> None:
    script = _dry_run(
        tmp_path, "--tasks", "8", "--trials", "500", "--epochs", "20", "--seed", "5",
        "--data", str(data_path), "--partition", "gpu", "--time", "2:00:00",
        "--sbatch-args=--account=lab --qos=long",
    )  # fmt: skip
    assert script.startswith("#!/bin/bash\n")
    assert _directives(script) == [
        "'--job-name=lrsweep-big one'",  # sbatch reads shell quoting
        "--array=0-7",
        "--ntasks=1",
        "--cpus-per-task=5",
        "--gpus-per-task=1",
        "--partition=gpu",
        "--time=2:00:00",
        f"--output={tmp_path.resolve()}/slurm-logs/%x-%A_%a.out",
        f"--chdir={tmp_path.resolve()}",
        "--export=ALL",
        "--account=lab",
        "--qos=long",
    ]
    for task in (0, 7):
        argv = _worker_argv(script, task)
        assert argv[1:4] == ["-m", "lrsweep.sweeps", "worker"]
        args = build_parser().parse_args(argv[3:])
        assert args.handler.__name__ == "_cmd_worker"
        assert (args.study, args.target_trials, args.epochs) == ("big one", 500, 20)
        assert args.seed == 5 + task and args.path == str(data_path.resolve())
    assert "hunter2" not in script and "db.example.org" not in script
    assert not (tmp_path / "slurm-logs").exists()  # nothing written, nothing submitted


def test_cpu_tasks_ask_for_no_gpu_and_unseeded_workers_get_no_seed(tmp_path: Path) -> None:
    script = _dry_run(tmp_path, "--tasks", "3", "--gpus-per-task", "0")
    directives = _directives(script)
    assert "--cpus-per-task=1" in directives
    assert not [d for d in directives if d.startswith("--gpu")]
    assert build_parser().parse_args(_worker_argv(script, 2)[3:]).seed is None


def test_tasks_log_to_the_trackers_asked_for_without_each_setting_them_up(
    tmp_path: Path,
) -> None:
    """`sweeps slurm` sets the trackers up once before submitting; its tasks only log (one
    that cannot says so and goes on, where a worker started by hand is refused)."""
    logged = build_parser().parse_args(
        _worker_argv(_dry_run(tmp_path, "--log", "mlflow=http://mlflow.example.org"), 0)[3:]
    )
    assert [spec.name for spec in logged.trackers] == ["mlflow"] and logged.trackers_prepared
    plain = build_parser().parse_args(_worker_argv(_dry_run(tmp_path), 0)[3:])
    assert not plain.trackers and not plain.trackers_prepared


def test_the_script_refuses_to_run_without_the_storage_in_its_environment(
    tmp_path: Path,
) -> None:
    """Else its workers would make a SQLite study of their own in the job's folder."""
    script = tmp_path / "job.sh"
    script.write_text(_dry_run(tmp_path, "--tasks", "2", "--logs", str(tmp_path)))
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "1"}
    ran = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert ran.returncode != 0
    assert "set LRSWEEP_STORAGE to the study storage before sbatch" in ran.stderr
    assert not list(tmp_path.glob("*.db"))


def test_without_sbatch_or_with_bad_flags_it_is_one_line(tmp_path: Path) -> None:
    no_slurm = {"LRSWEEP_STORAGE": URL, "PATH": "/nonexistent"}
    assert_refused(
        run_sweeps("slurm", "--study", "s", "--folds", "1", cwd=tmp_path, env=no_slurm),
        "sbatch not found",
    )
    for flag, message in (
        (["--tasks", "0"], "--tasks must be"),
        (["--gpus-per-task", "-1"], "--gpus-per-task must be >= 0"),
        (["--cpus-per-task", "0"], "--cpus-per-task must be"),
    ):
        assert_refused(
            run_sweeps("slurm", "--study", "s", "--dry-run", *flag, cwd=tmp_path), message
        )


def test_a_sqlite_study_is_refused_dry_run_included(tmp_path: Path) -> None:
    """Tasks on many nodes cannot share one SQLite file; the default storage is one."""
    for env in ({}, {"LRSWEEP_STORAGE": str(tmp_path / "s.db")}):
        assert_refused(
            run_sweeps("slurm", "--study", "s", "--dry-run", cwd=tmp_path, env=env),
            "sweeps slurm needs a PostgreSQL study",
        )
    assert not list(tmp_path.glob("*.db"))
