"""Optuna's cache layer over an RDB storage (what `optuna.storages.get_storage` returns for a
database URL), which Optuna exports only under the private name `_CachedStorage`.

The storage proxy's backend is that layer with lrsweep's requests added (it subclasses it), and
Optuna hands a stale-trial callback a study whose storage may be that layer, whose RDB storage
it keeps as the private `_backend`. Checked against Optuna 5.0.0 (pinned in constraints.txt);
tests/test_optuna_internals.py fails when either changes.
"""

from __future__ import annotations

import optuna
from optuna.storages._cached_storage import _CachedStorage

CachedStorage = _CachedStorage
"""Optuna's cache layer: `CachedStorage(rdb_storage)`, a storage that caches its trials."""


def uncached(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The storage under Optuna's cache layer, or `storage` itself if it has none."""
    return storage._backend if isinstance(storage, _CachedStorage) else storage
