"""The FHIR resources one prescription message is built from, resolved ahead of time.

`resolve_context(medication_request, read)` follows the MedicationRequest's references
(research/ncpdp.md section 11 step 1): subject -> Patient; requester -> Practitioner, or
PractitionerRole -> its practitioner; dispenseRequest.performer -> the pharmacy Organization;
medicationReference -> Medication; reasonReference -> Conditions. `read(reference)` is an async
callable the server supplies (reading from its store); contained resources (`#id`) are resolved
here, in the resource that contains them. Nothing here imports storage.

The mappers then work on plain FHIR JSON dicts only, so they are pure functions of the context.
A reference that cannot be resolved leaves its slot empty; the mapper names it in its refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

Read = Callable[[str], Awaitable[dict | None]]


@dataclass(frozen=True)
class PrescriptionContext:
    medication_request: dict
    patient: dict | None = None
    practitioner: dict | None = None
    practitioner_role: dict | None = None  # set when the requester is a PractitionerRole
    pharmacy: dict | None = None  # Organization
    medication: dict | None = None  # set when medication[x] is a medicationReference
    conditions: tuple[dict, ...] = ()  # the reasonReference entries that are Conditions


async def resolve_context(medication_request: dict, read: Read) -> PrescriptionContext:
    mr = medication_request

    async def resolve(reference: object, container: dict, types: tuple[str, ...]) -> dict | None:
        if not isinstance(reference, dict):
            return None
        ref = reference.get("reference")
        found: dict | None = None
        if isinstance(ref, str) and ref.startswith("#"):
            found = next((r for r in container.get("contained") or [] if isinstance(r, dict) and r.get("id") == ref[1:]),
                         None)
        elif isinstance(ref, str) and ref.strip():
            found = await read(ref.strip())
        if found is None or found.get("resourceType") not in types:
            return None
        return found

    patient = await resolve(mr.get("subject"), mr, ("Patient",))
    requester = await resolve(mr.get("requester"), mr, ("Practitioner", "PractitionerRole"))
    role = practitioner = None
    if requester is not None and requester["resourceType"] == "PractitionerRole":
        role = requester
        # A contained role's own references point into the MedicationRequest's contained list
        # (contained resources share their container's scope); a stored role's into its own.
        role_container = mr if _is_contained(mr, role) else role
        practitioner = await resolve(role.get("practitioner"), role_container, ("Practitioner",))
    elif requester is not None:
        practitioner = requester
    performer = (mr.get("dispenseRequest") or {}).get("performer")
    pharmacy = await resolve(performer, mr, ("Organization",))
    if pharmacy is None:
        pharmacy = _logical_organization(performer)
    medication = None
    if "medicationReference" in mr:
        medication = await resolve(mr.get("medicationReference"), mr, ("Medication",))
    conditions = []
    for reason in mr.get("reasonReference") or []:
        condition = await resolve(reason, mr, ("Condition",))
        if condition is not None:
            conditions.append(condition)
    return PrescriptionContext(mr, patient, practitioner, role, pharmacy, medication, tuple(conditions))


def _is_contained(container: dict, resource: dict) -> bool:
    return any(r is resource for r in container.get("contained") or [])


def _logical_organization(performer: object) -> dict | None:
    """A pharmacy given only by identifier (a logical reference, e.g. from a pharmacy directory
    that is not stored here) is as good as a stored Organization for SCRIPT: NCPDPID and name."""
    if not isinstance(performer, dict) or performer.get("reference") or not isinstance(performer.get("identifier"), dict):
        return None
    org: dict = {"resourceType": "Organization", "identifier": [performer["identifier"]]}
    if isinstance(performer.get("display"), str):
        org["name"] = performer["display"]
    return org


# --- small readers of FHIR datatypes, shared by the mappers ---------------------------------------

def identifier_value(resource: dict | None, systems: Iterable[str] | str) -> str | None:
    """The first identifier value under one of `systems`."""
    if not resource:
        return None
    wanted = {systems} if isinstance(systems, str) else set(systems)
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") in wanted:
            value = identifier.get("value")
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def identifier_with_type(resource: dict | None, type_system: str, type_codes: Iterable[str]) -> str | None:
    """The first identifier value whose type has one of `type_codes` in `type_system`."""
    if not resource:
        return None
    codes = set(type_codes)
    for identifier in resource.get("identifier") or []:
        if not isinstance(identifier, dict):
            continue
        for coding in (identifier.get("type") or {}).get("coding") or []:
            if coding.get("system") == type_system and coding.get("code") in codes:
                value = identifier.get("value")
                if isinstance(value, str) and value.strip():
                    return value.strip()
    return None


def _current(items: Iterable[dict]) -> list[dict]:
    """Drop entries marked old or with a period that has ended (HumanName, Address, ContactPoint)."""
    return [i for i in items if isinstance(i, dict) and i.get("use") != "old" and not (i.get("period") or {}).get("end")]


def pick_name(names: list | None) -> dict | None:
    """official, else usual, else the first current name (ncpdp.md 4.1)."""
    current = _current(names or [])
    for use in ("official", "usual"):
        for name in current:
            if name.get("use") == use:
                return name
    return current[0] if current else None


def pick_address(addresses: list | None, preferred_use: str) -> dict | None:
    current = [a for a in _current(addresses or []) if a.get("type") != "postal"]
    for address in current:
        if address.get("use") == preferred_use:
            return address
    return current[0] if current else None


def pick_telecom(*resources: dict | None, system: str, preferred_use: str | None = None) -> str | None:
    """The first current ContactPoint value of `system`, looking through `resources` in order,
    preferring `preferred_use` within each one and rank 1 before others."""
    for resource in resources:
        if not resource:
            continue
        points = [p for p in _current(resource.get("telecom") or []) if p.get("system") == system
                  and isinstance(p.get("value"), str) and p["value"].strip()]
        points.sort(key=lambda p: (p.get("use") != preferred_use if preferred_use else False, p.get("rank", 1_000_000)))
        if points:
            return points[0]["value"].strip()
    return None
