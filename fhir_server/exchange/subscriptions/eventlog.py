"""The event log of each Subscription: its numbered events are its outbox jobs.

An event is the `subscription.notify` job keyed `<subscription id>:<event number, 12 digits>`,
enqueued in the unit of work of the change that caused it (events.py). Why the outbox and not a
table of its own: the job already is the durable record written in the change's transaction;
its (kind, key) unique index gives, with no new table, index or migration in either backend,

- the count (events-since-subscription-start): the highest key of the subscription, one index
  seek, read inside the unit of work that numbers the next event (SQLite's writer and MongoDB's
  transaction are serialised, so two writes never take the same number; the unique key would
  refuse it anyway); the Subscription resource is not rewritten per event;
- `$events`: a key range scan from since to until;
- the order of delivery: the worker claims a subscription's events one at a time in key order
  (Store.claim_jobs_in_order, group = the key up to ':');
- retention: delivered (done) and given-up (dead) events older than
  FHIR_SUBSCRIPTION_EVENT_RETENTION_DAYS are purged (Store.purge_jobs), except the newest event of
  each subscription, which keeps its count: numbers are never reused.

A number below the lowest one still kept was purged: `$events` says so (operations.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ...storage.base import OutboxJob
from .accept import NOTIFY_KIND

SEPARATOR = ":"
DIGITS = 12


def event_key(subscription_id: str, number: int) -> str:
    return f"{subscription_id}{SEPARATOR}{number:0{DIGITS}d}"


def _bounds(subscription_id: str) -> tuple[str, str]:
    # every event key of the subscription: the prefix then digits, all below "~"
    return f"{subscription_id}{SEPARATOR}", f"{subscription_id}{SEPARATOR}~"


def number_of(job: OutboxJob) -> int:
    return int(job.key.rsplit(SEPARATOR, 1)[1])


async def newest_event(reader, subscription_id: str) -> OutboxJob | None:
    """The subscription's newest event job (a Store, or a unit of work: then with its own)."""
    found = await reader.job_range(NOTIFY_KIND, *_bounds(subscription_id), limit=1, descending=True)
    return found[0] if found else None


async def event_count(reader, subscription_id: str) -> int:
    """Events numbered so far (events-since-subscription-start): never reset, never reused."""
    newest = await newest_event(reader, subscription_id)
    return number_of(newest) if newest is not None else 0


async def oldest_kept(reader, subscription_id: str) -> int | None:
    found = await reader.job_range(NOTIFY_KIND, *_bounds(subscription_id), limit=1)
    return number_of(found[0]) if found else None


async def events_between(reader, subscription_id: str, low: int, high: int, limit: int) -> list[dict]:
    """The events numbered low..high (inclusive) still kept, oldest first, at most `limit`."""
    if low > high:
        return []
    jobs = await reader.job_range(NOTIFY_KIND, event_key(subscription_id, low), event_key(subscription_id, high),
                                  limit=limit)
    return [job.payload["event"] for job in jobs]


async def append(uow, subscription_id: str, kind: str, event: dict) -> int:
    """Number `event` and enqueue it, in `uow` (the change's unit of work). Its number."""
    number = await event_count(uow, subscription_id) + 1
    await uow.enqueue(NOTIFY_KIND, event_key(subscription_id, number),
                      {"subscription": subscription_id, "type": kind, "event": {**event, "number": number}})
    return number


async def purge(store, retention: timedelta, *, now: datetime | None = None, batch: int = 1000) -> int:
    """Delete events (and handshakes) finished longer ago than `retention`, keeping each
    subscription's newest event. The number deleted."""
    before = (now or datetime.now(timezone.utc)) - retention
    total = 0
    while True:
        deleted = await store.purge_jobs(NOTIFY_KIND, updated_before=before, keep_last_of_group=SEPARATOR,
                                         limit=batch)
        total += deleted
        if deleted < batch:
            return total


class ClaimInOrder:
    """The store as the subscription worker sees it: its claims take each subscription's events
    one at a time in number order (Store.claim_jobs_in_order); everything else passes through."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def claim_jobs(self, kinds, *, limit: int, lease_seconds: float, now: datetime | None = None):
        return await self._store.claim_jobs_in_order(kinds, limit=limit, lease_seconds=lease_seconds,
                                                     separator=SEPARATOR, now=now)
