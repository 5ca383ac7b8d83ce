"""The outbox table's SQL (schema.sql): functions of a connection, run by the store on its writer
thread (enqueue inside a unit of work's transaction; claims and state changes in short writer
transactions of their own) or on a reader thread (listing).

Every state change after a claim is one conditional UPDATE naming the lease (`lease_token`), so a
worker whose lease expired and was taken over changes nothing. Claims run inside BEGIN IMMEDIATE,
which SQLite serialises across every connection and process (--workers): two claims never see
the same job as due.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Collection

import orjson

from ..base import DEAD, DONE, LEASED, MAX_ERROR_CHARS, PENDING, OutboxJob
from ..serialization import from_epoch_ms

_COLUMNS = ("id, kind, key, payload, state, attempts, available_at, leased_until, last_error, "
            "created_at, updated_at, lease_token")


def _job(row: tuple) -> OutboxJob:
    (id, kind, key, payload, state, attempts, available_at, leased_until, last_error,
     created_at, updated_at, lease_token) = row
    return OutboxJob(
        id=id, kind=kind, key=key, payload=orjson.loads(payload), state=state, attempts=attempts,
        available_at=from_epoch_ms(available_at),
        leased_until=from_epoch_ms(leased_until) if leased_until is not None else None,
        last_error=last_error, created_at=from_epoch_ms(created_at), updated_at=from_epoch_ms(updated_at),
        lease_token=lease_token,
    )


def short_error(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"


def _by_kind_key(conn: sqlite3.Connection, kind: str, key: str) -> OutboxJob | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE kind = ? AND key = ?", (kind, key)).fetchone()
    return _job(row) if row else None


def get(conn: sqlite3.Connection, job_id: str) -> OutboxJob | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (job_id,)).fetchone()
    return _job(row) if row else None


def enqueue(conn: sqlite3.Connection, kind: str, key: str, payload: dict, available_at: int, now: int) -> OutboxJob:
    """Insert a pending job unless (kind, key) is taken; the job under that key either way.
    Runs in the caller's transaction (the unit of work's)."""
    conn.execute(
        "INSERT INTO outbox (id, kind, key, payload, state, attempts, available_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (kind, key) DO NOTHING",
        (uuid.uuid4().hex, kind, key, orjson.dumps(payload), PENDING, available_at, now, now),
    )
    job = _by_kind_key(conn, kind, key)
    assert job is not None
    return job


def claim(conn: sqlite3.Connection, kinds: Collection[str], limit: int, lease_ms: int, now: int) -> list[OutboxJob]:
    """Lease up to `limit` due jobs; the caller holds a write transaction (BEGIN IMMEDIATE)."""
    kinds = list(kinds)
    marks = ", ".join("?" * len(kinds))
    # Each branch stops at `limit` (pending ones walk outbox_due in due order; leased ones are few:
    # at most the workers' concurrency); the merge keeps the earliest due.
    rows = conn.execute(
        f"SELECT seq FROM ("
        f"SELECT seq, available_at AS due FROM (SELECT seq, available_at FROM outbox "
        f"WHERE state = 'pending' AND available_at <= ? AND kind IN ({marks}) ORDER BY available_at, seq LIMIT ?) "
        f"UNION ALL "
        f"SELECT seq, leased_until AS due FROM (SELECT seq, leased_until FROM outbox "
        f"WHERE state = 'leased' AND leased_until <= ? AND kind IN ({marks}) ORDER BY leased_until LIMIT ?)"
        f") ORDER BY due, seq LIMIT ?",
        (now, *kinds, limit, now, *kinds, limit, limit),
    ).fetchall()
    return _lease(conn, [seq for (seq,) in rows], lease_ms, now)


def _lease(conn: sqlite3.Connection, seqs: list[int], lease_ms: int, now: int) -> list[OutboxJob]:
    """Lease these jobs (a new token each, one more attempt) and return them as they now are."""
    claimed = []
    for seq in seqs:
        conn.execute(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, leased_until = ?, lease_token = ?, "
            "updated_at = ? WHERE seq = ?",
            (LEASED, now + lease_ms, uuid.uuid4().hex, now, seq),
        )
        row = conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE seq = ?", (seq,)).fetchone()
        claimed.append(_job(row))
    return claimed


def _transition(conn: sqlite3.Connection, job_id: str, lease_token: str, assignments: str, values: tuple) -> bool:
    cursor = conn.execute(
        f"UPDATE outbox SET {assignments}, leased_until = NULL, lease_token = NULL "
        f"WHERE id = ? AND state = ? AND lease_token = ?",
        (*values, job_id, LEASED, lease_token),
    )
    return cursor.rowcount == 1


def complete(conn: sqlite3.Connection, job_id: str, lease_token: str, now: int) -> bool:
    return _transition(conn, job_id, lease_token, "state = ?, updated_at = ?", (DONE, now))


def retry(conn: sqlite3.Connection, job_id: str, lease_token: str, available_at: int, error: str, now: int) -> bool:
    return _transition(conn, job_id, lease_token, "state = ?, available_at = ?, last_error = ?, updated_at = ?",
                       (PENDING, available_at, short_error(error), now))


def dead_letter(conn: sqlite3.Connection, job_id: str, lease_token: str, error: str, now: int) -> bool:
    return _transition(conn, job_id, lease_token, "state = ?, last_error = ?, updated_at = ?",
                       (DEAD, short_error(error), now))


def requeue(conn: sqlite3.Connection, job_id: str, now: int) -> OutboxJob | None:
    cursor = conn.execute(
        "UPDATE outbox SET state = ?, attempts = 0, available_at = ?, leased_until = NULL, lease_token = NULL, "
        "updated_at = ? WHERE id = ? AND state = ?",
        (PENDING, now, now, job_id, DEAD),
    )
    return get(conn, job_id) if cursor.rowcount == 1 else None


def jobs(conn: sqlite3.Connection, kind: str | None, states: Collection[str] | None, limit: int) -> list[OutboxJob]:
    where, args = [], []
    if kind is not None:
        where.append("kind = ?")
        args.append(kind)
    if states is not None:
        states = list(states)
        if not states:
            return []
        where.append(f"state IN ({', '.join('?' * len(states))})")
        args.extend(states)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM outbox {clause}ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
    return [_job(r) for r in rows]


# -- keyed ranges, ordered claims and purges (the subscription event log: exchange/subscriptions) --
# Keys of one group share the prefix up to the first `separator` (e.g. "<subscription id>:" in
# "<subscription id>:000000000042"); the (kind, key) unique index serves every lookup below.


def key_range(conn: sqlite3.Connection, kind: str, key_from: str, key_to: str, limit: int,
              descending: bool) -> list[OutboxJob]:
    """Jobs of `kind` with key_from <= key <= key_to, in key order (newest key first if descending)."""
    if limit <= 0:
        return []
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE kind = ? AND key >= ? AND key <= ? "
        f"ORDER BY key {'DESC' if descending else 'ASC'} LIMIT ?", (kind, key_from, key_to, limit)).fetchall()
    return [_job(r) for r in rows]


# the group prefix of o.key (empty without a separator), and the first text above every key in it
_PREFIX = "substr(o.key, 1, instr(o.key, :sep))"
_GROUP_END = f"{_PREFIX} || char(1114111)"


def claim_in_order(conn: sqlite3.Connection, kinds: Collection[str], limit: int, lease_ms: int, now: int,
                   separator: str) -> list[OutboxJob]:
    """As `claim`, but a pending job whose key holds `separator` is due only when the job with the
    next lower key of its group is finished (done or dead) or absent: one job of a group at a time,
    in key order. Keys without the separator are claimed as `claim` would. The caller holds a write
    transaction (BEGIN IMMEDIATE)."""
    kinds = list(kinds)
    marks = ", ".join(f":k{i}" for i in range(len(kinds)))
    args = {"now": now, "sep": separator, "limit": limit, **{f"k{i}": k for i, k in enumerate(kinds)}}
    rows = conn.execute(
        f"SELECT seq FROM ("
        f"SELECT seq, due FROM (SELECT o.seq AS seq, o.available_at AS due FROM outbox o "
        f"WHERE o.state = 'pending' AND o.available_at <= :now AND o.kind IN ({marks}) AND ("
        f"instr(o.key, :sep) = 0 OR COALESCE((SELECT p.state FROM outbox p WHERE p.kind = o.kind "
        f"AND p.key < o.key AND p.key >= {_PREFIX} ORDER BY p.key DESC LIMIT 1), 'done') IN ('done', 'dead')) "
        f"ORDER BY o.available_at, o.seq LIMIT :limit) "
        f"UNION ALL "
        f"SELECT seq, leased_until AS due FROM (SELECT seq, leased_until FROM outbox "
        f"WHERE state = 'leased' AND leased_until <= :now AND kind IN ({marks}) ORDER BY leased_until LIMIT :limit)"
        f") ORDER BY due, seq LIMIT :limit", args).fetchall()
    return _lease(conn, [seq for (seq,) in rows], lease_ms, now)


def purge(conn: sqlite3.Connection, kind: str, states: Collection[str], updated_before: int,
          separator: str | None, limit: int) -> int:
    """Delete up to `limit` jobs of `kind` in `states` last changed before `updated_before`; with a
    separator, the highest key of each group is kept (it carries the group's count). The number deleted."""
    states = list(states)
    if not states or limit <= 0:
        return 0
    marks = ", ".join(f":s{i}" for i in range(len(states)))
    keep = ""
    if separator is not None:
        keep = (f"AND (instr(o.key, :sep) = 0 OR EXISTS (SELECT 1 FROM outbox n WHERE n.kind = o.kind "
                f"AND n.key > o.key AND n.key < {_GROUP_END})) ")
    cursor = conn.execute(
        f"DELETE FROM outbox WHERE seq IN (SELECT o.seq FROM outbox o WHERE o.kind = :kind "
        f"AND o.state IN ({marks}) AND o.updated_at < :before {keep}LIMIT :limit)",
        {"kind": kind, "before": updated_before, "sep": separator, "limit": limit,
         **{f"s{i}": s for i, s in enumerate(states)}})
    return cursor.rowcount
