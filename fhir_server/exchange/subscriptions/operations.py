"""`Subscription/{id}/$status` (searchset Bundle of one status Parameters, type query-status) and
`Subscription/{id}/$events` (eventsSinceNumber, eventsUntilNumber, inclusive; a history Bundle of
type query-event with the events of that range still in the event log, at most
FHIR_SUBSCRIPTION_EVENTS_MAX: an indexed key range, eventlog.py). Numbers below the oldest kept
event were purged (FHIR_SUBSCRIPTION_EVENT_RETENTION_DAYS): the answer's SubscriptionStatus then
carries an `error` saying which (the IG lets a server limit what $events can return; the operation
still answers with its Bundle). The caller must be allowed to read the Subscription (crud.read:
404 otherwise)."""

from __future__ import annotations

import orjson

from ...errors import InvalidRequest
from ...interactions import crud
from . import eventlog
from .delivery import notification_bundle, status_parameters

PURGED = {"system": "http://fhir-async-telehealth.example/CodeSystem/subscription-event-error",
          "code": "events-purged", "display": "Events no longer available"}


async def status_bundle(store, id: str, principal, base: str) -> dict:
    found = await crud.read(store, "Subscription", id, principal)
    sub = orjson.loads(found.body)
    params = status_parameters(sub, "query-status", [], base, total=await eventlog.event_count(store, id))
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
                        limit: int) -> dict:
    found = await crud.read(store, "Subscription", id, principal)
    sub = orjson.loads(found.body)
    total = await eventlog.event_count(store, id)
    low = _number(since, "eventsSinceNumber") or 1
    high = min(_number(until, "eventsUntilNumber") or total, total)
    events = await eventlog.events_between(store, id, low, high, limit)
    errors = []
    kept = await eventlog.oldest_kept(store, id) if low <= high else None
    if kept is not None and low < kept:
        last = min(kept - 1, high)
        which = f"Event {low}" if low == last else f"Events {low} to {last}"
        errors.append({"coding": [PURGED], "text": f"{which} no longer available: events are kept for a limited "
                                                   "time after delivery"})
    return await notification_bundle(store, sub, "query-event", events, base, total=total, errors=errors)
