"""The instance-level interactions of R4 http.html: read, vread, create, update, patch, delete.

Each takes a store or a unit of work (so the same code serves a single HTTP request and an
entry of a transaction Bundle) and returns StoredVersion objects; rendering is the caller's.
"""

from __future__ import annotations

import uuid

import jsonpatch
import orjson

from smart_auth.access import CREATE, DELETE, READ, UPDATE, decide
from smart_auth.principal import Principal

from ..audit.context import note_returned
from ..errors import Conflict, Gone, InvalidRequest, NotFound, PreconditionFailed, UnprocessableEntity
from ..storage import ResourceReader, Store, StoredVersion, UnitOfWork, VersionConflict
from .guard import check_read, check_write
from .validation import Checked, check, require_resource_type, require_valid_id


def new_id() -> str:
    """Server-assigned ids: random UUIDs (36 characters, inside the 64 the id rule allows)."""
    return str(uuid.uuid4())


def _missing(resource_type: str, id: str, found: StoredVersion | None) -> StoredVersion:
    if found is None:
        raise NotFound(f"Resource {resource_type}/{id} is not known")
    if found.deleted:
        raise Gone(f"Resource {resource_type}/{id} has been deleted")
    return found


async def read(reader: ResourceReader, resource_type: str, id: str, principal: Principal) -> StoredVersion:
    require_resource_type(resource_type)
    if principal.unrestricted:
        found = _missing(resource_type, id, await reader.read(resource_type, id))
    else:
        rule = decide(principal, resource_type, READ)
        found = await reader.read(resource_type, id)
        if found is not None:
            await check_read(reader, principal, rule, found)  # 404 for what the principal may not see
        found = _missing(resource_type, id, found)
    note_returned((found,))  # the request's AuditEvent names what it read
    return found


async def vread(
    reader: ResourceReader, resource_type: str, id: str, version_id: str, principal: Principal
) -> StoredVersion:
    require_resource_type(resource_type)
    rule = decide(principal, resource_type, READ)
    if not version_id.isdigit():
        raise NotFound(f"Version '{version_id}' of {resource_type}/{id} is not known")
    found = await reader.vread(resource_type, id, int(version_id))
    if found is None:
        raise NotFound(f"Version {version_id} of {resource_type}/{id} is not known")
    await check_read(reader, principal, rule, found)
    if found.deleted:
        raise Gone(f"Version {version_id} of {resource_type}/{id} records its deletion")
    note_returned((found,))
    return found


async def create(
    uow: UnitOfWork, resource: Checked, *, id: str | None = None, principal: Principal
) -> StoredVersion:
    """POST [type]: the server assigns the id and ignores one in the body (R4 http.html#create)."""
    id = id or new_id()
    await check_write(uow, principal, CREATE, resource.resource_type, resource.body, id=id)
    return await uow.write(resource.resource_type, id, resource.body, method="POST", must_not_exist=True)


def check_update(resource_type: str, id: str, resource: object) -> Checked:
    """The checks of PUT [type]/[id] that need no store: valid id, valid resource, ids agree."""
    require_resource_type(resource_type)
    require_valid_id(id)
    checked = check(resource, resource_type)
    if checked.body.get("id") != id:
        raise InvalidRequest(
            "The resource id in the body must match the id in the URL"
            if "id" in checked.body
            else "An update must carry the resource id in the body",
            expression=f"{resource_type}.id",
        )
    return checked


async def update(
    uow: UnitOfWork, resource: Checked, *, if_match: int | None = None, principal: Principal
) -> tuple[StoredVersion, bool]:
    """PUT [type]/[id] of a resource check_update accepted; update-as-create when the id is new.
    Returns (version, created)."""
    resource_type, id = resource.resource_type, resource.body["id"]
    previous = await uow.read(resource_type, id)
    await check_write(uow, principal, UPDATE, resource_type, resource.body, id=id, current=previous)
    try:
        stored = await uow.write(resource_type, id, resource.body, method="PUT", expected_version=if_match)
    except VersionConflict as err:
        raise PreconditionFailed(_conflict_message(resource_type, id, err)) from None
    return stored, previous is None or previous.deleted


def apply_patch(current: StoredVersion, operations: object) -> Checked:
    """The current version with a JSON Patch document (RFC 6902) applied, validated again."""
    if not isinstance(operations, list):
        raise InvalidRequest("A JSON Patch document must be a JSON array of operations")
    try:
        patched = jsonpatch.JsonPatch(operations).apply(orjson.loads(current.body))
    except jsonpatch.JsonPatchTestFailed:
        raise UnprocessableEntity("A JSON Patch 'test' operation failed; nothing was changed") from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
        # The library's messages quote parts of the document (patient data): name the kind only.
        raise UnprocessableEntity(
            f"The JSON Patch could not be applied ({type(err).__name__}: a path is missing or an "
            "operation is malformed); nothing was changed"
        ) from None
    except (TypeError, KeyError, ValueError) as err:
        raise InvalidRequest(f"Malformed JSON Patch document ({type(err).__name__})") from None
    if not isinstance(patched, dict) or patched.get("id") != current.id:
        raise UnprocessableEntity("A patch must not change the resource's id")
    return check(patched, current.resource_type)


async def patch(
    uow: UnitOfWork, resource_type: str, id: str, operations: object, *, if_match: int | None = None,
    principal: Principal,
) -> StoredVersion:
    """PATCH [type]/[id] inside a unit of work (a transaction entry): read, apply, validate, write."""
    require_resource_type(resource_type)
    decide(principal, resource_type, UPDATE)
    current = _missing(resource_type, id, await uow.read(resource_type, id))
    await check_write(uow, principal, UPDATE, resource_type, None, current=current)
    _check_if_match(resource_type, id, if_match, current)
    patched = apply_patch(current, operations)
    await check_write(uow, principal, UPDATE, resource_type, patched.body, id=id)
    return await write_patched(uow, current, patched)


async def write_patched(uow: UnitOfWork, current: StoredVersion, patched: Checked) -> StoredVersion:
    """Store a patch result, provided `current` is still the current version (else VersionConflict)."""
    return await uow.write(current.resource_type, current.id, patched.body, method="PATCH",
                           expected_version=current.version)


async def patch_standalone(
    store: Store, resource_type: str, id: str, operations: object, *, if_match: int | None = None, attempts: int = 3,
    principal: Principal,
) -> StoredVersion:
    """PATCH [type]/[id] as its own request: the patch is applied and validated outside the write
    lock, and written only if no other write came in between (optimistic; retried otherwise,
    unless the client pinned the version with If-Match). The access check is made on the version
    the patch applies to, so a concurrent change is checked again on the retry."""
    require_resource_type(resource_type)
    decide(principal, resource_type, UPDATE)
    for attempt in range(attempts):
        current = _missing(resource_type, id, await store.read(resource_type, id))
        await check_write(store, principal, UPDATE, resource_type, None, current=current)
        _check_if_match(resource_type, id, if_match, current)
        patched = apply_patch(current, operations)
        await check_write(store, principal, UPDATE, resource_type, patched.body, id=id)
        try:
            async with store.unit_of_work() as uow:
                return await write_patched(uow, current, patched)
        except VersionConflict as err:
            if if_match is not None:
                raise PreconditionFailed(_conflict_message(resource_type, id, err)) from None
    raise Conflict(f"{resource_type}/{id} kept changing while the patch was applied; try again")


def _check_if_match(resource_type: str, id: str, if_match: int | None, current: StoredVersion) -> None:
    if if_match is not None and if_match != current.version:
        raise PreconditionFailed(_conflict_message(resource_type, id, VersionConflict(if_match, current.version)))


async def delete(
    uow: UnitOfWork, resource_type: str, id: str, *, if_match: int | None = None, principal: Principal
) -> StoredVersion | None:
    """DELETE [type]/[id]: idempotent; the deletion is a version of its own in history."""
    require_resource_type(resource_type)
    if not principal.unrestricted:
        decide(principal, resource_type, DELETE)
        await check_write(uow, principal, DELETE, resource_type, None, current=await uow.read(resource_type, id))
    try:
        return await uow.delete(resource_type, id, expected_version=if_match)
    except VersionConflict as err:
        raise PreconditionFailed(_conflict_message(resource_type, id, err)) from None


def _conflict_message(resource_type: str, id: str, err: VersionConflict) -> str:
    if err.current is None:
        return f"If-Match names version {err.expected} but {resource_type}/{id} does not exist"
    return f"If-Match names version {err.expected} but {resource_type}/{id} is at version {err.current}"

