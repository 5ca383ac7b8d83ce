"""The hash chain that makes the audit trail tamper-evident.

Each AuditEvent carries, in the extension below, its position in the trail, the hash of the event
before it and its own hash: SHA-256 over the event's canonical JSON (keys sorted, no `meta`, which
the store writes, and without the hash itself), which includes the previous hash. Altering a
stored event changes its hash; deleting one breaks the next event's link to it. Events are
appended under the store's write lock (UnitOfWork.append_chained), so the trail
is one chain however many worker processes write to it.

Removing the newest events leaves a shorter chain that is still whole: `audit verify` prints the
head (position and hash) for the operator to keep elsewhere, and `audit export` ships the events
with their hashes to a SIEM, which then holds the anchor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import AsyncIterator, Iterable

import orjson

from profiles.canonical import CANONICAL_BASE

CHAIN_URL = f"{CANONICAL_BASE}/StructureDefinition/audit-chain"
GENESIS = "0" * 64  # the "previous hash" of the first event


@dataclass(frozen=True, slots=True)
class Link:
    position: int
    hash: str


START = Link(0, GENESIS)


def _chain_extension(event: dict) -> dict | None:
    for extension in event.get("extension", ()):
        if isinstance(extension, dict) and extension.get("url") == CHAIN_URL:
            return extension
    return None


def _parts(extension: dict) -> dict[str, str]:
    return {e.get("url"): e.get("valueString") for e in extension.get("extension", ()) if isinstance(e, dict)}


def _digest(event: dict) -> str:
    """SHA-256 of the canonical form: the event without meta and without its own hash."""
    content = {k: v for k, v in event.items() if k != "meta"}
    extensions = []
    for extension in content.get("extension", ()):
        if isinstance(extension, dict) and extension.get("url") == CHAIN_URL:
            extension = {**extension, "extension": [e for e in extension.get("extension", ())
                                                    if not (isinstance(e, dict) and e.get("url") == "hash")]}
        extensions.append(extension)
    if extensions:
        content["extension"] = extensions
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def link_of(body: bytes | None) -> Link:
    """The chain position and hash a stored AuditEvent ends with (START when there is none yet)."""
    if body is None:
        return START
    extension = _chain_extension(orjson.loads(body))
    if extension is None:
        return START
    parts = _parts(extension)
    try:
        return Link(int(parts.get("position") or 0), parts.get("hash") or GENESIS)
    except ValueError:
        return START


def seal(event: dict, previous: Link) -> tuple[dict, Link]:
    """The event with its chain extension, and the link the next event chains to."""
    position = previous.position + 1
    extension = {"url": CHAIN_URL, "extension": [
        {"url": "position", "valueString": str(position)},
        {"url": "previous", "valueString": previous.hash},
    ]}
    sealed = {**event, "extension": [*event.get("extension", ()), extension]}
    digest = _digest(sealed)
    extension["extension"].append({"url": "hash", "valueString": digest})
    return sealed, Link(position, digest)


@dataclass(frozen=True, slots=True)
class Break:
    position: int | None  # the chain position where the trail stops being whole
    event_id: str | None
    reason: str


@dataclass
class Verification:
    events: int = 0
    head: Link = START
    breaks: list[Break] | None = None
    oldest: int | None = None  # the chain position of the oldest event stored (above 1: older ones were removed)

    @property
    def first_break(self) -> Break | None:
        if not self.breaks:
            return None
        return min(self.breaks, key=lambda b: (b.position is None, b.position or 0))


async def verify(newest_first: AsyncIterator[tuple[str, bytes | None]]) -> Verification:
    """Walk the trail from its newest event back to its oldest, given (id, stored body) pairs.

    Each event must hash to the hash it carries, and carry the previous event's hash and position
    + 1. Events purged by retention leave the oldest kept event pointing at one no longer stored:
    that first link is accepted (its own hash is still checked)."""
    result = Verification(breaks=[])
    later: tuple[str, Link, str] | None = None  # (id, link, previous hash) of the event after this one
    async for event_id, body in newest_first:
        result.events += 1
        if body is None:
            result.breaks.append(Break(None, event_id, "an AuditEvent was deleted (a deletion marker is stored)"))
            continue
        event = orjson.loads(body)
        extension = _chain_extension(event)
        if extension is None:
            result.breaks.append(Break(None, event_id, "an AuditEvent carries no chain extension"))
            continue
        parts = _parts(extension)
        try:
            position = int(parts.get("position") or "")
        except ValueError:
            result.breaks.append(Break(None, event_id, "the chain position is not a number"))
            continue
        carried, previous = parts.get("hash"), parts.get("previous")
        if result.events == 1:
            result.head = Link(position, carried or "")
        if _digest(event) != carried:
            result.breaks.append(Break(position, event_id, "the event's content does not match its hash (altered)"))
        if later is not None:
            later_id, later_link, later_previous = later
            if later_link.position <= position:
                result.breaks.append(Break(later_link.position, later_id,
                                           f"position {later_link.position} is stored after position {position}: "
                                           "the trail was reordered, or two events claim one position (a fork)"))
            elif later_link.position != position + 1:
                result.breaks.append(Break(position + 1, later_id,
                                           f"events {position + 1}..{later_link.position - 1} are missing (deleted)"))
            elif later_previous != carried:
                result.breaks.append(Break(later_link.position, later_id,
                                           "the event does not chain to the one before it"))
        later = (event_id, Link(position, carried or ""), previous or "")
    if later is not None:
        result.oldest = later[1].position
    if later is not None and later[1].position == 1 and later[2] != GENESIS:
        result.breaks.append(Break(1, later[0], "the first event does not start the chain"))
    return result


def positions(events: Iterable[dict]) -> list[int]:
    """The chain positions of parsed AuditEvents (tests and export)."""
    out = []
    for event in events:
        extension = _chain_extension(event)
        if extension is not None:
            out.append(int(_parts(extension).get("position") or 0))
    return out
