"""The authorization server's state for one process: its record store, keys and token service.

The FHIR app opens one AuthService at start-up (when authorization is on) and hands it to the
SMART endpoints (routes.py) and to the resource server's token check.
"""

from __future__ import annotations

import asyncio
import time

from .keys import KeyRing
from .lifetimes import Lifetimes
from .store import AuthRecords, RecordStore, open_record_store
from .tokens import RevokedGrants, TokenService


class AuthService:
    KEY_RELOAD_EVERY = 60.0  # seconds: how soon a `signing-keys rotate` reaches running servers
    PURGE_EVERY = 600.0  # seconds: expired codes, grants, jtis, sessions are deleted this often

    def __init__(self, store: RecordStore, lifetimes: Lifetimes | None = None):
        self.store = store
        self.lifetimes = lifetimes or Lifetimes()  # sessions, access and refresh tokens (automatic logoff)
        self.records = AuthRecords(store)
        self.keys = KeyRing(self.records)
        self.revoked = RevokedGrants(self.records)
        self.tokens = TokenService(self.keys, self.revoked)
        self._keys_loaded = 0.0
        self._purged = 0.0

    @classmethod
    def from_url(cls, database_url: str, lifetimes: Lifetimes | None = None) -> "AuthService":
        return cls(open_record_store(database_url), lifetimes)

    def open_sync(self) -> None:
        self.store.open()
        self.keys.load()
        self._keys_loaded = time.monotonic()
        self.revoked.refresh()

    async def open(self) -> None:
        await asyncio.to_thread(self.open_sync)

    async def close(self) -> None:
        await asyncio.to_thread(self.store.close)

    async def refresh_revocations(self) -> None:
        """Follow revocations made by other processes (cheap; at most once a second) and key
        rotations made by the CLI (at most once a minute)."""
        if self.revoked.stale():
            await asyncio.to_thread(self.revoked.refresh)
        if time.monotonic() - self._keys_loaded >= self.KEY_RELOAD_EVERY:
            self._keys_loaded = time.monotonic()
            await asyncio.to_thread(self.keys.load)
        if time.monotonic() - self._purged >= self.PURGE_EVERY:
            # Expired records are already invisible; this only keeps the tables from growing.
            self._purged = time.monotonic()
            await asyncio.to_thread(self.store.purge_expired)
