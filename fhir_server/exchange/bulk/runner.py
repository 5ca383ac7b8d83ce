"""The export itself: for each type, page through the store (keyset paging in the store's own
order, `PAGE` resources a round trip) narrowed to the level, `_since` and `_typeFilter`, and
write the stored bytes, one resource a line, into NDJSON files split at `max_file_bytes`.
Nothing is built in memory beyond one page. Files are written as `.Type-N.ndjson.part` and
renamed when complete; each completed file is recorded in the job's checkpoint (checkpoint.py), so
an interrupted job goes on from there instead of starting over.

The cut-off: every pass also asks `_lastUpdated le transactionTime`, so nothing changed after the
job's transactionTime is exported (it belongs to the next `_since=transactionTime` export), and
everything changed up to it is (install.py and cutoff.py explain how transactionTime is chosen so
that no change stamped before it can still commit after the job reads). With `_since`, resources
deleted in (`_since`, transactionTime] are reported in `Type.deleted-N.ndjson` files (deleted.py).

Levels: system (every resource of the types); Patient without `patient` (every Patient and every
resource of a compartment type that references a patient through one of the type's compartment
parameters); a list of patients (Group members, or `patient`): those Patients and the resources in
their compartments, in chunks of `CHUNK` patients (a resource in two chunks' compartments is
written once).

Authorization: every query runs through interactions.search.search with the requesting client's
system/ scopes, so a v2 scope restriction (`system/Observation.rs?category=laboratory`) narrows
the export as it narrows a search.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl

import orjson

from smart_auth.principal import Principal
from smart_auth.scopes import ScopeSet

from ...errors import OutcomeIssue, operation_outcome
from ...interactions.search import search
from ...search.parse import parse_search
from ...search.query import AllFilter, AnyFilter, Filter, ParamFilter, ReferenceValue, SearchQuery, TokenValue
from ...search.registry import patient_compartment_params
from ...storage import ResourceReader
from . import files
from .checkpoint import Output, Position, ids_in, prepare, record
from . import sealed
from .deleted import bundle_line, deleted_ids
from .jobs import ExportRequest

PAGE = 5000
CHUNK = 200
DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024


class Cancelled(Exception):
    """The job was deleted while it ran."""


def principal_of(request: ExportRequest) -> Principal:
    if request.scope is None:
        return Principal.anonymous_superuser()
    system_only = " ".join(w for w in request.scope.split() if w.startswith("system/"))
    return Principal(client_id=request.client_id, subject=request.client_id, scopes=ScopeSet.parse(system_only))


@dataclass
class _Writer:
    """NDJSON files of one kind, split at max_bytes; each renamed into place when complete and
    appended to `outputs` (the caller checkpoints when that list grows)."""

    folder: Path
    prefix: str  # file names are `<prefix>-N.ndjson`
    manifest_type: str
    max_bytes: int
    outputs: list[Output]
    n: int = 0  # files of this prefix so far (a resumed type goes on numbering)
    f: object = None
    size: int = 0
    count: int = 0
    name: str = ""

    def write(self, body: bytes) -> None:
        if b"\n" in body:  # stored bytes are compact JSON; never let a line break split a resource
            body = orjson.dumps(orjson.loads(body))
        if self.f is not None and self.size and self.size + len(body) + 1 > self.max_bytes:
            self.close()
        if self.f is None:
            self.n += 1
            self.name = f"{self.prefix}-{self.n}.ndjson"
            # sealed (AES-GCM) when data at rest is encrypted: the files hold patient data (sealed.py)
            self.f = sealed.open_for_writing(self.folder / f".{self.name}.part", self.name)
            self.size = self.count = 0
        self.f.write(body)
        self.f.write(b"\n")
        self.size += len(body) + 1
        self.count += 1

    def close(self) -> None:
        if self.f is None:
            return
        sealed.finish(self.f)
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.folder / f".{self.name}.part", self.folder / self.name)
        self.outputs.append(Output(self.manifest_type, self.name, self.count))
        self.f = None

    def abandon(self) -> None:
        """An interrupted file stays a `.part`: never listed, removed when the job goes on."""
        if self.f is not None:
            self.f.close()
            self.f = None


def _reference_any(resource_type: str, codes: list[str], patients: list[str] | None) -> Filter:
    values = tuple(ReferenceValue("Patient", p) for p in patients) if patients is not None else ()
    filters = [ParamFilter(resource_type, code, "reference", values, missing=None if patients is not None else False)
               for code in codes]
    return filters[0] if len(filters) == 1 else AnyFilter(tuple(filters))


def level_filters(request: ExportRequest, resource_type: str) -> list[tuple[Filter, ...]]:
    """One filter tuple per pass over the type (a pass per chunk of patients)."""
    if request.level == "system":
        return [()]
    patients = request.patients
    if resource_type == "Patient":
        if patients is None:
            return [()]
        chunks = [patients[i:i + CHUNK] for i in range(0, len(patients), CHUNK)]
        return [(ParamFilter("Patient", "_id", "token", tuple(TokenValue(None, p, False) for p in c)),) for c in chunks]
    codes = [c for c in patient_compartment_params(resource_type) if c != "{def}"]
    if not codes:
        return []
    if patients is None:
        return [(_reference_any(resource_type, codes, None),)]
    chunks = [patients[i:i + CHUNK] for i in range(0, len(patients), CHUNK)]
    return [(_reference_any(resource_type, codes, c),) for c in chunks]


def filter_of(request: ExportRequest, resource_type: str) -> tuple[Filter, ...]:
    """The transactionTime cut-off, `_since` and the type's `_typeFilter` queries (ORed) as search filters."""
    out: list[Filter] = []
    bounds = [("_lastUpdated", "gt" + request.since)] if request.since else []
    if request.transaction_time:
        bounds.append(("_lastUpdated", "le" + request.transaction_time))
    if bounds:
        out += parse_search([resource_type], bounds).filters
    queries = request.type_filters.get(resource_type) or []
    if queries:
        alternatives = [AllFilter(parse_search([resource_type], parse_qsl(q, keep_blank_values=True),
                                               strict=True).filters) for q in queries]
        out.append(alternatives[0] if len(alternatives) == 1 else AnyFilter(tuple(alternatives)))
    return tuple(out)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Progress:
    total_written: int = 0
    current_type: str = ""
    types_done: int = 0
    types_total: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


@dataclass
class ExportResult:
    output: list[Output]
    deleted: list[Output]
    error: list[Output]


async def run_export(
    reader: ResourceReader, request: ExportRequest, folder: Path, *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, page_size: int = PAGE,
    on_progress: Callable[[Progress], None] | None = None, is_cancelled: Callable[[], bool] = lambda: False,
) -> ExportResult:
    """Write the export into `folder`, going on from its checkpoint when there is one."""
    point = prepare(folder)
    start = point.position
    principal = principal_of(request)
    outputs = point.outputs
    progress = Progress(types_total=len(request.types), total_written=point.written, types_done=start.type_index)
    last_report = 0.0

    for type_index in range(start.type_index, len(request.types)):
        resource_type = request.types[type_index]
        resuming = type_index == start.type_index  # (a fresh job's checkpoint is at type 0, from its start)
        progress.current_type = resource_type
        done_here = [o for o in outputs if o.type == resource_type]
        writer = _Writer(folder, resource_type, resource_type, max_file_bytes, outputs, n=len(done_here))
        passes = level_filters(request, resource_type)
        common = filter_of(request, resource_type)
        seen: set[str] | None = None
        if len(passes) > 1:  # a resource in two chunks' compartments is written once
            seen = ids_in(folder, done_here) if resuming else set()
        # the resumed page's resources already in completed files (only its last few files can hold any)
        skip = ids_in(folder, outputs[len(outputs) - start.page_files:]) if resuming and start.page_files else set()
        first_pass = start.pass_index if resuming else 0
        try:
            for pass_index in range(first_pass, len(passes)):
                cursor = start.cursor if resuming and pass_index == first_pass else None
                query: SearchQuery | None = SearchQuery(resource_types=(resource_type,),
                                                        filters=(*passes[pass_index], *common), count=page_size,
                                                        cursor=cursor)
                page_start_files = len(outputs) - (start.page_files if skip else 0)
                while query is not None:
                    if is_cancelled():
                        raise Cancelled()
                    page = await search(reader, query, principal)
                    for version in page.matches:
                        if version.body is None or version.id in skip:
                            continue
                        if seen is not None:
                            if version.id in seen:
                                continue
                            seen.add(version.id)
                        files_before = len(outputs)
                        writer.write(version.body)
                        if len(outputs) != files_before:  # a file was completed: the page so far is in it
                            record(folder, outputs[-1],
                                   Position(type_index, pass_index, query.cursor, len(outputs) - page_start_files))
                        progress.total_written += 1
                    skip = set()
                    page_start_files = len(outputs)
                    query = replace(query, cursor=page.next_cursor) if page.next_cursor else None
                    now = time.monotonic()
                    if on_progress is not None and now - last_report >= 0.5:
                        last_report = now
                        on_progress(progress)
        except BaseException:
            writer.abandon()
            raise
        files_before = len(outputs)
        writer.close()
        record(folder, outputs[-1] if len(outputs) != files_before else None, Position(type_index + 1))
        progress.types_done += 1
        progress.by_type[resource_type] = sum(o.count for o in outputs if o.type == resource_type)
    deleted = await _write_deletions(reader, request, folder, principal, max_file_bytes, is_cancelled)
    if on_progress is not None:
        on_progress(progress)
    errors: list[Output] = []
    if request.warnings:
        name = "OperationOutcome-1.ndjson"
        lines = b"".join(orjson.dumps(operation_outcome([OutcomeIssue("warning", "informational", w)])) + b"\n"
                         for w in request.warnings)
        files.write_atomic(folder / name, lines)
        errors.append(Output("OperationOutcome", name, len(request.warnings)))
    return ExportResult(list(outputs), deleted, errors)


async def _write_deletions(reader: ResourceReader, request: ExportRequest, folder: Path, principal: Principal,
                           max_file_bytes: int, is_cancelled: Callable[[], bool]) -> list[Output]:
    """With `_since`: the `deleted` files, one per type with deletions (split like the others)."""
    if not request.since or not request.transaction_time:
        return []
    since, cutoff = instant(request.since), instant(request.transaction_time)
    deleted: list[Output] = []
    for resource_type in request.types:
        if is_cancelled():
            raise Cancelled()
        writer = _Writer(folder, f"{resource_type}.deleted", "Bundle", max_file_bytes, deleted)
        try:
            async for id in deleted_ids(reader, request, resource_type, principal,
                                        level_filters(request, resource_type), since, cutoff):
                writer.write(bundle_line(resource_type, id))
        except BaseException:
            writer.abandon()
            raise
        writer.close()
    return deleted


def manifest(request: ExportRequest, result: ExportResult, url_of: Callable[[str], str]) -> dict:
    body = {
        "transactionTime": request.transaction_time,
        "request": request.request_url,
        "requiresAccessToken": True,
        "output": [{"type": o.type, "url": url_of(o.name), "count": o.count} for o in result.output],
        "error": [{"type": "OperationOutcome", "url": url_of(e.name), "count": e.count} for e in result.error],
    }
    if request.since:  # export.md: deleted is for exports with _since (an empty list: nothing was deleted)
        body["deleted"] = [{"type": "Bundle", "url": url_of(d.name), "count": d.count} for d in result.deleted]
    return body
