"""The export itself: for each type, page through the store (keyset paging in the store's own
order, `PAGE` resources a round trip) narrowed to the level, `_since` and `_typeFilter`, and
write the stored bytes, one resource a line, into NDJSON files split at `max_file_bytes`.
Nothing is built in memory beyond one page. Files are written as `.Type-N.ndjson.part` and
renamed when complete.

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
class Output:
    type: str
    name: str
    count: int


@dataclass
class _Writer:
    """NDJSON files of one type, split at max_bytes; each renamed into place when complete."""

    folder: Path
    resource_type: str
    max_bytes: int
    outputs: list[Output]
    n: int = 0
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
            self.name = f"{self.resource_type}-{self.n}.ndjson"
            self.f = open(self.folder / f".{self.name}.part", "wb", buffering=1 << 20)
            self.size = self.count = 0
        self.f.write(body)
        self.f.write(b"\n")
        self.size += len(body) + 1
        self.count += 1

    def close(self) -> None:
        if self.f is None:
            return
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.folder / f".{self.name}.part", self.folder / self.name)
        self.outputs.append(Output(self.resource_type, self.name, self.count))
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
    """`_since` and the type's `_typeFilter` queries (ORed) as search filters."""
    out: list[Filter] = []
    if request.since:
        out += parse_search([resource_type], [("_lastUpdated", "gt" + request.since)]).filters
    queries = request.type_filters.get(resource_type) or []
    if queries:
        alternatives = [AllFilter(parse_search([resource_type], parse_qsl(q, keep_blank_values=True),
                                               strict=True).filters) for q in queries]
        out.append(alternatives[0] if len(alternatives) == 1 else AnyFilter(tuple(alternatives)))
    return tuple(out)


@dataclass
class Progress:
    total_written: int = 0
    current_type: str = ""
    types_done: int = 0
    types_total: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


async def run_export(
    reader: ResourceReader, request: ExportRequest, folder: Path, *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, page_size: int = PAGE,
    on_progress: Callable[[Progress], None] | None = None, is_cancelled: Callable[[], bool] = lambda: False,
) -> tuple[list[Output], list[Output]]:
    """Write the export into `folder`; returns (outputs, errors) as file descriptions."""
    folder.mkdir(parents=True, exist_ok=True)
    principal = principal_of(request)
    outputs: list[Output] = []
    progress = Progress(types_total=len(request.types))
    last_report = 0.0
    for resource_type in request.types:
        progress.current_type = resource_type
        writer = _Writer(folder, resource_type, max_file_bytes, outputs)
        passes = level_filters(request, resource_type)
        common = filter_of(request, resource_type)
        seen: set[str] | None = set() if len(passes) > 1 else None
        try:
            for level in passes:
                query: SearchQuery | None = SearchQuery(resource_types=(resource_type,), filters=(*level, *common),
                                                        count=page_size)
                while query is not None:
                    if is_cancelled():
                        raise Cancelled()
                    page = await search(reader, query, principal)
                    for version in page.matches:
                        if version.body is None:
                            continue
                        if seen is not None:
                            if version.id in seen:
                                continue
                            seen.add(version.id)
                        writer.write(version.body)
                    progress.total_written += len(page.matches)
                    query = replace(query, cursor=page.next_cursor) if page.next_cursor else None
                    now = time.monotonic()
                    if on_progress is not None and now - last_report >= 0.5:
                        last_report = now
                        on_progress(progress)
        finally:
            writer.close()
        progress.types_done += 1
        if writer.n:
            progress.by_type[resource_type] = sum(o.count for o in outputs if o.type == resource_type)
    if on_progress is not None:
        on_progress(progress)
    errors: list[Output] = []
    if request.warnings:
        name = "OperationOutcome-1.ndjson"
        lines = b"".join(orjson.dumps(operation_outcome([OutcomeIssue("warning", "informational", w)])) + b"\n"
                         for w in request.warnings)
        files.write_atomic(folder / name, lines)
        errors.append(Output("OperationOutcome", name, len(request.warnings)))
    return outputs, errors


def manifest(request: ExportRequest, outputs: list[Output], errors: list[Output], url_of: Callable[[str], str]) -> dict:
    return {
        "transactionTime": request.transaction_time,
        "request": request.request_url,
        "requiresAccessToken": True,
        "output": [{"type": o.type, "url": url_of(o.name), "count": o.count} for o in outputs],
        "error": [{"type": "OperationOutcome", "url": url_of(e.name), "count": e.count} for e in errors],
    }
