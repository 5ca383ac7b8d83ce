"""Classic R4 Subscriptions (criteria = a search such as `Encounter?status=finished`; exchange.md
A.13): after each create or update of a watched type (settings.classic_types) every active classic
Subscription whose criteria is on that type is evaluated by running its criteria restricted to
`_id` of the written resource through the unit of work; a match records a numbered event and a
`subscription.notify` job (kind "classic") like a topic event. No notification on delete, nor when
an update no longer matches (R4). Delivery (delivery.py): with channel.payload, PUT
`[endpoint]/[type]/[id]` with the resource (R4 rest-hook: "the URL is interpreted as the service
base, and an update (PUT) is made"); without, a POST of no body to the endpoint.
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qsl

import orjson

from ...storage import StoredVersion, UnitOfWork
from ...storage.serialization import format_instant
from .events import matches, readable_by_owner, record_event, subscriptions


class ClassicSubscriptions:
    def __init__(self, types: tuple[str, ...]):
        self.types = types

    def register(self, hooks) -> None:
        for t in self.types:
            hooks.register(t, self.on_write)

    async def on_write(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        if stored.body is not None:
            await self.evaluate(uow, stored)

    async def evaluate(self, uow: UnitOfWork, stored: StoredVersion | None) -> None:
        if stored is None or stored.body is None:
            return
        resource = None
        for sub in await subscriptions(uow, [("criteria", f"{stored.resource_type}?"), ("status", "active")]):
            criteria = str(sub.get("criteria") or "")
            resource_type, _, query = criteria.partition("?")
            if resource_type != stored.resource_type:
                continue
            if not await matches(uow, resource_type, stored.id, parse_qsl(query, keep_blank_values=True)):
                continue
            resource = resource or orjson.loads(stored.body)
            if not readable_by_owner(sub, resource):
                continue
            await record_event(uow, sub, {"timestamp": format_instant(datetime.now(timezone.utc)),
                                          "focus": f"{stored.resource_type}/{stored.id}",
                                          "version": stored.version}, "classic")
