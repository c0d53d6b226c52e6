"""Ride out a database outage: retry an operation with backoff while the database is away.

A restarted PostgreSQL server or a briefly locked SQLite file should cost a sweep a pause, not
its workers or the results they hold. Workers wrap every database call in `retrying`, which
says once on stderr that the database is unreachable, backs off (0.5 s doubling to 8 s), and
says when it is back; after `give_up_s` it lets the error through.

Ctrl-C and SIGTERM are held while an attempt runs and delivered when it returns: an interrupt
raised inside a driver or gRPC call can leave that library's locks taken (seen here: a worker
stopped mid-call hung forever joining its heartbeat thread, blocked on the gRPC channel's lock).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import optuna
from sqlalchemy.exc import InterfaceError, OperationalError

from storage.errors import StorageLost

T = TypeVar("T")
TRANSIENT = (OperationalError, InterfaceError, optuna.exceptions.StorageInternalError)
GRPC_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
DEFAULT_GIVE_UP_S = 300.0
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM arriving in the block are delivered when it exits (main thread only:
    Python runs signal handlers there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous: dict[signal.Signals, Any] = {}
    try:
        for held in HELD_SIGNALS:
            previous[held] = signal.signal(held, lambda number, _frame: received.append(number))
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        if received:
            signal.raise_signal(received[0])


def is_transient(exc: BaseException) -> bool:
    """A connection-level error: the database, or the storage proxy, is away for now."""
    if isinstance(exc, TRANSIENT):
        return True
    code = getattr(exc, "code", None)  # grpc.RpcError, without importing grpc here
    return callable(code) and getattr(code(), "name", None) in GRPC_TRANSIENT


def retrying(operation: Callable[[], T], what: str, give_up_s: float = DEFAULT_GIVE_UP_S) -> T:
    """`operation()`, retried while it fails with a connection-level database error."""
    started = time.monotonic()
    delay = 0.5
    while True:
        try:
            with signals_held():
                result = operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            waited = time.monotonic() - started
            if waited > give_up_s:
                raise StorageLost(
                    f"database unreachable for {waited:.0f} s while {what}; giving up"
                ) from exc
            if delay == 0.5:
                print(
                    f"warning: database unreachable while {what} "
                    f"({type(exc).__name__}); retrying with backoff",
                    file=sys.stderr,
                    flush=True,
                )
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
            continue
        if delay > 0.5:
            waited = time.monotonic() - started
            print(f"database reachable again after {waited:.0f} s", file=sys.stderr, flush=True)
        return result
