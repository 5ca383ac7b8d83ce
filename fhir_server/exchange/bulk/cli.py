"""`python -m fhir_server export --database URL [--type T,...] [--since INSTANT] [--type-filter Q]
--output DIR [--max-file-bytes N]`: a system-level export run in process (the server's runner), with
a progress bar on stderr (tqdm when installed, else a plain one). For operators: no token, no
server needed; the files and manifest.json land in DIR.

fhir_server/cli.py adds it with `add_commands(commands, default_database)` (like erx/admin.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson

from ...errors import FhirError
from ...storage.serialization import format_instant, utc_now_ms
from . import files
from .cutoff import hold_past
from .jobs import ExportRequest
from .kickoff import _instant, parse_type_filters
from .runner import DEFAULT_MAX_FILE_BYTES, manifest, run_export
from ...validation.resource_types import resource_types as all_resource_types


class _Bar:
    def __init__(self) -> None:
        try:
            from tqdm import tqdm
            self.bar = tqdm(unit=" res", unit_scale=True, file=sys.stderr, desc="export")
        except ImportError:
            self.bar = None
        self.last = 0

    def update(self, p) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{p.current_type} ({p.types_done}/{p.types_total} types)", refresh=False)
            self.bar.update(p.total_written - self.last)
        else:
            print(f"\rexport: {p.total_written:,} resources, {p.current_type} ({p.types_done}/{p.types_total} types)",
                  end="", file=sys.stderr, flush=True)
        self.last = p.total_written

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print(file=sys.stderr)


async def export_to(database_url: str, output: Path, types: list[str] | None, since: str | None,
                    type_filters: list[str], max_file_bytes: int, show_progress: bool = True) -> dict:
    from ...storage import open_store

    chosen = types or sorted(all_resource_types())
    filters = parse_type_filters(type_filters)
    store = open_store(database_url)
    await store.open()
    bar = _Bar() if show_progress else None
    try:
        # transactionTime: taken inside a unit of work (under the store's write lock, after whatever
        # this process's store committed); a server writing the same database from another process
        # is covered only as far as cutoff.py's settle time, which the CLI does not wait for
        async with store.unit_of_work() as uow:
            await uow.read("Patient", "-")
            moment = utc_now_ms()
            await hold_past(moment)
        request = ExportRequest(level="system", types=chosen, since=_instant(since) if since else None,
                                type_filters=filters, client_id="cli", scope=None,
                                transaction_time=format_instant(moment), request_url="cli")
        files.clean(output)
        result = await run_export(store, request, output, max_file_bytes=max_file_bytes,
                                  on_progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
        await store.close()
    body = manifest(request, result, lambda name: name)
    files.write_atomic(output / files.MANIFEST, orjson.dumps(body, option=orjson.OPT_INDENT_2))
    return body


def _run(args: argparse.Namespace) -> int:
    types = [t.strip() for t in (args.type or "").split(",") if t.strip()] or None
    unknown = [t for t in types or [] if t not in all_resource_types()]
    if unknown:
        print(f"--type: unknown resource types: {', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        body = asyncio.run(export_to(args.database, Path(args.output), types, args.since, args.type_filter or [],
                                     args.max_file_bytes, not args.quiet))
    except FhirError as exc:
        print(f"export refused: {exc}", file=sys.stderr)
        return 2
    total = sum(o["count"] for o in body["output"])
    print(f"{total} resources in {len(body['output'])} files; manifest: {Path(args.output) / files.MANIFEST}")
    return 0


def add_commands(commands, default_database: str) -> None:
    p = commands.add_parser("export", help="Bulk Data export of the whole database to NDJSON files (in process)")
    p.add_argument("--database", default=default_database, help="sqlite:/// or mongodb:// URL [FHIR_DATABASE]")
    p.add_argument("--type", help="comma-separated resource types (default: all)")
    p.add_argument("--since", help="only resources updated after this FHIR instant")
    p.add_argument("--type-filter", action="append", metavar="Type?query", help="a _typeFilter query (repeatable)")
    p.add_argument("--output", required=True, help="folder for the NDJSON files and manifest.json")
    p.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(admin=_run)
