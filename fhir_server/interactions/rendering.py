"""Bundles and entry fields built around stored bytes, which are embedded without re-parsing."""

from __future__ import annotations

from typing import Iterable

import orjson

from ..storage import HistoryPage, StoredVersion
from ..storage.serialization import format_instant

_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


def status_line(status: int) -> str:
    return _STATUS_TEXT.get(status, str(status))


def relative_url(version: StoredVersion) -> str:
    return f"{version.resource_type}/{version.id}"


def version_location(version: StoredVersion) -> str:
    return f"{version.resource_type}/{version.id}/_history/{version.version}"


def embedded(version: StoredVersion) -> orjson.Fragment:
    """The stored bytes, placed into a larger JSON document as they are."""
    assert version.body is not None
    return orjson.Fragment(version.body)


def entry_response(version: StoredVersion, status: int, *, with_location: bool) -> dict:
    """Bundle.entry.response for a version (R4 bundle.html#transaction-response)."""
    response: dict = {"status": status_line(status)}
    if with_location:
        response["location"] = version_location(version)
    response["etag"] = version.etag
    response["lastModified"] = format_instant(version.last_updated)
    return response


def _history_status(version: StoredVersion) -> int:
    if version.method == "DELETE":
        return 204
    return 201 if version.version == 1 or version.method == "POST" else 200


def history_bundle(page: HistoryPage, base: str, links: Iterable[tuple[str, str]]) -> bytes:
    entries = []
    for v in page.versions:
        entry: dict = {"fullUrl": f"{base}/{relative_url(v)}"}
        if v.body is not None:
            entry["resource"] = embedded(v)
        entry["request"] = {
            "method": v.method,
            "url": v.resource_type if v.method == "POST" else relative_url(v),
        }
        entry["response"] = entry_response(v, _history_status(v), with_location=False)
        entries.append(entry)
    bundle: dict = {"resourceType": "Bundle", "type": "history"}
    if page.total is not None:  # None: not known exactly (a page narrowed by authorization)
        bundle["total"] = page.total
    bundle["link"] = [{"relation": rel, "url": url} for rel, url in links]
    if entries:  # R4 JSON allows no empty arrays (json.html)
        bundle["entry"] = entries
    return orjson.dumps(bundle)
