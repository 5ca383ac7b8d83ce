"""The RecordStore in the FHIR server's MongoDB database (two collections beside the resources).

Synchronous PyMongo (base.py says why the record store is synchronous); MongoClient is
thread-safe, so the worker threads share one client without a lock of ours.

auth_records: {kind, key, doc, expires_at, used}, unique on (kind, key). `expires_at` is a BSON
Date (or null: never expires) so a TTL index can clean up, but TTL deletion runs about once a
minute, so every read filters on expiry itself and treats an expired record as absent.
`add` and `take` are single-document atomic operations: no transactions needed, so they behave
the same on a standalone mongod (fhirTransactions=off) as on a replica set.

auth_feed: {_id: seq, kind, doc}. A new entry takes the highest seq + 1 and retries on a duplicate
_id, rather than drawing seq from a $inc counter: with a counter, seq 6 can become visible before
seq 5 is inserted, and a follower that keeps "the highest seq seen" (tokens.RevokedGrants) would
skip 5 for good (a revocation missed). With max + 1, seq N is inserted only after N - 1 was seen,
so entries become visible in seq order.

Writes use majority write concern: an acknowledged jti, code use or revocation must survive a
replica-set failover, or a replay could succeed after it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern

from fhir_server.storage.mongo.store import DEFAULT_DATABASE, parse_url

RECORDS, FEED = "auth_records", "auth_feed"
_ADD_ATTEMPTS = 5  # an add retries only when the record it collided with vanished meanwhile
_APPEND_ATTEMPTS = 1000  # each retry means another append won a seq: progress is always made


def _date(epoch: float) -> datetime:
    """Epoch seconds -> the naive UTC datetime PyMongo stores as a BSON Date (millisecond precision)."""
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _now(now: float | None = None) -> datetime:
    return _date(now) if now is not None else datetime.now(UTC).replace(tzinfo=None)


def _live(now: datetime) -> dict:
    """The filter of records not expired at `now` (expires_at null: never expires)."""
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


class MongoRecordStore:
    def __init__(self, url: str = "mongodb://localhost:27017/fhir", *, database: str | None = None,
                 client: Any = None, client_options: dict | None = None):
        client_url, url_database, _transactions = parse_url(url)  # fhirTransactions: not needed here
        self.url = client_url
        self.database_name = database or url_database or DEFAULT_DATABASE
        self._given_client = client  # made elsewhere (tests: mongomock.MongoClient()); not closed here
        self._client_options = client_options or {}
        self._client: Any = None
        self._records: Any = None
        self._feed: Any = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "MongoRecordStore":
        """The FHIR store's URL form: mongodb://host/database?...; the database defaults to "fhir"."""
        return cls(url, **options)

    def open(self) -> None:
        if self._given_client is not None:
            self._client = self._given_client
        else:
            from pymongo import MongoClient

            self._client = MongoClient(self.url, appname="fhir-server-auth", **self._client_options)
        db = self._client[self.database_name]
        majority = WriteConcern(w="majority")
        self._records = db.get_collection(RECORDS, write_concern=majority)
        self._feed = db.get_collection(FEED, write_concern=majority)
        try:
            self._records.create_index([("kind", ASCENDING), ("key", ASCENDING)], unique=True, name="kind_key")
            self._records.create_index("expires_at", expireAfterSeconds=0, name="expires_at_ttl")
            self._feed.create_index([("kind", ASCENDING), ("_id", ASCENDING)], name="kind_seq")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._client is not None and self._given_client is None:
            self._client.close()
        self._client = self._records = self._feed = None

    @property
    def records(self) -> Any:
        if self._records is None:
            raise RuntimeError("record store is not open")
        return self._records

    @property
    def feed_collection(self) -> Any:
        if self._feed is None:
            raise RuntimeError("record store is not open")
        return self._feed

    def _fields(self, doc: dict, expires_at: float | None) -> dict:
        return {"doc": doc, "expires_at": _date(expires_at) if expires_at is not None else None, "used": False}

    def put(self, kind: str, key: str, doc: dict, *, expires_at: float | None = None) -> None:
        selector = {"kind": kind, "key": key}
        try:
            self.records.replace_one(selector, {**selector, **self._fields(doc, expires_at)}, upsert=True)
        except DuplicateKeyError:  # two upserts of a new key raced (servers before 4.2 do not retry it)
            self.records.replace_one(selector, {**selector, **self._fields(doc, expires_at)}, upsert=True)

    def add(self, kind: str, key: str, doc: dict, *, expires_at: float | None = None) -> bool:
        selector = {"kind": kind, "key": key}
        for _ in range(_ADD_ATTEMPTS):
            try:
                self.records.insert_one({**selector, **self._fields(doc, expires_at)})
                return True
            except DuplicateKeyError:
                pass
            # Taken: replace it only if expired; one conditional update, so of two racing adds one wins.
            replaced = self.records.update_one({**selector, "expires_at": {"$lte": _now()}},
                                               {"$set": self._fields(doc, expires_at)})
            if replaced.matched_count:
                return True
            if self.records.find_one(selector, {"_id": 1}) is not None:
                return False  # a live record holds the key
            # it was removed (or TTL-deleted) between our insert and update: try again
        return False

    def get(self, kind: str, key: str) -> dict | None:
        found = self.records.find_one({"kind": kind, "key": key, **_live(_now())}, {"_id": 0, "doc": 1})
        return found["doc"] if found else None

    def list(self, kind: str) -> list[dict]:
        cursor = self.records.find({"kind": kind, **_live(_now())}, {"_id": 0, "doc": 1}).sort("key", ASCENDING)
        return [found["doc"] for found in cursor]

    def remove(self, kind: str, key: str) -> bool:
        return self.records.delete_one({"kind": kind, "key": key}).deleted_count > 0

    def take(self, kind: str, key: str) -> tuple[dict | None, bool]:
        now = _now()
        first = self.records.find_one_and_update(
            {"kind": kind, "key": key, "used": False, **_live(now)}, {"$set": {"used": True}},
            projection={"_id": 0, "doc": 1})
        if first is not None:
            return first["doc"], True
        again = self.records.find_one({"kind": kind, "key": key, **_live(now)}, {"_id": 0, "doc": 1})
        return (again["doc"], False) if again is not None else (None, False)

    def append(self, kind: str, doc: dict) -> int:
        for _ in range(_APPEND_ATTEMPTS):
            last = self.feed_collection.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)])
            seq = (last["_id"] if last else 0) + 1
            try:
                self.feed_collection.insert_one({"_id": seq, "kind": kind, "doc": doc})
                return seq
            except DuplicateKeyError:
                continue  # another append took this seq; read the new highest
        raise RuntimeError(f"could not append to the {kind} feed: too many concurrent appends")

    def feed(self, kind: str, after: int) -> list[tuple[int, dict]]:
        cursor = self.feed_collection.find({"kind": kind, "_id": {"$gt": after}}).sort("_id", ASCENDING)
        return [(entry["_id"], entry["doc"]) for entry in cursor]

    def purge_expired(self, now: float | None = None) -> int:
        return self.records.delete_many({"expires_at": {"$lte": _now(now)}}).deleted_count
