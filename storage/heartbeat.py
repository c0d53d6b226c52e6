"""Heartbeats for trials run through ask/tell, which Optuna only manages inside optimize()."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError

from storage.resilience import is_transient
from storage.trial_store import TrialStore


@contextmanager
def heartbeat(store: TrialStore, trial_ids: list[int]) -> Iterator[None]:
    """Record a heartbeat for each trial now and every interval until the block exits."""
    interval = store.heartbeat_interval
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        warned = False
        while True:
            wait = interval
            try:
                for trial_id in trial_ids:
                    store.record_heartbeat(trial_id)
            except Exception as exc:
                if not (isinstance(exc, SQLAlchemyError) or is_transient(exc)):
                    raise
                # Retry every second: after an outage the heartbeat must land before other
                # workers' grace period declares these trials dead.
                wait = 1
                if not warned:
                    print(
                        f"warning: heartbeat not recorded ({type(exc).__name__}); retrying",
                        file=sys.stderr,
                    )
                    warned = True
            if stop.wait(timeout=wait):
                return

    thread = threading.Thread(target=beat, name="lrsweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
