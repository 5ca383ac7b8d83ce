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
    claimed = []
    for (seq,) in rows:
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
