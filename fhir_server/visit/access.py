"""Who sees which visit (issue 9), as the user policy of the one decision point
(smart_auth/access.py `set_user_policy`): narrowing filters added to what a user/ scope allows.

- A clinician (a token whose fhirUser is a Practitioner) sees a visit's review Task and its
  Encounter, and the visit's records (intake, photos' Media, diagnosis, care plan, prescriptions),
  only when the patient is in a state where the clinician holds an active licence, or when the
  clinician is the visit's reviewer (Task.owner, Encounter.participant). Other Tasks, Encounters
  and records (not of async visits) are not narrowed. So the queue search
  `GET /Task?status=requested&owner:missing=true` lists only what the clinician may claim.
- Messages (Communication) of a signed-in user: only those they send or receive, or (a patient)
  that are about them. Patient apps with patient/ scopes are already confined to their compartment.

The filters are search filters (chains through Task.focus -> Encounter.location -> Location), so
searches are narrowed inside the query and reads are checked the same way. The licensed states
come from the Practitioner resource: `prepare` (awaited by the API layer once per request) re-reads
them at most every `ttl` seconds per clinician and clears the decision cache when they change.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import orjson

from fhir_server.search.parse import parse_search
from fhir_server.search.query import AnyFilter, Filter
from smart_auth.access import set_user_policy
from smart_auth.principal import Principal

from ..storage import ResourceReader
from .licensure import licensed_states
from .lifecycle import TASK_CODE

__all__ = ["VisitAccess"]

_VR = "http://terminology.hl7.org/CodeSystem/v3-ActCode|VR"
_READS = ("r", "s")
# records of a visit that point at its Encounter (search parameter `encounter`)
_VISIT_RECORDS = frozenset({"QuestionnaireResponse", "Media", "Condition", "CarePlan", "MedicationRequest"})


def _filters(resource_type: str, params: list[tuple[str, str]]) -> Filter:
    query = parse_search([resource_type], params)
    return query.filters[0] if len(query.filters) == 1 else AnyFilter(())  # one param each


def _any(resource_type: str, *params: tuple[str, str]) -> Filter:
    return AnyFilter(tuple(_filters(resource_type, [p]) for p in params))


class VisitAccess:
    def __init__(self, reader: ResourceReader, ttl: float = 60.0):
        self._reader = reader
        self._ttl = ttl
        self._states: dict[str, tuple[frozenset[str], float]] = {}  # Practitioner/x -> (states, read at)

    def install(self) -> None:
        set_user_policy(self)

    async def prepare(self, principal: Principal) -> None:
        user = principal.fhir_user
        if principal.unrestricted or not user or not user.startswith("Practitioner/"):
            return
        kept = self._states.get(user)
        if kept is not None and time.monotonic() - kept[1] < self._ttl:
            return
        found = await self._reader.read("Practitioner", user.split("/", 1)[1])
        body = orjson.loads(found.body) if found is not None and found.body is not None else {}
        states = frozenset(licensed_states(body, datetime.now(timezone.utc)))
        self._states[user] = (states, time.monotonic())
        if kept is None or kept[0] != states:
            set_user_policy(self)  # decisions made with the old states are dropped

    def __call__(self, principal: Principal, resource_type: str, permission: str) -> Filter | None:
        user = principal.fhir_user
        if not user:
            return None
        if resource_type == "Communication":
            if user.startswith("Patient/"):
                return _any("Communication", ("sender", user), ("recipient", user), ("subject", user))
            return _any("Communication", ("sender", user), ("recipient", user))
        if not user.startswith("Practitioner/") or permission not in _READS:
            return None
        states = ",".join(sorted(self._states.get(user, (frozenset(), 0.0))[0]))
        if resource_type == "Task":
            review = f"{TASK_CODE['system']}|{TASK_CODE['code']}"
            options = [("code:not", review), ("owner", user)]
            if states:
                options.append(("focus:Encounter.location.address-state:exact", states))
            return _any("Task", *options)
        if resource_type == "Encounter":
            options = [("class:not", _VR), ("participant", user)]
            if states:
                options.append(("location.address-state:exact", states))
            return _any("Encounter", *options)
        if resource_type in _VISIT_RECORDS:
            # the visit's intake, photos, diagnosis, plan and prescriptions: as its Encounter
            options = [("encounter:missing", "true"), ("encounter:Encounter.class:not", _VR),
                       ("encounter:Encounter.participant", user)]
            if states:
                options.append(("encounter:Encounter.location.address-state:exact", states))
            return _any(resource_type, *options)
        return None
