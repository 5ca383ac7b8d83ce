"""What a store reports that a caller must act on. No HTTP here: the interaction layer maps these."""

from __future__ import annotations


class StorageError(Exception):
    pass


class VersionConflict(StorageError):
    """The resource's current version is not the one the writer expected (If-Match)."""

    def __init__(self, expected: int | None, current: int | None):
        super().__init__(f"expected version {expected}, current is {current}")
        self.expected = expected
        self.current = current


class ResourceExists(StorageError):
    """A create with a fixed id found that id already taken."""
