"""The RecordStore in the FHIR server's SQLite file (two tables beside the resources).

A connection of its own (WAL lets it write between the FHIR writer's commits; busy_timeout waits
out a long transaction), used from worker threads under one lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import orjson

from fhir_server.storage.sqlite.driver import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS auth_records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    doc BLOB NOT NULL,
    expires_at REAL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS auth_records_expiry ON auth_records (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS auth_feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    doc BLOB NOT NULL
);
"""

_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class SQLiteRecordStore:
    def __init__(self, path: str):
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    @classmethod
    def from_url(cls, url: str) -> "SQLiteRecordStore":
        parsed = urlparse(url)
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if not path:
            raise ValueError("sqlite URL needs a file path, e.g. sqlite:///data/fhir.db")
        return cls(str(Path(path)))

    def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)  # the FHIR store's own opener: the same file, the same key
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("record store is not open")
        return self._conn

    def put(self, kind: str, key: str, doc: dict, *, expires_at: float | None = None) -> None:
        with self._lock:
            self.conn.execute(
                "INSERT OR REPLACE INTO auth_records (kind, key, doc, expires_at, used) VALUES (?, ?, ?, ?, 0)",
                (kind, key, orjson.dumps(doc), expires_at),
            )

    def add(self, kind: str, key: str, doc: dict, *, expires_at: float | None = None) -> bool:
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"DELETE FROM auth_records WHERE kind = ? AND key = ? AND NOT {_LIVE}",
                             (kind, key, time.time()))
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO auth_records (kind, key, doc, expires_at) VALUES (?, ?, ?, ?)",
                    (kind, key, orjson.dumps(doc), expires_at),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return cursor.rowcount == 1

    def get(self, kind: str, key: str) -> dict | None:
        with self._lock:
            row = self.conn.execute(
                f"SELECT doc FROM auth_records WHERE kind = ? AND key = ? AND {_LIVE}", (kind, key, time.time())
            ).fetchone()
        return orjson.loads(row[0]) if row else None

    def list(self, kind: str) -> list[dict]:
        with self._lock:
            rows = self.conn.execute(
                f"SELECT doc FROM auth_records WHERE kind = ? AND {_LIVE} ORDER BY key", (kind, time.time())
            ).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def remove(self, kind: str, key: str) -> bool:
        with self._lock:
            return self.conn.execute("DELETE FROM auth_records WHERE kind = ? AND key = ?", (kind, key)).rowcount > 0

    def take(self, kind: str, key: str) -> tuple[dict | None, bool]:
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    f"SELECT doc, used FROM auth_records WHERE kind = ? AND key = ? AND {_LIVE}",
                    (kind, key, time.time()),
                ).fetchone()
                if row is not None and not row[1]:
                    conn.execute("UPDATE auth_records SET used = 1 WHERE kind = ? AND key = ?", (kind, key))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if row is None:
            return None, False
        return orjson.loads(row[0]), not row[1]

    def append(self, kind: str, doc: dict) -> int:
        with self._lock:
            return self.conn.execute("INSERT INTO auth_feed (kind, doc) VALUES (?, ?)",
                                     (kind, orjson.dumps(doc))).lastrowid

    def feed(self, kind: str, after: int) -> list[tuple[int, dict]]:
        with self._lock:
            rows = self.conn.execute("SELECT seq, doc FROM auth_feed WHERE kind = ? AND seq > ? ORDER BY seq",
                                     (kind, after)).fetchall()
        return [(seq, orjson.loads(doc)) for seq, doc in rows]

    def purge_expired(self, now: float | None = None) -> int:
        with self._lock:
            return self.conn.execute("DELETE FROM auth_records WHERE expires_at IS NOT NULL AND expires_at <= ?",
                                     (now if now is not None else time.time(),)).rowcount
