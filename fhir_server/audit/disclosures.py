"""Disclosures of patient data to someone outside this server, for the accounting of disclosures
(45 CFR 164.528): e-prescriptions sent to a pharmacy or gateway, notifications sent to an EHR's
subscription endpoint, Bulk export files downloaded.

Each is an AuditEvent of BALP's Privacy Disclosure pattern at the source: type DICOM 110106
"Export", subtype ISO 21089 "disclose", the patient as an entity, the recipient as the destination
agent. A patient's app can read these (smart_auth/access.py: patient/ scopes see the patient's
disclosure events and no other audit record).

The workers that disclose run outside any request; the application installs its trail here once
(`install`), and a server without a trail (FHIR_AUDIT=off) records nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterable

from ..storage import ResourceReader
from ..storage.serialization import now_instant
from .events import DISCLOSE, EXPORT, SUCCESS, AuditRecord, unique
from .patients import patients_in_ndjson, patients_of
from .trail import AuditTrail

SERVER_CLIENT = "fhir-async-telehealth"  # the disclosing system itself (BALP's source agent)

_trail: AuditTrail | None = None


def install(trail: AuditTrail | None) -> None:
    global _trail
    _trail = trail


def record(*, recipient: str, patients: Iterable[str], resources: Iterable[str], description: str,
           client_id: str = SERVER_CLIENT, user: str | None = None, subject: str | None = None,
           address: str | None = None, request_id: str | None = None) -> None:
    if _trail is None:
        return
    _trail.record(AuditRecord(
        type=EXPORT, subtype=[DISCLOSE], action="R", outcome=SUCCESS, recorded=now_instant(),
        client_id=client_id, user=user, subject=subject, address=address,
        patients=unique(patients), resources=unique(resources), recipient=recipient,
        description=description, request_id=request_id,
    ))


async def about(reader: ResourceReader, reference: str) -> list[str]:
    """The patients a stored resource ("Type/id") is about."""
    resource_type, _, id = reference.partition("/")
    found = await reader.read(resource_type, id.split("/")[0]) if id else None
    return patients_of(found) if found is not None else []


async def resources_sent(reader: ResourceReader, references: list[str], recipient: str, what: str) -> None:
    """Stored resources ("Type/id") left for `recipient`: a prescription for a pharmacy (through the
    gateway, or to its FHIR server), a notification's focus for an EHR. Nothing is read without a trail."""
    if _trail is None:
        return
    record(recipient=recipient, patients=[p for ref in references for p in await about(reader, ref)],
           resources=references, description=what)


async def export_file_sent(path: Path, *, recipient_client: str, user: str | None, subject: str | None,
                           address: str | None, request_id: str | None, file_name: str) -> None:
    """A Bulk export file was downloaded in full: the patients whose data it holds (the file is
    scanned on a worker thread, after the response went out)."""
    if _trail is None:
        return
    patients = await asyncio.to_thread(patients_in_ndjson, path)
    record(recipient=f"client {recipient_client}", patients=patients, resources=[], client_id=recipient_client,
           user=user, subject=subject, address=address, request_id=request_id,
           description=f"Bulk Data export file {file_name}")
