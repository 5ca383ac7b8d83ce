"""The instance-level interactions of R4 http.html: read, vread, create, update, patch, delete.

Each takes a store or a unit of work (so the same code serves a single HTTP request and an
entry of a transaction Bundle) and returns StoredVersion objects; rendering is the caller's.
"""

from __future__ import annotations

import uuid

import jsonpatch
import orjson

from ..errors import Gone, InvalidRequest, NotFound, PreconditionFailed, UnprocessableEntity
from ..storage import ResourceReader, StoredVersion, UnitOfWork, VersionConflict
from .validation import check_resource, require_resource_type, require_valid_id


def new_id() -> str:
    """Server-assigned ids: random UUIDs (36 characters, inside the 64 the id rule allows)."""
    return str(uuid.uuid4())


def _missing(resource_type: str, id: str, found: StoredVersion | None) -> StoredVersion:
    if found is None:
        raise NotFound(f"Resource {resource_type}/{id} is not known")
    if found.deleted:
        raise Gone(f"Resource {resource_type}/{id} has been deleted")
    return found


async def read(reader: ResourceReader, resource_type: str, id: str) -> StoredVersion:
    require_resource_type(resource_type)
    return _missing(resource_type, id, await reader.read(resource_type, id))


async def vread(reader: ResourceReader, resource_type: str, id: str, version_id: str) -> StoredVersion:
    require_resource_type(resource_type)
    if not version_id.isdigit():
        raise NotFound(f"Version '{version_id}' of {resource_type}/{id} is not known")
    found = await reader.vread(resource_type, id, int(version_id))
    if found is None:
        raise NotFound(f"Version {version_id} of {resource_type}/{id} is not known")
    if found.deleted:
        raise Gone(f"Version {version_id} of {resource_type}/{id} records its deletion")
    return found


async def create(uow: UnitOfWork, resource_type: str, resource: object, *, id: str | None = None) -> StoredVersion:
    """POST [type]: the server assigns the id and ignores one in the body (R4 http.html#create)."""
    require_resource_type(resource_type)
    body = check_resource(resource, resource_type)
    return await uow.write(resource_type, id or new_id(), body, method="POST", must_not_exist=True)


async def update(
    uow: UnitOfWork, resource_type: str, id: str, resource: object, *, if_match: int | None = None
) -> tuple[StoredVersion, bool]:
    """PUT [type]/[id]; update-as-create when the id is new. Returns (version, created)."""
    require_resource_type(resource_type)
    require_valid_id(id)
    body = check_resource(resource, resource_type)
    if body.get("id") != id:
        raise InvalidRequest(
            "The resource id in the body must match the id in the URL"
            if "id" in body
            else "An update must carry the resource id in the body",
            expression=f"{resource_type}.id",
        )
    previous = await uow.read(resource_type, id)
    try:
        stored = await uow.write(resource_type, id, body, method="PUT", expected_version=if_match)
    except VersionConflict as err:
        raise PreconditionFailed(_conflict_message(resource_type, id, err)) from None
    return stored, previous is None or previous.deleted


async def patch(
    uow: UnitOfWork, resource_type: str, id: str, operations: object, *, if_match: int | None = None
) -> StoredVersion:
    """PATCH [type]/[id] with a JSON Patch document (RFC 6902), validated after applying."""
    require_resource_type(resource_type)
    current = _missing(resource_type, id, await uow.read(resource_type, id))
    if if_match is not None and if_match != current.version:
        raise PreconditionFailed(_conflict_message(resource_type, id, VersionConflict(if_match, current.version)))
    if not isinstance(operations, list):
        raise InvalidRequest("A JSON Patch document must be a JSON array of operations")
    try:
        patched = jsonpatch.JsonPatch(operations).apply(orjson.loads(current.body))
    except jsonpatch.JsonPatchTestFailed as err:
        raise UnprocessableEntity("A JSON Patch 'test' operation failed; nothing was changed") from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
        # The library's messages quote parts of the document (patient data): name the kind only.
        raise UnprocessableEntity(
            f"The JSON Patch could not be applied ({type(err).__name__}: a path is missing or an "
            "operation is malformed); nothing was changed"
        ) from None
    except (TypeError, KeyError, ValueError) as err:
        raise InvalidRequest(f"Malformed JSON Patch document ({type(err).__name__})") from None
    if not isinstance(patched, dict) or patched.get("id") != id:
        raise UnprocessableEntity("A patch must not change the resource's id")
    body = check_resource(patched, resource_type)
    try:
        return await uow.write(resource_type, id, body, method="PATCH", expected_version=current.version)
    except VersionConflict as err:
        raise PreconditionFailed(_conflict_message(resource_type, id, err)) from None


async def delete(
    uow: UnitOfWork, resource_type: str, id: str, *, if_match: int | None = None
) -> StoredVersion | None:
    """DELETE [type]/[id]: idempotent; the deletion is a version of its own in history."""
    require_resource_type(resource_type)
    try:
        return await uow.delete(resource_type, id, expected_version=if_match)
    except VersionConflict as err:
        raise PreconditionFailed(_conflict_message(resource_type, id, err)) from None


def _conflict_message(resource_type: str, id: str, err: VersionConflict) -> str:
    if err.current is None:
        return f"If-Match names version {err.expected} but {resource_type}/{id} does not exist"
    return f"If-Match names version {err.expected} but {resource_type}/{id} is at version {err.current}"

