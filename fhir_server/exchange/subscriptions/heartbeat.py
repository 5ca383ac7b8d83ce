"""Heartbeats (backport-heartbeat-period; exchange.md A.8): an active topic-based Subscription
with a heartbeat period of p seconds gets a `heartbeat` notification (SubscriptionStatus with
events-since-subscription-start, no event, no focus) at each period boundary (epoch seconds
divisible by p) when no event notification was delivered to it in the period before.

Each heartbeat is an outbox job (kind `subscription.heartbeat`) keyed
`<subscription id>/<p>/<period index>` and due at its boundary, so:

- it survives restarts (the job is stored), and with `serve --workers N` exactly one process
  sends it: the (kind, key) uniqueness makes each period's job single, and one worker claims it;
- the chain keeps itself going: the handler of period k first enqueues the next period's job
  (again once, whoever runs it), then sends. Making a Subscription active (the handshake) enqueues
  the first; a Subscription no longer active, or whose period changed, ends its chain there (a
  changed period means a new handshake, which starts a chain of the new period).

A heartbeat is not retried (the next one comes a period later) and never sets the Subscription
to `error`; one more than a period late (the server was down) is skipped.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Callable

import orjson

from ...outbox import RetryLater
from ...storage.base import DONE, OutboxJob, UnitOfWork
from . import eventlog
from .accept import HEARTBEAT_EXT, parse_spec
from .delivery import SubscriptionDelivery, notification_bundle
from .topics import TOPICS

log = logging.getLogger("fhir_server.subscriptions")
HEARTBEAT_KIND = "subscription.heartbeat"


def heartbeat_period(sub: dict) -> int | None:
    """The Subscription's heartbeat period in seconds (None: no heartbeats): topic-based only."""
    if sub.get("criteria") not in TOPICS:
        return None
    channel = sub.get("channel") if isinstance(sub.get("channel"), dict) else {}
    for e in channel.get("extension") or []:
        if isinstance(e, dict) and e.get("url") == HEARTBEAT_EXT:
            value = e.get("valueUnsignedInt")
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    return None


def heartbeat_key(subscription_id: str, period: int, index: int) -> str:
    # no ':' in it: heartbeats are not ordered like events (eventlog.SEPARATOR)
    return f"{subscription_id}/{period}/{index:012d}"


async def schedule(uow: UnitOfWork, subscription_id: str, period: int, index: int) -> None:
    """The heartbeat of period `index` (due at index * period epoch seconds), unless already there."""
    due = datetime.fromtimestamp(index * period, timezone.utc)
    await uow.enqueue(HEARTBEAT_KIND, heartbeat_key(subscription_id, period, index),
                      {"subscription": subscription_id, "period": period, "index": index}, available_at=due)


class Heartbeats:
    def __init__(self, delivery: SubscriptionDelivery, clock: Callable[[], float] = time.time):
        self.delivery = delivery
        self.store = delivery.store
        self.clock = clock

    async def on_activation(self, uow: UnitOfWork, sub: dict) -> None:
        """In the unit of work that makes `sub` active: schedule its first heartbeat."""
        period = heartbeat_period(sub)
        if period:
            await schedule(uow, sub["id"], period, int(self.clock() // period) + 1)

    async def handle(self, job: OutboxJob) -> None:
        p = job.payload
        sub_id, period, index = p["subscription"], int(p["period"]), int(p["index"])
        sub = await self.delivery.current(sub_id)
        if sub is None or sub.get("status") != "active" or heartbeat_period(sub) != period:
            return  # the chain ends here
        now = self.clock()
        async with self.store.unit_of_work() as uow:
            await schedule(uow, sub_id, period, max(index, int(now // period)) + 1)
        if now - index * period > period:
            log.info("subscription %s: heartbeat %d skipped (%.0f s late)", sub_id, index, now - index * period)
            return
        newest = await eventlog.newest_event(self.store, sub_id)
        if newest is not None and newest.state == DONE and newest.updated_at.timestamp() > now - period:
            return  # an event notification went out within the period: no heartbeat needed
        try:
            spec = parse_spec(sub, self.delivery.settings)
        except Exception:  # noqa: BLE001 - no longer honoured (settings changed): the event jobs say so
            return
        total = eventlog.number_of(newest) if newest is not None else 0
        bundle = await notification_bundle(self.store, sub, "heartbeat", [], self.delivery.settings.base_url,
                                           total=total)
        try:
            await self.delivery.post(spec, spec.endpoint, "POST", orjson.dumps(bundle))
        except RetryLater as exc:
            log.warning("subscription %s: heartbeat %d not delivered: %s", sub_id, index, exc.error)
