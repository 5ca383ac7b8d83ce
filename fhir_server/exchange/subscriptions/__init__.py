"""Subscriptions: the R5 Backport IG (1.1.0) topic-based Subscriptions on R4, and classic R4
Subscriptions (criteria = a search), delivered over rest-hook through the transactional outbox.

    topics.py      the server's topics (canonical URLs, triggers, filters)
    accept.py      validating a Subscription on write; status requested -> handshake -> active
    events.py      write hooks recording events in the subscribers' event logs
    eventlog.py    the event log: numbered `subscription.notify` outbox jobs (count, $events
                   ranges, in-order claims, purge)
    classic.py     classic R4 criteria evaluated per write
    delivery.py    the outbox handler: handshake, notification Bundles, retries, error
    heartbeat.py   heartbeat notifications, one outbox job per subscription and period
    retention.py   the periodic purge of old events and heartbeat records
    operations.py  $status, $events
    config.py      FHIR_SUBSCRIPTION_* settings

Wiring (app.py): `subs = subscription_components(store, hooks, settings)`, where `store` is the
HookedStore over `hooks` (its units of work run the hooks), called after the visit's hooks are
registered (the Task hook reads the Encounter the visit's hook finished); then
`prepare={"Subscription": subs.prepare, ...}` on the ValidatingStore, `*subs.routes` before the
generic ROUTES, `subs.start()` / `await subs.stop()` in the lifespan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...interactions.write_hooks import WriteHooks
from ...outbox import Backoff, OutboxWorker
from .accept import NOTIFY_KIND, SubscriptionAccept
from .classic import ClassicSubscriptions
from .config import SubscriptionSettings
from .delivery import SubscriptionDelivery
from .eventlog import ClaimInOrder
from .events import SubscriptionEvents
from .heartbeat import HEARTBEAT_KIND, Heartbeats
from .retention import Retention
from .topics import TOPICS, capability_extensions

__all__ = ["SubscriptionComponents", "subscription_components", "TOPICS", "capability_extensions"]


@dataclass
class SubscriptionComponents:
    settings: SubscriptionSettings
    worker: OutboxWorker
    delivery: SubscriptionDelivery
    accept: SubscriptionAccept
    retention: Retention
    routes: list = field(default_factory=list)

    @property
    def prepare(self):
        return self.accept.prepare

    def start(self) -> None:
        self.worker.start()
        self.retention.start()

    async def stop(self) -> None:
        await self.retention.stop()
        await self.worker.stop()
        await self.delivery.aclose()


def subscription_components(store, hooks: WriteHooks, settings=None,
                            subscription_settings: SubscriptionSettings | None = None) -> SubscriptionComponents:
    """`store`: the HookedStore over `hooks`; `settings`: the server's Settings (for base_url)."""
    from ...api.subscription_routes import ROUTES

    base = getattr(settings, "base_url", None) or (
        f"http://{getattr(settings, 'host', '127.0.0.1')}:{getattr(settings, 'port', 8080)}")
    config = subscription_settings or SubscriptionSettings.from_env(base)
    accept = SubscriptionAccept(config)
    hooks.register("Subscription", accept.on_subscription)
    classic = ClassicSubscriptions(config.classic_types)
    SubscriptionEvents(classic).register(hooks)
    classic.register(hooks)
    delivery = SubscriptionDelivery(store, config)
    heartbeats = Heartbeats(delivery)
    delivery.on_activation.append(heartbeats.on_activation)
    # concurrent over subscriptions, one event at a time within each (ClaimInOrder)
    worker = OutboxWorker(ClaimInOrder(store), {NOTIFY_KIND: delivery.handle, HEARTBEAT_KIND: heartbeats.handle},
                          max_attempts=config.max_attempts,
                          backoff=Backoff(base=config.backoff_base, cap=config.backoff_cap),
                          poll_interval=config.poll_seconds, concurrency=config.concurrency, lease_seconds=90.0,
                          on_dead_letter={NOTIFY_KIND: delivery.dead_lettered})
    return SubscriptionComponents(config, worker, delivery, accept, Retention(store, config), list(ROUTES))
