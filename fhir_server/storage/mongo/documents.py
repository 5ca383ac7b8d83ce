"""The MongoDB data model: what a stored document looks like, in one place.

Three collections (DESIGN.md, "Storage"):

`resources`, the current version of each resource, one document per Type/id::

    {_id: "Patient/123", type: "Patient", id: "123", version: 3, seq: 871, rid: 12,
     lu: <int64 epoch ms>, method: "PUT", deleted: false, body: <BinData: the stored JSON bytes>,
     i_str: [{p: "family", n: "muller", x: "Müller"}, ...],   # the search index, embedded
     i_tok: [...], i_ref: [...], i_date: [...], i_num: [...], i_qty: [...], i_uri: [...], i_comp: [...]}

  The current body is kept here as well as in its version document, so a read or a search page
  is one document fetch per resource (no $lookup into the versions). `rid` is the `seq` of the
  change that first created the resource: resources sort by it exactly as the SQLite backend's
  `rid` (insertion order) sorts them, so default result order and paging tie-breaks agree.

`resource_versions`, every version, one document per change::

    {_id: <seq>, type, id, version, lu, method, body: <BinData> | null}

`counters`, one document {_id: "changes", seq, lu, n}: the global change sequence (history
order, cursors) and the last lastUpdated handed out (kept monotonic across processes).

Index arrays hold one element per IndexEntry (fhir_server/search/entries.py) with short field
names; None values are left out (a missing field matches `null` in a query, like SQL NULL).
Text fields are stored as str and number/quantity values as doubles (+-inf allowed), as
SQLite's column affinities store them; dates are int64 epoch milliseconds with the DATE_MIN /
DATE_MAX sentinels as the int64 limits.
"""

from __future__ import annotations

from typing import Iterable

from ...search.entries import (
    CompositeEntry,
    DateEntry,
    IndexEntry,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)
from ..base import StoredVersion
from ..serialization import from_epoch_ms, to_epoch_ms

RESOURCES = "resources"
VERSIONS = "resource_versions"
COUNTERS = "counters"
CHANGES = "changes"  # _id of the change-counter document

# SearchParameter.type -> the array holding its index entries
ARRAY_FOR_TYPE = {
    "string": "i_str",
    "token": "i_tok",
    "reference": "i_ref",
    "date": "i_date",
    "number": "i_num",
    "quantity": "i_qty",
    "uri": "i_uri",
}
COMPOSITE_ARRAY = "i_comp"
INDEX_ARRAYS = (*ARRAY_FOR_TYPE.values(), COMPOSITE_ARRAY)


def _text(value) -> str | None:
    return None if value is None else str(value)


def _real(value) -> float | None:
    return None if value is None else float(value)


def _compact(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


_FIELDS = {
    StringEntry: ("i_str", lambda e: {"n": _text(e.normalized), "x": _text(e.exact)}),
    TokenEntry: ("i_tok", lambda e: {"s": _text(e.system), "c": _text(e.code), "t": _text(e.text),
                                     "ts": _text(e.type_system), "tc": _text(e.type_code)}),
    ReferenceEntry: ("i_ref", lambda e: {"tt": _text(e.target_type), "ti": _text(e.target_id), "u": _text(e.url)}),
    DateEntry: ("i_date", lambda e: {"lo": int(e.low), "hi": int(e.high)}),
    NumberEntry: ("i_num", lambda e: {"v": _real(e.value), "lo": _real(e.low), "hi": _real(e.high)}),
    QuantityEntry: ("i_qty", lambda e: {"s": _text(e.system), "c": _text(e.code), "un": _text(e.unit),
                                        "v": _real(e.value), "lo": _real(e.low), "hi": _real(e.high)}),
    UriEntry: ("i_uri", lambda e: {"v": _text(e.value)}),
}


def index_arrays(entries: Iterable[IndexEntry]) -> dict[str, list[dict]]:
    """The embedded index arrays of one resource version (only the non-empty ones)."""
    out: dict[str, list[dict]] = {}
    for entry in entries:
        if isinstance(entry, CompositeEntry):
            element = {"p": entry.param}
            for n, component in enumerate(entry.components):
                element[f"k{n}"] = _compact(_FIELDS[type(component)][1](component))
            out.setdefault(COMPOSITE_ARRAY, []).append(element)
        else:
            array, fields = _FIELDS[type(entry)]
            out.setdefault(array, []).append({"p": entry.param, **_compact(fields(entry))})
    return out


def resource_key(resource_type: str, id: str) -> str:
    return f"{resource_type}/{id}"


def current_document(v: StoredVersion, rid: int, index: dict[str, list[dict]]) -> dict:
    return {
        "_id": resource_key(v.resource_type, v.id),
        "type": v.resource_type,
        "id": v.id,
        "version": v.version,
        "seq": v.seq,
        "rid": rid,
        "lu": _epoch_ms(v),
        "method": v.method,
        "deleted": v.body is None,
        "body": v.body,
        **index,
    }


def version_document(v: StoredVersion) -> dict:
    return {"_id": v.seq, "type": v.resource_type, "id": v.id, "version": v.version, "lu": _epoch_ms(v),
            "method": v.method, "body": v.body}


def _epoch_ms(v: StoredVersion) -> int:
    return to_epoch_ms(v.last_updated)


def _body(value) -> bytes | None:
    # PyMongo decodes BSON binary subtype 0 to bytes; anything else bytes-like is returned as bytes.
    if value is None or type(value) is bytes:
        return value
    return bytes(value)


def from_current(doc: dict) -> StoredVersion:
    return StoredVersion(doc["type"], doc["id"], doc["version"], from_epoch_ms(doc["lu"]), doc["method"],
                         _body(doc.get("body")), doc["seq"])


def from_version(doc: dict) -> StoredVersion:
    return StoredVersion(doc["type"], doc["id"], doc["version"], from_epoch_ms(doc["lu"]), doc["method"],
                         _body(doc.get("body")), doc["_id"])


# Fields a search page or a read needs from a `resources` document (the index arrays stay on the server).
VERSION_FIELDS = {"type": 1, "id": 1, "version": 1, "seq": 1, "rid": 1, "lu": 1, "method": 1, "body": 1}
