"""`sweeps run` shows a live progress bar on a terminal (a real pseudo-terminal here) and none
when its output goes to a pipe or a log."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from conftest import run_sweeps

pytestmark = [pytest.mark.slow, pytest.mark.races]

SWEEP = ("run", "--trials", "24", "--epochs", "6", "--workers", "2", "--out", "best.json")


def _run_on_terminal(args: tuple[str, ...], cwd: Path, data: Path) -> tuple[int, str]:
    """Run `sweeps ARGS` with stdout and stderr on a 120-column pseudo-terminal."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "lrsweep.sweeps", *args, "--data", str(data)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    return process.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal(tmp_path: Path, data_path: Path) -> None:
    code, output = _run_on_terminal(SWEEP, tmp_path, data_path)
    assert code == 0, output
    frames = [frame for frame in output.replace("\r\n", "\n").split("\r") if "finished:" in frame]
    assert frames, output
    last = frames[-1]
    assert "24/24" in last and "trial/s" in last
    for field in ("pruned=", "failed=0", "running=", "best=0."):
        assert field in last, last
    assert "trials 0-" not in output  # the workers' per-batch lines stay quiet under the bar


def test_no_progress_bar_in_a_pipe(tmp_path: Path, data_path: Path) -> None:
    result = run_sweeps(*SWEEP, "--data", str(data_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "trial/s" not in result.stderr
    assert "trials 0-" in result.stderr  # plain per-batch lines, fit for a log
