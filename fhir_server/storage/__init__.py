"""Storage: the Store protocol and its backends. `open_store(url)` picks the backend from the URL."""

from __future__ import annotations

from .base import HistoryPage, HistoryQuery, ResourceReader, SearchPage, StoredVersion, Store, UnitOfWork
from .errors import ResourceExists, StorageError, VersionConflict


def open_store(database_url: str, **options) -> Store:
    """Build (not yet open) the store a database URL names: sqlite:///path (embedded), or
    mongodb://host[,host...]/database?replicaSet=rs0 (also mongodb+srv://; see storage/mongo)."""
    if database_url.startswith("sqlite:"):
        from .sqlite.store import SQLiteStore

        return SQLiteStore.from_url(database_url, **options)
    if database_url.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo.store import MongoStore

        return MongoStore.from_url(database_url, **options)
    raise ValueError(f"unsupported database URL scheme: {database_url.split(':', 1)[0]}")


__all__ = [
    "HistoryPage",
    "HistoryQuery",
    "ResourceExists",
    "ResourceReader",
    "SearchPage",
    "StorageError",
    "Store",
    "StoredVersion",
    "UnitOfWork",
    "VersionConflict",
    "open_store",
]
