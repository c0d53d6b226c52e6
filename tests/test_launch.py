"""`sweeps launch` as a user runs it from a terminal: real launcher, real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from conftest import study_trials, unique_study, wait_for_running
from lrsweep.sweeps.worker.launch import visible_gpus

pytestmark = [pytest.mark.slow, pytest.mark.races]


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


# Long enough (about 50 batches) that the second worker joins before the first has finished it
# alone, however slowly its imports run on a loaded machine.
SWEEP_TRIALS = 200
SMALL_SWEEP = (
    "--trials",
    str(SWEEP_TRIALS),
    "--epochs",
    "20",
    "--folds",
    "1",
    "--trials-per-batch",
    "4",
)


def _launcher(url: str, study: str, cwd: Path, *flags: str) -> subprocess.Popen[str]:
    """`sweeps launch` of 2 workers on `study`, in a process group of its own (as a shell
    gives a foreground job)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lrsweep.sweeps", "launch", "--storage", url, "--study", study]
        + ["--workers", "2", "--quiet", *flags],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_launched_workers_take_the_url_from_the_environment_and_stop_on_one_ctrl_c(
    data_path: Path, tmp_path: Path
) -> None:
    url, study = f"sqlite:///{tmp_path / 'launched.db'}", unique_study()
    launcher = _launcher(
        url, study, tmp_path, "--trials", "200", "--epochs", "40", "--data", str(data_path),
        "--trials-per-batch", "8",
    )  # fmt: skip
    wait_for_running(url, study, workers=2)
    children = _children(launcher.pid)
    assert len(children) == 2
    for child in children:
        # Its own process group: a terminal's Ctrl-C reaches it only through the launcher.
        assert os.getpgid(child) == child != os.getpgid(launcher.pid)
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        assert not [arg for arg in argv if b"launched.db" in arg], argv
        assert f"LRSWEEP_STORAGE={url}".encode() in environ
    # Ctrl-C at a terminal signals the whole foreground process group at once.
    os.killpg(launcher.pid, signal.SIGINT)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 130, stderr
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{child}").exists() for child in children):
        assert time.monotonic() < deadline, "a worker outlived its launcher's Ctrl-C"
        time.sleep(0.1)
    trials = study_trials(url, study)
    assert not [t for t in trials if t.state == TrialState.RUNNING], stderr
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted and all(t.user_attrs["fail_reason"] == "interrupted" for t in interrupted)
    assert sum(t.state == TrialState.WAITING for t in trials) == len(interrupted)
    # At most one hand-back per worker: the Ctrl-C reached each worker once.
    assert 1 <= stderr.count("handed back (interrupted); re-queued") <= 2, stderr


def test_a_launcher_started_under_nohup_outlives_its_terminal(
    data_path: Path, tmp_path: Path
) -> None:
    """`nohup sweeps launch ...` starts with SIGHUP ignored: the terminal closing (a SIGHUP)
    must not reach the workers as a SIGTERM that stops the sweep."""
    url, study = f"sqlite:///{tmp_path / 'nohup.db'}", unique_study()
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # inherited, as nohup leaves it
    try:
        launcher = _launcher(url, study, tmp_path, *SMALL_SWEEP, "--data", str(data_path))
    finally:
        signal.signal(signal.SIGHUP, previous)
    wait_for_running(url, study, workers=2)
    os.killpg(launcher.pid, signal.SIGHUP)
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr
    assert "handed back" not in stderr
    states = [t.state for t in study_trials(url, study)]
    assert TrialState.FAIL not in states and len(states) == SWEEP_TRIALS


def test_a_killed_worker_is_named_and_the_launcher_exits_as_a_shell_would(
    data_path: Path, tmp_path: Path
) -> None:
    url, study = f"sqlite:///{tmp_path / 'killed.db'}", unique_study()
    launcher = _launcher(
        url, study, tmp_path, *SMALL_SWEEP, "--data", str(data_path),
        "--heartbeat-interval", "1", "--grace-period", "3",
    )  # fmt: skip
    wait_for_running(url, study, workers=2)
    os.kill(_children(launcher.pid)[0], signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 128 + signal.SIGKILL, stderr
    assert "was killed by signal 9" in stderr
    finished = [t for t in study_trials(url, study) if t.state.is_finished()]
    assert sum(t.state != TrialState.FAIL for t in finished) == SWEEP_TRIALS  # the other finished


def test_workers_get_the_gpus_the_launcher_was_given_not_the_machine_s_first() -> None:
    assert visible_gpus(2, "2,3") == ["2", "3"]
    assert visible_gpus(1, "GPU-5e1c, 3") == ["GPU-5e1c"]
    assert visible_gpus(2, None) == visible_gpus(2, "") == ["0", "1"]
