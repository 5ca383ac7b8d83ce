"""The resource server's access decision: from a Principal and a FHIR interaction, allow, narrow
or refuse (SMART App Launch 2.2 scopes-and-launch-context.html; research/smart.md sections 1.6,
1.14 and 6.3). Pure logic: no HTTP, no storage. The interaction layer asks `decide` for the Rule
of a (resource type, permission) pair, adds a Rule's `filter` to its searches and checks bodies
with `Rule.admits`; fhir_server/interactions/guard.py is that glue.

Permissions (SC-02): read, vread, instance history -> r; type and system search, type and system
history, compartment search -> s; create -> c; update (also update-as-create, conditional
update) and patch -> u; delete (also conditional delete) -> d.

A Rule says which resources of one type a principal may touch with one permission:

- no scope grants the permission on the type -> Forbidden (403);
- `user/` and `system/` scopes: every resource of the type, narrowed only by the scope's v2
  query restriction (user/ scopes also pass through the user policy, `set_user_policy`: the
  extension point where the visit workflow will add the clinician's licence and assignment
  rules; today it adds nothing);
- `patient/` scopes (the token must carry a `patient`, else every request is refused: CMP-01):
  * a type in the R4 patient compartment (registry.patient_compartment_params), and the few
    types listed in EXTRA_PATIENT_LINKS: only resources in the patient's compartment, i.e. with
    any of those reference parameters pointing at Patient/<patient>; a resource created or
    updated must moreover not point any of them at another patient (no writing into someone
    else's record: an Observation of A's with performer Patient/B is refused);
  * Patient: only Patient/<patient> itself (Patient.link is not followed);
  * Binary: only a Binary whose securityContext references a resource the principal may see
    (the caller resolves it: Rule.security_context);
  * the types in NOT_PATIENT_ACCESSIBLE (stored Bundles, Subscriptions, messages, ...: data
    that may concern any patient but that no search parameter ties to one): refused;
  * any other type (Practitioner, Organization, Location, Medication, Questionnaire, ValueSet,
    ...: not patient data) may be read and searched in full, and never written;
- a scope's v2 query restriction (`patient/Observation.rs?category=...`) is parsed by the
  server's own search parser; a search returns compartment AND (OR over the granting scopes'
  restrictions; a scope without one means the whole type), a single resource is admitted when it
  matches one granting scope. Token, reference, string and uri parameters (and _id) are
  supported; any other restriction makes the scope unusable (UnenforceableScope explains why).

Each granting scope contributes an alternative; a Rule's filter is their OR, and None (no
narrowing at all) when one of them is unrestricted. Rules are cached per scope set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable, Iterable, Mapping

from fhir_server.errors import FhirError, Forbidden
from profiles.canonical import CANONICAL_BASE
from fhir_server.search.entries import (
    IndexEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)
from fhir_server.search.extract import extract_index
from fhir_server.search.parse import parse_search
from fhir_server.search.query import (
    AllFilter,
    AnyFilter,
    ChainFilter,
    Filter,
    HasFilter,
    ParamFilter,
    ReferenceValue,
    SearchQuery,
    StringValue,
    TokenValue,
    TypeFilter,
    UriValue,
)
from fhir_server.search.registry import patient_compartment_params
from fhir_server.search.values.references import parse_reference

from .principal import Principal
from .scopes import ResourceScope

READ, SEARCH, CREATE, UPDATE, DELETE = "r", "s", "c", "u", "d"

PERMISSION_OF: Mapping[str, str] = {
    "read": READ, "vread": READ, "history-instance": READ,
    "search-type": SEARCH, "search-system": SEARCH, "search-compartment": SEARCH,
    "history-type": SEARCH, "history-system": SEARCH,
    "create": CREATE, "conditional-create": CREATE,
    "update": UPDATE, "conditional-update": UPDATE, "patch": UPDATE, "conditional-patch": UPDATE,
    "delete": DELETE, "conditional-delete": DELETE,
}
_VERB = {READ: "read", SEARCH: "search", CREATE: "create", UPDATE: "update", DELETE: "delete"}

# Types outside the R4 patient compartment that nonetheless name their patient in a search
# parameter: confined through it under patient/ scopes instead of being readable in full.
EXTRA_PATIENT_LINKS: Mapping[str, tuple[str, ...]] = {
    "Task": ("patient",),  # R4 4.0.1 left Task out of the compartment; Task.for names the patient
    "Device": ("patient",),  # a patient's implant or home device
    "Contract": ("patient",),
    "GuidanceResponse": ("patient",),
}
# Types that may hold any patient's data (or other clients' settings) without a search parameter
# that ties them to one patient: never accessible through patient/ scopes.
NOT_PATIENT_ACCESSIBLE: frozenset[str] = frozenset({
    "Bundle", "Subscription", "MessageHeader", "Linkage", "Parameters", "OperationOutcome",
    "EnrollmentResponse", "PaymentNotice", "PaymentReconciliation", "VerificationResult",
    "BiologicallyDerivedProduct", "ResearchStudy",
})
BINARY = "Binary"

# Restriction parameters a scope may carry (evaluable both in SQL/MongoDB and on a body).
_RESTRICTION_TYPES = {"token", "reference", "string", "uri"}


class UnenforceableScope(ValueError):
    """A scope's query restriction this server cannot enforce (the scope then grants nothing)."""


# -- rules ----------------------------------------------------------------------------------------

NOTHING: Filter = AnyFilter(())  # matches no resource


@dataclass(frozen=True, slots=True)
class Rule:
    """Which resources of `resource_type` a principal may touch with `permission`."""

    resource_type: str
    permission: str
    filter: Filter | None = None  # None: every resource of the type (unless security_context)
    # Binary under patient/ scopes: a Binary is admitted when `filter` (when not None) matches
    # it, or when its securityContext references a resource the principal may see (the caller
    # reads that resource: the decision is pure).
    security_context: bool = False
    context_filter: Filter | None = None  # what a Binary admitted through the gate must also match
    # Writes (c, u) through patient/ scopes only: the resource must not also be in another
    # patient's compartment, so a patient cannot put data into someone else's record.
    sole_patient: str | None = None

    @property
    def everything(self) -> bool:
        return self.filter is None and not self.security_context

    def admits(self, resource: dict, *, id: str | None = None) -> bool:
        """Whether `resource` (a body; `id` overrides its id, for a create) passes the filter.
        A security_context rule's gate is not checked here (see fhir_server/interactions/guard.py)."""
        if self.filter is None:
            return not self.security_context
        if id is not None and resource.get("id") != id:
            resource = {**resource, "id": id}
        index = index_of(resource, filter_codes(self.filter))
        if not matches(self.filter, resource, index):
            return False
        return self.sole_patient is None or not _other_patients(resource, self.sole_patient, index)


def _other_patients(resource: dict, patient: str, index: dict[str, list[IndexEntry]]) -> bool:
    """Whether a compartment link of `resource` references a patient other than `patient`."""
    for code in patient_links(resource.get("resourceType", "")):
        for entry in index.get(code, ()):
            if isinstance(entry, ReferenceEntry) and entry.target_type == "Patient" and entry.target_id != patient:
                return True
    return False


def _everything(resource_type: str, permission: str) -> Rule:
    return Rule(resource_type, permission)


def patient_links(resource_type: str) -> tuple[str, ...]:
    """The reference parameters that tie a resource of this type to a patient ('{def}': itself)."""
    return EXTRA_PATIENT_LINKS.get(resource_type) or patient_compartment_params(resource_type)


def patient_filter(resource_type: str, patient: str) -> Filter:
    """Membership of `resource_type` in Patient/<patient>'s compartment (Patient: itself only)."""
    if resource_type == "Patient":
        return ParamFilter("Patient", "_id", "token", (TokenValue(None, patient, False),))
    filters: list[Filter] = [
        ParamFilter(resource_type, code, "reference", (ReferenceValue("Patient", patient),))
        for code in patient_links(resource_type) if code != "{def}"
    ]
    return filters[0] if len(filters) == 1 else AnyFilter(tuple(filters))


@lru_cache(maxsize=1024)
def restriction_filter(resource_type: str, query: tuple[tuple[str, str], ...]) -> Filter:
    """A v2 scope's `?param=value&...` as a filter on `resource_type` (AND of its parameters),
    parsed by the search parser. UnenforceableScope when it uses what this module cannot check."""
    for name, _ in query:
        base = name.split(":", 1)[0]
        if base.startswith("_") and base not in ("_id", "_tag", "_profile", "_security", "_source"):
            raise UnenforceableScope(f"'{name}' is not a search parameter a scope may restrict by")
        if "." in name or base == "_has":
            raise UnenforceableScope(f"'{name}': chains and _has are not supported in scopes")
    try:
        parsed = parse_search([resource_type], list(query), strict=True)
    except FhirError as err:
        raise UnenforceableScope(err.issues[0].diagnostics) from None
    if len(parsed.filters) != len(query):
        raise UnenforceableScope("every restriction must be a search parameter")
    for f in parsed.filters:
        if not isinstance(f, ParamFilter):
            raise UnenforceableScope(f"'{getattr(f, 'code', '?')}' is not supported in scopes")
        if f.type not in _RESTRICTION_TYPES or f.code == "_lastUpdated":
            raise UnenforceableScope(
                f"'{f.code}' is a {f.type} parameter; scopes may restrict by token, reference, string or uri"
                " parameters")
    return parsed.filters[0] if len(parsed.filters) == 1 else AllFilter(parsed.filters)


def check_scope(scope: ResourceScope) -> None:
    """UnenforceableScope when `scope`'s restriction cannot be enforced here (for the
    authorization server, to refuse such a scope at authorize time instead of granting it)."""
    if scope.query:
        restriction_filter(scope.resource_type, scope.query)


# The extension point for user/ scopes: the visit workflow will confine clinicians to the patients
# they are licensed for and assigned to. It returns an extra filter ANDed into every user/ scope's
# alternative (None: no extra narrowing; NOTHING: refuse). Install with set_user_policy.
UserPolicy = Callable[[Principal, str, str], "Filter | None"]


def _no_user_policy(principal: Principal, resource_type: str, permission: str) -> Filter | None:
    return None


_user_policy: UserPolicy = _no_user_policy

# The audit trail (fhir_server/audit) is readable with system/ scopes, with user/ scopes only by
# the users named security officers (FHIR_SECURITY_OFFICERS), and with patient/ scopes only as the
# patient's accounting of disclosures (45 CFR 164.528): the patient's own disclosure events.
AUDIT_EVENT = "AuditEvent"
DISCLOSURE = "http://dicom.nema.org/resources/ontology/DCM|110106"
_security_officers: frozenset[str] = frozenset()


# A Subscription is its creator's: it holds the subscriber's endpoint and the headers (often a secret)
# sent with every notification. Read, search and delete see a client's own Subscriptions only, by the
# owner tag the server puts on each (fhir_server/exchange/subscriptions/accept.py, which also refuses
# another client's update). Create is unrestricted: the tag is set as it is stored.
SUBSCRIPTION = "Subscription"
SUBSCRIPTION_OWNER = f"{CANONICAL_BASE}/CodeSystem/subscription-owner"


def set_security_officers(usernames: Iterable[str]) -> None:
    global _security_officers
    _security_officers = frozenset(usernames)
    _decide.cache_clear()


def set_user_policy(policy: UserPolicy | None) -> None:
    global _user_policy
    _user_policy = policy or _no_user_policy
    _decide.cache_clear()


def _and(*filters: Filter | None) -> Filter | None:
    parts = [f for f in filters if f is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else AllFilter(tuple(parts))


def _or(filters: list[Filter]) -> Filter:
    return filters[0] if len(filters) == 1 else AnyFilter(tuple(filters))


def decide(principal: Principal, resource_type: str, permission: str) -> Rule:
    """The Rule for `permission` (one of c r u d s) on `resource_type`; Forbidden if none."""
    if principal.unrestricted:
        return _everything(resource_type, permission)
    outcome = _decide(principal, resource_type, permission)
    if isinstance(outcome, str):
        raise Forbidden(outcome)
    return outcome


def allowed(principal: Principal, resource_type: str, permission: str) -> Rule | None:
    """decide() without raising: None when the principal may not."""
    if principal.unrestricted:
        return _everything(resource_type, permission)
    outcome = _decide(principal, resource_type, permission)
    return None if isinstance(outcome, str) else outcome


@lru_cache(maxsize=4096)
def _decide(principal: Principal, resource_type: str, permission: str) -> Rule | str:
    """A Rule, or the reason for refusing (cached: principals with equal scopes and context
    share their rules; the Principal is a frozen, hashable value)."""
    scopes = principal.scopes
    verb = _VERB[permission]
    if principal.patient is None and scopes.has_context("patient"):
        return "The access token carries patient/ scopes but no patient context"
    granting = principal.granting(resource_type, permission)
    if not granting:
        return f"The access token grants no scope to {verb} {resource_type}"
    patient_alternatives: list[Filter | None] = []
    other_alternatives: list[Filter | None] = []
    refusals: list[str] = []
    for scope in granting:
        try:
            restriction = restriction_filter(resource_type, scope.query) if scope.query else None
        except UnenforceableScope as err:
            refusals.append(f"the restriction of scope '{scope.text}' cannot be enforced: {err}")
            continue
        if resource_type == SUBSCRIPTION and permission in (READ, SEARCH, DELETE) and scope.context != "patient":
            owned = restriction_filter(SUBSCRIPTION, (("_tag", f"{SUBSCRIPTION_OWNER}|{principal.client_id}"),))
            restriction = _and(restriction, owned)
        if resource_type == AUDIT_EVENT:
            if scope.context == "patient":
                restriction = _and(restriction, restriction_filter(AUDIT_EVENT, (("type", DISCLOSURE),)))
            elif scope.context == "user" and principal.subject not in _security_officers:
                refusals.append("the audit trail is readable by security officers only")
                continue
        if scope.context == "patient":
            if resource_type in NOT_PATIENT_ACCESSIBLE:
                refusals.append(f"{resource_type} is not accessible through patient/ scopes")
                continue
            if permission not in (READ, SEARCH) and resource_type != BINARY and not patient_links(resource_type):
                refusals.append(f"{resource_type} is not patient data: patient/ scopes may not {verb} it")
                continue
            patient_alternatives.append(restriction)
        else:
            extra = _user_policy(principal, resource_type, permission) if scope.context == "user" else None
            other_alternatives.append(_and(restriction, extra))
    if not patient_alternatives and not other_alternatives:
        return f"The access token may not {verb} {resource_type}: " + "; ".join(refusals)
    if any(a is None for a in other_alternatives):
        return Rule(resource_type, permission)
    alternatives = [a for a in other_alternatives if a is not None]
    if patient_alternatives:
        narrowing = None if any(a is None for a in patient_alternatives) else _or(
            [a for a in patient_alternatives if a is not None])
        if resource_type == BINARY:
            # Binary has no search parameter tying it to a patient: the securityContext gate.
            return Rule(resource_type, permission, _or(alternatives) if alternatives else NOTHING,
                        security_context=True, context_filter=narrowing)
        if patient_links(resource_type):
            alternatives.append(_and(patient_filter(resource_type, principal.patient), narrowing) or NOTHING)
            if permission in (CREATE, UPDATE) and len(alternatives) == 1 and resource_type != "Patient":
                return Rule(resource_type, permission, alternatives[0], sole_patient=principal.patient)
        elif narrowing is None:
            return Rule(resource_type, permission)  # not patient data: the whole type
        else:
            alternatives.append(narrowing)
    return Rule(resource_type, permission, _or(alternatives))


# -- searches -------------------------------------------------------------------------------------


def searchable_types(principal: Principal, resource_types: Iterable[str]) -> list[str]:
    """The types a search without `_type` covers: those the principal may search."""
    if principal.unrestricted:
        return list(resource_types)
    return [t for t in resource_types if (r := allowed(principal, t, SEARCH)) is not None and not r.security_context]


def _search_rule(principal: Principal, resource_type: str) -> Rule:
    rule = decide(principal, resource_type, SEARCH)
    if rule.security_context:
        raise Forbidden(f"{resource_type} cannot be searched with patient/ scopes (only read through "
                        "its securityContext)")
    return rule


def narrow_filter(principal: Principal, f: Filter) -> Filter:
    """`f` with every chain and _has confined: the principal must be able to search each type a
    chain or _has passes through, and their inner filters are narrowed to what it may search."""
    if isinstance(f, ChainFilter):
        rule = _search_rule(principal, f.target_types[0])
        inner = narrow_filter(principal, f.inner)
        return replace(f, inner=inner if rule.filter is None else AllFilter((inner, rule.filter)))
    if isinstance(f, HasFilter):
        rule = _search_rule(principal, f.source_type)
        inner = narrow_filter(principal, f.inner)
        return replace(f, inner=inner if rule.filter is None else AllFilter((inner, rule.filter)))
    if isinstance(f, (AnyFilter, AllFilter)):
        return replace(f, filters=tuple(narrow_filter(principal, g) for g in f.filters))
    return f


def _has_links(f: Filter) -> bool:
    if isinstance(f, (ChainFilter, HasFilter)):
        return True
    if isinstance(f, (AnyFilter, AllFilter)):
        return any(_has_links(g) for g in f.filters)
    return False


def narrow_search(principal: Principal, query: SearchQuery) -> SearchQuery:
    """The query as the principal may run it: Forbidden for a type it may not search, and its
    results confined to what its `s` scopes allow (per type when it spans several)."""
    if principal.unrestricted:
        return query
    rules = [_search_rule(principal, t) for t in query.resource_types]
    filters = [narrow_filter(principal, f) if _has_links(f) else f for f in query.filters]
    narrowed = [r for r in rules if r.filter is not None]
    if narrowed and len(rules) == 1:
        only = narrowed[0].filter
        filters += list(only.filters) if isinstance(only, AllFilter) else [only]
    elif narrowed:
        parts: list[Filter] = [AllFilter((TypeFilter((r.resource_type,)), r.filter)) for r in narrowed]  # type: ignore[arg-type]
        whole = tuple(r.resource_type for r in rules if r.filter is None)
        if whole:
            parts.append(TypeFilter(whole))
        filters.append(AnyFilter(tuple(parts)))
    return replace(query, filters=tuple(filters))


def narrow_criteria(principal: Principal, query: SearchQuery, permission: str) -> SearchQuery:
    """A conditional interaction's criteria search, confined to what `permission` (c, u or d)
    may touch, so no criteria can reach (or probe) resources the principal may not write."""
    if principal.unrestricted:
        return query
    [resource_type] = query.resource_types
    rule = decide(principal, resource_type, permission)
    filters = [narrow_filter(principal, f) if _has_links(f) else f for f in query.filters]
    if rule.security_context:
        raise Forbidden(f"Conditional interactions on {resource_type} need user/ or system/ scopes")
    if rule.filter is not None:
        filters.append(rule.filter)
    return replace(query, filters=tuple(filters))


# -- body-level evaluation --------------------------------------------------------------------------


def index_of(resource: dict, codes: frozenset[str] | None = None) -> dict[str, list[IndexEntry]]:
    """The resource's search index entries by parameter code: the store's own extraction
    (search/extract.py), limited to `codes` when given (a compartment check needs two or three
    parameters, not the thirty an Observation has)."""
    out: dict[str, list[IndexEntry]] = {}
    for entry in extract_index(resource, codes):
        out.setdefault(entry.param, []).append(entry)
    return out


@lru_cache(maxsize=4096)
def filter_codes(f: Filter) -> frozenset[str]:
    """The parameter codes a (body-evaluable) filter looks at."""
    if isinstance(f, (AnyFilter, AllFilter)):
        return frozenset().union(*(filter_codes(g) for g in f.filters))
    if isinstance(f, ParamFilter):
        return frozenset((f.code,))
    return frozenset()


def matches(f: Filter, resource: dict, index: dict[str, list[IndexEntry]] | None = None) -> bool:
    """Whether `resource` meets `f`, with the semantics of the SQL and MongoDB translations
    (storage/sqlite/search_sql.py). Chains and _has need other resources: not evaluable here."""
    if index is None:
        index = index_of(resource, filter_codes(f))
    return _matches(f, resource.get("resourceType"), index)


def _matches(f: Filter, resource_type: str | None, index: dict[str, list[IndexEntry]]) -> bool:
    if isinstance(f, AnyFilter):
        return any(_matches(g, resource_type, index) for g in f.filters)
    if isinstance(f, AllFilter):
        return all(_matches(g, resource_type, index) for g in f.filters)
    if isinstance(f, TypeFilter):
        return resource_type in f.resource_types
    if isinstance(f, ParamFilter):
        return _param_matches(f, index.get(f.code, ()) if f.resource_type == resource_type else ())
    raise TypeError(f"{type(f).__name__} cannot be evaluated on a resource body")


def _param_matches(f: ParamFilter, entries) -> bool:
    if f.missing is not None:
        return not entries if f.missing else bool(entries)
    for v in f.values:
        if isinstance(v, TokenValue) and v.modifier == "not":
            positive = TokenValue(v.system, v.code, v.system_given)
            if not any(_value_matches(positive, e) for e in entries):
                return True
        elif any(_value_matches(v, e) for e in entries):
            return True
    return False


def _value_matches(v, e: IndexEntry) -> bool:
    if isinstance(v, TokenValue):
        if not isinstance(e, TokenEntry):
            return False
        if v.modifier == "text":
            return e.text is not None and v.text is not None and e.text.startswith(v.text)
        if v.modifier == "of-type":
            return (e.type_system, e.type_code, e.code) == (v.type_system, v.type_code, v.code)
        if v.code is not None and e.code != v.code:
            return False
        return not v.system_given or e.system == v.system
    if isinstance(v, ReferenceValue):
        if not isinstance(e, ReferenceEntry):
            return False
        if v.target_id is not None:
            hit = e.target_id == v.target_id and (v.target_type is None or e.target_type == v.target_type)
            return hit or (v.url is not None and e.url == v.url)
        return e.url == v.url
    if isinstance(v, StringValue):
        if not isinstance(e, StringEntry):
            return False
        if v.modifier == "exact":
            return e.exact == v.text
        if v.modifier == "contains":
            return v.text in e.normalized
        return e.normalized.startswith(v.text)
    if isinstance(v, UriValue):
        if not isinstance(e, UriEntry):
            return False
        if v.modifier == "below":
            return e.value.startswith(v.value)
        if v.modifier == "above":
            return v.value.startswith(e.value)
        return e.value == v.value
    return False  # date, number, quantity, composite: never in a Rule (restriction_filter refuses them)


def security_context_target(resource: dict) -> tuple[str, str] | None:
    """The (type, id) a Binary's securityContext references, when it is a local literal reference."""
    context = resource.get("securityContext")
    reference = context.get("reference") if isinstance(context, dict) else None
    if not isinstance(reference, str):
        return None
    parsed = parse_reference(reference)
    if parsed is None or parsed.target_type is None or parsed.target_id is None:
        return None
    return parsed.target_type, parsed.target_id


__all__ = [
    "BINARY", "CREATE", "DELETE", "EXTRA_PATIENT_LINKS", "NOTHING", "NOT_PATIENT_ACCESSIBLE", "PERMISSION_OF",
    "READ", "SEARCH", "UPDATE", "Rule", "UnenforceableScope", "allowed", "check_scope", "decide", "index_of",
    "matches", "narrow_criteria", "narrow_filter", "narrow_search", "patient_filter", "patient_links",
    "restriction_filter", "searchable_types", "security_context_target", "set_user_policy",
]
