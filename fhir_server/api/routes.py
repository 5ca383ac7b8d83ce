"""The FHIR REST routes (R4 http.html). Each route names the FHIR interaction it implements, and
the CapabilityStatement is generated from those names, so the two cannot drift apart.

Routes parse and negotiate, call an interaction, and render; they hold no storage code. Every
route but /metadata first turns the request's access token into a Principal (authorization.py)
and passes it to the interaction, which asks smart_auth/access.py what it may do.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from smart_auth.access import searchable_types
from smart_auth.principal import Principal

from ..audit.context import note_interaction, note_returned, note_search
from ..errors import Forbidden, OutcomeIssue, UnsupportedMediaType, operation_outcome
from ..exchange import everything
from ..interactions import bundle as bundles
from ..interactions import conditional, crud
from ..interactions.history import history, history_request
from ..interactions.preconditions import parse_if_match
from ..interactions.prefer import RETURN_OUTCOME, parse_prefer
from ..interactions.rendering import embedded, history_bundle
from ..interactions.search import build_query, compartment_query, encode_cursor, search, searchset_bundle
from ..interactions.profile_check import collected_warnings, outcome_issues
from ..interactions.validate_operation import parse_validate_request, validate_operation
from ..interactions.validation import check, require_resource_type
from ..search.parse import CURSOR
from ..storage import HistoryPage, Store, StoredVersion
from ..validation.issues import Issue
from ..visit.submit import submit_visit
from ..validation.resource_types import resource_types as all_resource_types
from .authorization import request_principal
from .capability import FhirRoute, capability_statement, route_table
from .negotiation import JSON_PATCH, read_body, read_json, response_media_type
from .responses import fhir_response, resource_response, write_response

ROUTES: list[FhirRoute] = []


interaction = route_table(ROUTES)


def _store(request: Request) -> Store:
    return request.app.state.store


def base_url(request: Request) -> str:
    configured = request.app.state.settings.base_url
    return (configured or str(request.base_url)).rstrip("/")


def _body_limit(request: Request) -> int:
    return request.app.state.settings.max_body_bytes


# -- system level ----------------------------------------------------------------------------


@interaction("GET", "/metadata", "capabilities")
async def capabilities(request: Request) -> Response:
    media = response_media_type(request)
    return fhir_response(capability_statement(request.app, base_url(request)), request, media_type=media)


@interaction("POST", "/", "transaction", "batch")
async def transaction_or_batch(request: Request) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    base = base_url(request)
    kind, entries = bundles.parse_entries(await read_json(request, _body_limit(request)), base)
    run = bundles.run_transaction if kind == "transaction" else bundles.run_batch
    note_interaction(kind)
    results = await run(_store(request), entries, base, principal)
    body = bundles.response_bundle(kind, results, parse_prefer(request.headers.get("prefer")))
    return fhir_response(body, request, media_type=media)


@interaction("GET", "/", "search-system")
async def search_system(request: Request) -> Response:
    principal = await request_principal(request)
    return await _search(request, principal, "", await _search_params(request))


@interaction("POST", "/_search", "search-system")
async def search_system_post(request: Request) -> Response:
    principal = await request_principal(request)
    return await _search(request, principal, "", await _search_params(request))


@interaction("GET", "/_history", "history-system")
async def history_system(request: Request) -> Response:
    return await _history(request, await request_principal(request), "_history")


# -- type level ------------------------------------------------------------------------------


@interaction("GET", "/{resource_type}/_history", "history-type")
async def history_type(request: Request, resource_type: str) -> Response:
    principal = await request_principal(request)
    return await _history(request, principal, f"{resource_type}/_history", resource_type=resource_type)


@interaction("GET", "/{resource_type}", "search-type")
async def search_type(request: Request, resource_type: str) -> Response:
    principal = await request_principal(request)
    return await _search(request, principal, resource_type, await _search_params(request), resource_type=resource_type)


@interaction("POST", "/{resource_type}/_search", "search-type")
async def search_type_post(request: Request, resource_type: str) -> Response:
    principal = await request_principal(request)
    return await _search(request, principal, resource_type, await _search_params(request), resource_type=resource_type)


@interaction("POST", "/{resource_type}", "create", "conditional-create")
async def create(request: Request, resource_type: str) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    require_resource_type(resource_type)
    checked = check(await read_json(request, _body_limit(request)), resource_type)
    criteria = request.headers.get("if-none-exist")
    with collected_warnings() as warnings:
        async with _store(request).unit_of_work() as uow:
            if criteria is None:
                version, created = await crud.create(uow, checked, principal=principal), True
            else:
                version, created = await conditional.create_if_none_exist(uow, checked, criteria, principal=principal)
    prefer = parse_prefer(request.headers.get("prefer"))
    return write_response(version, request, media, prefer, base_url(request), status=201 if created else 200,
                          warnings=outcome_issues(warnings))


@interaction("PUT", "/{resource_type}", "conditional-update")
async def conditional_update(request: Request, resource_type: str) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    require_resource_type(resource_type)
    if_match = parse_if_match(request.headers.get("if-match"))
    checked = check(await read_json(request, _body_limit(request)), resource_type)
    with collected_warnings() as warnings:
        async with _store(request).unit_of_work() as uow:
            version, created = await conditional.update_by_criteria(uow, checked, request.url.query,
                                                                    if_match=if_match, principal=principal)
    prefer = parse_prefer(request.headers.get("prefer"))
    return write_response(version, request, media, prefer, base_url(request), status=201 if created else 200,
                          warnings=outcome_issues(warnings))


@interaction("DELETE", "/{resource_type}", "conditional-delete")
async def conditional_delete(request: Request, resource_type: str) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    require_resource_type(resource_type)
    async with _store(request).unit_of_work() as uow:
        marker = await conditional.delete_by_criteria(uow, resource_type, request.url.query, principal)
    return _deleted(request, media, marker, resource_type)


# -- $validate (before the instance routes: GET /{type}/{id}/$validate is not a compartment search)


@interaction("POST", "/{resource_type}/$validate", "operation-validate")
async def validate_type(request: Request, resource_type: str) -> Response:
    return await _validate(request, resource_type, None)


@interaction("POST", "/{resource_type}/{id}/$validate", "operation-validate")
async def validate_instance(request: Request, resource_type: str, id: str) -> Response:
    return await _validate(request, resource_type, id)


@interaction("GET", "/{resource_type}/{id}/$validate", "operation-validate")
async def validate_instance_get(request: Request, resource_type: str, id: str) -> Response:
    return await _validate(request, resource_type, id)


@interaction("POST", "/Encounter/{id}/$submit", "operation-submit")
async def submit_encounter(request: Request, id: str) -> Response:
    """The patient submits an asynchronous visit for review (profiles/operations/submit.json)."""
    principal = await request_principal(request)
    media = response_media_type(request)
    async with _store(request).unit_of_work() as uow:
        task, created = await submit_visit(uow, request.app.state.validation, id, principal, request.app.state.visit_fee,
                                           metrics=request.app.state.metrics)
    return resource_response(task, request, media, status=201 if created else 200)


@interaction("GET", "/Patient/{id}/$everything", "operation-everything")
async def patient_everything_get(request: Request, id: str) -> Response:
    return await _everything(request, "Patient", id)


@interaction("POST", "/Patient/{id}/$everything", "operation-everything")
async def patient_everything_post(request: Request, id: str) -> Response:
    return await _everything(request, "Patient", id)


@interaction("GET", "/Encounter/{id}/$everything", "operation-everything")
async def encounter_everything_get(request: Request, id: str) -> Response:
    return await _everything(request, "Encounter", id)


async def _everything(request: Request, resource_type: str, id: str) -> Response:
    """R4 Patient-everything / Encounter-everything: a searchset of what the caller may read."""
    principal = await request_principal(request)
    media = response_media_type(request)
    params = dict(await _search_params(request)) if request.method == "GET" else dict(request.query_params)
    if resource_type == "Patient":
        found = await everything.patient_everything(_store(request), principal, id, params)
    else:
        found = await everything.encounter_everything(_store(request), principal, id)
    note_returned((*found.matches, *found.included))
    base = base_url(request)
    here = f"{base}/{resource_type}/{id}/$everything"
    kept = [(k, v) for k, v in params.items() if k != "_page"]
    links = [{"relation": "self", "url": f"{here}?{urlencode(params)}" if params else here}]
    if found.next_page:
        links.append({"relation": "next", "url": f"{here}?{urlencode([*kept, ('_page', found.next_page)])}"})
    bundle = {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": [
        *({"fullUrl": f"{base}/{v.resource_type}/{v.id}", "resource": embedded(v), "search": {"mode": "match"}}
          for v in found.matches),
        *({"fullUrl": f"{base}/{v.resource_type}/{v.id}", "resource": embedded(v), "search": {"mode": "include"}}
          for v in found.included),
    ]}
    if not found.next_page and "_page" not in params:  # one page: it holds everything
        bundle["total"] = len(found.matches)
    return fhir_response(orjson.dumps(bundle), request, media_type=media)


async def _validate(request: Request, resource_type: str, id: str | None) -> Response:
    """200 with the OperationOutcome whether or not the resource is valid (R4 Resource-validate)."""
    principal = await request_principal(request)
    media = response_media_type(request)
    require_resource_type(resource_type)
    has_body = request.method == "POST" and request.headers.get("content-length") not in (None, "0")
    body = await read_json(request, _body_limit(request)) if has_body else None
    parsed = parse_validate_request(body, list(request.query_params.multi_items()))
    issues = await validate_operation(_store(request), request.app.state.validation, resource_type, parsed,
                                      id=id, principal=principal)
    if not issues:
        issues = [Issue("information", "informational", resource_type, "No issues found: the resource is valid", None)]
    return fhir_response(orjson.dumps(operation_outcome(outcome_issues(issues))), request, media_type=media)


# -- instance level --------------------------------------------------------------------------


@interaction("GET", "/{resource_type}/{id}/_history/{version_id}", "vread")
async def vread(request: Request, resource_type: str, id: str, version_id: str) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    version = await crud.vread(_store(request), resource_type, id, version_id, principal)
    return resource_response(version, request, media)


@interaction("GET", "/{resource_type}/{id}/_history", "history-instance")
async def history_instance(request: Request, resource_type: str, id: str) -> Response:
    principal = await request_principal(request)
    return await _history(request, principal, f"{resource_type}/{id}/_history", resource_type=resource_type, id=id)


@interaction("GET", "/{compartment}/{id}/{resource_type}", "search-compartment")
async def search_compartment(request: Request, compartment: str, id: str, resource_type: str) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    require_resource_type(compartment)
    prefer = parse_prefer(request.headers.get("prefer"))
    query = compartment_query(compartment, id, resource_type, await _search_params(request), strict=prefer.strict)
    return await _render_search(request, principal, media, query, f"{compartment}/{id}/{resource_type}")


@interaction("GET", "/{resource_type}/{id}", "read")
async def read(request: Request, resource_type: str, id: str) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    return resource_response(await crud.read(_store(request), resource_type, id, principal), request, media)


@interaction("PUT", "/{resource_type}/{id}", "update")
async def update(request: Request, resource_type: str, id: str) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    require_resource_type(resource_type)
    if_match = parse_if_match(request.headers.get("if-match"))
    checked = crud.check_update(resource_type, id, await read_json(request, _body_limit(request)))
    with collected_warnings() as warnings:
        async with _store(request).unit_of_work() as uow:
            version, created = await crud.update(uow, checked, if_match=if_match, principal=principal)
    prefer = parse_prefer(request.headers.get("prefer"))
    return write_response(version, request, media, prefer, base_url(request), status=201 if created else 200,
                          warnings=outcome_issues(warnings))


@interaction("PATCH", "/{resource_type}/{id}", "patch")
async def patch(request: Request, resource_type: str, id: str) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    require_resource_type(resource_type)
    if_match = parse_if_match(request.headers.get("if-match"))
    operations = await read_json(request, _body_limit(request), accepted=(JSON_PATCH,))
    with collected_warnings() as warnings:
        version = await crud.patch_standalone(_store(request), resource_type, id, operations, if_match=if_match,
                                              principal=principal)
    prefer = parse_prefer(request.headers.get("prefer"))
    return write_response(version, request, media, prefer, base_url(request), status=200,
                          warnings=outcome_issues(warnings))


@interaction("DELETE", "/{resource_type}/{id}", "delete")
async def delete(request: Request, resource_type: str, id: str) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    if_match = parse_if_match(request.headers.get("if-match"))
    async with _store(request).unit_of_work() as uow:
        marker = await crud.delete(uow, resource_type, id, if_match=if_match, principal=principal)
    return _deleted(request, media, marker, resource_type)


def _deleted(request: Request, media: str, marker: StoredVersion | None, resource_type: str) -> Response:
    """204, or 200 with an OperationOutcome under Prefer: return=OperationOutcome."""
    headers = {"ETag": marker.etag} if marker is not None else None
    if parse_prefer(request.headers.get("prefer")).return_ == RETURN_OUTCOME:
        text = f"{resource_type}/{marker.id} deleted" if marker else "There was nothing to delete"
        outcome = operation_outcome([OutcomeIssue("information", "informational", text)])
        return fhir_response(orjson.dumps(outcome), request, media_type=media, headers=headers)
    return fhir_response(None, request, status=204, headers=headers)


# -- search rendering ------------------------------------------------------------------------

_FORM = "application/x-www-form-urlencoded"


async def _search_params(request: Request) -> list[tuple[str, str]]:
    """The query string's parameters, plus a POST _search form body's (http.html#search)."""
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != _FORM:
            raise UnsupportedMediaType(f"POST _search takes a {_FORM} body")
        body = await read_body(request, _body_limit(request))
        params += parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return params


async def _search(
    request: Request, principal: Principal, rel_path: str, params: list[tuple[str, str]], *,
    resource_type: str | None = None,
) -> Response:
    media = response_media_type(request)
    prefer = parse_prefer(request.headers.get("prefer"))
    types = [resource_type] if resource_type else []
    if not types and not any(k == "_type" for k, _ in params):
        # a system search without _type covers the types the principal may search
        # ... except the audit trail, searched by name (`_type=AuditEvent` or /AuditEvent)
        types = searchable_types(principal, sorted(t for t in all_resource_types() if t != "AuditEvent"))
        if not types:
            raise Forbidden("The access token grants no scope to search any resource type")
    query = build_query(types, params, strict=prefer.strict)
    return await _render_search(request, principal, media, query, rel_path, params)


async def _render_search(
    request: Request, principal: Principal, media: str, query, rel_path: str,
    params: list[tuple[str, str]] | None = None,
) -> Response:
    if params is None:
        params = await _search_params(request)
    page = await search(_store(request), query, principal)
    note_search(request.method, rel_path, params)
    note_returned((*page.matches, *page.included), total=page.total)
    base = base_url(request)
    kept = [(k, v) for k, v in params if k != CURSOR]

    def link(cursor: tuple | None = None) -> str:
        pairs = kept + ([(CURSOR, encode_cursor(cursor))] if cursor else [])
        return f"{base}/{rel_path}" + (f"?{urlencode(pairs)}" if pairs else "")

    links = [("self", link(query.cursor))]
    if page.next_cursor:
        links.append(("next", link(page.next_cursor)))
    if page.previous_cursor:
        links.append(("previous", link(page.previous_cursor)))
    return fhir_response(searchset_bundle(query, page, base, links), request, media_type=media)


# -- history rendering -----------------------------------------------------------------------


async def _history(
    request: Request, principal: Principal, rel_path: str, *, resource_type: str | None = None, id: str | None = None
) -> Response:
    media = response_media_type(request)
    params = {k: request.query_params.getlist(k) for k in request.query_params.keys()}
    page = await history(_store(request), history_request(params, resource_type=resource_type, id=id), principal)
    note_returned(v for v in page.versions if v.body is not None)
    base = base_url(request)
    body = history_bundle(page, base, _page_links(base, rel_path, params, page))
    return fhir_response(body, request, media_type=media)


def _page_links(base: str, rel_path: str, params: dict[str, list[str]], page: HistoryPage) -> list[tuple[str, str]]:
    def link(**override: str) -> str:
        query = {k: v for k, v in params.items() if k not in override}
        query.update({k: [v] for k, v in override.items()})
        encoded = urlencode([(k, v) for k, vs in query.items() for v in vs])
        return f"{base}/{rel_path}" + (f"?{encoded}" if encoded else "")

    links = [("self", link())]
    if page.next_seq is not None:
        links.append(("next", link(**{CURSOR: str(page.next_seq)})))
    return links
