"""`Subscription/{id}/$status` (searchset Bundle of one status Parameters, type query-status) and
`Subscription/{id}/$events` (eventsSinceNumber, eventsUntilNumber, inclusive; a history Bundle of
type query-event with the events still in the outbox: the newest FHIR_SUBSCRIPTION_EVENTS_SCAN jobs).
The caller must be allowed to read the Subscription (crud.read: 404 otherwise)."""

from __future__ import annotations

import orjson

from ...errors import InvalidRequest
from ...interactions import crud
from .delivery import notification_bundle, status_parameters, stored_events
from .state import events_since_start


async def status_bundle(store, id: str, principal, base: str) -> dict:
    found = await crud.read(store, "Subscription", id, principal)
    sub = orjson.loads(found.body)
    params = status_parameters(sub, "query-status", [], base)
    return {"resourceType": "Bundle", "type": "searchset", "total": 1,
            "entry": [{"fullUrl": f"urn:uuid:{params['id']}", "resource": params, "search": {"mode": "match"}}]}


def _number(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an event number", expression=name) from None
    if n < 1:
        raise InvalidRequest(f"{name} must be an event number", expression=name)
    return n


async def events_bundle(store, id: str, principal, base: str, since: str | None, until: str | None,
                        scan: int) -> dict:
    found = await crud.read(store, "Subscription", id, principal)
    sub = orjson.loads(found.body)
    total = events_since_start(sub)
    low = _number(since, "eventsSinceNumber") or 1
    high = min(_number(until, "eventsUntilNumber") or total, total)
    events = await stored_events(store, id, low, high, scan) if low <= high else []
    return await notification_bundle(store, sub, "query-event", events, base)
