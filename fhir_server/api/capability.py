"""GET /metadata: the CapabilityStatement, generated from the routes the app really registered
(each names its FHIR interaction), the resource types the validator knows, and the formats the
negotiation module accepts. Built once per base URL and cached as bytes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from profiles.guide import IG_URL
from smart_auth.discovery import capability_security

from .. import __version__
from ..exchange.subscriptions import capability_extensions as subscription_topic_extensions
from ..storage.serialization import format_instant
from ..search.registry import search_params
from ..validation.resource_types import resource_types
from .negotiation import PATCH_FORMATS, RESPONSE_FORMATS

# CapabilityStatement.rest.resource.interaction codes (R4 valueset-type-restful-interaction)
_TYPE_LEVEL = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type")
# CapabilityStatement.rest.interaction codes
_SYSTEM_LEVEL = ("transaction", "batch", "search-system", "history-system")

# How e-prescribing shows through FHIR (fhir_server/erx, mappers/ncpdp/reflect.py), when it is on.
_ERX_DOCUMENTATION = {
    "MedicationRequest": (
        "e-Prescribing: an active order whose dispenseRequest.performer is a pharmacy is sent to it "
        "(NCPDP SCRIPT 2017071 NewRx through the configured gateway, or a FHIR transaction to a "
        "pharmacy with an hl7-fhir-rest Endpoint); cancelling or stopping it sends a CancelRx. A "
        "prescription that cannot be sent safely is refused with 422 naming every missing element; "
        "controlled substances are refused until EPCS signing exists. Undelivered: status on-hold."),
    "Task": (
        "Delivery state of e-prescriptions: one Task per transmission (code "
        "http://fhir-async-telehealth.example/CodeSystem/erx-task#transmission, focus = the "
        "MedicationRequest, identifier = the SCRIPT MessageID), businessStatus from "
        "http://fhir-async-telehealth.example/CodeSystem/erx-delivery-status (queued, sent, "
        "retrying, accepted, verified, error, dead-letter, cancel-approved, cancel-denied). "
        "Pharmacy renewal requests arrive as Tasks (code renewal-request): completing one (output "
        "decision Approved or ApprovedWithChanges, refills) or rejecting it (a denial reason) sends "
        "the RxRenewalResponse."),
}


_VALIDATE_OPERATION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
_BULK = "http://hl7.org/fhir/uv/bulkdata"  # Bulk Data Access 2.0 (fhir_server/exchange/bulk)
_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"  # the Subscriptions R5 Backport IG (R4)
_SUBMIT_OPERATION = "http://fhir-async-telehealth.example/OperationDefinition/submit"  # profiles/operations/submit.json


class FhirRoute(Route):
    """A route that names the FHIR interactions it implements."""

    def __init__(self, *args, interactions: tuple[str, ...], **kwargs):
        super().__init__(*args, **kwargs)
        self.interactions = interactions

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Starlette's plain Route does not record itself in the scope (FastAPI's APIRoute does):
        # the access log reads the route template from there, never the URL
        match, child = super().matches(scope)
        if match != Match.NONE:
            child["route"] = self
        return match, child


def route_table(routes: list["FhirRoute"]) -> Callable:
    """The decorator that registers handlers into `routes`, each route naming the FHIR interaction
    or operation codes it implements (the CapabilityStatement reads them). Every route module
    (routes.py, binary_routes.py, bulk_routes.py, document_routes.py) declares its routes with one.

    They are plain Starlette routes inside the FastAPI app: every handler takes the raw request
    (bodies are FHIR JSON parsed by the interaction layer, not pydantic models), and FastAPI's
    per-request dependency solving cost more than half of a read's CPU (bench/README.md)."""

    def interaction(method: str, path: str, *codes: str) -> Callable:
        def register(handler: Callable) -> Callable:
            async def endpoint(request: Request) -> Response:
                return await handler(request, **request.path_params)

            routes.append(FhirRoute(path, endpoint, methods=[method], name=f"{codes[0]}-{method.lower()}",
                                    interactions=codes))
            return handler

        return register

    return interaction


_STARTED = format_instant(datetime.now(timezone.utc))


def implemented_interactions(app: FastAPI) -> set[str]:
    codes: set[str] = set()
    for route in app.routes:
        if isinstance(route, FhirRoute):
            codes.update(route.interactions)
    return codes


def _search_params(resource_type: str) -> list[dict]:
    return [
        {"name": p.code, "definition": p.url, "type": p.type}
        for p in sorted(search_params(resource_type).values(), key=lambda p: p.code)
        if p.supported
    ]


def _reference_params(resource_type: str) -> list[str]:
    return sorted(f"{resource_type}:{p.code}" for p in search_params(resource_type).values() if p.type == "reference")


def _revinclude_index() -> dict[str, list[str]]:
    """target type -> every Source:param whose reference parameter may point at it."""
    index: dict[str, list[str]] = {}
    for source in sorted(resource_types()):
        for p in search_params(source).values():
            if p.type == "reference":
                for target in p.targets:
                    index.setdefault(target, []).append(f"{source}:{p.code}")
    return {target: sorted(entries) for target, entries in index.items()}


def build_capability_statement(app: FastAPI, base: str) -> dict:
    codes = implemented_interactions(app)
    type_level = [{"code": c} for c in _TYPE_LEVEL if c in codes]
    searching = "search-type" in codes
    revincludes = _revinclude_index() if searching else {}
    resources = []
    for name in sorted(resource_types()):
        resource: dict = {
            "type": name,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{name}",
            "interaction": type_level,
            "versioning": "versioned-update",
            "readHistory": "vread" in codes,
            "updateCreate": "update" in codes,
            "conditionalCreate": "conditional-create" in codes,
            "conditionalRead": "not-supported",
            "conditionalUpdate": "conditional-update" in codes,
            "conditionalDelete": "single" if "conditional-delete" in codes else "not-supported",
        }
        if searching:
            resource["searchInclude"] = ["*", *_reference_params(name)]
            if revincludes.get(name):  # R4 JSON has no empty arrays
                resource["searchRevInclude"] = revincludes[name]
            resource["searchParam"] = _search_params(name)
        validation = getattr(app.state, "validation", None)
        if validation is not None:
            supported = [*validation.guide.profiles_by_type().get(name, []), *validation.required.get(name, ())]
            if supported:
                resource["supportedProfile"] = sorted(set(supported))
        operations = []
        if "operation-validate" in codes:
            operations.append({"name": "validate", "definition": _VALIDATE_OPERATION})
        if name in ("Patient", "Encounter") and "operation-everything" in codes:
            operations.append({"name": "everything", "definition": f"http://hl7.org/fhir/OperationDefinition/{name}-everything"})
        if name == "Subscription":
            resource["extension"] = subscription_topic_extensions()
            resource["supportedProfile"] = [f"{_BACKPORT}/StructureDefinition/backport-subscription"]
            operations += [{"name": "status", "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-status"},
                           {"name": "events", "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-events"}]
        if name in ("Patient", "Group") and "operation-export" in codes:
            operations.append({"name": "export", "definition": f"{_BULK}/OperationDefinition/{name.lower()}-export"})
        if name == "Composition" and "operation-document" in codes:
            operations.append({"name": "document", "definition": "http://hl7.org/fhir/OperationDefinition/Composition-document"})
        if name == "Encounter" and "operation-submit" in codes:
            operations.append({"name": "submit", "definition": _SUBMIT_OPERATION})
        if operations:
            resource["operation"] = operations
        if name in _ERX_DOCUMENTATION and getattr(app.state, "erx_settings", None) and app.state.erx_settings.enabled:
            resource["documentation"] = _ERX_DOCUMENTATION[name]
        resources.append(resource)
    rest: dict = {
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": c} for c in _SYSTEM_LEVEL if c in codes],
    }
    if app.state.auth is not None:
        rest["security"] = capability_security(base)
    if "operation-export" in codes:
        rest["operation"] = [{"name": "export", "definition": f"{_BULK}/OperationDefinition/export"}]
    if "search-compartment" in codes:
        rest["compartment"] = ["http://hl7.org/fhir/CompartmentDefinition/patient"]
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _STARTED,
        "publisher": "fhir-async-telehealth",
        "kind": "instance",
        "software": {"name": "fhir-async-telehealth", "version": __version__},
        "implementation": {"description": "FHIR R4 server for asynchronous telehealth", "url": base},
        "fhirVersion": "4.0.1",
        "format": list(RESPONSE_FORMATS),
        "patchFormat": list(PATCH_FORMATS),
        "rest": [rest],
    }
    if getattr(app.state, "validation", None) is not None:
        statement["implementationGuide"] = [IG_URL]
    if "operation-export" in codes:
        statement["instantiates"] = [f"{_BULK}/CapabilityStatement/bulk-data"]
    return statement


def capability_statement(app: FastAPI, base: str) -> bytes:
    cache: dict[str, bytes] = app.state.capability_cache
    if base not in cache:
        cache[base] = orjson.dumps(build_capability_statement(app, base))
    return cache[base]
