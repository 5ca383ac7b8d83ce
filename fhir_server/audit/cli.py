"""`python -m fhir_server audit verify|export|purge`: the operator's view of the audit trail.

verify walks the hash chain (audit/chain.py) from the newest AuditEvent back to the oldest and
names the first broken link; it exits 0 when the trail is whole, 1 when it is not. It prints the
head (position and hash): keep it somewhere else, and a later verify that ends on an older head
shows that newest events were removed.

purge removes the events older than the retention period (FHIR_AUDIT_RETENTION_DAYS, six years by
default); verify then reports where the kept trail begins.

export writes the trail as NDJSON (one AuditEvent per line, oldest first, with their chain hashes)
for a SIEM; `--since` limits it to events recorded from then on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

from ..storage import HistoryQuery, Store, open_store
from . import chain
from .trail import AUDIT_EVENT

PAGE = 1000


async def _newest_first(store: Store, since: datetime | None = None) -> AsyncIterator[tuple[str, bytes | None]]:
    cursor: int | None = None
    while True:
        page = await store.history(HistoryQuery(resource_type=AUDIT_EVENT, since=since, at_or_before_seq=cursor,
                                                count=PAGE))
        for version in page.versions:
            yield version.id, version.body
        if page.next_seq is None:
            return
        cursor = page.next_seq


async def verify_trail(store: Store) -> chain.Verification:
    return await chain.verify(_newest_first(store))


def _missing(store: Store) -> bool:
    """An embedded database file that is not there (a mistyped path): opening it would create an
    empty one, whose empty trail would verify as whole."""
    path = getattr(store, "path", None)
    if path is not None and not Path(path).is_file():
        print(f"no database at {path}", file=sys.stderr)
        return True
    return False


async def _verify(database_url: str) -> int:
    store = open_store(database_url)
    if _missing(store):
        return 2
    await store.open()
    try:
        result = await verify_trail(store)
    finally:
        await store.close()
    broken = result.first_break
    print(f"audit trail: {result.events} events, head position {result.head.position} hash {result.head.hash}")
    if result.oldest is not None and result.oldest > 1:
        # retention purges the oldest events; if none was due, they were deleted
        print(f"positions 1..{result.oldest - 1} are not stored (purged by retention, or deleted)")
    if broken is None:
        print("the chain is whole")
        return 0
    where = f"position {broken.position}" if broken.position is not None else "an event"
    print(f"BROKEN at {where} (AuditEvent/{broken.event_id}): {broken.reason}")
    if len(result.breaks or ()) > 1:
        print(f"{len(result.breaks)} broken links in all")
    return 1


async def _export(database_url: str, to: Path, since: datetime | None) -> int:
    store = open_store(database_url)
    if _missing(store):
        return 2
    await store.open()
    count = 0
    try:
        # history comes newest first: each page goes to a scratch file, oldest line first, and the
        # files are joined in reverse, so memory holds one page however long the trail
        with tempfile.TemporaryDirectory(prefix="audit-export-") as scratch:
            pages: list[Path] = []
            lines: list[bytes] = []

            def spill() -> None:
                path = Path(scratch) / f"{len(pages)}.ndjson"
                path.write_bytes(b"".join(reversed(lines)))
                pages.append(path)
                lines.clear()

            async for _, body in _newest_first(store, since):
                if body is not None:
                    lines.append(body + b"\n")
                    count += 1
                    if len(lines) >= PAGE:
                        spill()
            if lines:
                spill()
            with open(to, "wb") as out:
                for path in reversed(pages):
                    with open(path, "rb") as page:
                        shutil.copyfileobj(page, out)
    finally:
        await store.close()
    print(f"{count} AuditEvents written to {to}")
    return 0


DEFAULT_RETENTION_DAYS = 2190  # six years: how long HIPAA keeps documentation (45 CFR 164.316(b)(2))


def retention_days() -> int:
    return int(os.environ.get("FHIR_AUDIT_RETENTION_DAYS", DEFAULT_RETENTION_DAYS))


async def _purge(database_url: str, days: int) -> int:
    """Remove the AuditEvents recorded more than `days` ago. The chain stays verifiable: verify
    accepts a trail whose oldest stored event follows purged ones (and says so)."""
    if days < 1:
        print("error: --retention-days must be at least 1", file=sys.stderr)
        return 2
    store = open_store(database_url)
    if _missing(store):
        return 2
    await store.open()
    try:
        before = datetime.now(timezone.utc) - timedelta(days=days)
        removed = await store.purge_before(AUDIT_EVENT, before)
    finally:
        await store.close()
    print(f"{removed} AuditEvents recorded before {before.isoformat(timespec='seconds')} removed "
          f"(retention {days} days)")
    return 0


def add_commands(commands: "argparse._SubParsersAction", database_url: str) -> None:
    audit = commands.add_parser("audit", help="the audit trail: verify its hash chain, export it for a SIEM")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser("verify", help="walk the hash chain and name the first broken link")
    verify.add_argument("--database", default=database_url, help="sqlite:/// or mongodb:// URL [FHIR_DATABASE]")
    verify.set_defaults(admin=lambda args: asyncio.run(_verify(args.database)))
    export = sub.add_parser("export", help="write the AuditEvents as NDJSON, oldest first")
    export.add_argument("--database", default=database_url, help="sqlite:/// or mongodb:// URL [FHIR_DATABASE]")
    export.add_argument("--to", required=True, type=Path, help="the NDJSON file to write")
    export.add_argument("--since", type=datetime.fromisoformat, default=None,
                        help="only events recorded from this instant (ISO 8601, with a time zone)")
    export.set_defaults(admin=lambda args: asyncio.run(_export(args.database, args.to, args.since)))
    purge = sub.add_parser("purge", help="remove AuditEvents older than the retention period")
    purge.add_argument("--database", default=database_url, help="sqlite:/// or mongodb:// URL [FHIR_DATABASE]")
    purge.add_argument("--retention-days", type=int, default=retention_days(),
                       help="keep this many days (default %(default)s: six years) [FHIR_AUDIT_RETENTION_DAYS]")
    purge.set_defaults(admin=lambda args: asyncio.run(_purge(args.database, args.retention_days)))
