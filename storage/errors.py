"""Errors raised where a storage URL or database leaves the storage layer."""

from __future__ import annotations


class StorageError(Exception):
    """The storage the user named is malformed, unsupported or unreachable: bad input, exit 2.

    Messages never contain a password: URLs are masked before they are formatted in.
    """


class StorageLost(Exception):
    """A storage that worked went away for longer than a worker waits, or a heartbeat could not
    be recorded: a failure of the run, not of its input (exit 1, one line, trials handed back
    where the storage still allows it)."""
