"""`Patient/{id}/$everything` and `Encounter/{id}/$everything` (R4 operation-patient-everything,
operation-encounter-everything): what the server holds about a patient, or about one consultation,
as a searchset Bundle, authorized exactly like searches and reads.

Patient: the Patient, then every resource in its compartment (R4 compartmentdefinition-patient),
type by type in a fixed order, `_count` at a time with a `next` link; `_type` limits the types,
`_since` the last update, `start`/`end` the care date (the type's `date` parameter, where it has
one; resources without one are kept, as the spec allows). Each page also carries (search mode
include) what its resources reference outside the compartment: practitioners, organizations,
locations, medications, the Questionnaires they answer, the Binaries behind Media.

Encounter: the whole consultation: the Encounter, its Patient and Location, everything with this
encounter (intake, Media, Communications, Condition, CarePlan, MedicationRequests, Composition,
DocumentReference), its review Task and fee (ChargeItem), the e-prescription delivery Tasks of its
MedicationRequests, and what those reference (Questionnaire, Binaries, clinician, pharmacy).

Authorization: every search runs through `interactions.search.search` with the caller's
Principal (narrowed inside the query: a patient token only ever reaches its own compartment), and
every referenced resource is added only when `guard.sees` says the caller may read it, so no
`_include`-style leak is possible. Resources are the stored bytes, never re-serialised.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace

import orjson

from smart_auth.access import SEARCH, allowed
from smart_auth.principal import Principal

from ..errors import InvalidRequest
from ..interactions import crud
from ..interactions.guard import sees
from ..interactions.search import compartment_query, search
from ..search.parse import parse_search
from ..search.registry import patient_compartment_params, search_params
from ..search.registry import resource_types as indexed_types
from ..storage import ResourceReader, StoredVersion

__all__ = ["Everything", "patient_everything", "encounter_everything", "MAX_COUNT"]

MAX_COUNT = 1000
DEFAULT_COUNT = 200
_QUESTIONNAIRE = "Questionnaire"


@dataclass
class Everything:
    matches: list[StoredVersion]
    included: list[StoredVersion]
    next_page: str | None  # the opaque `_page` token of the next page, None on the last


def _compartment_types() -> list[str]:
    return sorted(t for t in indexed_types() if t != "Patient" and patient_compartment_params(t))


def _token(type_index: int, cursor: list | None) -> str:
    raw = json.dumps([type_index, cursor], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _untoken(text: str) -> tuple[int, list | None]:
    try:
        index, cursor = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(index, int) or index < 0 or not (cursor is None or isinstance(cursor, list)):
            raise ValueError
        return index, cursor
    except (ValueError, TypeError):
        raise InvalidRequest("_page is not a page token this server issued", expression="_page") from None


def _count(params: dict[str, str]) -> int:
    text = params.get("_count", str(DEFAULT_COUNT))
    if not text.isdigit() or int(text) < 1:
        raise InvalidRequest("_count must be a positive integer", expression="_count")
    return min(int(text), MAX_COUNT)


def _references(node: object, out: set[str]) -> None:
    """Relative literal references and (Media) Binary urls found anywhere in a resource."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref.count("/") == 1 and not ref.startswith("#") and ":" not in ref:
            out.add(ref)
        url = node.get("url")
        if isinstance(url, str) and url.startswith("Binary/") and url.count("/") == 1:
            out.add(url)
        for value in node.values():
            if isinstance(value, (dict, list)):
                _references(value, out)
    elif isinstance(node, list):
        for value in node:
            _references(value, out)


async def _referenced(reader: ResourceReader, principal: Principal, versions: list[StoredVersion],
                      seen: set[str], *, outside_compartment_only: bool) -> list[StoredVersion]:
    """What `versions` reference that is not already in the Bundle and the caller may read; the
    Questionnaires that QuestionnaireResponses answer (by canonical url)."""
    refs: set[str] = set()
    canonicals: set[str] = set()
    for version in versions:
        body = orjson.loads(version.body)
        _references(body, refs)
        if body.get("resourceType") == "QuestionnaireResponse" and isinstance(body.get("questionnaire"), str):
            canonicals.add(body["questionnaire"])
    out: list[StoredVersion] = []
    for ref in sorted(refs - seen):
        resource_type, id = ref.split("/")
        if resource_type not in indexed_types():
            continue
        if outside_compartment_only and patient_compartment_params(resource_type) and resource_type != "Binary":
            continue  # compartment members come as matches of their own type
        found = await reader.read(resource_type, id)
        if found is not None and found.body is not None and await sees(reader, principal, found):
            seen.add(ref)
            out.append(found)
    for canonical in sorted(canonicals):
        url, _, version = canonical.partition("|")
        params = [("url", url), ("_count", "1")] + ([("version", version)] if version else [])
        if allowed(principal, _QUESTIONNAIRE, SEARCH) is None:
            continue
        page = await search(reader, parse_search([_QUESTIONNAIRE], params), principal)
        for found in page.matches:
            key = f"{found.resource_type}/{found.id}"
            if key not in seen:
                seen.add(key)
                out.append(found)
    return out


def _type_params(resource_type: str, params: dict[str, str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if params.get("_since"):
        out.append(("_lastUpdated", f"ge{params['_since']}"))
    if "date" in search_params(resource_type):
        if params.get("start"):
            out.append(("date", f"ge{params['start']}"))
        if params.get("end"):
            out.append(("date", f"le{params['end']}"))
    return out


async def patient_everything(reader: ResourceReader, principal: Principal, patient_id: str,
                             params: dict[str, str]) -> Everything:
    count = _count(params)
    wanted = [t.strip() for t in params.get("_type", "").split(",") if t.strip()]
    unknown = [t for t in wanted if t not in indexed_types()]
    if unknown:
        raise InvalidRequest(f"_type names a type this server does not know: {', '.join(unknown)}", expression="_type")
    types = [t for t in _compartment_types() if (not wanted or t in wanted) and allowed(principal, t, SEARCH)]
    index, cursor = _untoken(params["_page"]) if params.get("_page") else (0, None)

    matches: list[StoredVersion] = []
    seen: set[str] = set()
    if index == 0 and cursor is None:
        patient = await crud.read(reader, "Patient", patient_id, principal)  # 404/410, or not visible: 404
        if not wanted or "Patient" in wanted:
            matches.append(patient)
        seen.add(f"Patient/{patient_id}")
    else:
        await crud.read(reader, "Patient", patient_id, principal)
    next_page: str | None = None
    while index < len(types):
        remaining = count - len(matches)
        if remaining <= 0:
            next_page = _token(index, cursor)
            break
        resource_type = types[index]
        query = compartment_query("Patient", patient_id, resource_type,
                                  [*_type_params(resource_type, params), ("_count", str(remaining))], strict=False)
        if cursor is not None:
            query = replace(query, cursor=("after", cursor))
        page = await search(reader, query, principal)
        matches.extend(page.matches)
        if page.next_cursor is not None:
            cursor = page.next_cursor[1]  # more of this type: the next round (or page) goes on from here
        else:
            index, cursor = index + 1, None
    seen.update(f"{m.resource_type}/{m.id}" for m in matches)
    included = await _referenced(reader, principal, matches, seen, outside_compartment_only=True)
    return Everything(matches, included, next_page)


# what points at a consultation's Encounter, by search parameter
_ABOUT_ENCOUNTER = (
    ("QuestionnaireResponse", "encounter"), ("Media", "encounter"), ("Communication", "encounter"),
    ("Condition", "encounter"), ("CarePlan", "encounter"), ("MedicationRequest", "encounter"),
    ("Composition", "encounter"), ("DocumentReference", "encounter"), ("Task", "focus"),
    ("ChargeItem", "context"), ("Observation", "encounter"), ("Procedure", "encounter"),
)


async def encounter_everything(reader: ResourceReader, principal: Principal, encounter_id: str) -> Everything:
    encounter = await crud.read(reader, "Encounter", encounter_id, principal)
    reference = f"Encounter/{encounter_id}"
    matches: list[StoredVersion] = [encounter]
    for resource_type, param in _ABOUT_ENCOUNTER:
        if allowed(principal, resource_type, SEARCH) is None:
            continue
        page = await search(reader, parse_search([resource_type], [(param, reference), ("_count", str(MAX_COUNT))]),
                            principal)
        matches.extend(page.matches)
    # the e-prescriptions' delivery state: their transmission Tasks (focus = the MedicationRequest)
    prescriptions = [m for m in matches if m.resource_type == "MedicationRequest"]
    if prescriptions and allowed(principal, "Task", SEARCH) is not None:
        focus = ",".join(f"MedicationRequest/{m.id}" for m in prescriptions)
        page = await search(reader, parse_search(["Task"], [("focus", focus), ("_count", str(MAX_COUNT))]), principal)
        known = {(m.resource_type, m.id) for m in matches}
        matches.extend(v for v in page.matches if (v.resource_type, v.id) not in known)
    seen = {f"{m.resource_type}/{m.id}" for m in matches}
    included = await _referenced(reader, principal, matches, seen, outside_compartment_only=False)
    return Everything(matches, included, None)
