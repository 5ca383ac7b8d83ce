"""Reading resources as JSON inside a unit of work (or from the store), by literal reference or by
search: what the visit's hooks, `$submit` and the consult-note composer all need, in one place.

`reference_of` takes a Reference element's `reference` as written; `read_stored` and
`read_resource` only follow relative literal references (`Type/id`), anything else reads nothing.
"""

from __future__ import annotations

import orjson

from ..search.parse import parse_search
from ..storage import ResourceReader, StoredVersion

__all__ = ["reference_of", "relative_reference_of", "read_stored", "read_resource", "search_resources"]


def reference_of(value: object) -> str | None:
    """The `reference` of a Reference element, or None."""
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else None


def relative_reference_of(value: object) -> str | None:
    """The `reference` of a Reference element when it is a relative literal `Type/id`, else None."""
    ref = reference_of(value)
    return ref if ref is not None and ref.count("/") == 1 else None


async def read_stored(reader: ResourceReader, reference: str | None) -> StoredVersion | None:
    """The current version of `Type/id`; None when it is not such a reference, unknown or deleted."""
    if not reference or reference.count("/") != 1:
        return None
    found = await reader.read(*reference.split("/"))
    return found if found is not None and found.body is not None else None


async def read_resource(reader: ResourceReader, reference: str | None) -> dict | None:
    found = await read_stored(reader, reference)
    return orjson.loads(found.body) if found is not None else None


async def search_resources(reader: ResourceReader, resource_type: str, params: list[tuple[str, str]],
                           count: int = 100) -> list[dict]:
    """The first `count` matches of a search, as JSON."""
    page = await reader.search(parse_search([resource_type], [*params, ("_count", str(count))]))
    return [orjson.loads(v.body) for v in page.matches if v.body is not None]
