"""The audit trail: AuditEvents appended to the store's hash chain, in two ways.

- A write's AuditEvent is appended inside the write's own unit of work (`append`): it commits with
  the change or not at all (audit/store.py calls this).
- Everything else (reads, searches, refusals, logins, disclosures by workers) is `record`ed into a
  buffer that a background task commits every `flush_seconds` (default 0.25 s) as one unit of work:
  one disk flush for many events instead of one per read. An event is durable within
  flush_seconds plus one commit of its recording; a crash loses at most that window (measured in
  bench/audit_bench.py). Stopping the server flushes what is buffered.

AuditEvents go to the store below the interaction layer's wrappers (no validation, no write
hooks): they are the server's own records, shaped by audit/events.py.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from ..storage import Store, UnitOfWork
from . import chain
from .events import AuditRecord, audit_event

log = logging.getLogger("fhir_server.audit")

AUDIT_EVENT = "AuditEvent"


class AuditTrail:
    def __init__(self, store: Store, *, server: str = "fhir-async-telehealth", flush_seconds: float = 0.25,
                 max_batch: int = 1000):
        self._store = store
        self.server = server
        self.flush_seconds = flush_seconds
        self.max_batch = max_batch
        self._pending: list[AuditRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    # -- in a write's unit of work ----------------------------------------------------------------

    async def append(self, uow: UnitOfWork, records: list[AuditRecord]) -> None:
        """Append the records' AuditEvents to the chain inside `uow` (they commit with it)."""
        if not records:
            return
        def sealed(previous: bytes | None) -> list[tuple[str, dict]]:
            link = chain.link_of(previous)
            events = []
            for record in records:
                event_id = str(uuid.uuid4())
                event, link = chain.seal(audit_event(record, event_id, self.server), link)
                events.append((event_id, event))
            return events

        # one step under the write lock: the chain's head is read and the events written after it
        await uow.append_chained(AUDIT_EVENT, sealed)

    # -- batched ----------------------------------------------------------------------------------

    def record(self, record: AuditRecord) -> None:
        """Buffer an event; it is committed within flush_seconds (or now, when the buffer is full)."""
        self._pending.append(record)
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    async def flush(self) -> int:
        batch, self._pending = self._pending, []
        if not batch:
            return 0
        try:
            async with self._store.unit_of_work() as uow:
                await self.append(uow, batch)
        except BaseException:
            self._pending[:0] = batch  # keep them for the next attempt (or the final flush)
            raise
        return len(batch)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-trail")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is unavailable: keep the events, try again
                log.error("audit events could not be committed (%s); %d waiting", type(exc).__name__,
                          len(self._pending))
                await asyncio.sleep(self.flush_seconds)
