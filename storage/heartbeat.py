"""Heartbeats for trials run through ask/tell, which Optuna only manages inside optimize()."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from lrsweep.errors import StorageLost
from lrsweep.storage.outage import HELD_SIGNALS, InterruptRequested, is_transient, retrying
from lrsweep.storage.trial_store import TrialStore

OUTAGE_RETRY_S = 1.0


class Heartbeat:
    """A batch's heartbeat, as the training loop sees it: `check()` after each epoch raises the
    error that stopped the heartbeat thread, so the batch is handed back at once instead of
    training on while its trials go stale."""

    def __init__(self) -> None:
        self.error: Exception | None = None

    def check(self) -> None:
        if self.error is not None:
            raise _lost(self.error)


@contextmanager
def heartbeat(store: TrialStore, trial_ids: Sequence[int]) -> Iterator[Heartbeat]:
    """Record one heartbeat for the batch now, then every interval until the block exits.

    A transient error (the database is away) is retried (said once on stderr): the heartbeat
    must land before other workers' grace period declares these trials dead. Any other error
    is StorageLost: at once for the first beat, through `Heartbeat.check` for later ones.
    """
    state = Heartbeat()
    interval = store.heartbeat_interval
    if interval is None:
        yield state
        return
    try:
        retrying(lambda: store.record_heartbeats(trial_ids), "recording heartbeats")
    except (StorageLost, InterruptRequested):
        raise
    except Exception as exc:
        raise _lost(exc) from exc
    stop = threading.Event()

    def beat() -> None:
        # SIGINT/SIGTERM go to the main thread, which holds or handles them (a signal taken
        # by this thread would not wake a main thread blocked in a database call).
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        warned = False
        while not stop.wait(timeout=interval if not warned else OUTAGE_RETRY_S):
            try:
                store.record_heartbeats(trial_ids)
                warned = False
            except Exception as exc:
                if not is_transient(exc):
                    state.error = exc
                    return
                if not warned:
                    print(
                        f"warning: heartbeat not recorded ({type(exc).__name__}); retrying",
                        file=sys.stderr,
                    )
                    warned = True

    thread = threading.Thread(target=beat, name="lrsweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join()


def _lost(error: Exception) -> StorageLost:
    return StorageLost(
        f"heartbeat failed ({type(error).__name__}: {error}); the batch is handed back"
    )
