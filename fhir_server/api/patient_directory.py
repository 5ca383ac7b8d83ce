"""The patients the authorization server's pages may show (the clinician's patient picker, the
"records of" line on the consent page), read from the FHIR store. Names only leave the server in
those pages, to a signed-in user; they are never logged."""

from __future__ import annotations

import re

import orjson

from ..search.parse import parse_search
from ..storage import Store
from ..validation.resource_types import resource_types

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def _display(resource: dict) -> str:
    kind = resource.get("resourceType", "")
    for name in resource.get("name") or []:
        if isinstance(name, dict):
            text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
            if text:
                return text
    if kind == "Encounter":
        return f"Encounter of {resource.get('period', {}).get('start', 'unknown date')}"
    return f"{kind}/{resource.get('id', '')}"


class StorePatientDirectory:
    def __init__(self, store: Store):
        self.store = store

    async def patients(self, limit: int) -> list[tuple[str, str]]:
        query = parse_search(["Patient"], [("_sort", "family"), ("_count", str(limit))])
        page = await self.store.search(query)
        found = [(v.id, _display(orjson.loads(v.body))) for v in page.matches if v.body]
        return found

    async def display(self, reference: str) -> str | None:
        kind, _, id = reference.partition("/")
        if kind not in resource_types() or not _ID.match(id):
            return None
        version = await self.store.read(kind, id)
        if version is None or version.body is None:
            return None
        return _display(orjson.loads(version.body))
