"""Storage errors the callers branch on; anything else from asyncpg is a bug or an outage."""

from __future__ import annotations


class StorageError(Exception):
    """Base class for expected storage outcomes."""


class AlreadyExists(StorageError):
    """A unique name or key is taken."""


class NotFound(StorageError):
    """The row the operation needs does not exist (or belongs to another organisation)."""
