"""`sweeps dashboard`: optuna-dashboard on a study's storage, local-only unless asked."""

from __future__ import annotations

import sys

from storage import StorageSettings
from sweeps.study import open_existing_storage


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
