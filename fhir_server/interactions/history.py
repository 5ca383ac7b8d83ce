"""The history interaction at instance, type and system level (R4 http.html#history)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence

from smart_auth.access import READ, SEARCH, allowed, decide
from smart_auth.principal import Principal

from ..errors import Forbidden, InvalidRequest, NotFound
from ..search.parse import CURSOR  # one paging parameter for history and search
from ..search.values.dates import date_range
from ..storage import HistoryPage, HistoryQuery, ResourceReader
from .guard import visible
from ..validation.resource_types import resource_types
from .validation import require_resource_type

DEFAULT_COUNT = 50
MAX_COUNT = 1000


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    query: HistoryQuery
    since_text: str | None


def parse_instant(value: str, name: str) -> datetime:
    """A `_since` value: a FHIR instant, also accepting a date or dateTime (its start, in UTC)."""
    bounds = date_range(value.strip())
    if bounds is None:
        raise InvalidRequest(f"Parameter {name}: '{value}' is not a valid instant", expression=name)
    return datetime.fromtimestamp(bounds[0] / 1000, tz=timezone.utc)


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise InvalidRequest(f"Parameter {name} may appear only once", expression=name)
    return values[0] if values else None


def parse_count(value: str | None) -> int:
    if value is None:
        return DEFAULT_COUNT
    if not value.isdigit():
        raise InvalidRequest("Parameter _count must be a non-negative integer", expression="_count")
    return max(1, min(int(value), MAX_COUNT))


def history_request(
    params: Mapping[str, Sequence[str]], *, resource_type: str | None = None, id: str | None = None
) -> HistoryRequest:
    if resource_type is not None:
        require_resource_type(resource_type)
    since_text = _single(params, "_since")
    since = parse_instant(since_text, "_since") if since_text is not None else None
    cursor = _single(params, CURSOR)
    if cursor is not None and not cursor.isdigit():
        raise InvalidRequest(f"Parameter {CURSOR} is not a page cursor this server issued")
    query = HistoryQuery(
        resource_type=resource_type,
        id=id,
        since=since,
        at_or_before_seq=int(cursor) if cursor is not None else None,
        count=parse_count(_single(params, "_count")),
        # the audit trail grows with every access: system history is the record's changes, and
        # AuditEvents have their own type-level history and search (fhir_server/audit/)
        exclude_types=("AuditEvent",) if resource_type is None else (),
    )
    return HistoryRequest(query, since_text)


async def history(reader: ResourceReader, request: HistoryRequest, principal: Principal) -> HistoryPage:
    """One page of history. For a restricted principal, instance history needs `r` on the type
    and type or system history `s`; versions it may not see are left out of the page (a
    deletion is judged by the version it deleted), and the total is given only when it is exact."""
    query = request.query
    if principal.unrestricted:
        return await reader.history(query)
    permission = READ if query.id is not None else SEARCH
    if query.resource_type is not None:
        whole = decide(principal, query.resource_type, permission).everything
    else:
        rules = [allowed(principal, t, SEARCH) for t in sorted(resource_types())]
        whole = all(r is not None and r.everything for r in rules)
        if not any(r is not None for r in rules):
            raise Forbidden("The access token grants no scope to search any resource type")
    page = await reader.history(query)
    if whole:
        return page
    kept = await visible(reader, principal, page.versions, (permission,))
    if query.id is not None and page.versions and not kept:
        raise NotFound(f"Resource {query.resource_type}/{query.id} is not known")
    exact = page.next_seq is None and query.at_or_before_seq is None
    return HistoryPage(kept, len(kept) if exact else None, page.next_seq)  # type: ignore[arg-type]
