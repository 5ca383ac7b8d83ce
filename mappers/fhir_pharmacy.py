"""A prescription for a FHIR-native pharmacy: the MedicationRequest and what it refers to, as one
FHIR R4 transaction Bundle the pharmacy's server can process on its own (pure: no storage, no HTTP).

Which pharmacies are FHIR-native
--------------------------------
A pharmacy Organization (the MedicationRequest's `dispenseRequest.performer`) whose `endpoint`
names an Endpoint with `status` active and `connectionType`
`http://terminology.hl7.org/CodeSystem/endpoint-connection-type|hl7-fhir-rest`
(`is_fhir_rest_endpoint`); the Endpoint's `address` is the pharmacy's FHIR base URL, and must be
https (plain http only to a loopback host: tests, a local relay), without user info, query or
fragment (`address_problems`). Every other pharmacy gets NCPDP SCRIPT (mappers/ncpdp).

The Bundle (`build_transaction(ctx)`)
-------------------------------------
`ctx` is the PrescriptionContext of mappers/ncpdp/resources.py (resolve_context), the same the
SCRIPT mappers take. Entries, the MedicationRequest first (so its answer is entry 0):

- the MedicationRequest: `PUT MedicationRequest?identifier=<system>|<value>`, a conditional update
  keyed by our prescription identifier (`prescription_identifier`: the official one, else the first
  with a system and a value). A resend, a retry after a timeout, or a cancel update the pharmacy's
  one copy and never create a second prescription; a cancel is the same PUT with the new status.
- Patient, Practitioner, PractitionerRole (when the requester is one), the pharmacy Organization
  and a referenced Medication that have a business identifier: `POST` with
  `ifNoneExist: identifier=<system>|<value>` (a conditional create: the pharmacy's own record of
  that patient, prescriber or pharmacy is used when it has one, and none is created twice).
  The identifier (`match_identifier`) is a business identifier only: preferred well-known systems
  first (NPI, NCPDP ID), then official, usual, unspecified and secondary ones, never an old one or
  one whose period ended, never one without a system, never an SSN or DEA number, and never this
  server's resource id (which means nothing at the pharmacy: ids are removed from every copy).
- the same resources WITHOUT a business identifier are sent `contained` in the MedicationRequest
  (in the PractitionerRole when they are its practitioner and it is an entry): no key could tell a
  resend from a new patient, and the contained copy travels with the conditional update, so it is
  idempotent too [choice: rather than PUT to an id derived from ours, which needs update-as-create
  at the pharmacy and leaks our ids]. Conditions named in reasonReference (the diagnosis a NewRx
  carries) are always contained: they are this prescription's context, not records for the pharmacy.
  Resources the MedicationRequest already contains stay contained.

References between the resources sent are rewritten to the entries' `urn:uuid:` fullUrls (or to
`#id` for contained ones); the pharmacy's server resolves them. Any other relative reference (the
Encounter, an Organization of the Patient ...) would dangle at the pharmacy: it keeps only its
`identifier` and `display` and gets `type` (the resource type), so the element stays valid without
naming a resource the pharmacy cannot read. Absolute references are left alone. `Organization.endpoint`
and `PractitionerRole.endpoint` (our routing data) are dropped, and contained resources no longer
referenced with them. Copies lose `meta.versionId` and `meta.lastUpdated` (versions at the pharmacy
are its own); the rest of `meta` (profiles, security labels, tags) is kept. DEA numbers and SSNs are
removed from every copy (SCRIPT sends a DEA number only for a controlled substance, refused here).

The fullUrls are name-based UUIDs (uuid5) of the prescription identifier and the resource, so the
same prescription gives the same Bundle (tests compare it; nothing relies on it at the pharmacy).

Refusals
--------
What cannot be sent is refused with one UnprocessableEntity (422) naming every problem by its
FHIRPath (as the SCRIPT mappers do): no prescription identifier (the conditional update needs it),
a patient, prescriber, pharmacy or Medication that cannot be resolved, no medication at all, a
controlled substance (EPCS: a FHIR transaction is no more a signed prescription than an unsigned
NewRx), and, when the Endpoint is given, an address that is missing or not acceptable.
Diagnostics describe the rule, never the data.

Authentication to the pharmacy's server is not part of this: a SMART Backend Services client
(client_credentials with a signed JWT assertion, system/*.write scopes) would be the way.
"""

from __future__ import annotations

import copy
import ipaddress
import uuid
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlsplit

from fhir_server.errors import OutcomeIssue, UnprocessableEntity
from mappers.ncpdp import codes
from mappers.ncpdp.resources import PrescriptionContext
from profiles.canonical import CANONICAL_BASE

ENDPOINT_CONNECTION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
FHIR_REST = "hl7-fhir-rest"
FHIR_DELIVERY_ID_SYSTEM = f"{CANONICAL_BASE}/NamingSystem/fhir-delivery-id"
SSN = "http://hl7.org/fhir/sid/us-ssn"
NEVER_SENT_IDENTIFIER_SYSTEMS = frozenset({SSN, *codes.DEA_NUMBER})
# Match keys by preference: identifiers everyone shares before any other
PREFERRED_MATCH_SYSTEMS = (codes.NPI, *sorted(codes.NCPDP_PROVIDER_ID))
_USE_RANK = {"official": 0, "usual": 1, None: 2, "secondary": 3}
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"{CANONICAL_BASE}/fhir-pharmacy-transaction")
_LOOPBACK_NAMES = {"localhost"}
UNREADABLE_SCHEDULE = "unreadable"  # controlled_schedule: a DEA schedule extension that holds no schedule
_DROPPED_ELEMENTS = {"Organization": ("endpoint",), "PractitionerRole": ("endpoint",)}


# ---- which pharmacies are FHIR-native -----------------------------------------------------------

def is_fhir_rest_endpoint(endpoint: object) -> bool:
    """An active Endpoint whose connectionType is hl7-fhir-rest."""
    if not isinstance(endpoint, dict) or endpoint.get("resourceType") != "Endpoint":
        return False
    connection = endpoint.get("connectionType")
    return (endpoint.get("status") == "active" and isinstance(connection, dict)
            and connection.get("system") == ENDPOINT_CONNECTION_TYPE_SYSTEM and connection.get("code") == FHIR_REST)


def address_problems(address: object) -> list[str]:
    """Why `address` cannot be a pharmacy's FHIR base URL (empty: it can)."""
    if not isinstance(address, str) or not address.strip():
        return ["the pharmacy's FHIR Endpoint has no address"]
    try:
        parts = urlsplit(address.strip())
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return ["the pharmacy's FHIR Endpoint address is not a URL"]
    problems = []
    if parts.scheme not in ("https", "http") or not host:
        problems.append("the pharmacy's FHIR Endpoint address must be an absolute https URL")
    elif parts.scheme == "http" and not _is_loopback(host):
        problems.append("the pharmacy's FHIR Endpoint address must be https (http only to a loopback host): "
                        "a prescription is never sent unencrypted")
    if parts.username is not None or parts.password is not None:
        problems.append("the pharmacy's FHIR Endpoint address must not hold credentials")
    if parts.query or parts.fragment:
        problems.append("the pharmacy's FHIR Endpoint address is a FHIR base URL: no query or fragment")
    return problems


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(address: str) -> str:
    """The Endpoint's address as the URL a transaction is POSTed to (no trailing slash)."""
    return address.strip().rstrip("/")


# ---- identifiers ----------------------------------------------------------------------------------

def _usable(identifier: object) -> bool:
    if not isinstance(identifier, dict):
        return False
    system, value = identifier.get("system"), identifier.get("value")
    return (isinstance(system, str) and bool(system.strip()) and isinstance(value, str) and bool(value.strip())
            and identifier.get("use") in _USE_RANK and not (identifier.get("period") or {}).get("end")
            and system not in NEVER_SENT_IDENTIFIER_SYSTEMS)


def prescription_identifier(medication_request: dict) -> dict | None:
    """The identifier the pharmacy's copy is keyed by: the official one, else the first usable."""
    usable = [i for i in medication_request.get("identifier") or [] if _usable(i)]
    usable.sort(key=lambda i: i.get("use") != "official")  # stable: the first official, else the first
    return usable[0] if usable else None


def match_identifier(resource: dict) -> dict | None:
    """The business identifier a conditional create matches on, None when there is none."""
    usable = [i for i in resource.get("identifier") or [] if _usable(i)]

    def rank(item: tuple[int, dict]) -> tuple[int, int, int]:
        index, identifier = item
        system = identifier["system"]
        preferred = PREFERRED_MATCH_SYSTEMS.index(system) if system in PREFERRED_MATCH_SYSTEMS else len(
            PREFERRED_MATCH_SYSTEMS)
        return preferred, _USE_RANK[identifier.get("use")], index

    ranked = sorted(enumerate(usable), key=rank)
    return ranked[0][1] if ranked else None


def _escape(value: str) -> str:
    """A search value as FHIR escapes it (search.html#escaping), then percent-encoded."""
    escaped = value.strip().replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
    return quote(escaped, safe="")


def identifier_criteria(identifier: dict) -> str:
    """`identifier=<system>|<value>`, escaped for a URL."""
    return f"identifier={_escape(identifier['system'])}|{_escape(identifier['value'])}"


# ---- refusals -------------------------------------------------------------------------------------

class _Problems:
    def __init__(self) -> None:
        self.issues: list[OutcomeIssue] = []

    def add(self, expression: str, diagnostics: str) -> None:
        issue = OutcomeIssue("error", "business-rule", diagnostics, expression)
        if issue not in self.issues:
            self.issues.append(issue)

    def raise_if_any(self) -> None:
        if self.issues:
            count = len(self.issues)
            raise UnprocessableEntity(
                f"the prescription cannot be delivered to the pharmacy's FHIR server: {count} "
                f"problem{'s' if count > 1 else ''}", issues=list(self.issues))


def controlled_schedule(ctx: PrescriptionContext) -> str | None:
    """The NCI DEASchedule code as the NewRx mapper finds it (extension on the MedicationRequest,
    then the Medication, else the RxNorm table); None when not known to be controlled."""
    for resource in (ctx.medication_request, ctx.medication):
        for extension in (resource or {}).get("extension") or []:
            if isinstance(extension, dict) and extension.get("url") == codes.DEA_SCHEDULE_EXTENSION:
                value = next((extension[k] for k in ("valueCoding", "valueCode", "valueString") if k in extension),
                             None)
                return codes.dea_schedule_code(value) or UNREADABLE_SCHEDULE
    concept = ctx.medication_request.get("medicationCodeableConcept") or (ctx.medication or {}).get("code") or {}
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == codes.RXNORM:
            schedule = codes.DEA_SCHEDULE_BY_RXCUI.get(str(coding.get("code") or ""))
            if schedule:
                return schedule
    return None


def _refuse(ctx: PrescriptionContext, endpoint: dict | None) -> None:
    problems = _Problems()
    mr = ctx.medication_request
    if prescription_identifier(mr) is None:
        problems.add("MedicationRequest.identifier",
                     "a prescription for a FHIR pharmacy needs an identifier with a system and a value: the "
                     "pharmacy's copy is updated by it, so a resend never makes a second prescription")
    if ctx.patient is None:
        problems.add("MedicationRequest.subject", "the patient must be a Patient resource this server holds "
                     "(or one contained in the MedicationRequest)")
    if ctx.practitioner is None:
        problems.add("MedicationRequest.requester", "the prescriber must be a Practitioner (or a PractitionerRole "
                     "with its practitioner) this server holds")
    if ctx.pharmacy is None or not ctx.pharmacy.get("id"):
        problems.add("MedicationRequest.dispenseRequest.performer",
                     "the pharmacy must be an Organization resource this server holds")
    if "medicationReference" in mr:
        if ctx.medication is None:
            problems.add("MedicationRequest.medicationReference", "the Medication must be a resource this server "
                         "holds or one contained in the MedicationRequest")
    elif not isinstance(mr.get("medicationCodeableConcept"), dict):
        problems.add("MedicationRequest.medication[x]", "the prescription names no medication")
    schedule = controlled_schedule(ctx)
    if schedule == UNREADABLE_SCHEDULE:
        problems.add("MedicationRequest.extension", "the DEA schedule extension must hold a schedule I-V "
                     "(or the NCI DEASchedule code)")
    elif schedule is not None and schedule != codes.DEA_SCHEDULE_UNSPECIFIED:
        problems.add("MedicationRequest.medication[x]",
                     "Controlled substances need an EPCS-signed prescription, which this server cannot send "
                     "yet: prescribe it outside this system")
    if endpoint is not None:
        for problem in address_problems(endpoint.get("address")):
            problems.add("Endpoint.address", problem)
    problems.raise_if_any()


# ---- the Bundle -----------------------------------------------------------------------------------

def _local_key(reference: object) -> str | None:
    """"Type/id" of a literal reference to a resource (relative, absolute or versioned); None for
    contained (#), urn: and conditional references."""
    if not isinstance(reference, str) or not reference.strip() or reference.startswith(("#", "urn:")):
        return None
    if "?" in reference:
        return None
    parts = reference.strip().split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2 or not parts[-2] or not parts[-1] or not parts[-2][:1].isupper():
        return None
    return f"{parts[-2]}/{parts[-1]}"


def _is_relative(reference: str) -> bool:
    return "://" not in reference


def _strip(resource: dict) -> dict:
    """A copy to send: no id, no version metadata, nothing never sent."""
    copied = copy.deepcopy(resource)
    copied.pop("id", None)
    _strip_meta(copied)
    for element in _DROPPED_ELEMENTS.get(copied.get("resourceType"), ()):
        copied.pop(element, None)
    _drop_identifiers(copied)
    for contained in copied.get("contained") or []:
        if isinstance(contained, dict):
            _strip_meta(contained)
            _drop_identifiers(contained)
    _prune_contained(copied)
    return copied


def _strip_meta(resource: dict) -> None:
    meta = resource.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        if not meta:
            resource.pop("meta")


def _drop_identifiers(resource: dict) -> None:
    identifiers = resource.get("identifier")
    if isinstance(identifiers, list):
        kept = [i for i in identifiers if not (isinstance(i, dict) and i.get("system") in NEVER_SENT_IDENTIFIER_SYSTEMS)]
        if kept:
            resource["identifier"] = kept
        else:
            resource.pop("identifier")


def _walk_references(value: Any, visit: Callable[[dict], None]) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            visit(value)
        for item in value.values():
            _walk_references(item, visit)
    elif isinstance(value, list):
        for item in value:
            _walk_references(item, visit)


def _contained_ids(resource: dict) -> set[str]:
    return {c["id"] for c in resource.get("contained") or [] if isinstance(c, dict) and isinstance(c.get("id"), str)}


def _prune_contained(resource: dict) -> None:
    """Drop contained resources nothing refers to any more (dom-3), e.g. an Endpoint of a dropped
    Organization.endpoint."""
    contained = resource.get("contained")
    if not isinstance(contained, list):
        return
    outside = {k: v for k, v in resource.items() if k != "contained"}
    wanted: set[str] = set()
    _walk_references(outside, lambda ref: wanted.add(ref["reference"][1:]) if ref["reference"].startswith("#") else None)
    kept: list = []
    while True:
        newly = [c for c in contained if isinstance(c, dict) and c.get("id") in wanted and c not in kept]
        if not newly:
            break
        kept.extend(newly)
        for c in newly:
            _walk_references(c, lambda ref: wanted.add(ref["reference"][1:]) if ref["reference"].startswith("#") else None)
    if kept:
        resource["contained"] = [c for c in contained if c in kept]
    else:
        resource.pop("contained")


class _Container:
    """A resource being sent (the MedicationRequest or an entry) and what `#id` names in it."""

    def __init__(self, resource: dict):
        self.resource = resource
        self.local: dict[str, str] = {}  # "Type/id" -> "#id", for resources contained here
        self.taken = _contained_ids(resource)

    def contain(self, resource: dict, key: str, hint: str) -> str:
        """Put a copy of a stored resource into this container; its `#id`. The copy's own contained
        resources move up here (contained resources cannot nest), under fresh ids."""
        copied = _strip(resource)
        nested = copied.pop("contained", None) or []
        renamed: dict[str, str] = {}
        for inner in nested:
            if isinstance(inner, dict):
                new_id = self._fresh(f"{hint}-{inner.get('id') or 'contained'}")
                renamed[f"#{inner.get('id')}"] = f"#{new_id}"
                inner["id"] = new_id
        for item in [copied, *nested]:
            _walk_references(item, lambda ref: ref.__setitem__("reference", renamed[ref["reference"]])
                             if ref["reference"] in renamed else None)
        own_id = self._fresh(hint)
        copied = {"resourceType": copied["resourceType"], "id": own_id, **copied}
        self.resource.setdefault("contained", []).extend([*(n for n in nested if isinstance(n, dict)), copied])
        self.local[key] = f"#{own_id}"
        return f"#{own_id}"

    def _fresh(self, hint: str) -> str:
        base = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in hint)[:56] or "contained"
        candidate, n = base, 1
        while candidate in self.taken:
            n += 1
            candidate = f"{base}-{n}"
        self.taken.add(candidate)
        return candidate


def _is_in(container: dict | None, resource: dict | None) -> bool:
    return container is not None and resource is not None and any(
        r is resource for r in container.get("contained") or [])


def build_transaction(ctx: PrescriptionContext, *, endpoint: dict | None = None) -> dict:
    """The transaction Bundle for the pharmacy (see the module docstring); 422 when it cannot be
    sent. `endpoint` (the pharmacy's Endpoint), when given, has its address checked too."""
    _refuse(ctx, endpoint)
    mr = ctx.medication_request
    key = prescription_identifier(mr)
    assert key is not None
    seed = f"{key['system']}|{key['value']}"

    def full_url(name: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{seed}|{name}')}"

    mr_copy = _strip(mr)
    request = _Container(mr_copy)
    global_refs: dict[str, str] = {}  # "Type/id" -> "urn:uuid:..." of the entries
    entries: list[dict] = [{"fullUrl": full_url("MedicationRequest"), "resource": mr_copy, "request": {
        "method": "PUT", "url": f"MedicationRequest?{identifier_criteria(key)}"}}]
    containers: list[_Container] = [request]
    homes: dict[str, _Container] = {}  # "Type/id" -> the resource it was sent as (entry) or in (contained)

    def place(resource: dict | None, into: _Container, *, always_contained: bool = False) -> _Container | None:
        """Send a stored resource as an entry (it has a business identifier) or contained in
        `into`. Returns the container that holds it now: its own entry's, or the one it is
        contained in (None when there is nothing to send)."""
        if resource is None:
            return None
        if _is_in(mr, resource):
            return request  # contained in the MedicationRequest already: it stays there
        ref = f"{resource['resourceType']}/{resource['id']}"
        if ref in homes:
            return homes[ref]
        identifier = None if always_contained else match_identifier(resource)
        if identifier is None:
            into.contain(resource, ref, resource["resourceType"].lower())
            homes[ref] = into
            return into
        copied = _strip(resource)
        global_refs[ref] = full_url(ref)
        entries.append({"fullUrl": global_refs[ref], "resource": copied, "request": {
            "method": "POST", "url": resource["resourceType"], "ifNoneExist": identifier_criteria(identifier)}})
        homes[ref] = _Container(copied)
        containers.append(homes[ref])
        return homes[ref]

    place(ctx.patient, request)
    role = ctx.practitioner_role
    if role is not None:
        role_home = place(role, request)
        if not _is_in(role, ctx.practitioner):  # a practitioner the role contains travels with it
            # a practitioner without identifier goes where the role's reference can reach it
            place(ctx.practitioner, role_home if role_home is not None else request)
    else:
        place(ctx.practitioner, request)
    place(ctx.pharmacy, request)
    place(ctx.medication, request)
    for condition in ctx.conditions:
        place(condition, request, always_contained=True)

    for container in containers:
        _rewrite_references(container, global_refs)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _rewrite_references(container: _Container, global_refs: dict[str, str]) -> None:
    """Every reference in the container (and what it contains) to a resource sent: to its fullUrl
    or `#id`; any other relative one: type (+ identifier, display) only."""

    def visit(reference: dict) -> None:
        target = reference["reference"]
        key = _local_key(target)
        if key is None:
            return
        if key in container.local:
            reference["reference"] = container.local[key]
        elif key in global_refs:
            reference["reference"] = global_refs[key]
        elif _is_relative(target):
            del reference["reference"]
            reference.setdefault("type", key.split("/")[0])

    _walk_references(container.resource, visit)


def bundle_resources(bundle: dict) -> Iterable[dict]:
    """The resources of a Bundle's entries (tests, logs of counts)."""
    return (e["resource"] for e in bundle.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict))


__all__ = [
    "ENDPOINT_CONNECTION_TYPE_SYSTEM", "FHIR_DELIVERY_ID_SYSTEM", "FHIR_REST", "address_problems", "base_url",
    "build_transaction", "bundle_resources", "controlled_schedule", "identifier_criteria", "is_fhir_rest_endpoint",
    "match_identifier", "prescription_identifier",
]
