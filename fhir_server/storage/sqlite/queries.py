"""The SQL of the embedded store, as plain functions of a connection (run on the store's threads)."""

from __future__ import annotations

import sqlite3

from ..base import HistoryPage, HistoryQuery, StoredVersion
from ..serialization import from_epoch_ms, to_epoch_ms

_VERSION_COLUMNS = "seq, type, id, version, last_updated, method, body"
_CURRENT_COLUMNS = "v.seq, v.type, v.id, v.version, v.last_updated, v.method, v.body"


def row_to_version(row: tuple) -> StoredVersion:
    seq, type_, id_, version, updated, method, body = row
    return StoredVersion(type_, id_, version, from_epoch_ms(updated), method, body, seq)


def read_current(conn: sqlite3.Connection, resource_type: str, id: str) -> StoredVersion | None:
    row = conn.execute(
        f"SELECT {_CURRENT_COLUMNS} "
        "FROM resources r JOIN resource_versions v ON v.seq = r.seq WHERE r.type = ? AND r.id = ?",
        (resource_type, id),
    ).fetchone()
    return row_to_version(row) if row else None


def read_version(conn: sqlite3.Connection, resource_type: str, id: str, version: int) -> StoredVersion | None:
    row = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM resource_versions WHERE type = ? AND id = ? AND version = ?",
        (resource_type, id, version),
    ).fetchone()
    return row_to_version(row) if row else None


def latest_of_type(conn: sqlite3.Connection, resource_type: str) -> StoredVersion | None:
    """The version of any resource of this type written last (index resource_versions_type_seq)."""
    row = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM resource_versions WHERE type = ? ORDER BY seq DESC LIMIT 1", (resource_type,)
    ).fetchone()
    return row_to_version(row) if row else None


def purge_before(conn: sqlite3.Connection, resource_type: str, before_ms: int, limit: int) -> int:
    """Remove up to `limit` resources of a type whose current version is older than `before_ms`:
    every version, the resource row and its index rows. Returns the versions removed."""
    rids = [r for (r,) in conn.execute(
        "SELECT rid FROM resources WHERE type = ? AND last_updated < ? LIMIT ?", (resource_type, before_ms, limit))]
    if not rids:
        return 0
    marks = ", ".join("?" * len(rids))
    for table in ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_number", "idx_quantity", "idx_uri"):
        conn.execute(f"DELETE FROM {table} WHERE rid IN ({marks})", rids)
    ids = [i for (i,) in conn.execute(f"SELECT id FROM resources WHERE rid IN ({marks})", rids)]
    conn.execute(f"DELETE FROM resources WHERE rid IN ({marks})", rids)
    removed = 0
    for id in ids:
        removed += conn.execute("DELETE FROM resource_versions WHERE type = ? AND id = ?", (resource_type, id)).rowcount
    return removed


def current_state(conn: sqlite3.Connection, resource_type: str, id: str) -> tuple[int | None, bool]:
    """(current version or None if never written, whether that version is a deletion)."""
    row = conn.execute(
        "SELECT version, deleted FROM resources WHERE type = ? AND id = ?", (resource_type, id)
    ).fetchone()
    return (row[0], bool(row[1])) if row else (None, False)


def insert_version(conn: sqlite3.Connection, v: StoredVersion) -> tuple[int, int]:
    """Append a version and point the resource at it; returns (seq, the resource's rid)."""
    cur = conn.execute(
        "INSERT INTO resource_versions (type, id, version, last_updated, method, body) VALUES (?, ?, ?, ?, ?, ?)",
        (v.resource_type, v.id, v.version, to_epoch_ms(v.last_updated), v.method, v.body),
    )
    seq = cur.lastrowid
    rid = conn.execute(
        "INSERT INTO resources (type, id, version, seq, last_updated, deleted) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (type, id) DO UPDATE SET version = excluded.version, seq = excluded.seq, "
        "last_updated = excluded.last_updated, deleted = excluded.deleted RETURNING rid",
        (v.resource_type, v.id, v.version, seq, to_epoch_ms(v.last_updated), int(v.body is None)),
    ).fetchone()[0]
    return seq, rid


def history(conn: sqlite3.Connection, q: HistoryQuery) -> HistoryPage:
    where: list[str] = []
    args: list[object] = []
    if q.resource_type is not None:
        where.append("type = ?")
        args.append(q.resource_type)
    if q.id is not None:
        where.append("id = ?")
        args.append(q.id)
    if q.since is not None:
        where.append("last_updated >= ?")
        args.append(to_epoch_ms(q.since))
    if q.exclude_types:
        where.append(f"type NOT IN ({', '.join('?' * len(q.exclude_types))})")
        args.extend(q.exclude_types)
    total = conn.execute(
        f"SELECT count(*) FROM resource_versions {'WHERE ' + ' AND '.join(where) if where else ''}", args
    ).fetchone()[0]
    if q.at_or_before_seq is not None:
        where.append("seq <= ?")
        args.append(q.at_or_before_seq)
    rows = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM resource_versions {'WHERE ' + ' AND '.join(where) if where else ''} "
        "ORDER BY seq DESC LIMIT ?",
        [*args, q.count + 1],
    ).fetchall()
    versions = [row_to_version(r) for r in rows[: q.count]]
    next_seq = rows[q.count][0] if len(rows) > q.count else None
    return HistoryPage(versions, total, next_seq)
