"""The MongoDB store, on PyMongo's native async API (pymongo.AsyncMongoClient).

Same Store protocol and the same observable behaviour as the SQLite store: the stored JSON bytes
are made by serialization.versioned_resource + orjson.dumps, kept as BSON binary and served
unchanged; every version is kept; search reads the index arrays embedded in each document
(documents.py, translate.py, search.py).

Units of work and the change order
----------------------------------
A unit of work is one client session with one multi-document transaction (snapshot read concern,
majority write concern). Its first operation is an update of the `counters` document "changes",
which plays the part of SQLite's BEGIN IMMEDIATE: MongoDB lets only one open transaction hold a
write on a document (a second one fails at once with a WriteConflict, labelled
TransientTransactionError), so writing transactions are serialised across every server process
and the change sequence `seq` (history order and cursors) is the commit order, with lastUpdated
monotonic along it. A conflict there happens before the unit of work has done anything, so it is
retried (with backoff) without the caller noticing; within one process an asyncio lock queues
units of work first, so they do not even reach the server's conflict. The counter is written
again at commit with the last seq and lastUpdated handed out.

Every version change is also an atomic conditional update of the resource's current document
(`version` must still be the one read), and versions are unique per resource
(`{type, id, version}` index), so two writers can never both win, even without transactions.

Without transactions (fhirTransactions=off, for a standalone mongod), each write is still atomic
and conditional, seq comes from an atomic $inc, and a unit of work that raises is undone on a
best-effort basis (compensating writes); other clients can see its writes before it ends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, AsyncIterator, Callable, Collection
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from ...search.query import SearchQuery
from ..base import HistoryPage, HistoryQuery, Indexer, OutboxJob, SearchPage, StoredVersion
from ..errors import ResourceExists, StorageError, VersionConflict
from ..serialization import from_epoch_ms, to_epoch_ms, utc_now_ms, versioned_resource
from . import outbox as mongo_outbox
from . import search as mongo_search
from .documents import (
    CHANGES,
    COUNTERS,
    INDEX_ARRAYS,
    RESOURCES,
    VERSION_FIELDS,
    VERSIONS,
    current_document,
    from_current,
    from_version,
    index_arrays,
    version_document,
)
from .indexes import ensure_indexes
from .outbox import OUTBOX

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "fhir"
TRANSACTIONS_OPTION = "fhirTransactions"  # our own URL option, removed before PyMongo sees the URL
LOCK_TIMEOUT_S = 30.0  # how long a unit of work waits for another process's transaction to end
SNAPSHOT_WIRE_VERSION = 13  # MongoDB 5.0: snapshot reads outside transactions

_STATE_FIELDS = {"version": 1, "deleted": 1, "rid": 1}


class TransactionsUnavailable(StorageError):
    """The server cannot run multi-document transactions and the store was told to require them."""


def parse_url(url: str) -> tuple[str, str | None, bool | None]:
    """(the URL PyMongo gets, the database name in its path, the fhirTransactions option).

    mongodb://host1,host2/fhir?replicaSet=rs0&fhirTransactions=off -> the URL without our option,
    "fhir", False. Query items are kept verbatim (no re-encoding)."""
    parts = urlsplit(url)
    kept: list[str] = []
    transactions: bool | None = None
    for item in parts.query.split("&") if parts.query else ():
        key, _, value = item.partition("=")
        if key == TRANSACTIONS_OPTION:
            value = unquote(value).strip().lower()
            if value in ("off", "false", "0", "no"):
                transactions = False
            elif value in ("required", "on", "true", "1", "yes"):
                transactions = True
            else:
                raise ValueError(f"{TRANSACTIONS_OPTION} takes 'required' or 'off', not {value!r}")
        else:
            kept.append(item)
    database = unquote(parts.path.lstrip("/")) or None
    return urlunsplit(parts._replace(query="&".join(kept))), database, transactions


def _hosts(url: str) -> str:
    return urlsplit(url).netloc.rsplit("@", 1)[-1] or url


class MongoStore:
    def __init__(
        self,
        url: str = "mongodb://localhost:27017/fhir",
        *,
        database: str | None = None,
        transactions: bool | None = None,
        indexer: Indexer | None = None,
        client: Any = None,
        client_options: dict | None = None,
        synchronous: str | None = None,  # SQLite's option: accepted (open_store passes it) and ignored
    ):
        client_url, url_database, url_transactions = parse_url(url)
        self.url = client_url
        self.database_name = database or url_database or DEFAULT_DATABASE
        self.transactions = transactions if transactions is not None else (
            url_transactions if url_transactions is not None else True)
        self._indexer = indexer
        self._given_client = client  # a client made elsewhere (the in-process fake); not closed here
        self._client_options = client_options or {}
        self._client: Any = None
        self._db: Any = None
        self._snapshot_reads = False
        self._write_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **options) -> "MongoStore":
        """mongodb://[user:pass@]host[:port][,host...]/database?replicaSet=rs0[&fhirTransactions=off]
        (mongodb+srv:// too). The database is the URL's path (default "fhir") unless `database` is given."""
        return cls(url, **options)

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._given_client is not None:
            self._client = self._given_client
        else:
            from pymongo import AsyncMongoClient

            self._client = AsyncMongoClient(self.url, appname="fhir-server", **self._client_options)
        try:
            hello = await self._client.admin.command("hello")
        except Exception as exc:
            await self._drop_client()
            raise StorageError(f"cannot reach MongoDB at {_hosts(self.url)}: {exc}") from exc
        replicated = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
        if self.transactions and not replicated:
            await self._drop_client()
            raise TransactionsUnavailable(
                f"MongoDB at {_hosts(self.url)} is a standalone server, and this store needs multi-document "
                "transactions (FHIR transaction Bundles commit all or nothing), which only a replica set or a "
                "sharded cluster offers. Start mongod with --replSet rs0 and run rs.initiate() once (a "
                "single-node replica set is enough; docker-compose.yml does this), or add "
                f"{TRANSACTIONS_OPTION}=off to the database URL to run without transactions (a failing "
                "transaction Bundle is then undone only on a best-effort basis, and other clients can see "
                "its writes before it ends)."
            )
        self._snapshot_reads = self.transactions and int(hello.get("maxWireVersion", 0)) >= SNAPSHOT_WIRE_VERSION
        self._db = self._client[self.database_name]
        await ensure_indexes(self._db)
        await self._db[COUNTERS].update_one(
            {"_id": CHANGES}, {"$setOnInsert": {"seq": 0, "lu": 0, "n": 0}}, upsert=True)

    async def close(self) -> None:
        await self._drop_client()
        self._db = None

    async def _drop_client(self) -> None:
        if self._client is not None and self._given_client is None:
            await self._client.close()
        self._client = None

    @property
    def resources(self):
        assert self._db is not None, "store not opened"
        return self._db[RESOURCES]

    @property
    def versions(self):
        assert self._db is not None, "store not opened"
        return self._db[VERSIONS]

    @property
    def counters(self):
        assert self._db is not None, "store not opened"
        return self._db[COUNTERS]

    @property
    def outbox(self):
        assert self._db is not None, "store not opened"
        return self._db[OUTBOX]

    @asynccontextmanager
    async def _read_session(self) -> AsyncIterator[Any]:
        """Several queries (a page, its total, its includes) on one point-in-time snapshot where
        the server offers snapshot reads (replica sets and clusters, MongoDB 5.0+)."""
        if not self._snapshot_reads:
            yield None
            return
        session = self._client.start_session(snapshot=True)
        try:
            yield session
        finally:
            await session.end_session()

    # -- reads of committed data -------------------------------------------------------------

    async def read(self, resource_type: str, id: str) -> StoredVersion | None:
        return await _read_current(self.resources, resource_type, id, None)

    async def vread(self, resource_type: str, id: str, version: int) -> StoredVersion | None:
        return await _read_version(self.versions, resource_type, id, version, None)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        async with self._read_session() as session:
            return await _history(self.versions, query, session)

    async def search(self, query: SearchQuery) -> SearchPage:
        async with self._read_session() as session:
            return await mongo_search.search(self.resources, query, session)

    # -- maintenance -----------------------------------------------------------------------

    async def reindex(self, batch_size: int = 500) -> int:
        """Recompute the search index of every current resource (after the registry changed).
        Each document is updated on its own, conditionally on its version: a resource written
        meanwhile already has a fresh index and is left alone."""
        if self._indexer is None:
            raise RuntimeError("this store has no indexer")
        done, after = 0, None
        while True:
            match: dict = {"deleted": False}
            if after is not None:
                match["rid"] = {"$gt": after}
            docs = await self.resources.find(match, {"_id": 1, "type": 1, "id": 1, "version": 1, "rid": 1, "body": 1}) \
                .sort([("rid", 1)]).limit(batch_size).to_list()
            for doc in docs:
                index = index_arrays(self._indexer(orjson.loads(doc["body"])))
                update: dict = {}
                if index:
                    update["$set"] = index
                unset = {name: "" for name in INDEX_ARRAYS if name not in index}
                if unset:
                    update["$unset"] = unset
                await self.resources.update_one(
                    {"_id": doc["_id"], "type": doc["type"], "id": doc["id"], "version": doc["version"]}, update)
            done += len(docs)
            if len(docs) < batch_size:
                return done
            after = docs[-1]["rid"]

    # -- the outbox (outbox.py): single-document atomic updates, no transaction ---------------

    async def claim_jobs(
        self, kinds: Collection[str], *, limit: int, lease_seconds: float, now: datetime | None = None
    ) -> list[OutboxJob]:
        if not kinds or limit <= 0:
            return []
        return await mongo_outbox.claim(self.outbox, list(kinds), limit, round(lease_seconds * 1000), _ms(now))

    async def complete_job(self, job_id: str, *, lease_token: str, now: datetime | None = None) -> bool:
        return await mongo_outbox.complete(self.outbox, job_id, lease_token, _ms(now))

    async def retry_job(
        self, job_id: str, *, lease_token: str, available_at: datetime, error: str, now: datetime | None = None
    ) -> bool:
        return await mongo_outbox.retry(self.outbox, job_id, lease_token, to_epoch_ms(available_at), error, _ms(now))

    async def dead_letter_job(
        self, job_id: str, *, lease_token: str, error: str, now: datetime | None = None
    ) -> bool:
        return await mongo_outbox.dead_letter(self.outbox, job_id, lease_token, error, _ms(now))

    async def requeue_job(self, job_id: str, *, now: datetime | None = None) -> OutboxJob | None:
        return await mongo_outbox.requeue(self.outbox, job_id, _ms(now))

    async def get_job(self, job_id: str) -> OutboxJob | None:
        return await mongo_outbox.get(self.outbox, job_id)

    async def jobs(
        self, kind: str | None = None, states: Collection[str] | None = None, limit: int = 100
    ) -> list[OutboxJob]:
        return await mongo_outbox.jobs(self.outbox, kind, states, limit)

    async def job_range(self, kind: str, key_from: str, key_to: str, *, limit: int = 100,
                        descending: bool = False) -> list[OutboxJob]:
        return await mongo_outbox.key_range(self.outbox, kind, key_from, key_to, limit, descending)

    async def claim_jobs_in_order(
        self, kinds: Collection[str], *, limit: int, lease_seconds: float, separator: str,
        now: datetime | None = None,
    ) -> list[OutboxJob]:
        if not kinds or limit <= 0:
            return []
        return await mongo_outbox.claim_in_order(self.outbox, list(kinds), limit, round(lease_seconds * 1000),
                                                 _ms(now), separator)

    async def purge_jobs(
        self, kind: str, *, updated_before: datetime, states: Collection[str] = ("done", "dead"),
        keep_last_of_group: str | None = None, limit: int = 1000,
    ) -> int:
        return await mongo_outbox.purge(self.outbox, kind, list(states), to_epoch_ms(updated_before),
                                        keep_last_of_group, limit)

    # -- writes ----------------------------------------------------------------------------

    async def purge_before(self, resource_type: str, before: datetime) -> int:
        # AuditEvents have one version each: the resources and their versions older than `before`
        cutoff = to_epoch_ms(before)
        await self.resources.delete_many({"type": resource_type, "lu": {"$lt": cutoff}})
        result = await self.versions.delete_many({"type": resource_type, "lu": {"$lt": cutoff}})
        return result.deleted_count

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator["MongoUnitOfWork"]:
        async with self._write_lock:
            uow = MongoUnitOfWork(self)
            try:
                yield uow
            except BaseException:
                await uow.rollback()
                raise
            else:
                await uow.commit()


def _ms(now: datetime | None) -> int:
    return to_epoch_ms(now if now is not None else utc_now_ms())


async def _read_current(resources, resource_type: str, id: str, session) -> StoredVersion | None:
    doc = await resources.find_one({"type": resource_type, "id": id}, VERSION_FIELDS, session=session)
    return from_current(doc) if doc else None


async def _read_version(versions, resource_type: str, id: str, version: int, session) -> StoredVersion | None:
    doc = await versions.find_one({"type": resource_type, "id": id, "version": version}, session=session)
    return from_version(doc) if doc else None


async def _history(versions, q: HistoryQuery, session) -> HistoryPage:
    match: dict = {}
    if q.resource_type is not None:
        match["type"] = q.resource_type
    if q.id is not None:
        match["id"] = q.id
    if q.since is not None:
        match["lu"] = {"$gte": to_epoch_ms(q.since)}
    if q.exclude_types and q.resource_type is None:
        match["type"] = {"$nin": list(q.exclude_types)}
    total = await versions.count_documents(match, session=session)
    if q.at_or_before_seq is not None:
        match["_id"] = {"$lte": q.at_or_before_seq}
    docs = await versions.find(match, session=session).sort([("_id", -1)]).limit(q.count + 1).to_list()
    page = [from_version(d) for d in docs[: q.count]]
    next_seq = int(docs[q.count]["_id"]) if len(docs) > q.count else None
    return HistoryPage(page, total, next_seq)


def _transient(exc: BaseException) -> bool:
    has_label = getattr(exc, "has_error_label", None)
    return bool(has_label and has_label("TransientTransactionError"))


def _unknown_commit(exc: BaseException) -> bool:
    has_label = getattr(exc, "has_error_label", None)
    return bool(has_label and has_label("UnknownTransactionCommitResult"))


class MongoUnitOfWork:
    """One session and transaction, begun by the first operation (as SQLite's BEGIN IMMEDIATE)."""

    def __init__(self, store: MongoStore):
        self._store = store
        self._transactional = store.transactions
        self._session: Any = None
        self._begun = False
        self._stamp: datetime | None = None
        self._base_seq = 0
        self._writes = 0
        self._undo: list[tuple] = []  # without transactions: how to take back each write
        self._jobs = 0  # jobs enqueued in the transaction
        self._held_jobs: dict[tuple[str, str], dict] = {}  # without transactions: inserted at commit

    # -- beginning ------------------------------------------------------------------------

    async def _begin(self) -> None:
        if self._begun:
            return
        if self._transactional:
            await self._begin_transaction()
        else:
            counter = await self._store.counters.find_one({"_id": CHANGES})
            self._stamp = self._stamp_after((counter or {}).get("lu", 0))
        self._begun = True

    async def _begin_transaction(self) -> None:
        from pymongo import ReturnDocument
        from pymongo.read_concern import ReadConcern
        from pymongo.write_concern import WriteConcern

        deadline = time.monotonic() + LOCK_TIMEOUT_S
        delay = 0.005
        self._session = self._store._client.start_session()
        while True:
            await self._session.start_transaction(read_concern=ReadConcern("snapshot"),
                                                  write_concern=WriteConcern("majority"))
            try:
                # the transaction's first write: holding it keeps every other writing transaction out
                counter = await self._store.counters.find_one_and_update(
                    {"_id": CHANGES}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER,
                    session=self._session)
                break
            except Exception as exc:
                await self._abort_quietly()
                if not _transient(exc) or time.monotonic() > deadline:
                    await self._end_session()
                    if _transient(exc):
                        raise StorageError("timed out waiting for another transaction on the store to end") from exc
                    raise
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)
        self._base_seq = int(counter.get("seq", 0))
        self._stamp = self._stamp_after(counter.get("lu", 0))

    @staticmethod
    def _stamp_after(last_ms: int) -> datetime:
        """One lastUpdated per unit of work, never earlier than the last one handed out (clock steps back)."""
        now = utc_now_ms()
        last = from_epoch_ms(last_ms)
        return last if now < last else now

    async def _next_seq(self) -> int:
        if self._transactional:
            self._writes += 1
            return self._base_seq + self._writes
        from pymongo import ReturnDocument

        counter = await self._store.counters.find_one_and_update(
            {"_id": CHANGES}, {"$inc": {"seq": 1}, "$max": {"lu": to_epoch_ms(self._stamp)}},
            return_document=ReturnDocument.AFTER, upsert=True)
        self._writes += 1
        return int(counter["seq"])

    # -- reads in the unit of work (they see its own writes) ------------------------------------

    async def read(self, resource_type: str, id: str) -> StoredVersion | None:
        await self._begin()
        return await _read_current(self._store.resources, resource_type, id, self._session)

    async def vread(self, resource_type: str, id: str, version: int) -> StoredVersion | None:
        await self._begin()
        return await _read_version(self._store.versions, resource_type, id, version, self._session)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        await self._begin()
        return await _history(self._store.versions, query, self._session)

    async def search(self, query: SearchQuery) -> SearchPage:
        await self._begin()
        return await mongo_search.search(self._store.resources, query, self._session)

    async def append_chained(
        self, resource_type: str, build: Callable[[bytes | None], list[tuple[str, dict]]]
    ) -> None:
        # every writing transaction holds the change counter from its first write (_begin), so the
        # latest version read here is the one before these in commit order
        await self._begin()
        doc = await self._store.versions.find_one({"type": resource_type}, sort=[("_id", -1)], session=self._session)
        latest = from_version(doc) if doc else None
        for id, resource in build(latest.body if latest is not None else None):
            await self.write(resource_type, id, resource, method="POST", must_not_exist=True)

    # -- writes ------------------------------------------------------------------------------

    async def _current(self, resource_type: str, id: str) -> dict | None:
        projection = None if not self._transactional else _STATE_FIELDS  # the whole document to undo with
        return await self._store.resources.find_one({"type": resource_type, "id": id}, projection,
                                                    session=self._session)

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
        await self._begin()
        cur = await self._current(resource_type, id)
        current = cur["version"] if cur else None
        if must_not_exist and current is not None:
            raise ResourceExists(f"{resource_type}/{id}")
        if expected_version is not None and expected_version != current:
            raise VersionConflict(expected_version, current)
        version = (current or 0) + 1
        assert self._stamp is not None
        document = versioned_resource(resource, id, version, self._stamp)
        body = orjson.dumps(document)
        index = index_arrays(self._store._indexer(document)) if self._store._indexer is not None else {}
        seq = await self._next_seq()
        stored = StoredVersion(resource_type, id, version, self._stamp, method, body, seq)
        await self._put(stored, cur, index, expected_version, must_not_exist)
        return stored

    async def delete(
        self, resource_type: str, id: str, *, expected_version: int | None = None
    ) -> StoredVersion | None:
        await self._begin()
        cur = await self._current(resource_type, id)
        current = cur["version"] if cur else None
        if expected_version is not None and expected_version != current:
            raise VersionConflict(expected_version, current)
        if cur is None or cur["deleted"]:
            return None
        assert self._stamp is not None
        seq = await self._next_seq()
        marker = StoredVersion(resource_type, id, current + 1, self._stamp, "DELETE", None, seq)
        await self._put(marker, cur, {}, expected_version, False)
        return marker

    async def _put(self, v: StoredVersion, cur: dict | None, index: dict, expected_version, must_not_exist) -> None:
        """Move the current document from `cur` to version `v` (a conditional update: it fails when
        another writer got there first) and append the version document."""
        from pymongo.errors import DuplicateKeyError

        session = self._session
        resources, versions = self._store.resources, self._store.versions
        new = current_document(v, cur["rid"] if cur else v.seq, index)
        if cur is None:
            try:
                await resources.insert_one(new, session=session)
            except DuplicateKeyError:
                if must_not_exist:
                    raise ResourceExists(f"{v.resource_type}/{v.id}") from None
                raise VersionConflict(expected_version, await self._version_now(v)) from None
        else:
            result = await resources.replace_one(
                {"_id": new["_id"], "type": v.resource_type, "id": v.id, "version": cur["version"]}, new,
                session=session)
            if result.matched_count != 1:  # another writer got there first (only without transactions)
                raise VersionConflict(expected_version, await self._version_now(v))
        if not self._transactional:
            self._undo.append((new["_id"], v.resource_type, v.id, v.version, v.seq, cur))
        try:
            await versions.insert_one(version_document(v), session=session)
        except DuplicateKeyError:
            raise VersionConflict(expected_version, await self._version_now(v)) from None

    async def _version_now(self, v: StoredVersion) -> int | None:
        if self._transactional:
            return None  # the transaction is aborted by the failed write: nothing more to ask it
        doc = await self._store.resources.find_one({"type": v.resource_type, "id": v.id}, {"version": 1})
        return doc["version"] if doc else None

    # -- the outbox ----------------------------------------------------------------------------

    async def enqueue(
        self, kind: str, key: str, payload: dict, *, available_at: datetime | None = None
    ) -> OutboxJob:
        await self._begin()
        assert self._stamp is not None
        # created at the unit of work's lastUpdated, so the job and the change it follows agree
        now = to_epoch_ms(self._stamp)
        due = to_epoch_ms(available_at) if available_at is not None else now
        doc = mongo_outbox.new_document(kind, key, payload, due, now)
        if self._transactional:
            stored = await mongo_outbox.insert_unless_taken(self._store.outbox, doc, self._session)
            self._jobs += 1
            return mongo_outbox.from_document(stored)
        held = self._held_jobs.get((kind, key))
        if held is None:
            existing = await self._store.outbox.find_one({"kind": kind, "key": key})
            if existing is not None:
                return mongo_outbox.from_document(existing)
            held = self._held_jobs[(kind, key)] = doc
        return mongo_outbox.from_document(held)

    async def job_range(self, kind: str, key_from: str, key_to: str, *, limit: int = 100,
                        descending: bool = False) -> list[OutboxJob]:
        """In the transaction (it sees its own jobs); without one, the committed jobs and those held back."""
        await self._begin()
        found = await mongo_outbox.key_range(self._store.outbox, kind, key_from, key_to, limit, descending,
                                             self._session if self._transactional else None)
        held = [mongo_outbox.from_document(d) for (k, key), d in self._held_jobs.items()
                if k == kind and key_from <= key <= key_to]
        if not held:
            return found
        merged = {j.key: j for j in found + held}
        return [merged[k] for k in sorted(merged, reverse=descending)][:limit]

    async def _insert_held_jobs(self) -> None:
        held, self._held_jobs = self._held_jobs, {}
        for doc in held.values():
            await mongo_outbox.insert_unless_taken(self._store.outbox, doc, None)

    # -- ending ------------------------------------------------------------------------------

    async def commit(self) -> None:
        if not self._begun:
            return
        if not self._transactional:
            await self._insert_held_jobs()
            return
        try:
            if self._writes:
                assert self._stamp is not None
                await self._store.counters.update_one(
                    {"_id": CHANGES},
                    {"$set": {"seq": self._base_seq + self._writes, "lu": to_epoch_ms(self._stamp)}},
                    session=self._session)
            if self._writes or self._jobs:
                await self._commit_with_retry()
            else:
                await self._abort_quietly()  # nothing written: just release the counter
        finally:
            await self._end_session()

    async def _commit_with_retry(self) -> None:
        for attempt in range(3):
            try:
                await self._session.commit_transaction()
                return
            except Exception as exc:
                if _unknown_commit(exc) and attempt < 2:
                    continue  # commitTransaction is idempotent: ask again
                if _transient(exc):
                    raise StorageError(f"the transaction was aborted by the server, nothing was written: {exc}") from exc
                raise

    async def rollback(self) -> None:
        if not self._begun:
            return
        if self._transactional:
            await self._abort_quietly()
            await self._end_session()
            return
        self._held_jobs.clear()
        await self._compensate()

    async def _compensate(self) -> None:
        """Without a transaction: take back this unit's writes, newest first (best effort)."""
        resources, versions = self._store.resources, self._store.versions
        for key, resource_type, id, version, seq, previous in reversed(self._undo):
            try:
                mine = {"_id": key, "type": resource_type, "id": id, "version": version}
                if previous is None:
                    await resources.delete_one(mine)
                else:
                    await resources.replace_one(mine, previous)
                await versions.delete_one({"_id": seq})
            except Exception:  # noqa: BLE001 - keep undoing the rest; report what was left behind
                log.exception("could not undo the write of %s version %s", key, version)
        self._undo.clear()

    async def _abort_quietly(self) -> None:
        if self._session is not None and self._session.in_transaction:
            try:
                await self._session.abort_transaction()
            except Exception:  # noqa: BLE001 - the server drops an abandoned transaction anyway
                log.debug("abortTransaction failed", exc_info=True)

    async def _end_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.end_session()
