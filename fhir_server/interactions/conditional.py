"""Conditional interactions (R4 http.html#ccreate, #cond-update, #cdelete): the target is found by
search criteria instead of an id. Criteria are parsed strictly: an unknown parameter that a
lenient search would ignore must not turn "update the one matching patient" into "any patient".
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qsl

from smart_auth.access import CREATE, DELETE, SEARCH, UPDATE, narrow_criteria
from smart_auth.principal import Principal

from ..errors import Conflict, Forbidden, InvalidRequest, PreconditionFailed
from ..storage import ResourceReader, StoredVersion, UnitOfWork
from . import crud
from .guard import check_write, sees
from .search import build_query
from .validation import Checked, require_valid_id


async def find(
    reader: ResourceReader, resource_type: str, criteria: str, principal: Principal,
    permission: str = SEARCH,
) -> list[StoredVersion]:
    """Up to two resources matching `criteria` (a query string): enough to tell 0, 1 and many.
    The criteria only reach what the principal may touch with `permission` (smart_auth/access.py):
    a patient's token never matches, and so never updates or deletes, another patient's data."""
    params = [(k, v) for k, v in parse_qsl(criteria, keep_blank_values=True) if k not in ("_format", "_pretty")]
    if not params:
        raise InvalidRequest("A conditional interaction needs search criteria")
    query = replace(build_query([resource_type], params, strict=True), count=2, total="none",
                    includes=(), revincludes=())
    query = narrow_criteria(principal, query, permission)
    return (await reader.search(query)).matches


def single(matches: list[StoredVersion], what: str) -> StoredVersion | None:
    if len(matches) > 1:
        raise PreconditionFailed(f"The criteria of the conditional {what} match more than one resource")
    return matches[0] if matches else None


async def existing_match(
    reader: ResourceReader, resource_type: str, criteria: str, principal: Principal
) -> StoredVersion | None:
    """A conditional create's match (narrowed to what the principal may create), which it is
    answered with: so the principal must also be allowed to see it."""
    existing = single(await find(reader, resource_type, criteria, principal, CREATE), "create")
    if existing is not None and not await sees(reader, principal, existing):
        raise Forbidden("The criteria of the conditional create match a resource this access token may not read")
    return existing


async def create_if_none_exist(
    uow: UnitOfWork, resource: Checked, criteria: str, *, id: str | None = None, principal: Principal
) -> tuple[StoredVersion, bool]:
    """POST with If-None-Exist: (the existing match, False) or (the new resource, True)."""
    existing = await existing_match(uow, resource.resource_type, criteria, principal)
    if existing is not None:
        return existing, False
    return await crud.create(uow, resource, id=id, principal=principal), True


async def update_by_criteria(
    uow: UnitOfWork, resource: Checked, criteria: str, *, if_match: int | None = None,
    principal: Principal,
) -> tuple[StoredVersion, bool]:
    """PUT [type]?criteria: update the single match, or create when nothing matches."""
    resource_type = resource.resource_type
    match = single(await find(uow, resource_type, criteria, principal, UPDATE), "update")
    body_id = resource.body.get("id")
    if match is not None:
        if body_id is not None and body_id != match.id:
            raise InvalidRequest("The resource id in the body is not the id of the resource the criteria match")
        return await crud.update(uow, resource.with_body({**resource.body, "id": match.id}), if_match=if_match,
                                 principal=principal)
    if body_id is not None:
        existing = await uow.read(resource_type, body_id)
        if existing is not None:
            if not principal.unrestricted:
                await check_write(uow, principal, UPDATE, resource_type, None, current=existing)
            raise Conflict(f"{resource_type}/{body_id} exists but does not match the criteria")
        require_valid_id(body_id)
        return await crud.update(uow, resource, if_match=if_match, principal=principal)
    return await crud.create(uow, resource, principal=principal), True


async def delete_by_criteria(
    uow: UnitOfWork, resource_type: str, criteria: str, principal: Principal
) -> StoredVersion | None:
    """DELETE [type]?criteria: delete the single match; nothing to do when none matches."""
    match = single(await find(uow, resource_type, criteria, principal, DELETE), "delete")
    if match is None:
        return None
    return await crud.delete(uow, resource_type, match.id, principal=principal)
