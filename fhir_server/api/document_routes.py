"""`Composition/{id}/$document` (R4 operation-composition-document.html, a core operation: no
OperationDefinition of ours): the document Bundle of a Composition, and with `persist=true` the
same Bundle stored as a Bundle resource and returned with its id.

What the Bundle holds (type `document`, `identifier` a fresh urn:uuid per generation, `timestamp`
now, absolute fullUrls on this server): the Composition first, then, each once, every resource it
references directly: subject, encounter, author, attester.party, custodian, event.detail and every
section's (and sub-section's) entry. It does not follow references further (a Media's Binary, a
CarePlan's activities): those are a read away for who may read them. A reference to a resource
that is not stored (or deleted) is left out.

Authorization: the caller must be allowed to read the Composition (404 otherwise, as a read) and
every resource included. A document is complete or nothing: if any included resource is one the
caller may not read, the request fails with 403 rather than returning a partial document.
`persist=true` also needs the right to create a Bundle.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import orjson
from starlette.requests import Request
from starlette.responses import Response

from smart_auth.principal import Principal

from ..errors import Forbidden, Gone, InvalidRequest, NotFound
from ..interactions import crud
from ..interactions.validation import check
from ..storage import Store
from ..storage.serialization import format_instant
from .authorization import request_principal
from .capability import FhirRoute, route_table
from .negotiation import read_json, response_media_type
from .responses import fhir_response, version_headers

__all__ = ["ROUTES", "document_bundle", "composition_references"]

ROUTES: list[FhirRoute] = []


_route = route_table(ROUTES)


def _reference(value: object) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    if isinstance(ref, str) and ref.count("/") == 1 and not ref.startswith(("urn:", "#")):
        return ref
    return None


def _sections(sections: list) -> list[str]:
    refs: list[str] = []
    for section in sections or []:
        if not isinstance(section, dict):
            continue
        refs += [r for r in (_reference(e) for e in section.get("entry") or []) if r]
        refs += _sections(section.get("section") or [])
    return refs


def composition_references(composition: dict) -> list[str]:
    """The resources a document of `composition` includes after it, in order, each once."""
    refs: list[str | None] = [_reference(composition.get("subject")), _reference(composition.get("encounter"))]
    refs += [_reference(a) for a in composition.get("author") or []]
    refs += [_reference((a or {}).get("party")) for a in composition.get("attester") or []]
    refs.append(_reference(composition.get("custodian")))
    refs += [_reference(d) for e in composition.get("event") or [] for d in (e or {}).get("detail") or []]
    refs += _sections(composition.get("section") or [])
    seen: list[str] = []
    for ref in refs:
        if ref and ref not in seen:
            seen.append(ref)
    return seen


async def document_bundle(store: Store, id: str, principal: Principal, base: str) -> dict:
    """The document Bundle of Composition/id, every resource checked against the principal."""
    composition = await crud.read(store, "Composition", id, principal)  # 404 when not visible
    assert composition.body is not None
    body = orjson.loads(composition.body)
    entries = [{"fullUrl": f"{base}/Composition/{id}", "resource": body}]
    for ref in composition_references(body):
        resource_type, ref_id = ref.split("/")
        stored = await store.read(resource_type, ref_id)
        if stored is None or stored.body is None:
            continue  # not here to include
        try:
            version = await crud.read(store, resource_type, ref_id, principal)
        except (NotFound, Gone, Forbidden, InvalidRequest):
            raise Forbidden("The document includes resources this client may not read; "
                            "a document is returned whole or not at all") from None
        entries.append({"fullUrl": f"{base}/{ref}", "resource": orjson.loads(version.body)})
    return {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "type": "document",
        "timestamp": format_instant(datetime.now(timezone.utc)),
        "entry": entries,
    }


def _base(request: Request) -> str:
    configured = request.app.state.settings.base_url
    return (configured or str(request.base_url)).rstrip("/")


def _flag(value: object, name: str) -> bool:
    if value in (None, "", "false", False):
        return False
    if value in ("true", True):
        return True
    raise InvalidRequest(f"Parameter '{name}' must be true or false", expression=name)


async def _persist_parameter(request: Request) -> bool:
    persist = _flag(request.query_params.get("persist"), "persist")
    if request.method == "POST" and request.headers.get("content-length") not in (None, "0"):
        body = await read_json(request, request.app.state.settings.max_body_bytes)
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise InvalidRequest("The body of $document is a Parameters resource")
        for parameter in body.get("parameter") or []:
            if isinstance(parameter, dict) and parameter.get("name") == "persist":
                persist = _flag(parameter.get("valueBoolean"), "persist")
            elif isinstance(parameter, dict) and parameter.get("name") == "graph":
                raise InvalidRequest("The graph parameter of $document is not supported", expression="graph")
    if request.query_params.get("graph"):
        raise InvalidRequest("The graph parameter of $document is not supported", expression="graph")
    return persist


async def _document(request: Request, id: str) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    persist = await _persist_parameter(request)
    store: Store = request.app.state.store
    base = _base(request)
    bundle = await document_bundle(store, id, principal, base)
    if not persist:
        return fhir_response(orjson.dumps(bundle), request, media_type=media)
    checked = check(bundle, "Bundle")
    async with store.unit_of_work() as uow:
        version = await crud.create(uow, checked, principal=principal)
    return fhir_response(version.body, request, media_type=media, headers=version_headers(version, base, location=True))


@_route("GET", "/Composition/{id}/$document", "operation-document")
async def document_get(request: Request, id: str) -> Response:
    return await _document(request, id)


@_route("POST", "/Composition/{id}/$document", "operation-document")
async def document_post(request: Request, id: str) -> Response:
    return await _document(request, id)
