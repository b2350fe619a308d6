"""Storage errors."""

from __future__ import annotations


class StorageError(Exception):
    """A store could not be reached or answered unexpectedly."""


class ObjectNotFound(StorageError):
    """The object key does not exist."""
