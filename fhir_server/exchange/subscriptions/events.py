"""Recording subscription events inside the unit of work of the write that causes them.

Write hooks (interactions/write_hooks.py) see each write with the version before it. When a
topic's trigger happens (topics.py), every Subscription on that topic with status `active` or
`error` (events keep being numbered in error, for `$events`: exchange.md A.10) whose filters match
the focus gets the next event number and one outbox job `subscription.notify` keyed
`<subscription id>:<event number>` (the subscription's event log: eventlog.py); it commits with
the change, or vanishes with it. The Subscription resource itself is not written. Matching runs the filter as a search restricted to `_id` of the focus, through
the unit of work (which sees its own writes), so filters mean what the same search would mean.
The subscriber's authorization is checked too: an event its client could not read is not recorded.

The visit's own steps are written by the Task hook without hooks of their own (a completed review
Task finishes its Encounter inside transitions.on_task), so consultation-completed fires from the
Task write (reading the Encounter the earlier hook just finished), and classic Subscriptions on
Encounter are evaluated there too (classic.py).
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from smart_auth.access import allowed

from ...interactions.resource_reads import relative_reference_of, search_resources
from ...search.parse import parse_search
from ...storage import StoredVersion, UnitOfWork
from ...storage.serialization import format_instant
from ...visit.lifecycle import STEPS
from ...visit.transitions import is_review_task, task_state
from . import eventlog
from .state import owner_of
from .topics import CONSULTATION_COMPLETED, PRESCRIPTION_STATUS_CHANGED, VISIT_SUBMITTED, Topic


def _body(version: StoredVersion | None) -> dict | None:
    return orjson.loads(version.body) if version is not None and version.body is not None else None


async def subscriptions(uow: UnitOfWork, params: list[tuple[str, str]]) -> list[dict]:
    return await search_resources(uow, "Subscription", params, count=1000)


async def matches(uow: UnitOfWork, resource_type: str, id: str, filters: list[tuple[str, str]]) -> bool:
    page = await uow.search(parse_search([resource_type], [*filters, ("_id", id), ("_count", "1")]))
    return bool(page.matches)


def readable_by_owner(sub: dict, resource: dict) -> bool:
    """Whether the Subscription's creator could read `resource` with the token it subscribed with."""
    principal = owner_of(sub)
    if principal is None:
        return False
    if principal.unrestricted:
        return True
    rule = allowed(principal, resource.get("resourceType", ""), "r")
    return rule is not None and (rule.everything or rule.admits(resource))


async def record_event(uow: UnitOfWork, sub: dict, event: dict, kind: str) -> int:
    """Number the event for `sub` and enqueue its notification job (eventlog.append)."""
    return await eventlog.append(uow, sub["id"], kind, event)


def _filters(sub: dict) -> list[tuple[str, str]]:
    from .accept import FILTER_EXT, _filter_pairs
    from .topics import TOPICS
    topic = TOPICS[sub["criteria"]]
    pairs: list[tuple[str, str]] = []
    for e in (sub.get("_criteria") or {}).get("extension") or []:
        if isinstance(e, dict) and e.get("url") == FILTER_EXT:
            pairs.extend(_filter_pairs(e.get("valueString"), topic.resource_type, topic.filters))
    return pairs


class SubscriptionEvents:
    def __init__(self, classic=None):
        self.classic = classic  # classic.ClassicSubscriptions: evaluated for writes the Task hook causes

    def register(self, hooks) -> None:
        hooks.register("Task", self.on_task)
        hooks.register("Encounter", self.on_encounter)
        hooks.register("MedicationRequest", self.on_medication_request)

    async def fire(self, uow: UnitOfWork, topic: Topic, focus: dict, context: list[str]) -> None:
        focus_ref = f"{focus['resourceType']}/{focus['id']}"
        now = format_instant(datetime.now(timezone.utc))
        for sub in await subscriptions(uow, [("criteria:exact", topic.url), ("status", "active,error")]):
            if not await matches(uow, topic.resource_type, focus["id"], _filters(sub)):
                continue
            if not readable_by_owner(sub, focus):
                continue
            await record_event(uow, sub, {"topic": topic.url, "timestamp": now, "focus": focus_ref,
                                          "context": context}, "event-notification")

    async def on_task(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        new, old = _body(stored), _body(previous)
        if new is None or not is_review_task(new):
            return
        before, after = (task_state(old) if old else (None, None)), task_state(new)
        if before == after:
            return
        patient = relative_reference_of(new.get("for"))
        encounter_ref = relative_reference_of(new.get("focus"))
        if after == ("requested", "submitted"):
            await self.fire(uow, VISIT_SUBMITTED, new, [r for r in (encounter_ref, patient) if r])
        step = next((s for s in STEPS.values() if s.task_to == after and (not s.task_from or before in s.task_from)), None)
        if encounter_ref and step is not None and step.encounter_to is not None:
            found = await uow.read("Encounter", encounter_ref.split("/")[1])
            encounter = _body(found)
            if encounter is None:
                return
            if step.name == "complete" and encounter.get("status") == "finished":
                await self.fire(uow, CONSULTATION_COMPLETED, encounter, [patient] if patient else [])
            if self.classic is not None:  # the Encounter the visit's hook just wrote, unhooked
                await self.classic.evaluate(uow, found)

    async def on_encounter(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        new, old = _body(stored), _body(previous)
        if new is None or new.get("status") != "finished" or (old is not None and old.get("status") == "finished"):
            return
        patient = relative_reference_of(new.get("subject"))
        await self.fire(uow, CONSULTATION_COMPLETED, new, [patient] if patient else [])

    async def on_medication_request(self, uow: UnitOfWork, previous: StoredVersion | None,
                                    stored: StoredVersion) -> None:
        new, old = _body(stored), _body(previous)
        if new is None or (old is not None and old.get("status") == new.get("status")):
            return
        patient = relative_reference_of(new.get("subject"))
        await self.fire(uow, PRESCRIPTION_STATUS_CHANGED, new, [patient] if patient else [])
