"""HTTP preconditions on FHIR interactions: If-Match (R4 http.html#concurrency)."""

from __future__ import annotations

import re

from ..errors import InvalidRequest

_ETAG = re.compile(r'\s*(?:W/)?"?([0-9]+)"?\s*')


def parse_if_match(header: str | None) -> int | None:
    """The version an If-Match header names (W/"3" or "3"), or None without the header."""
    if header is None or header.strip() == "":
        return None
    m = _ETAG.fullmatch(header)
    if not m:
        raise InvalidRequest('If-Match must be a version ETag such as W/"3"')
    return int(m.group(1))
