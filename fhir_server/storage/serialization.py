"""How a version's JSON bytes are made: the one place a backend turns a resource dict into bytes."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now_ms() -> datetime:
    """Now, in UTC, truncated to milliseconds (the precision meta.lastUpdated carries)."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_instant(moment: datetime) -> str:
    """A FHIR instant (R4 datatypes.html#instant) with millisecond precision, in UTC."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_instant() -> str:
    """Now, as a FHIR instant (what the server stamps into Task.lastModified, Communication.sent ...)."""
    return format_instant(utc_now_ms())


def to_epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000 + 0.5) if moment.tzinfo else int(
        moment.replace(tzinfo=timezone.utc).timestamp() * 1000 + 0.5
    )


def from_epoch_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=timezone.utc)


def versioned_resource(resource: dict, id: str, version: int, last_updated: datetime) -> dict:
    """The stored form of a version: resourceType, id and meta first, the rest as given.

    The server owns meta.versionId and meta.lastUpdated (R4 resource.html#Meta); any other meta
    elements the client sent (profile, tag, security, source) are kept.
    """
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(last_updated)
    out = {"resourceType": resource["resourceType"], "id": id, "meta": meta}
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return out

