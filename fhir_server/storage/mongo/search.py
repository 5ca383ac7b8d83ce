"""Running a search on MongoDB: the page, its total, and _include/_revinclude (storage/sqlite/search.py's twin).

Round trips per search: one per chain link or _has (a batched `$in` of ids), one aggregation for
the page, one count when a total is asked for, and one query per _include / _revinclude parameter
and iteration round (the included resources are fetched by `$in` on their keys, never one by one).
"""

from __future__ import annotations

from typing import Any

from ...search.query import Include, SearchQuery
from ..base import SearchPage, StoredVersion
from ..paging import counts_total, free_total, page_cursors, reads_backwards
from .documents import VERSION_FIELDS, from_current, resource_key
from .translate import match_filter, page_pipeline

MAX_INCLUDED = 1000  # included resources per page; iterate stops there
MAX_ITERATIONS = 4  # rounds of _include:iterate / _revinclude:iterate
_WITH_REFERENCES = {**VERSION_FIELDS, "i_ref": 1}


class _Resolver:
    """Answers the translator's sub-queries (chains, _has) on the same collection and session."""

    def __init__(self, resources, session):
        self._resources = resources
        self._session = session

    async def ids(self, match: dict) -> list[str]:
        docs = await self._resources.find(match, {"_id": 0, "id": 1}, session=self._session).to_list()
        return [d["id"] for d in docs]

    async def referenced_ids(self, match: dict, code: str, target_type: str) -> list[str]:
        cursor = await self._resources.aggregate([
            {"$match": match},
            {"$project": {"_id": 0, "i_ref": 1}},
            {"$unwind": "$i_ref"},
            {"$match": {"i_ref.p": code, "i_ref.tt": target_type}},
            {"$group": {"_id": "$i_ref.ti"}},
        ], session=self._session)
        return sorted(d["_id"] for d in await cursor.to_list() if d["_id"] is not None)


def _plain(value: Any) -> Any:
    """bson's Int64 as a plain int, so cursor positions are the JSON-friendly values SQLite's are."""
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else value


async def search(resources, q: SearchQuery, session=None) -> SearchPage:
    if not q.resource_types:
        return SearchPage([], [], 0, None, None)
    match = await match_filter(q.resource_types, q.filters, _Resolver(resources, session))
    backwards = reads_backwards(q)
    wants_includes = bool(q.includes or q.revincludes)
    docs: list[dict] = []
    fields: list[str] = []
    if q.count > 0:
        pipeline, fields = page_pipeline(match, q.sort, q.count, q.cursor, with_references=wants_includes)
        docs = await (await resources.aggregate(pipeline, session=session)).to_list()
    more = len(docs) > q.count
    docs = docs[: q.count]
    if backwards:
        docs.reverse()
    positions = [[_plain(d.get(f)) for f in fields] + [_plain(d["rid"])] for d in docs]
    matches = [from_current(d) for d in docs]

    next_cursor, previous_cursor = page_cursors(q, positions, more)

    total: int | None = None
    if counts_total(q):
        total = await resources.count_documents(match, session=session)
    else:
        total = free_total(q, more, len(matches))

    included = await _included(resources, q, docs, session) if wants_includes and docs else []
    return SearchPage(matches, included, total, next_cursor, previous_cursor)


async def _included(resources, q: SearchQuery, docs: list[dict], session) -> list[StoredVersion]:
    seen: set[str] = {d["_id"] for d in docs}
    frontier = sorted(docs, key=lambda d: d["rid"])
    found: list[StoredVersion] = []
    for round_ in range(MAX_ITERATIONS):
        includes = [i for i in q.includes if round_ == 0 or i.iterate]
        revincludes = [i for i in q.revincludes if round_ == 0 or i.iterate]
        if not (includes or revincludes) or not frontier:
            break
        fresh: list[dict] = []
        for include in includes:
            fresh += await _include(resources, include, frontier, seen, found, session)
        for include in revincludes:
            fresh += await _revinclude(resources, include, frontier, seen, found, session)
        frontier = fresh
        if len(found) >= MAX_INCLUDED:
            break
    return found[:MAX_INCLUDED]


def _collect(docs: list[dict], seen: set[str], found: list[StoredVersion]) -> list[dict]:
    fresh = []
    for doc in docs:
        if doc["_id"] in seen:
            continue
        seen.add(doc["_id"])
        found.append(from_current(doc))
        fresh.append(doc)
    return fresh


async def _include(resources, include: Include, frontier: list[dict], seen, found, session) -> list[dict]:
    """_include=Source:param[:Target]: what the frontier's references point at (read from the
    frontier documents' own index arrays, then fetched in one query)."""
    keys: dict[str, None] = {}  # ordered set: by source rid, then by reference order
    by_type: dict[str, list[str]] = {}
    for doc in frontier:
        if include.source_type not in ("*", doc["type"]):
            continue
        for ref in doc.get("i_ref") or ():
            target_type, target_id = ref.get("tt"), ref.get("ti")
            if target_type is None or target_id is None:
                continue
            if include.code != "*" and ref.get("p") != include.code:
                continue
            if include.target_type and target_type != include.target_type:
                continue
            key = resource_key(target_type, target_id)
            if key not in keys:
                keys[key] = None
                by_type.setdefault(target_type, []).append(target_id)
    if not keys:
        return []
    match = {"deleted": False, **_any_of_types(by_type)}
    docs = await resources.find(match, _WITH_REFERENCES, session=session).to_list()
    position = {key: n for n, key in enumerate(keys)}
    docs.sort(key=lambda d: position[d["_id"]])
    return _collect(docs, seen, found)


async def _revinclude(resources, include: Include, frontier: list[dict], seen, found, session) -> list[dict]:
    """_revinclude=Source:param[:Target]: resources of Source whose reference points into the frontier."""
    by_type: dict[str, list[str]] = {}
    for doc in frontier:
        if include.target_type in (None, doc["type"]):
            by_type.setdefault(doc["type"], []).append(doc["id"])
    if not by_type:
        return []
    targets = [{"tt": t, "ti": {"$in": ids}} for t, ids in by_type.items()]
    element: dict = targets[0] if len(targets) == 1 else {"$or": targets}
    if include.code != "*":
        element = {"p": include.code, **element}
    match: dict = {"deleted": False, "i_ref": {"$elemMatch": element}}
    if include.source_type != "*":
        match["type"] = include.source_type
    docs = await resources.find(match, _WITH_REFERENCES, session=session).sort([("rid", 1)]).to_list()
    return _collect(docs, seen, found)


def _any_of_types(by_type: dict[str, list[str]]) -> dict:
    clauses = [{"type": t, "id": {"$in": ids}} for t, ids in by_type.items()]
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}
