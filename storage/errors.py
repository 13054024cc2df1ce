"""The storage package's one error type."""
from __future__ import annotations


class StorageError(Exception):
    """A database could not be opened, read or written; the message says what to do."""
