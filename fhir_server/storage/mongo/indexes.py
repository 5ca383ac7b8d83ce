"""The indexes of the MongoDB store, created at start-up (idempotently: createIndexes with an
unchanged definition is a no-op on the server).

Every search parameter type has a compound multikey index led by the resource type and the
parameter code of its index array, so an `$elemMatch: {p: code, <value condition>}` gets tight
bounds on both (the twin of SQLite's idx_*_find indexes in sqlite/schema.sql). The index arrays
are all inside one document, but each compound index covers a single array (MongoDB forbids
indexing two parallel arrays together), and `type` is a scalar.

Shard keys (for a sharded cluster; see README): `resources` and `resource_versions` are designed
for `{type: 1, id: 1}`: every read, vread, write and instance history names both, so each hits one
shard, and server-assigned ids are random UUIDs, so chunks of one type spread evenly (with
client-chosen sequential ids, use `{type: 1, id: "hashed"}` instead). The unique indexes below
are prefixed by that key, as a sharded collection requires. `counters` holds one document and
stays unsharded, and so does `outbox` (small, and claimed by state and due time, not by a key a
shard could be chosen by).
"""

from __future__ import annotations

from .documents import RESOURCES, VERSIONS
from .outbox import OUTBOX

# (collection, name, keys, options)
INDEXES: list[tuple[str, str, list[tuple[str, int]], dict]] = [
    # current resources: identity, default page order, _lastUpdated
    (RESOURCES, "type_id", [("type", 1), ("id", 1)], {"unique": True}),
    (RESOURCES, "type_deleted_rid", [("type", 1), ("deleted", 1), ("rid", 1)], {}),
    (RESOURCES, "rid", [("rid", 1)], {}),
    (RESOURCES, "type_lu", [("type", 1), ("lu", 1)], {}),
    # search index arrays, one compound multikey index (or two) per parameter type
    (RESOURCES, "str_find", [("type", 1), ("i_str.p", 1), ("i_str.n", 1)], {}),
    (RESOURCES, "str_exact", [("type", 1), ("i_str.p", 1), ("i_str.x", 1)], {}),
    (RESOURCES, "tok_find", [("type", 1), ("i_tok.p", 1), ("i_tok.c", 1), ("i_tok.s", 1)], {}),
    (RESOURCES, "tok_text", [("type", 1), ("i_tok.p", 1), ("i_tok.t", 1)], {}),
    (RESOURCES, "ref_find", [("type", 1), ("i_ref.p", 1), ("i_ref.ti", 1), ("i_ref.tt", 1)], {}),
    (RESOURCES, "ref_url", [("type", 1), ("i_ref.p", 1), ("i_ref.u", 1)], {}),
    (RESOURCES, "ref_target", [("i_ref.tt", 1), ("i_ref.ti", 1)], {}),  # _revinclude of any source type
    (RESOURCES, "date_find", [("type", 1), ("i_date.p", 1), ("i_date.lo", 1), ("i_date.hi", 1)], {}),
    (RESOURCES, "num_find", [("type", 1), ("i_num.p", 1), ("i_num.lo", 1), ("i_num.hi", 1)], {}),
    (RESOURCES, "qty_find", [("type", 1), ("i_qty.p", 1), ("i_qty.c", 1), ("i_qty.lo", 1), ("i_qty.hi", 1)], {}),
    (RESOURCES, "uri_find", [("type", 1), ("i_uri.p", 1), ("i_uri.v", 1)], {}),
    (RESOURCES, "comp_find", [("type", 1), ("i_comp.p", 1), ("i_comp.k0.c", 1)], {}),
    # versions: vread, instance/type/system history (by seq = _id), _since
    (VERSIONS, "type_id_version", [("type", 1), ("id", 1), ("version", 1)], {"unique": True}),
    (VERSIONS, "type_id_seq", [("type", 1), ("id", 1), ("_id", 1)], {}),
    (VERSIONS, "type_seq", [("type", 1), ("_id", 1)], {}),
    (VERSIONS, "lu", [("lu", 1)], {}),
    (VERSIONS, "type_lu", [("type", 1), ("lu", 1)], {}),
    # the outbox (outbox.py): one job per (kind, key); claims walk due pending jobs and expired leases
    (OUTBOX, "kind_key", [("kind", 1), ("key", 1)], {"unique": True}),
    (OUTBOX, "state_available", [("state", 1), ("available_at", 1)], {}),
    (OUTBOX, "state_leased_until", [("state", 1), ("leased_until", 1)], {}),
    (OUTBOX, "kind_state_created", [("kind", 1), ("state", 1), ("created_at", -1)], {}),
]


def index_models(collection: str) -> list:
    from pymongo import IndexModel

    return [IndexModel(keys, name=name, **options) for coll, name, keys, options in INDEXES if coll == collection]


async def ensure_indexes(db) -> None:
    for collection in (RESOURCES, VERSIONS, OUTBOX):
        await db[collection].create_indexes(index_models(collection))
