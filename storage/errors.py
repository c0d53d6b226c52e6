"""Errors raised where a storage URL or database leaves the storage layer."""

from __future__ import annotations


class StorageError(Exception):
    """The storage the user named is malformed, unsupported or unreachable.

    Messages never contain a password: URLs are masked before they are formatted in.
    """
