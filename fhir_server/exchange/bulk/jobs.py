"""The export job: an outbox job of kind "bulk.export" whose payload is the ExportRequest (as a
dict), and how its state is read back for the status endpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...storage.base import DEAD, DONE, OutboxJob
from . import files

JOB_KIND = "bulk.export"


@dataclass
class ExportRequest:
    level: str  # system | patient | group
    types: list[str]  # what will be exported (already cut down to the token's scopes)
    type_filters: dict[str, list[str]] = field(default_factory=dict)  # type -> search query strings (ORed)
    since: str | None = None  # FHIR instant: resources with meta.lastUpdated > since
    patients: list[str] | None = None  # patient ids (Group members, `patient` parameter); None: all
    group: str | None = None
    client_id: str = "no-auth"
    scope: str | None = None  # the token's scope string (None: unrestricted, --no-auth)
    transaction_time: str = ""
    request_url: str = ""
    base: str = ""  # the FHIR base URL the files are served under
    output_format: str = "application/fhir+ndjson"
    warnings: list[str] = field(default_factory=list)  # lenient handling: ignored parameters, cut types

    def to_payload(self) -> dict:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict) -> "ExportRequest":
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in payload.items() if k in known})


@dataclass(frozen=True)
class JobView:
    status: str  # running | complete | failed | gone
    manifest: dict | None = None
    progress: dict | None = None
    error: str | None = None


def view(job: OutboxJob, folder: Path) -> JobView:
    if files.cancelled(folder):
        return JobView("gone")
    manifest = files.read_json(folder / files.MANIFEST)
    if manifest is not None:
        return JobView("complete", manifest=manifest)
    if job.state == DEAD:
        return JobView("failed", error=job.last_error)
    if job.state == DONE:  # done without a manifest: expired (swept) or cancelled
        return JobView("gone")
    return JobView("running", progress=files.read_json(folder / files.PROGRESS))
