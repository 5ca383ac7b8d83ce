"""The search interactions (R4 http.html#search, search.html): type, system and compartment
search, and the searchset Bundle they answer with."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import replace
from typing import Sequence

import orjson

from smart_auth.access import narrow_search
from smart_auth.principal import Principal

from ..errors import InvalidRequest, OutcomeIssue, operation_outcome
from ..search.parse import CURSOR, compartment_filter, parse_search
from ..search.query import Filter, SearchQuery
from ..search.summary import subset
from ..storage import ResourceReader, SearchPage, StoredVersion
from .guard import visible
from .rendering import embedded, relative_url
from .validation import require_resource_type


def encode_cursor(cursor: tuple) -> str:
    # The stdlib encoder, not orjson: a sort value can be +/-inf (an open-ended Range), which
    # orjson writes as null; json writes Infinity and reads it back.
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple:
    try:
        direction, position = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, TypeError):
        raise InvalidRequest(f"Parameter {CURSOR} is not a page cursor this server issued", expression=CURSOR) from None
    if direction not in ("after", "before") or not isinstance(position, list):
        raise InvalidRequest(f"Parameter {CURSOR} is not a page cursor this server issued", expression=CURSOR)
    return direction, position


def build_query(
    resource_types: Sequence[str],
    params: Sequence[tuple[str, str]],
    *,
    strict: bool = False,
    extra_filters: Sequence[Filter] = (),
) -> SearchQuery:
    for t in resource_types:
        require_resource_type(t)
    query = parse_search(resource_types, params, strict=strict, extra_filters=extra_filters)
    cursors = [v for k, v in params if k == CURSOR]
    if cursors:
        query = replace(query, cursor=decode_cursor(cursors[-1]))
    return query


async def search(reader: ResourceReader, query: SearchQuery, principal: Principal) -> SearchPage:
    """One page of results, confined to what the principal may search (smart_auth/access.py:
    the types, the patient compartment, v2 scope restrictions, and every chain and _has link);
    included resources it may not see are left out."""
    if principal.unrestricted:
        return await reader.search(query)
    page = await reader.search(narrow_search(principal, query))
    if page.included:
        page = replace(page, included=await visible(reader, principal, page.included))
    return page


def compartment_query(
    compartment_type: str, compartment_id: str, resource_type: str, params: Sequence[tuple[str, str]], *, strict: bool
) -> SearchQuery:
    """GET /Patient/{id}/{type}: a type search narrowed to the patient's compartment."""
    require_resource_type(resource_type)
    membership = compartment_filter(compartment_type, compartment_id, resource_type)
    return build_query([resource_type], params, strict=strict, extra_filters=[membership])


def _entry(version: StoredVersion, base: str, mode: str, query: SearchQuery) -> dict:
    if query.summary in (None, "false") and not query.elements:
        resource: object = embedded(version)
    else:
        resource = subset(orjson.loads(version.body), query.summary, query.elements)
    return {"fullUrl": f"{base}/{relative_url(version)}", "resource": resource, "search": {"mode": mode}}


def searchset_bundle(query: SearchQuery, page: SearchPage, base: str, links: list[tuple[str, str]]) -> bytes:
    bundle: dict = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = [{"relation": rel, "url": url} for rel, url in links]
    entries: list[dict] = []
    if query.summary != "count":
        entries += [_entry(v, base, "match", query) for v in page.matches]
        entries += [_entry(v, base, "include", query) for v in page.included]
    if query.unknown:
        outcome = operation_outcome(
            [OutcomeIssue("warning", "not-supported", f"Unknown search parameter '{name}' was ignored", name)
             for name in query.unknown]
        )
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)
