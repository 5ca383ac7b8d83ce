"""The authorization server's record store: `open_record_store(url)` picks the backend from the
FHIR database URL, so clients, users and keys live in the same database as the FHIR data."""

from __future__ import annotations

from .base import RecordStore
from .records import (AuthorizationCode, AuthRecords, Client, Grant, Launch, RefreshToken, SigningKey, User,
                      token_hash)


def open_record_store(database_url: str) -> RecordStore:
    """Build (not yet open) the record store of a database URL (sqlite:/// or mongodb://)."""
    if database_url.startswith("sqlite:"):
        from .sqlite import SQLiteRecordStore

        return SQLiteRecordStore.from_url(database_url)
    if database_url.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo import MongoRecordStore

        return MongoRecordStore.from_url(database_url)
    raise ValueError(f"unsupported database URL scheme: {database_url.split(':', 1)[0]}")


__all__ = ["AuthRecords", "AuthorizationCode", "Client", "Grant", "Launch", "RecordStore", "RefreshToken",
           "SigningKey", "User", "open_record_store", "token_hash"]
