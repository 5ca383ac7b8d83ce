"""The authorization server's storage: one small record store, kept in the FHIR database.

Clients, users, signing keys, launch contexts, authorization codes, grants, refresh tokens and the
`jti`s of client assertions are all records: a JSON document under (kind, key), optionally
expiring. records.py gives them types; each backend only stores documents. The interface is
synchronous on purpose: authlib's server classes call their hooks synchronously, so the token and
authorize endpoints run in a worker thread and talk to the store from there (one decision, made
here, instead of an async/sync bridge in every hook).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class RecordStore(Protocol):
    def open(self) -> None:
        """Create what is missing (tables, collections, indexes); idempotent."""

    def close(self) -> None: ...

    def put(self, kind: str, key: str, doc: dict, *, expires_at: float | None = None) -> None:
        """Insert or replace the record (and clear its used flag)."""

    def add(self, kind: str, key: str, doc: dict, *, expires_at: float | None = None) -> bool:
        """Insert only if no live record has this key (an expired one is replaced); False if one does.
        Atomic: of two concurrent adds of one key exactly one returns True (jti replay, unique ids)."""

    def get(self, kind: str, key: str) -> dict | None:
        """The document, or None when absent or expired (now >= expires_at)."""

    def list(self, kind: str) -> list[dict]:
        """Every live document of a kind, in key order."""

    def remove(self, kind: str, key: str) -> bool:
        """Delete; True if a record was there."""

    def take(self, kind: str, key: str) -> tuple[dict | None, bool]:
        """Mark the record used, atomically: (doc, True) the first time, (doc, False) on any later
        call (a replayed code or refresh token), (None, False) when absent or expired."""

    def append(self, kind: str, doc: dict) -> int:
        """Add a document to an append-only feed; returns its sequence number (increasing)."""

    def feed(self, kind: str, after: int) -> list[tuple[int, dict]]:
        """The feed's documents with sequence numbers above `after`, in order."""

    def purge_expired(self, now: float | None = None) -> int:
        """Delete expired records; returns how many."""
