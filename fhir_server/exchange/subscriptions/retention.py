"""Purging what subscriptions no longer need, every FHIR_SUBSCRIPTION_PURGE_SECONDS (and once at
start): events finished (delivered, skipped or given up) longer ago than
FHIR_SUBSCRIPTION_EVENT_RETENTION_DAYS, but each subscription's newest (eventlog.purge), and
heartbeat jobs finished over an hour ago (each is only a record that its period was handled).
It also re-seeds every active Subscription's heartbeat chain: a chain whose job was given up (the
store down through all its attempts) starts again within a purge period instead of never.
Every worker process runs it; the deletes and the (kind, key)-unique enqueues are idempotent, so N
of them cost only N queries."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson

from ...outbox.worker import describe
from ...search.parse import parse_search
from ...search.query import SearchQuery
from . import eventlog
from .config import SubscriptionSettings
from .heartbeat import HEARTBEAT_KIND, heartbeat_period, schedule

log = logging.getLogger("fhir_server.subscriptions")
HEARTBEAT_KEEP = timedelta(hours=1)


class Retention:
    def __init__(self, store, settings: SubscriptionSettings):
        self.store = store
        self.settings = settings
        self._task: asyncio.Task | None = None

    async def run_once(self) -> int:
        now = datetime.now(timezone.utc)
        events = await eventlog.purge(self.store, timedelta(days=self.settings.event_retention_days), now=now)
        heartbeats = await self.store.purge_jobs(HEARTBEAT_KIND, updated_before=now - HEARTBEAT_KEEP, limit=100000)
        if events or heartbeats:
            log.info("subscriptions: purged %d events and %d heartbeat records", events, heartbeats)
        await self.reseed_heartbeats(now.timestamp())
        return events + heartbeats

    async def reseed_heartbeats(self, now: float) -> int:
        """The next heartbeat of every active Subscription that has a period (a no-op where the
        chain is alive: that period's job is already there)."""
        chains: list[tuple[str, int]] = []
        query: SearchQuery | None = parse_search(["Subscription"], [("status", "active"), ("_count", "500")])
        while query is not None:
            page = await self.store.search(query)
            for version in page.matches:
                sub = orjson.loads(version.body) if version.body is not None else {}
                if period := heartbeat_period(sub):
                    chains.append((version.id, period))
            query = replace(query, cursor=page.next_cursor) if page.next_cursor else None
        if chains:
            async with self.store.unit_of_work() as uow:
                for sub_id, period in chains:
                    await schedule(uow, sub_id, period, int(now // period) + 1)
        return len(chains)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="subscription-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store may be briefly unreachable: next round
                log.error("subscriptions: purge failed: %s", describe(exc))
            await asyncio.sleep(self.settings.purge_seconds)
