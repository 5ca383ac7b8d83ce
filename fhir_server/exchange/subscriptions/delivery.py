"""Delivering notifications: the handler of the outbox's `subscription.notify` jobs.

A job is a handshake (`{"type": "handshake", "version": n}`) or one numbered event
(`{"type": "event-notification"|"classic", "event": {...}}`; events.py). For an event job:

- the Subscription gone, or not `active` (requested, error, off): nothing is sent, the job is done;
  the event stays in the outbox for `$events`.
- in order per subscription: the Subscription records the highest number its receiver accepted
  (delivered-through). A job at or below it is done; a job above it sends every event from
  delivered-through + 1 to its own, oldest first (earlier jobs still backing off are then done when
  they come round), at most `backport-max-count` events per Bundle. So a retried event is never
  overtaken by a later one. The worker runs one job at a time (concurrency 1).
- a notification Bundle (`history`, SubscriptionStatus Parameters first: notification_bundle) is
  POSTed to channel.endpoint with Content-Type = channel.payload and the subscriber's
  channel.header entries, nothing else of ours (no token); redirects are not followed; the attempt
  times out after backport-timeout (capped at 60 s) or the default.
- 2xx: delivered-through moves on. Anything else, or no answer: RetryLater (the worker's
  exponential backoff with jitter); after FHIR_SUBSCRIPTION_MAX_ATTEMPTS the job is dead-lettered
  and `dead_lettered` sets the Subscription to `error` with Subscription.error saying why. Later
  events are still numbered and kept; the client re-activates (PUT status requested) and catches up
  with `$events`.

Handshake: POST of a handshake Bundle (status requested, events-since-subscription-start 0 for a
new one); 2xx => `active`; anything else => `error` at once (Permanent), as the IG says.
Payloads are filtered by the subscriber's authorization (events.readable_by_owner): a resource
the creating client could not read is left out (for id-only: its id too).
Classic jobs: see classic.py.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

import httpx
import orjson

from ...outbox import Permanent, RetryLater
from ...storage.base import OutboxJob
from ...storage.serialization import format_instant
from .accept import NOTIFY_KIND, Spec, parse_spec
from .config import SubscriptionSettings
from .events import readable_by_owner
from .state import delivered_through, events_since_start, with_state

log = logging.getLogger("fhir_server.subscriptions")
MAX_TIMEOUT = 60.0


def status_parameters(sub: dict, kind: str, events: list[dict], base: str, *, content: str | None = None,
                      status: str | None = None, readable=None) -> dict:
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
        {"name": "events-since-subscription-start", "valueString": str(events_since_start(sub))},
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
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "parameter": params}


def _content(sub: dict) -> str:
    from .accept import CONTENT_EXT
    payload_ext = ((sub.get("channel") or {}).get("_payload") or {}).get("extension") or []
    return next((e.get("valueCode") for e in payload_ext if isinstance(e, dict) and e.get("url") == CONTENT_EXT),
                "empty")


async def notification_bundle(reader, sub: dict, kind: str, events: list[dict], base: str, *,
                              status: str | None = None, bundle_type: str = "history") -> dict:
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
    parameters = status_parameters(sub, kind, events, base, content=content, status=status, readable=readable)
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


async def stored_events(store, sub_id: str, since: int, until: int, scan: int) -> list[dict]:
    """Events since..until (inclusive) of a Subscription, from its outbox jobs (newest `scan` jobs)."""
    jobs = await store.jobs(kind=NOTIFY_KIND, limit=scan)
    found = {}
    for job in jobs:
        p = job.payload
        if p.get("subscription") == sub_id and "event" in p and since <= p["event"]["number"] <= until:
            found[p["event"]["number"]] = p["event"]
    return [found[n] for n in sorted(found)]


class SubscriptionDelivery:
    def __init__(self, store, settings: SubscriptionSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.store = store
        self.settings = settings
        self._client = httpx.AsyncClient(follow_redirects=False, transport=transport, trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _current(self, sub_id: str) -> dict | None:
        found = await self.store.read("Subscription", sub_id)
        return orjson.loads(found.body) if found is not None and found.body is not None else None

    async def _update(self, sub_id: str, change) -> None:
        """A system write of the Subscription: read-modify-write in one unit of work."""
        async with self.store.unit_of_work() as uow:
            found = await uow.read("Subscription", sub_id)
            if found is None or found.body is None:
                return
            sub = orjson.loads(found.body)
            new = change(sub)
            if new is not None and new != sub:
                await uow.write("Subscription", sub_id, new, method="PUT")

    async def _post(self, spec: Spec, url: str, method: str, body: bytes | None) -> None:
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
        sub = await self._current(p["subscription"])
        if sub is None:
            return
        try:
            spec = parse_spec(sub, self.settings)
        except Exception:  # noqa: BLE001 - settings changed (an http endpoint no longer allowed)
            raise Permanent("the Subscription can no longer be honoured") from None
        if p["type"] == "handshake":
            await self._handshake(sub, spec, p)
            return
        if sub.get("status") != "active":
            return  # kept for $events
        number = p["event"]["number"]
        done = delivered_through(sub)
        if number <= done:
            return
        events = [p["event"]] if number == done + 1 else await stored_events(
            self.store, sub["id"], done + 1, number, self.settings.events_scan)
        if p["type"] == "classic":
            for e in events:
                await self._classic(sub, spec, e)
                await self._update(sub["id"], lambda s, n=e["number"]: with_state(s, delivered=max(n, delivered_through(s))))
            return
        size = spec.max_count or len(events) or 1
        for start in range(0, len(events), size):
            batch = events[start:start + size]
            bundle = await notification_bundle(self.store, sub, "event-notification", batch, self.settings.base_url)
            await self._post(spec, spec.endpoint, "POST", orjson.dumps(bundle))
            last = batch[-1]["number"]
            await self._update(sub["id"], lambda s, n=last: with_state(s, delivered=max(n, delivered_through(s))))

    async def _classic(self, sub: dict, spec: Spec, event: dict) -> None:
        if spec.payload is None:
            await self._post(spec, spec.endpoint, "POST", None)
            return
        t, _, i = event["focus"].partition("/")
        found = await self.store.vread(t, i, event["version"]) if event.get("version") else await self.store.read(t, i)
        if found is None or found.body is None or not readable_by_owner(sub, orjson.loads(found.body)):
            return
        await self._post(spec, f"{spec.endpoint.rstrip('/')}/{t}/{i}", "PUT", found.body)

    async def _handshake(self, sub: dict, spec: Spec, p: dict) -> None:
        if sub.get("status") != "requested":
            return
        bundle = await notification_bundle(self.store, sub, "handshake", [], self.settings.base_url)
        try:
            await self._post(spec, spec.endpoint, "POST", orjson.dumps(bundle))
        except RetryLater as exc:
            reason = f"handshake failed: {exc.error}"
            await self._update(sub["id"], lambda s: {**s, "status": "error", "error": reason}
                               if s.get("status") == "requested" else None)
            raise Permanent(reason) from None
        await self._update(sub["id"], lambda s: {**s, "status": "active"} if s.get("status") == "requested" else None)

    async def dead_lettered(self, job: OutboxJob, error: str) -> None:
        if job.payload.get("type") == "handshake":
            return
        await self._update(job.payload["subscription"], lambda s: {
            **s, "status": "error", "error": f"delivery failed after {job.attempts} attempts: {error}"}
            if s.get("status") == "active" else None)

