"""The embedded store: one SQLite file in WAL mode, every version kept, stored bytes served as is."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Callable, Collection
from urllib.parse import urlparse

import orjson

from ...search.query import SearchQuery
from ..base import HistoryPage, HistoryQuery, Indexer, OutboxJob, SearchPage, StoredVersion
from ..errors import ResourceExists, VersionConflict
from ..serialization import to_epoch_ms, utc_now_ms, versioned_resource
from . import index_tables, outbox, queries, search
from .connections import ConnectionThreads

class SQLiteStore:
    def __init__(self, path: str, *, readers: int = 4, synchronous: str = "FULL", indexer: Indexer | None = None):
        self.path = path
        self._indexer = indexer
        self._threads = ConnectionThreads(path, readers=readers, synchronous=synchronous)
        self._write_lock = asyncio.Lock()
        self._last_stamp: datetime | None = None

    @classmethod
    def from_url(cls, url: str, **options) -> "SQLiteStore":
        """sqlite:///relative/path.db, sqlite:////absolute/path.db (SQLAlchemy's convention)."""
        parsed = urlparse(url)
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if not path:
            raise ValueError("sqlite URL needs a file path, e.g. sqlite:///data/fhir.db")
        return cls(str(Path(path)), **options)

    async def open(self) -> None:
        await self._threads.open()

    async def close(self) -> None:
        await self._threads.close()

    # -- reads of committed data (reader threads) -------------------------------------------

    async def read(self, resource_type: str, id: str) -> StoredVersion | None:
        return self._threads.point_read(lambda c: queries.read_current(c, resource_type, id))

    async def vread(self, resource_type: str, id: str, version: int) -> StoredVersion | None:
        return self._threads.point_read(lambda c: queries.read_version(c, resource_type, id, version))

    async def history(self, query: HistoryQuery) -> HistoryPage:
        return await self._threads.in_reader(lambda c: queries.history(c, query))

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._threads.in_reader(lambda c: _in_read_transaction(c, search.search, query))

    # -- maintenance -----------------------------------------------------------------------

    async def reindex(self, batch_size: int = 500) -> int:
        """Recompute the search index of every current resource (after the registry changed);
        one transaction per batch, so readers and writers get their turn in between."""
        if self._indexer is None:
            raise RuntimeError("this store has no indexer")
        indexer = self._indexer
        done, after = 0, 0

        def batch() -> tuple[int, int]:
            conn = self._threads.writer
            # Read the batch inside the write transaction: another process (--workers) could
            # otherwise update a resource between the read and the re-index of its old body.
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT r.rid, r.type, v.body FROM resources r JOIN resource_versions v ON v.seq = r.seq "
                    "WHERE r.rid > ? AND r.deleted = 0 ORDER BY r.rid LIMIT ?", (after, batch_size)
                ).fetchall()
                for rid, resource_type, body in rows:
                    index_tables.clear_index(conn, rid)
                    index_tables.write_index(conn, rid, resource_type, indexer(orjson.loads(body)))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return len(rows), rows[-1][0] if rows else after

        while True:
            async with self._write_lock:
                count, after = await self._threads.in_writer(batch)
            done += count
            if count < batch_size:
                return done

    async def purge_before(self, resource_type: str, before: datetime, batch_size: int = 2000) -> int:
        """One short write transaction per batch, so requests get the lock in between."""
        removed = 0
        while True:
            count = await self._in_write_transaction(queries.purge_before, resource_type, to_epoch_ms(before),
                                                     batch_size)
            removed += count
            if not count:
                return removed

    # -- the outbox (sqlite/outbox.py) ---------------------------------------------------------
    # State changes run on the writer connection under the write lock, as short transactions of
    # their own: a unit of work holds that connection's transaction open across awaits, and an
    # outbox statement run meanwhile would join (and commit or roll back with) it.

    async def _in_write_transaction(self, fn, *args):
        def run():
            conn = self._threads.writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

        async with self._write_lock:
            return await self._threads.in_writer(run)

    async def claim_jobs(
        self, kinds: Collection[str], *, limit: int, lease_seconds: float, now: datetime | None = None
    ) -> list[OutboxJob]:
        if not kinds or limit <= 0:
            return []
        return await self._in_write_transaction(
            outbox.claim, list(kinds), limit, round(lease_seconds * 1000), _ms(now))

    async def complete_job(self, job_id: str, *, lease_token: str, now: datetime | None = None) -> bool:
        return await self._in_write_transaction(outbox.complete, job_id, lease_token, _ms(now))

    async def retry_job(
        self, job_id: str, *, lease_token: str, available_at: datetime, error: str, now: datetime | None = None
    ) -> bool:
        return await self._in_write_transaction(
            outbox.retry, job_id, lease_token, to_epoch_ms(available_at), error, _ms(now))

    async def dead_letter_job(
        self, job_id: str, *, lease_token: str, error: str, now: datetime | None = None
    ) -> bool:
        return await self._in_write_transaction(outbox.dead_letter, job_id, lease_token, error, _ms(now))

    async def requeue_job(self, job_id: str, *, now: datetime | None = None) -> OutboxJob | None:
        return await self._in_write_transaction(outbox.requeue, job_id, _ms(now))

    async def get_job(self, job_id: str) -> OutboxJob | None:
        return await self._threads.in_reader(lambda c: outbox.get(c, job_id))

    async def jobs(
        self, kind: str | None = None, states: Collection[str] | None = None, limit: int = 100
    ) -> list[OutboxJob]:
        return await self._threads.in_reader(lambda c: outbox.jobs(c, kind, states, limit))

    async def job_range(self, kind: str, key_from: str, key_to: str, *, limit: int = 100,
                        descending: bool = False) -> list[OutboxJob]:
        return await self._threads.in_reader(
            lambda c: outbox.key_range(c, kind, key_from, key_to, limit, descending))

    async def claim_jobs_in_order(
        self, kinds: Collection[str], *, limit: int, lease_seconds: float, separator: str,
        now: datetime | None = None,
    ) -> list[OutboxJob]:
        if not kinds or limit <= 0:
            return []
        return await self._in_write_transaction(
            outbox.claim_in_order, list(kinds), limit, round(lease_seconds * 1000), _ms(now), separator)

    async def purge_jobs(
        self, kind: str, *, updated_before: datetime, states: Collection[str] = ("done", "dead"),
        keep_last_of_group: str | None = None, limit: int = 1000,
    ) -> int:
        return await self._in_write_transaction(
            outbox.purge, kind, list(states), to_epoch_ms(updated_before), keep_last_of_group, limit)

    # -- writes ----------------------------------------------------------------------------

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator["SQLiteUnitOfWork"]:
        async with self._write_lock:
            uow = SQLiteUnitOfWork(self._threads, self._stamp, self._indexer)
            try:
                yield uow
            except BaseException:
                await uow.rollback()
                raise
            else:
                await uow.commit()

    def _stamp(self) -> datetime:
        """One lastUpdated per unit of work, never earlier than the previous one (clock steps back)."""
        now = utc_now_ms()
        if self._last_stamp is not None and now < self._last_stamp:
            now = self._last_stamp
        self._last_stamp = now
        return now


def _ms(now: datetime | None) -> int:
    return to_epoch_ms(now if now is not None else utc_now_ms())


def _in_read_transaction(conn, fn, *args):
    """Run several SELECTs (a page, its total, its includes) on one consistent snapshot."""
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        conn.execute("COMMIT")


class SQLiteUnitOfWork:
    """Runs on the writer connection; the transaction begins with the first statement."""

    def __init__(self, threads: ConnectionThreads, stamp: Callable[[], datetime], indexer: Indexer | None):
        self._threads = threads
        self._stamp_of = stamp
        self._stamp: datetime | None = None
        self._indexer = indexer
        self._begun = False

    def _begin(self) -> None:
        if not self._begun:
            self._threads.writer.execute("BEGIN IMMEDIATE")
            # Stamped once the database's write lock is held: with several server processes on one
            # file, stamps then follow commit order too, so a write stamped before an instant has
            # committed by the time another unit of work holds the lock (Bulk export's cut-off,
            # exchange/bulk/cutoff.py, relies on it).
            self._stamp = self._stamp_of()
            self._begun = True

    async def _run(self, fn, *args):
        def call():
            self._begin()
            return fn(self._threads.writer, *args)

        return await self._threads.in_writer(call)

    async def read(self, resource_type: str, id: str) -> StoredVersion | None:
        return await self._run(queries.read_current, resource_type, id)

    async def vread(self, resource_type: str, id: str, version: int) -> StoredVersion | None:
        return await self._run(queries.read_version, resource_type, id, version)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        return await self._run(queries.history, query)

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._run(search.search, query)

    async def write(
        self,
        resource_type: str,
        id: str,
        resource: dict,
        *,
        method: str,
        expected_version: int | None = None,
        must_not_exist: bool = False,
    ) -> StoredVersion:
        def write(conn) -> StoredVersion:
            stamp = self._stamp
            current, _ = queries.current_state(conn, resource_type, id)
            if must_not_exist and current is not None:
                raise ResourceExists(f"{resource_type}/{id}")
            if expected_version is not None and expected_version != current:
                raise VersionConflict(expected_version, current)
            version = (current or 0) + 1
            document = versioned_resource(resource, id, version, stamp)
            body = orjson.dumps(document)
            seq, rid = queries.insert_version(conn, StoredVersion(resource_type, id, version, stamp, method, body))
            if current is not None:
                index_tables.clear_index(conn, rid)
            if self._indexer is not None:
                index_tables.write_index(conn, rid, resource_type, self._indexer(document))
            return StoredVersion(resource_type, id, version, stamp, method, body, seq)

        return await self._run(write)

    async def append_chained(
        self, resource_type: str, build: Callable[[bytes | None], list[tuple[str, dict]]]
    ) -> None:
        def append(conn) -> None:
            stamp = self._stamp
            latest = queries.latest_of_type(conn, resource_type)
            for id, resource in build(latest.body if latest is not None else None):
                # a new id: the UNIQUE (type, id, version) constraint refuses one that exists
                document = versioned_resource(resource, id, 1, stamp)
                _, rid = queries.insert_version(
                    conn, StoredVersion(resource_type, id, 1, stamp, "POST", orjson.dumps(document)))
                if self._indexer is not None:
                    index_tables.write_index(conn, rid, resource_type, self._indexer(document))

        await self._run(append)

    async def delete(
        self, resource_type: str, id: str, *, expected_version: int | None = None
    ) -> StoredVersion | None:
        def delete(conn) -> StoredVersion | None:
            stamp = self._stamp
            current, deleted = queries.current_state(conn, resource_type, id)
            if expected_version is not None and expected_version != current:
                raise VersionConflict(expected_version, current)
            if current is None or deleted:
                return None
            marker = StoredVersion(resource_type, id, current + 1, stamp, "DELETE", None)
            seq, rid = queries.insert_version(conn, marker)
            index_tables.clear_index(conn, rid)
            return StoredVersion(resource_type, id, current + 1, stamp, "DELETE", None, seq)

        return await self._run(delete)

    async def enqueue(
        self, kind: str, key: str, payload: dict, *, available_at: datetime | None = None
    ) -> OutboxJob:
        # created at the unit of work's lastUpdated, so the job and the change it follows agree
        def enqueue(conn) -> OutboxJob:
            now = to_epoch_ms(self._stamp)
            due = to_epoch_ms(available_at) if available_at is not None else now
            return outbox.enqueue(conn, kind, key, payload, due, now)

        return await self._run(enqueue)

    async def job_range(self, kind: str, key_from: str, key_to: str, *, limit: int = 100,
                        descending: bool = False) -> list[OutboxJob]:
        # on the writer, in this unit of work's transaction: it sees the jobs enqueued so far
        return await self._run(outbox.key_range, kind, key_from, key_to, limit, descending)

    async def commit(self) -> None:
        if self._begun:
            await self._threads.in_writer(lambda: self._threads.writer.execute("COMMIT"))

    async def rollback(self) -> None:
        if self._begun:
            await self._threads.in_writer(lambda: self._threads.writer.execute("ROLLBACK"))
