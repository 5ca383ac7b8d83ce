"""Running a search on a SQLite connection: the page, its total, and _include/_revinclude."""

from __future__ import annotations

import sqlite3

from ...search.query import Include, SearchQuery
from ..base import SearchPage, StoredVersion
from ..paging import counts_total, free_total, page_cursors, reads_backwards
from .queries import row_to_version
from .search_sql import count_query, page_query

MAX_INCLUDED = 1000  # included resources per page; iterate stops there
MAX_ITERATIONS = 4  # rounds of _include:iterate / _revinclude:iterate


def search(conn: sqlite3.Connection, q: SearchQuery) -> SearchPage:
    if not q.resource_types:
        return SearchPage([], [], 0, None, None)
    backwards = reads_backwards(q)
    sql, n_sort = page_query(q.resource_types, q.filters, q.sort, q.count, q.cursor)
    rows = conn.execute(sql.text, sql.args).fetchall() if q.count > 0 else []
    more = len(rows) > q.count
    rows = rows[: q.count]
    if backwards:
        rows.reverse()
    positions = [[*row[1 : 1 + n_sort], row[0]] for row in rows]
    matches = [row_to_version(row[1 + n_sort :]) for row in rows]
    rids = [row[0] for row in rows]

    next_cursor, previous_cursor = page_cursors(q, positions, more)

    total: int | None = None
    if counts_total(q):
        c = count_query(q.resource_types, q.filters)
        total = conn.execute(c.text, c.args).fetchone()[0]
    else:
        total = free_total(q, more, len(matches))

    included = _included(conn, q, matches, rids) if (q.includes or q.revincludes) and matches else []
    return SearchPage(matches, included, total, next_cursor, previous_cursor)


_VERSION_OF = ("SELECT r.rid, v.seq, v.type, v.id, v.version, v.last_updated, v.method, v.body "
               "FROM resources r JOIN resource_versions v ON v.seq = r.seq ")


def _included(conn: sqlite3.Connection, q: SearchQuery, matches: list[StoredVersion], rids: list[int]) -> list[StoredVersion]:
    seen: set[int] = set(rids)
    frontier: list[tuple[int, str, str]] = [(rid, m.resource_type, m.id) for rid, m in zip(rids, matches)]
    found: list[StoredVersion] = []
    for round_ in range(MAX_ITERATIONS):
        includes = [i for i in q.includes if round_ == 0 or i.iterate]
        revincludes = [i for i in q.revincludes if round_ == 0 or i.iterate]
        if not (includes or revincludes) or not frontier:
            break
        fresh: list[tuple[int, str, str]] = []
        for include in includes:
            fresh += _collect(conn, _include_sql(include, frontier), seen, found)
        for include in revincludes:
            fresh += _collect(conn, _revinclude_sql(include, frontier), seen, found)
        frontier = fresh
        if len(found) >= MAX_INCLUDED:
            break
    return found[:MAX_INCLUDED]


def _collect(conn, sql: tuple[str, list] | None, seen: set[int], found: list[StoredVersion]) -> list[tuple[int, str, str]]:
    if sql is None:
        return []
    fresh = []
    for row in conn.execute(*sql):
        if row[0] in seen:
            continue
        seen.add(row[0])
        version = row_to_version(row[1:])
        found.append(version)
        fresh.append((row[0], version.resource_type, version.id))
    return fresh


def _include_sql(include: Include, frontier: list[tuple[int, str, str]]) -> tuple[str, list] | None:
    """_include=Source:param[:Target]: what the frontier's references point at."""
    sources = [rid for rid, t, _ in frontier if include.source_type in ("*", t)]
    if not sources:
        return None
    text = (_VERSION_OF + "JOIN idx_reference ref ON r.type = ref.target_type AND r.id = ref.target_id "
            f"WHERE ref.rid IN ({', '.join('?' * len(sources))}) AND r.deleted = 0")
    args: list = list(sources)
    if include.code != "*":
        text += " AND ref.param = ?"
        args.append(include.code)
    if include.target_type:
        text += " AND r.type = ?"
        args.append(include.target_type)
    return text, args


def _revinclude_sql(include: Include, frontier: list[tuple[int, str, str]]) -> tuple[str, list] | None:
    """_revinclude=Source:param[:Target]: resources of Source whose reference points into the frontier."""
    by_type: dict[str, list[str]] = {}
    for _, t, id in frontier:
        if include.target_type in (None, t):
            by_type.setdefault(t, []).append(id)
    if not by_type:
        return None
    groups = " OR ".join(
        f"(ref.target_type = ? AND ref.target_id IN ({', '.join('?' * len(ids))}))" for ids in by_type.values()
    )
    text = _VERSION_OF + f"JOIN idx_reference ref ON ref.rid = r.rid WHERE r.deleted = 0 AND ({groups})"
    args: list = [x for t, ids in by_type.items() for x in (t, *ids)]
    if include.source_type != "*":
        text += " AND ref.type = ?"
        args.append(include.source_type)
    if include.code != "*":
        text += " AND ref.param = ?"
        args.append(include.code)
    return text, args
