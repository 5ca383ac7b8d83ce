"""An in-process stand-in for the part of pymongo.AsyncMongoClient the MongoDB store uses, over
mongomock (the `test` extra), so the contract suites run the backend's real queries here.

For tests only: `MongoStore(url, client=FakeAsyncMongoClient())`. What it is and is not:

- Queries, updates, aggregations and unique indexes are mongomock's Python re-implementation of
  MongoDB's, not MongoDB's: it runs every filter and pipeline the backend builds, but it is no
  proof that a real server (its query planner, its index use, its BSON type order in corner cases)
  answers the same. Index definitions are recorded and unique ones enforced; none is used for speed.
- Transactions are emulated, not run: the first operation of a session's transaction snapshots
  the whole in-memory database; reads without that session then see the snapshot (the committed
  state), commit drops it, abort puts it back. One transaction at a time: an operation of a second
  one fails with a WriteConflict labelled TransientTransactionError, as a second transaction
  writing the same (counter) document does on a real server. Read/write concerns, snapshot read
  sessions, retries, commit errors, failover, sharding and the 60 s transaction limit are not
  emulated. A write without a session while a transaction is open (the outbox worker's claims and
  outcomes) goes to the committed state and is mirrored into the transaction's, so it survives
  that transaction's commit and abort alike, as on a server (where it would conflict only with a
  document the transaction wrote: not emulated).
- Every document, filter, update and pipeline goes through a real BSON encode and decode (PyMongo's
  bson) on its way in, so what the backend sends must be encodable and is stored as a server
  would return it (bytes as binary, ints as int32/int64, +-inf as doubles).
- `replica_set=False` makes it answer `hello` like a standalone mongod and refuse transactions,
  to test the start-up check.
"""

from __future__ import annotations

import copy
from collections import OrderedDict


def _mongomock():
    try:
        import mongomock
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise RuntimeError("the in-process MongoDB fake needs mongomock (pip install -e '.[test]')") from exc
    return mongomock


def _bson(value):
    """`value` as it comes back from a BSON round trip (what a server would have received)."""
    import bson

    return bson.decode(bson.encode({"v": value}))["v"]


def _copy_server(store):
    """A deep copy of a mongomock ServerStore (documents and index definitions)."""
    copied = type(store)()
    for db_name, db_store in store._databases.items():
        target = copied[db_name]
        for name, coll in db_store._collections.items():
            clone = target[name]
            clone._documents = OrderedDict((k, copy.deepcopy(v)) for k, v in coll._documents.items())
            clone.indexes = dict(coll.indexes)  # index definitions are never changed in place
            clone._ttl_indexes = dict(coll._ttl_indexes)
            clone._is_force_created = coll._is_force_created
    return copied


class FakeAsyncMongoClient:
    def __init__(self, *, replica_set: bool = True, max_wire_version: int = 21):
        self._mm = _mongomock()
        self._live = self._mm.MongoClient()
        self._committed = None  # a client over the committed state while a transaction is open
        self._owner: FakeSession | None = None
        self.replica_set = replica_set
        self.conflicts = 0  # WriteConflicts raised (a second transaction while one is open)
        self.max_wire_version = max_wire_version
        self.admin = _FakeAdmin(self)

    def __getitem__(self, name: str) -> "FakeDatabase":
        return FakeDatabase(self, name)

    def get_database(self, name: str) -> "FakeDatabase":
        return FakeDatabase(self, name)

    def start_session(self, causal_consistency=None, default_transaction_options=None, snapshot=False) -> "FakeSession":
        return FakeSession(self)

    async def close(self) -> None:
        pass

    # -- transaction emulation ----------------------------------------------------------------

    def _target(self, session: "FakeSession | None"):
        if session is not None and session.in_transaction:
            if self._owner is None:
                self._committed = self._mm.MongoClient(_store=_copy_server(self._live._store))
                self._owner = session
            elif self._owner is not session:
                from pymongo.errors import OperationFailure

                self.conflicts += 1
                raise OperationFailure(
                    "WriteConflict error: this operation conflicted with another operation.", 112,
                    {"errorLabels": ["TransientTransactionError"], "code": 112, "codeName": "WriteConflict"})
            return self._live
        return self._committed if self._committed is not None else self._live

    def _end(self, session: "FakeSession", commit: bool) -> None:
        if self._owner is not session:
            return
        if not commit:
            self._live = self._mm.MongoClient(_store=self._committed._store)
        self._committed = None
        self._owner = None


class _FakeAdmin:
    def __init__(self, client: FakeAsyncMongoClient):
        self._client = client

    async def command(self, command, **_):
        name = command if isinstance(command, str) else next(iter(command))
        if name in ("hello", "isMaster", "ismaster"):
            hello = {"isWritablePrimary": True, "maxWireVersion": self._client.max_wire_version, "ok": 1.0}
            if self._client.replica_set:
                hello["setName"] = "fake"
            return hello
        if name == "ping":
            return {"ok": 1.0}
        raise NotImplementedError(f"the fake does not run the {name!r} command")


class FakeSession:
    def __init__(self, client: FakeAsyncMongoClient):
        self._client = client
        self.in_transaction = False

    async def __aenter__(self) -> "FakeSession":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.end_session()

    async def start_transaction(self, read_concern=None, write_concern=None, read_preference=None,
                                max_commit_time_ms=None):
        from pymongo.errors import InvalidOperation, OperationFailure

        if not self._client.replica_set:
            raise OperationFailure("Transaction numbers are only allowed on a replica set member or mongos", 20)
        if self.in_transaction:
            raise InvalidOperation("Transaction already in progress")
        self.in_transaction = True
        return _TransactionContext(self)

    async def commit_transaction(self) -> None:
        self._client._end(self, commit=True)
        self.in_transaction = False

    async def abort_transaction(self) -> None:
        self._client._end(self, commit=False)
        self.in_transaction = False

    async def end_session(self) -> None:
        if self.in_transaction:
            await self.abort_transaction()


class _TransactionContext:
    def __init__(self, session: FakeSession):
        self._session = session

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if self._session.in_transaction:
            if exc is None:
                await self._session.commit_transaction()
            else:
                await self._session.abort_transaction()


class FakeDatabase:
    def __init__(self, client: FakeAsyncMongoClient, name: str):
        self.client = client
        self.name = name

    def __getitem__(self, name: str) -> "FakeCollection":
        return FakeCollection(self.client, self.name, name)

    def get_collection(self, name: str) -> "FakeCollection":
        return self[name]

    async def drop_collection(self, name: str) -> None:
        self.client._live[self.name].drop_collection(name)


class FakeCursor:
    def __init__(self, run):
        self._run = run
        self._sort = None
        self._limit = 0

    def sort(self, keys, direction=None) -> "FakeCursor":
        self._sort = [(keys, direction)] if isinstance(keys, str) else list(keys)
        return self

    def limit(self, n: int) -> "FakeCursor":
        self._limit = n
        return self

    async def to_list(self, length: int | None = None) -> list:
        docs = self._run(self._sort, self._limit)
        return docs if length is None else docs[:length]


class FakeCollection:
    def __init__(self, client: FakeAsyncMongoClient, database: str, name: str):
        self._client = client
        self._database = database
        self.name = name

    def _coll(self, session):
        return self._client._target(session)[self._database][self.name]

    def _mirror(self, session):
        """The transaction's (live) collection when a write without a session happens while a
        transaction is open: the write must land there too, or its commit would drop it."""
        if session is None and self._client._committed is not None:
            return self._client._live[self._database][self.name]
        return None

    async def find_one(self, filter=None, projection=None, *, session=None, **kwargs):
        return self._coll(session).find_one(_bson(filter), projection, **kwargs)

    def find(self, filter=None, projection=None, *, session=None) -> FakeCursor:
        def run(sort, limit):
            cursor = self._coll(session).find(_bson(filter), projection)
            if sort:
                cursor = cursor.sort(sort)
            if limit:
                cursor = cursor.limit(limit)
            return list(cursor)

        return FakeCursor(run)

    async def aggregate(self, pipeline, *, session=None, **kwargs) -> FakeCursor:
        docs = list(self._coll(session).aggregate(_bson(pipeline)))
        return FakeCursor(lambda sort, limit: docs)

    async def count_documents(self, filter, *, session=None, **kwargs) -> int:
        return self._coll(session).count_documents(_bson(filter))

    async def insert_one(self, document, *, session=None):
        document = _bson(document)
        result = self._coll(session).insert_one(copy.deepcopy(document))
        if (live := self._mirror(session)) is not None:
            live.insert_one(document)
        return result

    async def replace_one(self, filter, replacement, upsert=False, *, session=None):
        result = self._coll(session).replace_one(_bson(filter), _bson(replacement), upsert=upsert)
        if (live := self._mirror(session)) is not None:
            live.replace_one(_bson(filter), _bson(replacement), upsert=upsert)
        return result

    async def update_one(self, filter, update, upsert=False, *, session=None):
        result = self._coll(session).update_one(_bson(filter), _bson(update), upsert=upsert)
        if (live := self._mirror(session)) is not None:
            live.update_one(_bson(filter), _bson(update), upsert=upsert)
        return result

    async def find_one_and_update(self, filter, update, projection=None, *, upsert=False, return_document=False,
                                  sort=None, session=None, **kwargs):
        coll = self._coll(session)
        result = coll.find_one_and_update(_bson(filter), _bson(update), projection, upsert=upsert,
                                          sort=sort, return_document=return_document)
        if (live := self._mirror(session)) is not None:
            # the document the committed state chose, as it is now, replaces the transaction's copy
            # (which may not match `filter`: it could have picked another one)
            changed = coll.find_one(_bson(filter)) if result is None else coll.find_one({"_id": result["_id"]})
            if changed is not None:
                live.replace_one({"_id": changed["_id"]}, changed, upsert=True)
        return result

    async def delete_one(self, filter, *, session=None):
        result = self._coll(session).delete_one(_bson(filter))
        if (live := self._mirror(session)) is not None:
            live.delete_one(_bson(filter))
        return result

    async def delete_many(self, filter, *, session=None):
        result = self._coll(session).delete_many(_bson(filter))
        if (live := self._mirror(session)) is not None:
            live.delete_many(_bson(filter))
        return result

    async def create_indexes(self, indexes, *, session=None):
        return self._coll(None).create_indexes(indexes)

    async def index_information(self, *, session=None) -> dict:
        return self._coll(None).index_information()
