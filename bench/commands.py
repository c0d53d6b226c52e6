"""Benchmarks run the CLI as a user would: one helper for that."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_sweeps(work: Path, *args: str) -> str:
    """`sweeps ARGS` in `work`; its stdout, or exit with its stderr when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "lrsweep.sweeps", *args], cwd=work, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"sweeps {args[0]} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout
