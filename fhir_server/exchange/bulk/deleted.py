"""Resources deleted since `_since` (Bulk Data 2.0 export.md, manifest `deleted`): found in the
store's history (deletion markers, HistoryQuery), each reported as one NDJSON line holding a
transaction Bundle with one `DELETE Type/id` entry.

A resource counts as deleted when its newest version in (`_since`, transactionTime] is a deletion
marker (deleted and created again before transactionTime: it is in the output instead). What may
be reported is what the export could have shown before the deletion, judged on the last live
version's body (vread of the version before the marker):
- the token's system/ scopes, v2 restrictions included (smart_auth.access.matches);
- Patient and Group level: only resources of the patients' compartments (the runner's level
  filters, evaluated on that body), so no other patient's resource ids are revealed;
- the type's `_typeFilter` queries, when they can be judged on a body (token, reference, string,
  uri and _id parameters); a deletion a filter cannot judge (a date, a chain) is reported anyway:
  telling a client to delete what it may not have is harmless, leaving one behind is not.
"""

from __future__ import annotations

from datetime import datetime
from typing import AsyncIterator
from urllib.parse import parse_qsl

import orjson

from smart_auth.access import SEARCH, allowed, matches
from smart_auth.principal import Principal

from ...search.parse import parse_search
from ...search.query import AllFilter, AnyFilter, Filter, ParamFilter, ReferenceValue, StringValue, TokenValue
from ...search.query import TypeFilter, UriValue
from ...storage.base import HistoryQuery, ResourceReader
from .jobs import ExportRequest

HISTORY_PAGE = 1000


def bundle_line(resource_type: str, id: str) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                         "entry": [{"request": {"method": "DELETE", "url": f"{resource_type}/{id}"}}]})


def _judgeable(f: Filter) -> bool:
    """Whether smart_auth.access.matches can decide `f` on a body alone."""
    if isinstance(f, (AnyFilter, AllFilter)):
        return all(_judgeable(g) for g in f.filters)
    if isinstance(f, TypeFilter):
        return True
    if isinstance(f, ParamFilter):
        return f.missing is not None or all(isinstance(v, (TokenValue, ReferenceValue, StringValue, UriValue))
                                            for v in f.values)
    return False


def _type_filter(request: ExportRequest, resource_type: str) -> Filter | None:
    queries = request.type_filters.get(resource_type) or []
    if not queries:
        return None
    alternatives = [AllFilter(parse_search([resource_type], parse_qsl(q, keep_blank_values=True), strict=True).filters)
                    for q in queries]
    combined = AnyFilter(tuple(alternatives))
    return combined if _judgeable(combined) else None


async def deleted_ids(
    reader: ResourceReader, request: ExportRequest, resource_type: str, principal: Principal,
    level: list[tuple[Filter, ...]], since: datetime, cutoff: datetime,
) -> AsyncIterator[str]:
    """The ids of `resource_type` deleted in (since, cutoff] that this export may report, newest first."""
    if not level:
        return  # a type outside the patient compartment at Patient/Group level
    rule = None if principal.unrestricted else allowed(principal, resource_type, SEARCH)
    if not principal.unrestricted and rule is None:
        return
    scope_filter = rule.filter if rule is not None else None
    level_filter: Filter | None = None
    if level != [()]:
        level_filter = AnyFilter(tuple(AllFilter(tuple(f)) for f in level))
    chosen = _type_filter(request, resource_type)
    needs_body = scope_filter is not None or level_filter is not None or chosen is not None
    decided: set[str] = set()
    position: int | None = None
    while True:
        page = await reader.history(HistoryQuery(resource_type=resource_type, since=since,
                                                 at_or_before_seq=position, count=HISTORY_PAGE))
        for v in page.versions:
            if v.last_updated <= since or v.last_updated > cutoff or v.id in decided:
                continue  # _since is strictly after; after transactionTime belongs to the next export
            decided.add(v.id)
            if not v.deleted:
                continue
            if needs_body:
                before = await reader.vread(resource_type, v.id, v.version - 1)
                if before is None or before.body is None:
                    continue  # nothing to judge it by: not reported
                body = orjson.loads(before.body)
                if any(f is not None and not matches(f, body) for f in (scope_filter, level_filter, chosen)):
                    continue
            yield v.id
        if page.next_seq is None:
            return
        position = page.next_seq
