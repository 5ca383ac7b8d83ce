"""Batch and transaction Bundles posted to the base (R4 http.html#transaction).

A transaction runs every entry in one unit of work, in the order the spec gives (DELETE, POST,
PUT/PATCH, GET/HEAD), with `urn:uuid:` (and any other) fullUrls of created resources rewritten to
their new ids wherever the bundle refers to them; the first failing entry aborts it and nothing
is written. A batch runs each entry on its own; one entry failing does not touch the others.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import orjson

from smart_auth.principal import Principal

from ..errors import FhirError, InvalidRequest, MethodNotAllowed, OutcomeIssue, PreconditionFailed, operation_outcome
from ..storage import ResourceReader, Store, StoredVersion, UnitOfWork
from . import conditional, crud
from .history import history, history_request
from .preconditions import parse_if_match
from .prefer import RETURN_MINIMAL, RETURN_OUTCOME, Prefer
from .rendering import embedded, entry_response, history_bundle
from .search import build_query, search, searchset_bundle
from .validation import Checked, check, require_resource_type

# R4 http.html#trules: "Process any DELETE interactions, then POST, then PUT or PATCH, then GET or HEAD"
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_JSON_PATCH = "application/json-patch+json"


@dataclass
class Entry:
    index: int
    method: str
    url: str
    path: list[str]
    params: dict[str, list[str]]
    resource: Any = None
    full_url: str | None = None
    if_match: str | None = None
    if_none_exist: str | None = None
    query: str = ""  # the raw query string (search and conditional criteria)
    assigned_id: str | None = None  # a POST's new id, known before processing so references resolve
    existing: StoredVersion | None = None  # a conditional create's match, found before processing
    checked: Checked | None = None  # the validated resource of a POST or PUT (prepare_entry)


@dataclass
class EntryResult:
    status: int
    version: StoredVersion | None = None
    body: bytes | None = None  # a non-resource body such as a history Bundle
    location: bool = False
    outcome: dict | None = field(default=None)


class EntryError(FhirError):
    """A transaction entry failed: the whole transaction answers with that entry's status."""

    def __init__(self, entry: Entry, error: FhirError):
        where = f"Bundle.entry[{entry.index}]"
        summary = OutcomeIssue(
            "error", error.issues[0].code, f"{where} ({entry.method} {entry.url}) failed: {error.issues[0].diagnostics}",
            where,
        )
        super().__init__(summary.diagnostics, issues=[summary, *error.issues])
        self.status = error.status


def parse_entries(bundle: object, base: str) -> tuple[str, list[Entry]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidRequest("Only a Bundle may be posted to the base URL", expression="resourceType")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidRequest("Bundle.type must be 'batch' or 'transaction'", expression="Bundle.type")
    raw = bundle.get("entry", [])
    if not isinstance(raw, list):
        raise InvalidRequest("Bundle.entry must be an array", expression="Bundle.entry")
    entries = [_parse_entry(i, e, base) for i, e in enumerate(raw)]
    return kind, entries


def _parse_entry(index: int, raw: object, base: str) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise InvalidRequest(f"{where} needs a request", expression=f"{where}.request")
    request = raw["request"]
    method, url = request.get("method"), request.get("url")
    if method not in _ORDER:
        raise InvalidRequest(f"{where}.request.method is not a supported HTTP verb", expression=f"{where}.request.method")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}.request.url is required", expression=f"{where}.request.url")
    if url.startswith(base + "/"):
        url = url[len(base) + 1 :]
    split = urlsplit(url)
    if split.scheme or split.netloc:
        raise InvalidRequest(f"{where}.request.url must be relative to this server", expression=f"{where}.request.url")
    path = [p for p in split.path.split("/") if p]
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise InvalidRequest(f"{where}.fullUrl must be a string", expression=f"{where}.fullUrl")
    if_match, if_none_exist = request.get("ifMatch"), request.get("ifNoneExist")
    if method in ("PUT", "DELETE") and len(path) == 1 and not split.query:
        raise InvalidRequest(f"{where}: a {method} of a whole type needs search criteria",
                             expression=f"{where}.request.url")
    return Entry(
        index, method, url, path, parse_qs(split.query, keep_blank_values=True), raw.get("resource"), full_url,
        if_match if isinstance(if_match, str) else None,
        if_none_exist if isinstance(if_none_exist, str) else None,
        split.query,
    )


async def perform(rw: ResourceReader, entry: Entry, base: str, principal: Principal) -> EntryResult:
    """One entry's interaction; `rw` is a unit of work for writes, any reader for GET/HEAD.
    Each entry is decided for the principal on its own (smart_auth/access.py)."""
    method, path = entry.method, entry.path
    if method in ("GET", "HEAD"):
        return await _perform_read(rw, entry, base, principal)
    uow: UnitOfWork = rw  # type: ignore[assignment]
    if method in ("POST", "PUT"):
        prepare_entry(entry)
        assert entry.checked is not None
    if method == "POST" and len(path) == 1:
        if entry.existing is not None:
            return EntryResult(200, entry.existing, location=True)
        if entry.if_none_exist is not None:
            version, created = await conditional.create_if_none_exist(
                uow, entry.checked, entry.if_none_exist, id=entry.assigned_id, principal=principal
            )
            return EntryResult(201 if created else 200, version, location=True)
        return EntryResult(201, await crud.create(uow, entry.checked, id=entry.assigned_id, principal=principal),
                           location=True)
    if len(path) == 1 and method in ("PUT", "DELETE"):
        if method == "PUT":
            version, created = await conditional.update_by_criteria(
                uow, entry.checked, entry.query, if_match=parse_if_match(entry.if_match), principal=principal
            )
            return EntryResult(201 if created else 200, version, location=True)
        require_resource_type(path[0])
        await conditional.delete_by_criteria(uow, path[0], entry.query, principal)
        return EntryResult(204)
    if len(path) != 2:
        raise MethodNotAllowed(f"{method} {entry.url} is not an interaction this server offers")
    resource_type, id = path
    if_match = parse_if_match(entry.if_match)
    if method == "PUT":
        version, created = await crud.update(uow, entry.checked, if_match=if_match, principal=principal)
        return EntryResult(201 if created else 200, version, location=True)
    if method == "PATCH":
        operations = _json_patch_from_binary(entry)
        return EntryResult(200, await crud.patch(uow, resource_type, id, operations, if_match=if_match,
                                                 principal=principal), location=True)
    if method == "DELETE":
        await crud.delete(uow, resource_type, id, if_match=if_match, principal=principal)
        return EntryResult(204)
    raise MethodNotAllowed(f"{method} {entry.url} is not an interaction this server offers")


def prepare_entry(entry: Entry) -> None:
    """Validate a POST or PUT entry's resource, once, before any unit of work opens."""
    if entry.checked is not None or entry.method not in ("POST", "PUT"):
        return
    if entry.method == "PUT" and len(entry.path) == 2:
        entry.checked = crud.check_update(entry.path[0], entry.path[1], entry.resource)
    elif len(entry.path) == 1:
        entry.checked = check(entry.resource, entry.path[0])
    else:
        raise MethodNotAllowed(f"{entry.method} {entry.url} is not an interaction this server offers")


async def _perform_read(reader: ResourceReader, entry: Entry, base: str, principal: Principal) -> EntryResult:
    path = entry.path
    if len(path) == 2 and path[1] != "_history":
        return EntryResult(200, await crud.read(reader, path[0], path[1], principal))
    if len(path) == 4 and path[2] == "_history":
        return EntryResult(200, await crud.vread(reader, path[0], path[1], path[3], principal))
    level = {1: ("_history",), 2: (None, "_history"), 3: (None, None, "_history")}.get(len(path))
    if level and all(want is None or want == got for want, got in zip(level, path)):
        resource_type = path[0] if len(path) >= 2 else None
        id = path[1] if len(path) == 3 else None
        request = history_request(entry.params, resource_type=resource_type, id=id)
        page = await history(reader, request, principal)
        return EntryResult(200, body=history_bundle(page, base, [("self", f"{base}/{entry.url}")]))
    if len(path) == 1:
        query = build_query([path[0]], parse_qsl(entry.query, keep_blank_values=True))
        page = await search(reader, query, principal)
        links = [("self", f"{base}/{entry.url}")]
        return EntryResult(200, body=searchset_bundle(query, page, base, links))
    raise MethodNotAllowed(f"GET {entry.url} is not an interaction this server offers")


def _json_patch_from_binary(entry: Entry) -> object:
    """In a Bundle a JSON Patch travels as a Binary (R4 http.html#patch)."""
    resource = entry.resource
    if not (isinstance(resource, dict) and resource.get("resourceType") == "Binary"):
        raise InvalidRequest("A PATCH entry carries its JSON Patch as a Binary resource")
    if resource.get("contentType") != _JSON_PATCH:
        raise InvalidRequest(f"Only {_JSON_PATCH} patches are supported")
    try:
        return orjson.loads(base64.b64decode(resource.get("data", ""), validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise InvalidRequest("The PATCH entry's Binary.data is not base64-encoded JSON") from None


# -- transaction ---------------------------------------------------------------------------


def _assign_ids(entries: list[Entry]) -> dict[str, str]:
    """fullUrl -> 'Type/id' for every entry whose resource the transaction creates or names."""
    mapping: dict[str, str] = {}
    for e in entries:
        if e.method == "POST" and len(e.path) == 1:
            e.assigned_id = crud.new_id()
            if e.full_url:
                mapping[e.full_url] = f"{e.path[0]}/{e.assigned_id}"
        elif e.method == "PUT" and len(e.path) == 2 and e.full_url and e.full_url.startswith("urn:"):
            mapping[e.full_url] = f"{e.path[0]}/{e.path[1]}"
    return mapping


def _rewrite(value: Any, mapping: dict[str, str]) -> Any:
    """Replace every string equal to a mapped fullUrl (references, canonical and uri values)."""
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, list):
        return [_rewrite(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite(v, mapping) for k, v in value.items()}
    return value


def _check_no_duplicates(entries: list[Entry]) -> None:
    """R4 http.html#trules: a transaction must not touch one resource twice."""
    seen: set[tuple[str, str]] = set()
    for e in entries:
        if e.method in ("PUT", "PATCH", "DELETE") and len(e.path) == 2:
            key = (e.path[0], e.path[1])
            if key in seen:
                raise InvalidRequest(
                    f"Bundle.entry[{e.index}] targets {e.path[0]}/{e.path[1]}, which another entry already does",
                    expression=f"Bundle.entry[{e.index}]",
                )
            seen.add(key)


async def run_transaction(
    store: Store, entries: list[Entry], base: str, principal: Principal
) -> list[EntryResult]:
    _check_no_duplicates(entries)
    for e in entries:
        try:
            prepare_entry(e)
        except FhirError as err:
            raise EntryError(e, err) from None
    results: list[EntryResult | None] = [None] * len(entries)
    async with store.unit_of_work() as uow:
        mapping = _assign_ids(entries)
        await _resolve_conditional_creates(uow, entries, mapping, principal)
        await _resolve_conditional_references(uow, entries, mapping, principal)
        if mapping:
            for e in entries:
                # reference strings replaced by reference strings: the resource stays valid
                if e.checked is not None:
                    e.checked = e.checked.with_body(_rewrite(e.checked.body, mapping))
                elif e.resource is not None:
                    e.resource = _rewrite(e.resource, mapping)
        for e in sorted(entries, key=lambda e: (_ORDER[e.method], e.index)):
            try:
                results[e.index] = await perform(uow, e, base, principal)
            except FhirError as err:
                raise EntryError(e, err) from None
    return results  # type: ignore[return-value]


async def _resolve_conditional_creates(
    uow: UnitOfWork, entries: list[Entry], mapping: dict[str, str], principal: Principal
) -> None:
    """A conditional create that finds its resource makes its fullUrl point at that resource,
    so the rest of the bundle refers to what exists (http.html#trules)."""
    for e in entries:
        if e.method == "POST" and e.if_none_exist is not None and len(e.path) == 1:
            try:
                existing = await conditional.existing_match(uow, e.path[0], e.if_none_exist, principal)
            except FhirError as err:
                raise EntryError(e, err) from None
            if existing is not None:
                e.existing = existing
                if e.full_url:
                    mapping[e.full_url] = f"{existing.resource_type}/{existing.id}"


def _conditional_references(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and "?" in ref and "/" not in ref.split("?", 1)[0]:
            found.add(ref)
        for v in value.values():
            _conditional_references(v, found)
    elif isinstance(value, list):
        for v in value:
            _conditional_references(v, found)


async def _resolve_conditional_references(
    uow: UnitOfWork, entries: list[Entry], mapping: dict[str, str], principal: Principal
) -> None:
    """`Patient?identifier=...` references become the one resource they match (http.html#trules);
    none or several matches fail the transaction. The match is searched for as the principal: its
    criteria reach only what it may search."""
    for e in entries:
        found: set[str] = set()
        _conditional_references(e.checked.body if e.checked is not None else e.resource, found)
        for ref in sorted(found - mapping.keys()):
            resource_type, _, criteria = ref.partition("?")
            try:
                matches = await conditional.find(uow, resource_type, criteria, principal)
                if len(matches) != 1:
                    raise PreconditionFailed(
                        f"The conditional reference {resource_type}?... matches {'no' if not matches else 'more than one'} "
                        "resource"
                    )
            except FhirError as err:
                raise EntryError(e, err) from None
            mapping[ref] = f"{matches[0].resource_type}/{matches[0].id}"


async def run_batch(store: Store, entries: list[Entry], base: str, principal: Principal) -> list[EntryResult]:
    results: list[EntryResult] = []
    for e in entries:
        try:
            if e.method in ("GET", "HEAD"):
                results.append(await perform(store, e, base, principal))
            else:
                prepare_entry(e)
                async with store.unit_of_work() as uow:
                    results.append(await perform(uow, e, base, principal))
        except FhirError as err:
            results.append(EntryResult(err.status, outcome=err.outcome()))
    return results


def response_bundle(kind: str, results: list[EntryResult], prefer: Prefer) -> bytes:
    entries = []
    for r in results:
        entry: dict = {}
        if r.version is not None and r.version.body is not None and r.status < 300 and prefer.return_ != RETURN_MINIMAL:
            if prefer.return_ != RETURN_OUTCOME:
                entry["resource"] = embedded(r.version)
        elif r.body is not None:
            entry["resource"] = orjson.Fragment(r.body)
        if r.version is not None:
            response = entry_response(r.version, r.status, with_location=r.location)
        else:
            response = {"status": _status_text(r.status)}
        outcome = r.outcome
        if outcome is None and prefer.return_ == RETURN_OUTCOME and r.status < 300:
            outcome = operation_outcome([OutcomeIssue("information", "informational", "Entry processed")])
        if outcome is not None:
            response["outcome"] = outcome
        entry["response"] = response
        entries.append(entry)
    bundle: dict = {"resourceType": "Bundle", "type": f"{kind}-response"}
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
