"""The kick-off request (Bulk Data 2.0 export.md "Bulk Data Kick-off Request"): its headers and
parameters, checked, into an ExportRequest.

GET takes the parameters in the query string; POST takes a FHIR Parameters body (and the
query string too). Comma lists and repeats mean the same. Parameters this server does not
support (`_elements`, `includeAssociatedData`, `_until`, anything unknown) are refused with 400
unless the client sent `Prefer: handling=lenient`; they are then ignored and named in the
manifest's error file as warnings. `_until` is a Bulk Data 3.0 parameter, not 2.0.0's (and the
manifest's transactionTime already bounds every export); `includeAssociatedData` is refused whatever
its value: without it every Provenance in scope is exported like any other type, as 2.0.0 asks. `_type` is cut down to what the token may search (`system/` scopes only).
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qsl

from smart_auth.access import SEARCH, allowed
from smart_auth.principal import Principal

from ...errors import Forbidden, InvalidRequest, NotFound
from ...search.parse import parse_search
from ...search.registry import patient_compartment_params
from ...search.registry import resource_types as indexed_types
from ...storage.serialization import format_instant
from ...validation.resource_types import resource_types as all_resource_types
from .jobs import ExportRequest

OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
SUPPORTED = {"_outputFormat", "_since", "_type", "_typeFilter", "patient"}
# search parameters a _typeFilter query may not use (export.md: _include and _sort SHALL NOT)
WHY_UNSUPPORTED = {
    "_until": "_until is not a Bulk Data 2.0.0 parameter (it came with 3.0.0)",
    "includeAssociatedData": "includeAssociatedData (LatestProvenanceResources, RelevantProvenanceResources) is not "
                             "supported; Provenance is exported as a type of its own (_type=Provenance)",
    "_elements": "_elements is not supported (resources are exported whole)",
}
_TYPE_FILTER_FORBIDDEN = {"_include", "_revinclude", "_sort", "_count", "_summary", "_elements", "_total",
                          "_contained", "_containedType"}


def prefer_tokens(header: str | None) -> set[str]:
    """`Prefer: respond-async, handling=lenient` -> {"respond-async", "handling=lenient"}."""
    return {t.strip().lower().replace(" ", "") for part in (header or "").split(",") for t in part.split(";")
            if t.strip()}


def compartment_types() -> list[str]:
    return sorted(t for t in indexed_types() if t != "Patient" and patient_compartment_params(t))


def check_headers(headers) -> bool:
    """400 without `Prefer: respond-async`; 400 when Accept names something other than FHIR JSON.
    Returns whether handling is lenient."""
    prefer = prefer_tokens(headers.get("prefer"))
    if "respond-async" not in prefer:
        raise InvalidRequest("Bulk export is asynchronous: send 'Prefer: respond-async'")
    accept = (headers.get("accept") or "").lower()
    if accept and not any(a in accept for a in ("application/fhir+json", "application/json", "*/*")):
        raise InvalidRequest("Bulk export kick-off answers application/fhir+json (Accept)")
    return "handling=lenient" in prefer


def parameters_from_body(body: dict | None) -> list[tuple[str, str]]:
    """A FHIR Parameters resource -> (name, text) pairs; `patient` references as `Patient/id`."""
    if body is None:
        return []
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("A POST kick-off takes a FHIR Parameters resource")
    pairs: list[tuple[str, str]] = []
    for p in body.get("parameter") or []:
        name = p.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("Every parameter needs a name")
        if "valueReference" in p:
            pairs.append((name, str((p["valueReference"] or {}).get("reference", ""))))
            continue
        values = [v for k, v in p.items() if k.startswith("value")]
        if len(values) != 1 or not isinstance(values[0], (str, int, float, bool)):
            raise InvalidRequest(f"Parameter '{name}' needs one primitive value", expression=name)
        pairs.append((name, str(values[0])))
    return pairs


def _split(values: list[str]) -> list[str]:
    return [v.strip() for raw in values for v in raw.split(",") if v.strip()]


def _instant(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest("_since must be a FHIR instant (e.g. 2026-01-01T00:00:00Z)", expression="_since") from None
    if moment.tzinfo is None:
        raise InvalidRequest("_since must carry a time zone", expression="_since")
    return format_instant(moment.astimezone(timezone.utc))


def parse_type_filters(values: list[str], strict_types: set[str] | None = None) -> dict[str, list[str]]:
    """`Type?query` strings, grouped by type (several for one type are ORed). Each is parsed now
    (strictly: an unknown parameter is a 400), so the job cannot fail on it later."""
    out: dict[str, list[str]] = {}
    for raw in values:  # not comma-split: a query may hold commas (OR values)
        resource_type, sep, query = raw.partition("?")
        if not sep or not resource_type or resource_type not in all_resource_types():
            raise InvalidRequest(f"_typeFilter '{raw}' is not Type?search-query", expression="_typeFilter")
        params = parse_qsl(query, keep_blank_values=True)
        bad = [k for k, _ in params if k.split(":")[0] in _TYPE_FILTER_FORBIDDEN]
        if bad:
            raise InvalidRequest(f"_typeFilter may not use {', '.join(bad)}", expression="_typeFilter")
        parse_search([resource_type], params, strict=True)  # raises InvalidRequest when invalid
        out.setdefault(resource_type, []).append(query)
    return out


def parse_kickoff(
    level: str, params: list[tuple[str, str]], principal: Principal, *, lenient: bool, group_members: list[str] | None,
    method: str,
) -> ExportRequest:
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(name, []).append(value)
    warnings: list[str] = []
    for name in grouped:
        if name not in SUPPORTED:
            why = WHY_UNSUPPORTED.get(name, f"Parameter '{name}' is not supported by this server's export")
            if not lenient:
                raise InvalidRequest(f"{why} (send 'Prefer: handling=lenient' to have it ignored)", expression=name)
            warnings.append(f"{why}; ignored")

    formats = grouped.get("_outputFormat", [])
    if formats and formats[-1] not in OUTPUT_FORMATS:
        raise InvalidRequest(f"_outputFormat must be one of {', '.join(OUTPUT_FORMATS)}", expression="_outputFormat")
    since = _instant(grouped["_since"][-1]) if grouped.get("_since") else None

    # the types: asked for, or all the level covers; then what the token may search
    level_types = sorted(all_resource_types()) if level == "system" else ["Patient", *compartment_types()]
    asked = _split(grouped.get("_type", []))
    if asked:
        unknown = [t for t in asked if t not in all_resource_types()]
        outside = [t for t in asked if t in all_resource_types() and t not in level_types]
        if unknown or outside:
            text = (f"unknown resource types: {', '.join(unknown)}" if unknown else
                    f"not in the Patient compartment: {', '.join(outside)}")
            if not lenient:
                raise InvalidRequest(f"_type: {text}", expression="_type")
            warnings.append(f"_type: {text}; ignored")
        types = [t for t in dict.fromkeys(asked) if t in level_types]
    else:
        # the audit trail is exported only when asked for by name (`_type=AuditEvent`, with a token
        # that may read it): an EHR's export of its patients' data is not a copy of who looked at it
        types = [t for t in level_types if t != "AuditEvent"]
    if not principal.unrestricted:
        permitted = [t for t in types if _system_may_search(principal, t)]
        cut = [t for t in types if t not in permitted]
        if asked and cut:
            warnings.append(f"_type: the access token may not read {', '.join(cut)}; left out")
        types = permitted
        if not types:
            raise Forbidden("Bulk export needs system/ scopes (backend services) that cover the types exported")
    if not types and asked:
        raise InvalidRequest("_type leaves no resource type to export", expression="_type")

    type_filters = parse_type_filters(grouped.get("_typeFilter", []))
    for t in list(type_filters):
        if t not in types:
            warnings.append(f"_typeFilter for {t}, a type not exported, was ignored")
            del type_filters[t]

    patients: list[str] | None = group_members
    refs = _split(grouped.get("patient", []))
    if refs:
        if level == "system":
            raise InvalidRequest("'patient' is not allowed in a system-level export", expression="patient")
        if method != "POST":
            raise InvalidRequest("'patient' is a POST (Parameters) parameter", expression="patient")
        ids = []
        for ref in refs:
            kind, _, pid = ref.rpartition("/")
            if kind.rsplit("/", 1)[-1] != "Patient" or not pid:
                raise InvalidRequest(f"patient '{ref}' is not a Patient reference", expression="patient")
            ids.append(pid)
        if group_members is not None:
            outside = [i for i in ids if i not in set(group_members)]
            if outside and not lenient:
                raise InvalidRequest("patient: not members of the Group: " + ", ".join(outside), expression="patient")
            ids = [i for i in ids if i in set(group_members)]
        patients = list(dict.fromkeys(ids))
    return ExportRequest(level=level, types=types, type_filters=type_filters, since=since, patients=patients,
                         client_id=principal.client_id,
                         scope=None if principal.unrestricted else principal.scopes.text,
                         output_format="application/fhir+ndjson", warnings=warnings)


def _system_may_search(principal: Principal, resource_type: str) -> bool:
    """Only system/ scopes (backend services) export; a v2 restriction is applied by the runner."""
    if not any(s.context == "system" for s in principal.granting(resource_type, SEARCH)):
        return False
    rule = allowed(principal, resource_type, SEARCH)
    return rule is not None and not rule.security_context


def group_members(group: dict) -> list[str]:
    """The Patient ids of a Group's members (member[].entity references), inactive ones left out."""
    ids: list[str] = []
    for member in group.get("member") or []:
        if member.get("inactive") is True:
            continue
        ref = ((member.get("entity") or {}).get("reference") or "")
        kind, _, pid = ref.rstrip("/").rpartition("/")
        if kind.rsplit("/", 1)[-1] == "Patient" and pid:
            ids.append(pid.split("/_history", 1)[0])
    return list(dict.fromkeys(ids))


def not_found_group(group_id: str) -> NotFound:
    return NotFound(f"Group/{group_id} is not known")
