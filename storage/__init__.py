"""Where studies live: storage URLs, connections, heartbeats and the trial-claim lock."""

from storage.connect import StorageSettings, close_storage, open_storage, open_trial_store
from storage.errors import StorageError, StorageLost
from storage.heartbeat import heartbeat
from storage.trial_store import SqlTrialStore, TrialStore
from storage.urls import STORAGE_ENV_VAR, mask_url, resolve_storage_url

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
