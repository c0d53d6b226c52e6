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

pytestmark = pytest.mark.slow


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


def test_launched_workers_take_the_url_from_the_environment_and_stop_on_one_ctrl_c(
    data_path: Path, tmp_path: Path
) -> None:
    url, study = f"sqlite:///{tmp_path / 'launched.db'}", unique_study()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "launch", "--storage", url, "--study", study]
        + ["--workers", "2", "--trials", "200", "--epochs", "40", "--data", str(data_path)]
        + ["--trials-per-batch", "8", "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
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
