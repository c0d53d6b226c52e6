"""Optuna's gRPC storage proxy service, to be served by a server lrsweep builds.

`optuna.storages.run_grpc_proxy_server` builds its own server, with gRPC's 4 MiB limit on
requests; lrsweep's proxy takes larger ones (`lrsweep.storage.proxy.GRPC_OPTIONS`), so it adds
Optuna's servicer (private: `optuna.storages._grpc`) to a server of its own, as Optuna's
`make_server` does. Checked against Optuna 5.0.0 (pinned in constraints.txt);
tests/test_optuna_internals.py fails when it changes.
"""

from __future__ import annotations

import grpc
import optuna
from optuna.storages._grpc.auto_generated import api_pb2_grpc
from optuna.storages._grpc.servicer import OptunaStorageProxyService


def add_storage_service(server: grpc.Server, storage: optuna.storages.BaseStorage) -> None:
    """Serve `storage` on `server` as `optuna.storages.GrpcStorageProxy` clients expect."""
    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)
