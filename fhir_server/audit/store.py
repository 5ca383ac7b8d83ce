"""The single commit path, audited: every write a request makes commits with its AuditEvent.

AuditingStore wraps the store the interactions write through. Its units of work note each write
and deletion (create, update, patch, delete, each transaction or batch entry, an operation's
writes) and, before committing, append one AuditEvent per write to the chain in the same backend
transaction (AuditTrail.append): the change and its audit record commit together or not at all.
Writes made outside a request (workers, start-up seeding) are the server's own and are not
audited one by one; what a worker discloses is recorded by the worker (audit/disclosures.py).

The audit trail itself is append-only: a write or deletion of an AuditEvent through this store is
refused (405), for every caller. The trail's own appends go to the store below.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from ..errors import MethodNotAllowed
from ..storage import ResourceReader, Store, StoredVersion, UnitOfWork
from ..storage.serialization import format_instant
from . import context
from .events import REST, SUCCESS, AuditRecord, action_of, interaction_of_method, rest_subtype
from .patients import patients_of
from .trail import AUDIT_EVENT, AuditTrail


def refuse_audit_write(resource_type: str = AUDIT_EVENT) -> MethodNotAllowed:
    return MethodNotAllowed("AuditEvents are recorded by this server and cannot be created, changed or deleted "
                            "through the API")


async def refuse_prepare(reader: ResourceReader, id: str, resource: dict) -> dict:
    """ValidatingStore's `prepare` for AuditEvent: refused before it is validated."""
    raise refuse_audit_write()


class _AuditedUnitOfWork:
    def __init__(self, inner: UnitOfWork, *, audited: bool):
        self._inner = inner
        self._audited = audited  # a request's unit of work: its writes get AuditEvents
        self.written: list[StoredVersion] = []
        self.deleted_patients: dict[tuple[str, str], list[str]] = {}  # (type, id) -> patients of the deleted version

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def write(self, resource_type: str, id: str, resource: dict, **options: Any) -> StoredVersion:
        if resource_type == AUDIT_EVENT:
            raise refuse_audit_write()
        stored = await self._inner.write(resource_type, id, resource, **options)
        self.written.append(stored)
        return stored

    async def delete(self, resource_type: str, id: str, **options: Any) -> StoredVersion | None:
        if resource_type == AUDIT_EVENT:
            raise refuse_audit_write()
        # the marker holds no body: the deletion is about the patients of the version it deletes
        before = await self._inner.read(resource_type, id) if self._audited else None
        marker = await self._inner.delete(resource_type, id, **options)
        if marker is not None:
            self.written.append(marker)
            if before is not None:
                self.deleted_patients[(resource_type, id)] = patients_of(before)
        return marker


class AuditingStore:
    def __init__(self, inner: Store, trail: AuditTrail):
        self._inner = inner
        self.trail = trail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        request = context.current.get()
        appended = 0
        async with self._inner.unit_of_work() as uow:
            audited = _AuditedUnitOfWork(uow, audited=request is not None)
            yield audited  # type: ignore[misc]
            if request is not None and audited.written:
                records = [write_record(request, version,
                                        audited.deleted_patients.get((version.resource_type, version.id)))
                           for version in audited.written]
                await self.trail.append(uow, records)
                appended = len(records)
        if appended:
            request.committed_events += appended


def write_record(request: context.RequestAudit, version: StoredVersion,
                 deleted_patients: list[str] | None = None) -> AuditRecord:
    """The AuditEvent fields of one committed write made by `request` (for a deletion, the patients
    of the version it deleted: the marker itself holds no body)."""
    # an update that made version 1 created the resource (update-as-create, a conditional PUT)
    interaction = "create" if version.version == 1 and version.body is not None else interaction_of_method(version.method)
    principal = request.principal
    reference = f"{version.resource_type}/{version.id}/_history/{version.version}"
    return AuditRecord(
        type=REST,
        subtype=rest_subtype(interaction),
        action=action_of(interaction),
        outcome=SUCCESS,
        recorded=format_instant(version.last_updated),
        user=principal.fhir_user if principal is not None else None,
        subject=principal.subject if principal is not None else None,
        client_id=principal.client_id if principal is not None else None,
        address=request.address,
        grant_id=principal.grant_id if principal is not None else None,
        resources=[reference],
        patients=patients_of(version) if version.body is not None else (deleted_patients or []),
        request_id=request.request_id,
    )
