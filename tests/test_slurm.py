"""Workers submitted as a job array to a real single-node SLURM (Debian's `slurm-wlm` and
`munge`, which `make test` installs): slurmctld and slurmd started once for this module with
`proctrack/linuxproc` and `task/none`, CPU-only tasks, the study on the test PostgreSQL."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from conftest import free_port, run_sweeps, study_trials, unique_study

pytestmark = [pytest.mark.slow, pytest.mark.races, pytest.mark.postgres]
SECRET = "hunter2"  # the test server trusts its clients: a password that must never show


def _slurm(*command: str, env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return done.stdout


def _ensure_munge() -> None:
    """munged, as Debian's package would run it: SLURM authenticates every message with it."""
    if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return
    Path("/run/munge").mkdir(exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
    deadline = time.monotonic() + 10
    while subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "munged did not start"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """The environment of a user of a running one-node cluster (SLURM_CONF names its
    configuration); the daemons stop at the end of the module."""
    assert shutil.which("slurmctld"), "slurm-wlm is not installed: `make test` installs it"
    assert os.geteuid() == 0, "slurmd starts tasks as their user, so runs as root"
    _ensure_munge()
    folder = Path(tempfile.mkdtemp(prefix="lrsweep-slurm-"))
    host = socket.gethostname()
    (folder / "slurm.conf").write_text(
        textwrap.dedent(f"""\
            ClusterName=lrsweep-test
            SlurmctldHost={host}
            SlurmctldPort={free_port()}
            SlurmdPort={free_port()}
            AuthType=auth/munge
            SlurmUser=root
            StateSaveLocation={folder}/state
            SlurmdSpoolDir={folder}/spool
            SlurmctldPidFile={folder}/slurmctld.pid
            SlurmdPidFile={folder}/slurmd.pid
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_Core
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/none
            MpiDefault=none
            ReturnToService=2
            KillWait=10
            NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
            PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
            """)
    )
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    daemons = [
        subprocess.Popen(
            [daemon, "-D", *flags, "-f", str(folder / "slurm.conf")],
            env=env,
            stdout=(folder / f"{Path(daemon).name}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for daemon, flags in (("/usr/sbin/slurmctld", ["-i"]), ("/usr/sbin/slurmd", []))
    ]
    try:
        deadline = time.monotonic() + 30
        while _slurm("sinfo", "-h", "-o", "%T", env=env).strip() != "idle":
            assert all(d.poll() is None for d in daemons), (folder / "slurmd.log").read_text()
            assert time.monotonic() < deadline, "the SLURM node never became idle"
            time.sleep(0.2)
        yield env
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            daemon.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _with_password(url: str) -> str:
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def _submit(env: dict[str, str], url: str, study: str, tmp_path: Path, *flags: str) -> str:
    """`sweeps slurm` as a user types it, the URL in the environment; the job's id."""
    submitted = run_sweeps(
        "slurm", "--study", study, "--gpus-per-task", "0", "--logs", str(tmp_path / "logs"),
        *flags, cwd=tmp_path, env={**env, "LRSWEEP_STORAGE": _with_password(url)},
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    assert SECRET not in submitted.stdout + submitted.stderr
    (job_id,) = re.findall(r"submitted job (\d+):", submitted.stderr)
    return job_id


def _wait_for_job(env: dict[str, str], job_id: str, timeout: float = 240) -> dict[str, str]:
    """Until every task of the array has left the queue; each task's final state."""
    deadline = time.monotonic() + timeout
    while _slurm("squeue", "-h", "-j", job_id, env=env).strip():
        assert time.monotonic() < deadline, f"job {job_id} still queued or running"
        time.sleep(0.5)
    shown = _slurm("scontrol", "show", "job", job_id, env=env)
    task_states = r"ArrayTaskId=(\d+).*?JobState=(\S+)"
    return dict(re.findall(task_states, shown, re.S))


def _logs(tmp_path: Path, job_id: str) -> dict[int, str]:
    return {
        int(path.stem.rsplit("_", 1)[1]): path.read_text()
        for path in (tmp_path / "logs").glob(f"*-{job_id}_*.out")
    }


def test_a_job_array_runs_the_study_to_an_exact_end(
    slurm_env: dict[str, str], postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    study, target = unique_study(), 40
    job_id = _submit(
        slurm_env, postgres_server_url, study, tmp_path, "--tasks", "2", "--trials",
        str(target), "--epochs", "8", "--folds", "1", "--seed", "0", "--data", str(data_path),
    )  # fmt: skip
    assert _wait_for_job(slurm_env, job_id) == {"0": "COMPLETED", "1": "COMPLETED"}
    trials = study_trials(postgres_server_url, study)
    assert len(trials) == target
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    logs = _logs(tmp_path, job_id)
    assert sorted(logs) == [0, 1]
    host = socket.gethostname()
    for task, log in logs.items():
        assert f"lrsweep task {task} of job {job_id}: worker {host}:" in log, log
        assert f"the study has its {target} finished trials" in log, log
    workers = {t.user_attrs["worker"] for t in trials}
    assert workers <= {re.search(r"worker (\S+)", log)[1] for log in logs.values()}  # type: ignore[index]
    # The URL reached the tasks through the environment only.
    shown = _slurm("scontrol", "show", "job", "-d", job_id, env=slurm_env)
    script = next((tmp_path / "logs").glob("*.sbatch")).read_text()
    for text in (shown, script, *logs.values()):
        assert SECRET not in text and postgres_server_url not in text


def test_scancel_of_one_task_mid_sweep_loses_no_trial(
    slurm_env: dict[str, str], postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    """SLURM's SIGTERM makes the cancelled task hand its running trials back at once; the
    other task runs them and ends the study exact."""
    study, target = unique_study(), 24
    job_id = _submit(
        slurm_env, postgres_server_url, study, tmp_path, "--tasks", "2", "--trials",
        str(target), "--epochs", "300", "--folds", "1", "--pruner", "none",
        "--trials-per-batch", "4", "--data", str(data_path),
    )  # fmt: skip
    victim = _held_running(postgres_server_url, study, tmp_path, job_id, task=1)
    subprocess.run(["scancel", f"{job_id}_1"], env=slurm_env, check=True)
    assert _wait_for_job(slurm_env, job_id) == {"0": "COMPLETED", "1": "CANCELLED"}
    trials = study_trials(postgres_server_url, study)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == target
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    by_number = {t.number: t for t in trials}
    handed_back = [t for t in trials if t.state == TrialState.FAIL]
    assert handed_back and {t.user_attrs["worker"] for t in handed_back} == {victim}
    for failed in handed_back:
        assert "interrupted" in failed.user_attrs["fail_reason"]
        retry = by_number[failed.user_attrs["retried_as"]]
        assert retry.params == failed.params and retry.state == TrialState.COMPLETE
    assert "error: interrupted" in _logs(tmp_path, job_id)[1]


def _held_running(url: str, study: str, tmp_path: Path, job_id: str, *, task: int) -> str:
    """The worker name of an array task, once it holds running trials."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"worker (\S+)", _logs(tmp_path, job_id).get(task, ""))
        if found:
            try:
                trials = study_trials(url, study)
            except KeyError:
                trials = []
            if any(
                t.state == TrialState.RUNNING and t.user_attrs.get("worker") == found[1]
                for t in trials
            ):
                return found[1]
        time.sleep(0.05)
    raise AssertionError(f"task {task} of job {job_id} never held a running trial")


def test_sbatch_refusing_the_job_is_one_line(
    slurm_env: dict[str, str], postgres_server_url: str, data_path: Path, tmp_path: Path
) -> None:
    study = unique_study()
    refused = run_sweeps(
        "slurm", "--study", study, "--tasks", "2", "--gpus-per-task", "0",
        "--partition", "nosuch", "--folds", "1", "--data", str(data_path), cwd=tmp_path,
        env={**slurm_env, "LRSWEEP_STORAGE": postgres_server_url},
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: sbatch refused the job:") and "partition" in line, line
    # Checked before the study is made: the corrected command may change its flags.
    assert study not in optuna.get_all_study_names(postgres_server_url)
