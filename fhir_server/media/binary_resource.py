"""Where a Binary's bytes are, recorded on the Binary itself.

R4 Binary is a Resource, not a DomainResource: it has no `extension` element, but its `meta`
(an Element) may carry extensions. The stored Binary of an uploaded photo or video therefore
holds no `data`; `meta.extension` has one complex extension saying which blob holds the bytes,
how many there are and their SHA-1:

    {"url": BLOB_EXTENSION, "extension": [
        {"url": "key", "valueString": "<Binary id>.<32 hex>"},
        {"url": "size", "valueUnsignedInt": 12345},
        {"url": "hash", "valueBase64Binary": "<SHA-1, base64>"}]}

It travels with every version (history keeps the bytes of older versions readable) and with the
Binary's JSON in search results. A client cannot point a Binary at another one's bytes by
writing this extension: a key is only ever served for the Binary whose id it starts with.
"""

from __future__ import annotations

from dataclasses import dataclass

from profiles.canonical import CANONICAL_BASE

from ..storage.blobs import BlobInfo, binary_id_of, valid_key

BLOB_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/binary-blob"


@dataclass(frozen=True, slots=True)
class BlobRef:
    key: str
    size: int | None
    sha1: str | None


def blob_ref(binary: dict, binary_id: str | None = None) -> BlobRef | None:
    """The blob a Binary's bytes are in, or None (bytes inline in `data`, or none). With
    `binary_id`, a key that was not written for that Binary is ignored."""
    meta = binary.get("meta")
    if not isinstance(meta, dict):
        return None
    for ext in meta.get("extension") or ():
        if not isinstance(ext, dict) or ext.get("url") != BLOB_EXTENSION:
            continue
        parts = {e.get("url"): e for e in ext.get("extension") or () if isinstance(e, dict)}
        key = (parts.get("key") or {}).get("valueString")
        if not isinstance(key, str) or not valid_key(key):
            return None
        if binary_id is not None and binary_id_of(key) != binary_id:
            return None
        size = (parts.get("size") or {}).get("valueUnsignedInt")
        sha1 = (parts.get("hash") or {}).get("valueBase64Binary")
        return BlobRef(key, size if isinstance(size, int) else None, sha1 if isinstance(sha1, str) else None)
    return None


def without_blob_ref(binary: dict) -> dict:
    """The Binary without our extension (a client's own copy of it is never trusted)."""
    meta = binary.get("meta")
    if not isinstance(meta, dict) or "extension" not in meta:
        return binary
    kept = [e for e in meta["extension"] if not (isinstance(e, dict) and e.get("url") == BLOB_EXTENSION)]
    meta = {k: v for k, v in meta.items() if k != "extension"}
    if kept:
        meta["extension"] = kept
    out = {k: v for k, v in binary.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out


def with_blob_ref(binary: dict, info: BlobInfo) -> dict:
    """The Binary recording `info` as where its bytes are (and without inline `data`)."""
    out = {k: v for k, v in without_blob_ref(binary).items() if k != "data"}
    meta = dict(out.get("meta") or {})
    meta["extension"] = [*(meta.get("extension") or []), {"url": BLOB_EXTENSION, "extension": [
        {"url": "key", "valueString": info.key},
        {"url": "size", "valueUnsignedInt": info.size},
        {"url": "hash", "valueBase64Binary": info.sha1},
    ]}]
    out["meta"] = meta
    return out
