"""Ride out a database outage, and stop for a signal only where it is safe.

A restarted PostgreSQL server or a briefly locked SQLite file should cost a sweep a pause, not
its workers or the results they hold. Workers wrap every database call in `retrying`, which
says once on stderr that the database is unreachable, backs off (0.5 s doubling to 8 s), and
says when it is back; after `give_up_s` it raises StorageLost.

SIGINT and SIGTERM are held inside `signals_held` blocks and delivered when the outermost block
exits: an interrupt raised inside a driver or gRPC call can leave that library's locks taken
(seen here: a worker stopped mid-call hung forever joining its heartbeat thread), and one
raised inside a hand-back leaves trials RUNNING until their heartbeat expires. Code inside a
block asks `raise_if_interrupted()` at safe points (between epochs, in a backoff) and stops
there. A third signal is not held: it is the user insisting, and goes through at once.
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

from lrsweep.errors import StorageLost

T = TypeVar("T")
TRANSIENT = (OperationalError, InterfaceError, optuna.exceptions.StorageInternalError)
GRPC_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
# What Optuna's RDB storage says for any database error it wraps (StorageInternalError), as
# it reaches a worker behind the proxy (gRPC UNKNOWN, with only the message).
STORAGE_INTERNAL_ERROR_TEXT = "An exception is raised during the commit"
DEFAULT_GIVE_UP_S = 300.0
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


FORCE_AFTER = 3
_held: list[int] = []  # signals received inside the outermost signals_held block
_depth = 0


class InterruptRequested(Exception):
    """A held SIGINT/SIGTERM is waiting: stop here (it is delivered when the block exits)."""


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM arriving in the block are delivered when the outermost block exits
    (main thread only: Python runs signal handlers there)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    previous: dict[signal.Signals, Any] = {}

    def hold(number: int, _frame: object) -> None:
        _held.append(number)
        if len(_held) >= FORCE_AFTER:
            _restore(previous)
            signal.raise_signal(number)

    _depth = 1
    _held.clear()
    try:
        for held in HELD_SIGNALS:
            # A signal the process was started ignoring (`cmd &` in a script ignores SIGINT)
            # stays ignored: holding it would stop the batch and then deliver nothing.
            if signal.getsignal(held) is not signal.SIG_IGN:
                previous[held] = signal.signal(held, hold)
        yield
    finally:
        _depth = 0
        pending = _held[:1]
        _held.clear()
        _restore(previous)
        if pending:
            signal.raise_signal(pending[0])


def _restore(previous: dict[signal.Signals, Any]) -> None:
    for held, handler in previous.items():
        signal.signal(held, handler)


def held_signals() -> int:
    """How many signals the current signals_held block is holding."""
    return len(_held)


def raise_if_interrupted() -> None:
    """Raise InterruptRequested if a signal is held; call where stopping is safe."""
    if _held:
        raise InterruptRequested()


def is_transient(exc: BaseException) -> bool:
    """A connection-level error: the database, or the storage proxy, is away for now (behind
    the proxy, a database outage arrives as UNKNOWN naming the driver's error)."""
    if isinstance(exc, TRANSIENT):
        return True
    code = getattr(exc, "code", None)  # grpc.RpcError, without importing grpc here
    name = getattr(code(), "name", None) if callable(code) else None
    if name == "UNKNOWN":
        details = str(getattr(exc, "details", lambda: "")())
        return STORAGE_INTERNAL_ERROR_TEXT in details or any(
            error.__name__ in details for error in TRANSIENT
        )
    return name in GRPC_TRANSIENT


def retrying(
    operation: Callable[[], T],
    what: str,
    give_up_s: float = DEFAULT_GIVE_UP_S,
    *,
    interruptible: bool = True,
) -> T:
    """`operation()`, retried while it fails with a connection-level database error. A held
    signal ends the wait (InterruptRequested) unless the operation is not `interruptible`."""
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
            if interruptible:
                raise_if_interrupted()
            time.sleep(delay)  # inside an outer signals_held block, a signal does not cut it
            delay = min(delay * 2, 8.0)
            continue
        if delay > 0.5:
            waited = time.monotonic() - started
            print(f"database reachable again after {waited:.0f} s", file=sys.stderr, flush=True)
        return result
