"""Where studies live: storage URLs, connections, heartbeats and the trial-claim lock."""

from lrsweep.errors import StorageError, StorageLost
from lrsweep.storage.connect import StorageSettings, close_storage, open_storage, open_trial_store
from lrsweep.storage.heartbeat import heartbeat
from lrsweep.storage.trial_store import SqlTrialStore, TrialStore
from lrsweep.storage.urls import STORAGE_ENV_VAR, mask_url, resolve_storage_url

__all__ = [
    "STORAGE_ENV_VAR",
    "StorageError",
    "StorageLost",
    "StorageSettings",
    "SqlTrialStore",
    "TrialStore",
    "close_storage",
    "open_trial_store",
    "heartbeat",
    "mask_url",
    "open_storage",
    "resolve_storage_url",
]
