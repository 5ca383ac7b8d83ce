"""Delivering notifications: the handler of the outbox's `subscription.notify` jobs.

A job is a handshake (`{"type": "handshake", "version": n}`) or one numbered event
(`{"type": "event-notification"|"classic", "event": {...}}`, keyed `<subscription id>:<number>`:
the subscription's event log, eventlog.py). For an event job:

- the Subscription gone, or not `active` (requested, error, off): nothing is sent, the job is done;
  the event stays in the log for `$events`.
- order per subscription: the worker claims a subscription's events one at a time in number order
  (Store.claim_jobs_in_order: event n+1 only once n is done or given up), while other
  subscriptions' events run beside it (FHIR_SUBSCRIPTION_CONCURRENCY at once), so a slow endpoint
  holds up only its own subscription. One event per notification Bundle (so backport-max-count,
  at least 1, always holds).
- a notification Bundle (`history`, SubscriptionStatus Parameters first: notification_bundle) is
  POSTed to channel.endpoint with Content-Type = channel.payload and the subscriber's
  channel.header entries, nothing else of ours (no token); redirects are not followed; the attempt
  times out after backport-timeout (capped at 60 s) or the default.
- 2xx: the job is done. Anything else, or no answer: RetryLater (the worker's exponential backoff
  with jitter); after FHIR_SUBSCRIPTION_MAX_ATTEMPTS the job is dead-lettered and `dead_lettered`
  sets the Subscription to `error` with Subscription.error saying why. Later events are still
  numbered and kept; the client re-activates (PUT status requested) and catches up with `$events`.

Handshake: POST of a handshake Bundle (status requested); 2xx => `active` (and, with a heartbeat
period, the first heartbeat is scheduled in the same unit of work: heartbeat.py); anything else =>
`error` at once (Permanent), as the IG says. The Subscription resource is written only for these
status changes, never per event.
Payloads are filtered by the subscriber's authorization (events.readable_by_owner): a resource
the creating client could not read is left out (for id-only: its id too).
Classic jobs: see classic.py.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import Awaitable, Callable

import httpx
import orjson

from ...audit import disclosures
from ...audit.patients import patients_of
from ... import outbound
from ...outbox import Permanent, RetryLater
from ...storage.base import OutboxJob, UnitOfWork
from ...storage.serialization import format_instant
from .accept import Spec, parse_spec
from .config import SubscriptionSettings
from .events import readable_by_owner
from . import eventlog

log = logging.getLogger("fhir_server.subscriptions")
MAX_TIMEOUT = 60.0


def status_parameters(sub: dict, kind: str, events: list[dict], base: str, *, total: int,
                      content: str | None = None, status: str | None = None, readable=None,
                      errors: list[dict] | tuple = ()) -> dict:
    """The SubscriptionStatus as R4 Parameters (backport-subscription-status-r4)."""
    content = content or _content(sub)
    params: list[dict] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{sub['id']}"}},
    ]
    if sub.get("criteria", "").startswith("http") and content != "empty":
        params.append({"name": "topic", "valueCanonical": sub["criteria"]})
    params += [
        {"name": "status", "valueCode": status or sub.get("status", "active")},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(total)},
    ]
    for e in events:
        part = [{"name": "event-number", "valueString": str(e["number"])}]
        if e.get("timestamp"):
            part.append({"name": "timestamp", "valueInstant": e["timestamp"]})
        if content != "empty" and e.get("focus") and (readable is None or e["focus"] in readable):
            part.append({"name": "focus", "valueReference": {"reference": f"{base}/{e['focus']}"}})
            part += [{"name": "additional-context", "valueReference": {"reference": f"{base}/{c}"}}
                     for c in e.get("context") or [] if readable is None or c in readable]
        params.append({"name": "notification-event", "part": part})
    if sub.get("status") == "error" and sub.get("error"):
        params.append({"name": "error", "valueCodeableConcept": {"text": str(sub["error"])}})
    params += [{"name": "error", "valueCodeableConcept": e} for e in errors]
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "parameter": params}


def _content(sub: dict) -> str:
    from .accept import CONTENT_EXT
    payload_ext = ((sub.get("channel") or {}).get("_payload") or {}).get("extension") or []
    return next((e.get("valueCode") for e in payload_ext if isinstance(e, dict) and e.get("url") == CONTENT_EXT),
                "empty")


async def notification_bundle(reader, sub: dict, kind: str, events: list[dict], base: str, *, total: int,
                              status: str | None = None, bundle_type: str = "history",
                              errors: list[dict] | tuple = ()) -> dict:
    """A backport-subscription-notification-r4 Bundle: status Parameters first, then the
    resources (id-only: fullUrl and request only; full-resource: the current resource), each
    once, only those the subscriber's client may read."""
    content = _content(sub)
    refs: list[str] = []
    for e in events:
        for ref in [e.get("focus"), *(e.get("context") or [])]:
            if ref and ref not in refs:
                refs.append(ref)
    readable: dict[str, dict] = {}
    for ref in refs:
        t, _, i = ref.partition("/")
        found = await reader.read(t, i)
        if found is not None and found.body is not None:
            resource = orjson.loads(found.body)
            if readable_by_owner(sub, resource):
                readable[ref] = resource
    parameters = status_parameters(sub, kind, events, base, total=total, content=content, status=status,
                                   readable=readable, errors=errors)
    entries = [{"fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters,
                "request": {"method": "GET", "url": f"{base}/Subscription/{sub['id']}/$status"},
                "response": {"status": "200"}}]
    if content != "empty":
        for ref, resource in readable.items():
            entry = {"fullUrl": f"{base}/{ref}", "request": {"method": "GET", "url": f"{base}/{ref}"},
                     "response": {"status": "200"}}
            if content == "full-resource":
                entry["resource"] = resource
            entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": bundle_type,
            "timestamp": format_instant(datetime.now(timezone.utc)), "entry": entries}


ActivationHook = Callable[[UnitOfWork, dict], Awaitable[None]]


class SubscriptionDelivery:
    def __init__(self, store, settings: SubscriptionSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.store = store
        self.settings = settings
        self._client = outbound.async_client(follow_redirects=False, transport=transport)  # verifies certificates
        # run in the unit of work that makes a Subscription active (heartbeat.py schedules its first)
        self.on_activation: list[ActivationHook] = []

    async def aclose(self) -> None:
        await self._client.aclose()

    async def current(self, sub_id: str) -> dict | None:
        found = await self.store.read("Subscription", sub_id)
        return orjson.loads(found.body) if found is not None and found.body is not None else None

    async def _update(self, sub_id: str, change, then: list[ActivationHook] | None = None) -> None:
        """A system write of the Subscription: read-modify-write in one unit of work; `then` runs
        in that unit of work after a write."""
        async with self.store.unit_of_work() as uow:
            found = await uow.read("Subscription", sub_id)
            if found is None or found.body is None:
                return
            sub = orjson.loads(found.body)
            new = change(sub)
            if new is not None and new != sub:
                await uow.write("Subscription", sub_id, new, method="PUT")
                for hook in then or []:
                    await hook(uow, new)

    async def post(self, spec: Spec, url: str, method: str, body: bytes | None) -> None:
        """One request to the subscriber: its headers only (never a token of ours); RetryLater unless 2xx."""
        headers = {name: value for name, value in spec.headers}
        if body is not None:
            headers["Content-Type"] = spec.payload or "application/fhir+json"
        timeout = min(float(spec.timeout), MAX_TIMEOUT) if spec.timeout else self.settings.timeout
        try:
            response = await self._client.request(method, url, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise RetryLater(f"no-response: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise RetryLater(f"error-response: HTTP {response.status_code}")

    async def handle(self, job: OutboxJob) -> None:
        p = job.payload
        sub = await self.current(p["subscription"])
        if sub is None:
            return
        try:
            spec = parse_spec(sub, self.settings)
        except Exception:  # noqa: BLE001 - settings changed (an http endpoint no longer allowed)
            raise Permanent("the Subscription can no longer be honoured") from None
        if p["type"] == "handshake":
            await self._handshake(sub, spec)
            return
        if sub.get("status") != "active":
            return  # kept for $events
        event = p["event"]
        if p["type"] == "classic":
            await self._classic(sub, spec, event)
            return
        total = await eventlog.event_count(self.store, sub["id"])
        bundle = await notification_bundle(self.store, sub, "event-notification", [event], self.settings.base_url,
                                           total=total)
        await self.post(spec, spec.endpoint, "POST", orjson.dumps(bundle))
        if _content(sub) != "empty":  # ids or resources went to the EHR: a disclosure, for the accounting
            refs = [ref for ref in [event.get("focus"), *(event.get("context") or [])] if ref]
            await disclosures.resources_sent(self.store, refs, spec.endpoint,
                                             f"subscription notification (Subscription/{sub['id']})")
        log.debug("subscription %s: event %s delivered", sub["id"], event["number"])

    async def _classic(self, sub: dict, spec: Spec, event: dict) -> None:
        if spec.payload is None:
            await self.post(spec, spec.endpoint, "POST", None)
            return
        t, _, i = event["focus"].partition("/")
        found = await self.store.vread(t, i, event["version"]) if event.get("version") else await self.store.read(t, i)
        if found is None or found.body is None or not readable_by_owner(sub, orjson.loads(found.body)):
            return
        await self.post(spec, f"{spec.endpoint.rstrip('/')}/{t}/{i}", "PUT", found.body)
        disclosures.record(recipient=spec.endpoint, resources=[f"{t}/{i}"], patients=patients_of(found),
                           description=f"classic subscription notification (Subscription/{sub['id']})")

    async def _handshake(self, sub: dict, spec: Spec) -> None:
        if sub.get("status") != "requested":
            return
        total = await eventlog.event_count(self.store, sub["id"])
        bundle = await notification_bundle(self.store, sub, "handshake", [], self.settings.base_url, total=total)
        try:
            await self.post(spec, spec.endpoint, "POST", orjson.dumps(bundle))
        except RetryLater as exc:
            reason = f"handshake failed: {exc.error}"
            await self._update(sub["id"], lambda s: {**s, "status": "error", "error": reason}
                               if s.get("status") == "requested" else None)
            raise Permanent(reason) from None
        await self._update(sub["id"], lambda s: {**s, "status": "active"} if s.get("status") == "requested" else None,
                           then=self.on_activation)

    async def dead_lettered(self, job: OutboxJob, error: str) -> None:
        if job.payload.get("type") == "handshake":
            return
        await self._update(job.payload["subscription"], lambda s: {
            **s, "status": "error", "error": f"delivery failed after {job.attempts} attempts: {error}"}
            if s.get("status") == "active" else None)
