"""SQLite connections on threads of their own, so the event loop never blocks on disk.

One writer thread owns the only connection that writes (SQLite allows one writer at a time);
a small pool of reader threads each own a read-only connection, which WAL mode lets read a
consistent snapshot while the writer commits. Each store call is one hop to a thread running a
whole function (several statements), rather than one hop per statement as aiosqlite does.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import driver

T = TypeVar("T")

_SCHEMA = (Path(__file__).with_name("schema.sql")).read_text()


def _connect(path: str, *, synchronous: str, read_only: bool) -> sqlite3.Connection:
    conn = driver.connect(path)  # plain SQLite, or SQLCipher keyed with the process's key ring
    conn.execute("PRAGMA busy_timeout = 10000")
    if read_only:
        conn.execute("PRAGMA query_only = 1")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: the WAL is fsynced on every commit, so an acknowledged write survives a kill -9
        # and a power cut (NORMAL survives only the former). https://sqlite.org/pragma.html#pragma_synchronous
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


class ConnectionThreads:
    def __init__(self, path: str, *, readers: int = 4, synchronous: str = "FULL"):
        if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self._path = path
        self._synchronous = synchronous.upper()
        self._readers = readers
        self._writer_pool: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._loop_conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    async def open(self) -> None:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()

        def setup() -> None:
            self._writer = _connect(self._path, synchronous=self._synchronous, read_only=False)
            self._writer.executescript(_SCHEMA)

        await self.in_writer(setup)

    async def in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on the writer thread (fn reaches the connection through self.writer)."""
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, fn, *args)

    @property
    def writer(self) -> sqlite3.Connection:
        assert self._writer is not None, "store not opened"
        return self._writer

    def point_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a primary-key lookup on the calling (event loop) thread's own read-only connection.

        A read by id takes ~15 us in SQLite, a hop to a reader thread ~90 us: for these lookups the
        hop costs more than the work it would keep off the loop. Scans (search, history) still go
        through in_reader."""
        conn = self._loop_conn
        if conn is None:
            conn = self._loop_conn = _connect(self._path, synchronous=self._synchronous, read_only=True)
        return fn(conn)

    async def in_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(connection) on a reader thread with that thread's read-only connection."""

        def call() -> T:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = _connect(self._path, synchronous=self._synchronous, read_only=True)
                self._local.conn = conn
                with self._lock:
                    self._reader_conns.append(conn)
            return fn(conn)

        return await asyncio.get_running_loop().run_in_executor(self._reader_pool, call)

    async def close(self) -> None:
        def close_writer() -> None:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

        await self.in_writer(close_writer)
        assert self._writer_pool is not None and self._reader_pool is not None
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)
        self._writer_pool = self._reader_pool = None
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None
