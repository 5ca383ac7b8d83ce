"""The outbox in MongoDB: the `outbox` collection, one document per job::

    {_id: "<uuid hex>", kind: "erx.send", key: "<idempotency key>", payload: <BinData: JSON bytes>,
     state: "pending" | "leased" | "done" | "dead", attempts: 2, available_at: <int64 epoch ms>,
     leased_until: <ms> | null, lease_token: "<hex>" | null, last_error: "..." | null,
     created_at: <ms>, updated_at: <ms>}

The payload is kept as the JSON bytes (as resource bodies are), so any JSON a handler needs
round-trips unchanged (keys with "." or "$", big integers) and the document stays small to index.

A unit of work enqueues with its session, inside its transaction (store.py). Claims and state
changes are single-document atomic updates outside any transaction: a claim is a
find_one_and_update from "due" to "leased" with a fresh lease_token (one job per round trip), so
two workers never get the same job; every later change is an update conditional on that token.
These go with the client's write concern (majority by default on MongoDB 5.0+ replica sets) and
are retryable writes, so a network error on a claim is retried by the driver without a double
claim. Indexes: indexes.py.
"""

from __future__ import annotations

import uuid
from typing import Any, Collection

import orjson

from ..base import DEAD, DONE, LEASED, MAX_ERROR_CHARS, PENDING, OutboxJob
from ..serialization import from_epoch_ms

OUTBOX = "outbox"


def short_error(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"


def new_document(kind: str, key: str, payload: dict, available_at: int, now: int) -> dict:
    return {
        "_id": uuid.uuid4().hex, "kind": kind, "key": key, "payload": orjson.dumps(payload), "state": PENDING,
        "attempts": 0, "available_at": available_at, "leased_until": None, "lease_token": None,
        "last_error": None, "created_at": now, "updated_at": now,
    }


def from_document(doc: dict) -> OutboxJob:
    leased_until = doc.get("leased_until")
    return OutboxJob(
        id=doc["_id"], kind=doc["kind"], key=doc["key"], payload=orjson.loads(doc["payload"]), state=doc["state"],
        attempts=int(doc["attempts"]), available_at=from_epoch_ms(doc["available_at"]),
        leased_until=from_epoch_ms(leased_until) if leased_until is not None else None,
        last_error=doc.get("last_error"), created_at=from_epoch_ms(doc["created_at"]),
        updated_at=from_epoch_ms(doc["updated_at"]), lease_token=doc.get("lease_token"),
    )


async def insert_unless_taken(outbox, doc: dict, session: Any) -> dict:
    """Insert `doc` unless its (kind, key) is taken; the document under that key either way.

    An upsert with $setOnInsert, not insert-and-catch: inside a transaction a duplicate key error
    would abort the whole transaction."""
    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError

    fields = {name: value for name, value in doc.items() if name not in ("kind", "key")}
    match = {"kind": doc["kind"], "key": doc["key"]}
    try:
        return await outbox.find_one_and_update(match, {"$setOnInsert": fields}, upsert=True,
                                                return_document=ReturnDocument.AFTER, session=session)
    except DuplicateKeyError:
        if session is not None and session.in_transaction:
            raise
        # outside a transaction, two upserts of one new key can race: the loser reads the winner's
        return await outbox.find_one(match)


async def claim(outbox, kinds: Collection[str], limit: int, lease_ms: int, now: int) -> list[OutboxJob]:
    from pymongo import ReturnDocument

    due = {"kind": {"$in": list(kinds)}, "$or": [
        {"state": PENDING, "available_at": {"$lte": now}},
        {"state": LEASED, "leased_until": {"$lte": now}},
    ]}
    claimed = []
    while len(claimed) < limit:
        doc = await outbox.find_one_and_update(
            due,
            {"$set": {"state": LEASED, "leased_until": now + lease_ms, "lease_token": uuid.uuid4().hex,
                      "updated_at": now},
             "$inc": {"attempts": 1}},
            sort=[("available_at", 1), ("created_at", 1)], return_document=ReturnDocument.AFTER)
        if doc is None:
            break
        claimed.append(from_document(doc))
    return claimed


async def _transition(outbox, job_id: str, lease_token: str, fields: dict) -> bool:
    result = await outbox.update_one(
        {"_id": job_id, "state": LEASED, "lease_token": lease_token},
        {"$set": {**fields, "leased_until": None, "lease_token": None}})
    return result.matched_count == 1


async def complete(outbox, job_id: str, lease_token: str, now: int) -> bool:
    return await _transition(outbox, job_id, lease_token, {"state": DONE, "updated_at": now})


async def retry(outbox, job_id: str, lease_token: str, available_at: int, error: str, now: int) -> bool:
    return await _transition(outbox, job_id, lease_token, {
        "state": PENDING, "available_at": available_at, "last_error": short_error(error), "updated_at": now})


async def dead_letter(outbox, job_id: str, lease_token: str, error: str, now: int) -> bool:
    return await _transition(outbox, job_id, lease_token, {
        "state": DEAD, "last_error": short_error(error), "updated_at": now})


async def requeue(outbox, job_id: str, now: int) -> OutboxJob | None:
    from pymongo import ReturnDocument

    doc = await outbox.find_one_and_update(
        {"_id": job_id, "state": DEAD},
        {"$set": {"state": PENDING, "attempts": 0, "available_at": now, "leased_until": None, "lease_token": None,
                  "updated_at": now}},
        return_document=ReturnDocument.AFTER)
    return from_document(doc) if doc else None


async def get(outbox, job_id: str) -> OutboxJob | None:
    doc = await outbox.find_one({"_id": job_id})
    return from_document(doc) if doc else None


async def jobs(outbox, kind: str | None, states: Collection[str] | None, limit: int) -> list[OutboxJob]:
    if limit <= 0:
        return []
    match: dict = {}
    if kind is not None:
        match["kind"] = kind
    if states is not None:
        match["state"] = {"$in": list(states)}
    docs = await outbox.find(match).sort([("created_at", -1), ("_id", -1)]).limit(limit).to_list()
    return [from_document(d) for d in docs]


# -- keyed ranges, ordered claims and purges (the subscription event log: exchange/subscriptions) --
# A job's group is its key up to the first separator; the kind_key unique index serves each lookup.

_FINISHED = (DONE, DEAD)
_ABOVE_ALL = "\U0010ffff"  # sorts after every character a key holds


def _group(key: str, separator: str) -> str | None:
    at = key.find(separator)
    return key[: at + len(separator)] if at >= 0 else None


async def key_range(outbox, kind: str, key_from: str, key_to: str, limit: int, descending: bool,
                    session: Any = None) -> list[OutboxJob]:
    if limit <= 0:
        return []
    docs = await outbox.find({"kind": kind, "key": {"$gte": key_from, "$lte": key_to}}, session=session).sort(
        [("key", -1 if descending else 1)]).limit(limit).to_list()
    return [from_document(d) for d in docs]


async def _predecessor_finished(outbox, doc: dict, group: str) -> bool:
    before = await outbox.find(
        {"kind": doc["kind"], "key": {"$lt": doc["key"], "$gte": group}}, {"state": 1}).sort(
        [("key", -1)]).limit(1).to_list()
    return not before or before[0]["state"] in _FINISHED


async def claim_in_order(outbox, kinds: Collection[str], limit: int, lease_ms: int, now: int, separator: str,
                         scan: int = 1000) -> list[OutboxJob]:
    """As `claim`, one job of a group at a time in key order (storage/base.py). Each lease is one
    conditional update, as in `claim`: a job whose predecessor is unfinished is never leased,
    because a finished job never becomes unfinished again (but for an operator's requeue)."""
    from pymongo import ReturnDocument

    def lease() -> dict:
        return {"$set": {"state": LEASED, "leased_until": now + lease_ms, "lease_token": uuid.uuid4().hex,
                         "updated_at": now}, "$inc": {"attempts": 1}}

    kinds = list(kinds)
    claimed: list[OutboxJob] = []
    while len(claimed) < limit:  # expired leases first: each is the lowest unfinished job of its group
        doc = await outbox.find_one_and_update(
            {"kind": {"$in": kinds}, "state": LEASED, "leased_until": {"$lte": now}}, lease(),
            sort=[("leased_until", 1)], return_document=ReturnDocument.AFTER)
        if doc is None:
            break
        claimed.append(from_document(doc))
    if len(claimed) >= limit:
        return claimed
    candidates = await outbox.find(
        {"kind": {"$in": kinds}, "state": PENDING, "available_at": {"$lte": now}}, {"kind": 1, "key": 1}).sort(
        [("available_at", 1), ("created_at", 1)]).limit(scan).to_list()
    for candidate in candidates:
        group = _group(candidate["key"], separator)
        if group is not None and not await _predecessor_finished(outbox, candidate, group):
            continue
        doc = await outbox.find_one_and_update({"_id": candidate["_id"], "state": PENDING}, lease(),
                                               return_document=ReturnDocument.AFTER)
        if doc is not None:
            claimed.append(from_document(doc))
            if len(claimed) >= limit:
                break
    return claimed


async def purge(outbox, kind: str, states: Collection[str], updated_before: int, separator: str | None,
                limit: int) -> int:
    states = list(states)
    if not states or limit <= 0:
        return 0
    old = await outbox.find({"kind": kind, "state": {"$in": states}, "updated_at": {"$lt": updated_before}},
                            {"key": 1}).sort([("key", 1)]).limit(limit).to_list()
    doomed, highest = [], {}
    for doc in old:
        group = _group(doc["key"], separator) if separator is not None else None
        if group is not None:
            if group not in highest:
                top = await outbox.find({"kind": kind, "key": {"$gte": group, "$lt": group + _ABOVE_ALL}},
                                        {"key": 1}).sort([("key", -1)]).limit(1).to_list()
                highest[group] = top[0]["key"] if top else None
            if doc["key"] == highest[group]:
                continue
        doomed.append(doc["_id"])
    if not doomed:
        return 0
    result = await outbox.delete_many({"_id": {"$in": doomed}, "state": {"$in": states},
                                       "updated_at": {"$lt": updated_before}})
    return result.deleted_count
