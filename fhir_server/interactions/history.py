"""The history interaction at instance, type and system level (R4 http.html#history)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Mapping, Sequence

from ..errors import InvalidRequest
from ..storage import HistoryPage, HistoryQuery, ResourceReader
from .validation import require_resource_type

DEFAULT_COUNT = 50
MAX_COUNT = 1000
CURSOR_PARAM = "_cursor"  # opaque to clients: the seq of the first change on the page

_INSTANT = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    query: HistoryQuery
    since_text: str | None


def parse_instant(value: str, name: str) -> datetime:
    """A `_since` value: a FHIR instant, also accepting a date or dateTime (its start, in UTC)."""
    m = _INSTANT.fullmatch(value.strip())
    if not m:
        raise InvalidRequest(f"Parameter {name}: '{value}' is not a valid instant", expression=name)
    g = m.groupdict()
    try:
        moment = datetime(
            int(g["y"]), int(g["m"] or 1), int(g["d"] or 1), int(g["H"] or 0), int(g["M"] or 0), int(g["S"] or 0),
            int(float(g["f"]) * 1_000_000) if g["f"] else 0,
        )
        tz = g["tz"]
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            offset = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
            return moment.replace(tzinfo=offset).astimezone(timezone.utc)
        return moment.replace(tzinfo=timezone.utc)
    except ValueError:
        raise InvalidRequest(f"Parameter {name}: '{value}' is not a valid instant", expression=name) from None


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
    cursor = _single(params, CURSOR_PARAM)
    if cursor is not None and not cursor.isdigit():
        raise InvalidRequest(f"Parameter {CURSOR_PARAM} is not a page cursor this server issued")
    query = HistoryQuery(
        resource_type=resource_type,
        id=id,
        since=since,
        at_or_before_seq=int(cursor) if cursor is not None else None,
        count=parse_count(_single(params, "_count")),
    )
    return HistoryRequest(query, since_text)


async def history(reader: ResourceReader, request: HistoryRequest) -> HistoryPage:
    return await reader.history(request.query)
