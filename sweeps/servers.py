"""The two servers on a study's storage: `sweeps dashboard` (optuna-dashboard) and `sweeps
proxy` (Optuna's gRPC storage proxy in front of the database, for sweeps with more workers than
the database should hold connections for: workers pass `--storage grpc://host:port`; see
lrsweep.storage.proxy for what the proxy does on their behalf). Both bind to 127.0.0.1 unless
asked: neither authenticates."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
import optuna

from lrsweep.errors import UsageError, require_positive
from lrsweep.storage import StorageError, StorageSettings, open_storage
from lrsweep.storage.outage import is_transient
from lrsweep.storage.proxy import GRPC_OPTIONS, ProxyBackend
from lrsweep.sweeps.study.open import open_existing_storage

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_CHECK_S = 0.5  # how soon a stop asked for between requests is noticed
CLIENT_TIMEOUT_S = 10.0  # how long a dashboard connection may keep silent


def serve_dashboard(storage_settings: StorageSettings, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, finishing the request in hand first. Binds to 127.0.0.1
    by default: the dashboard can edit notes and has no authentication, so exposing it is an
    explicit `--host 0.0.0.0`.

    Served here rather than by `optuna_dashboard.run_server`: its wsgiref server turns an
    interrupt raised inside a request into a 500 and serves on, so a SIGTERM that came while
    the dashboard was reading the database was lost and the server never stopped."""
    from optuna_dashboard import wsgi

    storage = open_existing_storage(storage_settings)
    ipv6 = ":" in host
    address = f"[{host}]:{port}" if ipv6 else f"{host}:{port}"
    try:
        server = make_server(
            host,
            port,
            wsgi(storage),
            server_class=_IPv6Server if ipv6 else WSGIServer,
            handler_class=_RequestHandler,
        )
    except OSError as exc:  # the port taken, a host not of this machine
        raise UsageError(f"cannot serve the dashboard on {address}: {exc.strerror}") from None
    with server, _stop_requested() as stopping:
        print(
            f"optuna-dashboard for {storage_settings.masked_url} on http://{address}/",
            file=sys.stderr,
            flush=True,
        )
        server.timeout = STOP_CHECK_S
        while not stopping:
            server.handle_request()


class _IPv6Server(WSGIServer):
    address_family = socket.AF_INET6


class _RequestHandler(WSGIRequestHandler):
    """wsgiref's handler with a time limit on each read and write: a connection that sends no
    request (a browser's spare one) cannot hold the server, or its stop, forever."""

    timeout = CLIENT_TIMEOUT_S

    def handle(self) -> None:
        try:
            super().handle()
        except TimeoutError:  # the client went quiet: its connection is closed
            pass


@contextmanager
def _stop_requested() -> Iterator[list[int]]:
    """The signals received so far: the first SIGINT/SIGTERM asks the server to stop between
    requests; a second one stops the process at once (a request stuck on a database that
    went away)."""
    received: list[int] = []
    handlers = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    def note(number: int, _frame: object) -> None:
        if received:
            signal.signal(number, signal.SIG_DFL)
            signal.raise_signal(number)
        received.append(number)
        os.write(2, b"stopping once the request in hand is answered (again to stop at once)\n")

    for number, handler in handlers.items():
        if handler is not signal.SIG_IGN:  # `sweeps dashboard &` in a script ignores SIGINT
            signal.signal(number, note)
    try:
        yield received
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


def serve_proxy(storage_settings: StorageSettings, host: str, port: int, threads: int) -> None:
    """Serve until interrupted, failing and re-queueing dead workers' trials as it goes."""
    require_positive("--threads", threads)
    if storage_settings.parsed.proxy is not None:
        raise StorageError("a storage proxy needs a database URL behind it, not another proxy")
    # One pooled connection per request thread, so no request waits for a connection.
    database = open_storage(storage_settings, pool_size=threads)
    assert isinstance(database, optuna.storages.RDBStorage)
    backend = ProxyBackend(database)
    sweeper = threading.Thread(
        target=_fail_stale_trials_forever,
        args=(backend, storage_settings.heartbeat_interval),
        name="stale-trials",
        daemon=True,
    )
    sweeper.start()
    print(
        f"storage proxy for {storage_settings.masked_url} on grpc://{host}:{port} "
        f"(workers: --storage grpc://{host}:{port})",
        file=sys.stderr,
        flush=True,
    )
    server = _grpc_server(backend, host, port, threads)
    server.start()
    server.wait_for_termination()


def _grpc_server(backend: ProxyBackend, host: str, port: int, threads: int) -> grpc.Server:
    """Optuna's gRPC proxy service (what `optuna.storages.run_grpc_proxy_server` serves), on a
    server that takes requests as large as `lrsweep.storage.proxy.GRPC_OPTIONS` allows."""
    from lrsweep.storage.optuna_grpc import add_storage_service

    server = grpc.server(ThreadPoolExecutor(max_workers=threads), options=GRPC_OPTIONS)
    add_storage_service(server, backend)
    server.add_insecure_port(f"{host}:{port}")
    return server


def _fail_stale_trials_forever(backend: ProxyBackend, interval_s: int) -> None:
    """Workers behind the proxy cannot run Optuna's stale-trial check (the gRPC client has no
    heartbeats), so the proxy runs it for every study, every heartbeat interval."""
    while True:
        try:
            for summary in backend.get_all_studies():
                study = optuna.load_study(study_name=summary.study_name, storage=backend)
                backend.trial_store(summary.study_name).fail_stale_trials(study)
        except Exception as exc:  # keep checking: the database may be back next round
            if not is_transient(exc):
                print(f"warning: stale-trial check failed: {exc!r}", file=sys.stderr, flush=True)
        time.sleep(interval_s)
