"""Choosing an export's transactionTime so that the `_lastUpdated le transactionTime` cut-off
loses nothing (Bulk Data 2.0: the export SHALL include every matching resource modified up to
transactionTime, SHOULD NOT include later ones; the next export asks `_since=transactionTime`).

The danger is a unit of work stamped (meta.lastUpdated) at or before transactionTime that commits
only after the job has read past it: this export misses it, and the next one (`_since`, strictly
after) too. So:

1. transactionTime is the stamp of the kick-off's own unit of work (the one that enqueues the
   job: `OutboxJob.created_at` is that stamp on both backends). Both stores hand stamps out under
   their write lock and in commit order (SQLite: the process's write lock; MongoDB: the "changes"
   counter every writing transaction holds), so every unit of work stamped before it has
   committed (or rolled back) by the time the kick-off holds the lock;
2. the kick-off keeps the lock until the clock has passed transactionTime (`hold_past`), so every
   later unit of work is stamped strictly after it and is the next export's;
3. several SQLite server processes (`serve --workers N`) each have their own write lock, but a
   SQLite unit of work takes its stamp only once it holds the database's own write lock (BEGIN
   IMMEDIATE, storage/sqlite/store.py), so point 1 holds across processes too. `barrier` (wait
   until transactionTime + `settle_seconds`, then take the database's write lock once) stays for
   stores that stamp before locking; FHIR_EXPORT_SETTLE_SECONDS sets it (default 0). (Clocks are
   assumed not to step back by more than the stores' own monotonic clamp covers.)
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from ...storage.serialization import utc_now_ms

async def hold_past(stamp: datetime) -> None:
    """Return once the millisecond clock is past `stamp` (called while holding the write lock)."""
    while utc_now_ms() <= stamp:
        await asyncio.sleep(0.001)


def settle_default(database_url: str, workers: int) -> float:
    """No settling is needed: both stores stamp units of work under the lock that orders commits."""
    return 0.0


async def barrier(store, transaction_time: datetime, settle_seconds: float) -> None:
    """Wait until transactionTime + settle_seconds, then take and release the store's write lock."""
    if settle_seconds <= 0:
        return
    wait = transaction_time.timestamp() + settle_seconds - datetime.now(timezone.utc).timestamp()
    if wait > 0:
        await asyncio.sleep(wait)
    async with store.unit_of_work() as uow:
        await uow.read("Patient", "-")  # the first statement begins the write transaction; nothing is written
