"""The two servers on a study's storage: `sweeps dashboard` (optuna-dashboard) and `sweeps
proxy` (Optuna's gRPC storage proxy in front of the database, for sweeps with more workers than
the database should hold connections for: workers pass `--storage grpc://host:port`; see
lrsweep.storage.proxy for what the proxy does on their behalf). Both bind to 127.0.0.1 unless
asked: neither authenticates."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import optuna

from lrsweep.errors import require_positive
from lrsweep.storage import StorageError, StorageSettings, open_storage
from lrsweep.storage.outage import is_transient
from lrsweep.storage.proxy import GRPC_OPTIONS, ProxyBackend
from lrsweep.sweeps.study.open import open_existing_storage


def serve_dashboard(storage_settings: StorageSettings, host: str, port: int) -> None:
    """Serve until interrupted. Binds to 127.0.0.1 by default: the dashboard can edit notes
    and has no authentication, so exposing it is an explicit `--host 0.0.0.0`."""
    from optuna_dashboard import run_server

    storage = open_existing_storage(storage_settings)
    print(
        f"optuna-dashboard for {storage_settings.masked_url} on http://{host}:{port}/",
        file=sys.stderr,
        flush=True,
    )
    run_server(storage, host=host, port=port)


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
