"""Live progress of a study while this machine's workers run it: finished, pruned and failed
counts, best accuracy so far and trials per second, as a tqdm bar on a terminal.

It reads the study (one COUNT query and one best-trial query per tick), so it shows what every
worker on every machine has done, and it stays silent when stderr is not a terminal (logs, CI).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

from lrsweep.storage.trial_store import finished_count
from lrsweep.sweeps.study.open import OpenStudy

REFRESH_S = 0.5


def wants_progress(stream: TextIO = sys.stderr) -> bool:
    """A progress bar only for a person watching a terminal."""
    return stream.isatty()


class StudyProgress:
    """A context manager that draws the bar from a background thread until it exits."""

    def __init__(self, opened: OpenStudy, target: int | None, *, stream: TextIO = sys.stderr):
        self._opened = opened
        self._store = opened.store
        self._stop = threading.Event()
        self._bar = tqdm(
            total=target,
            initial=finished_count(self._store.counts()),
            desc="finished",
            unit="trial",
            file=stream,
            dynamic_ncols=True,
        )
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> StudyProgress:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._refresh()
        self._bar.close()

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self._refresh()

    def _refresh(self) -> None:
        try:
            counts = self._store.counts()
            best = self._best()
        except Exception:  # an outage is for the workers to report, not the bar
            return
        self._bar.update(finished_count(counts) - self._bar.n)
        self._bar.set_postfix(
            pruned=counts["PRUNED"],
            failed=counts["FAIL"],
            running=counts["RUNNING"],
            best="-" if best is None else f"{best:.4f}",
            refresh=True,
        )

    def _best(self) -> float | None:
        try:
            best = self._opened.storage.get_best_trial(self._store.study_id)
        except ValueError:  # no completed trial yet
            return None
        return best.value


@contextmanager
def phase_bar(
    what: str, total: int, unit: str, stream: TextIO = sys.stderr
) -> Iterator[Callable[[], None] | None]:
    """A bar for one phase of `total` steps (with tqdm's rate and time left), on a terminal
    only; yields the call that advances it, or None off a terminal (the phase prints lines)."""
    if not wants_progress(stream):
        yield None
        return
    with tqdm(total=total, desc=what, unit=unit, file=stream, dynamic_ncols=True) as bar:
        yield lambda: bar.update(1)
