"""Conditional interactions (R4 http.html#ccreate, #cond-update, #cdelete): the target is found by
search criteria instead of an id. Criteria are parsed strictly: an unknown parameter that a
lenient search would ignore must not turn "update the one matching patient" into "any patient".
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qsl

from ..errors import Conflict, InvalidRequest, PreconditionFailed
from ..storage import ResourceReader, StoredVersion, UnitOfWork
from . import crud
from .search import build_query
from .validation import Checked, require_valid_id


async def find(reader: ResourceReader, resource_type: str, criteria: str) -> list[StoredVersion]:
    """Up to two resources matching `criteria` (a query string): enough to tell 0, 1 and many."""
    params = [(k, v) for k, v in parse_qsl(criteria, keep_blank_values=True) if k not in ("_format", "_pretty")]
    if not params:
        raise InvalidRequest("A conditional interaction needs search criteria")
    query = replace(build_query([resource_type], params, strict=True), count=2, total="none",
                    includes=(), revincludes=())
    return (await reader.search(query)).matches


def single(matches: list[StoredVersion], what: str) -> StoredVersion | None:
    if len(matches) > 1:
        raise PreconditionFailed(f"The criteria of the conditional {what} match more than one resource")
    return matches[0] if matches else None


async def create_if_none_exist(
    uow: UnitOfWork, resource: Checked, criteria: str, *, id: str | None = None
) -> tuple[StoredVersion, bool]:
    """POST with If-None-Exist: (the existing match, False) or (the new resource, True)."""
    existing = single(await find(uow, resource.resource_type, criteria), "create")
    if existing is not None:
        return existing, False
    return await crud.create(uow, resource, id=id), True


async def update_by_criteria(
    uow: UnitOfWork, resource: Checked, criteria: str, *, if_match: int | None = None
) -> tuple[StoredVersion, bool]:
    """PUT [type]?criteria: update the single match, or create when nothing matches."""
    resource_type = resource.resource_type
    match = single(await find(uow, resource_type, criteria), "update")
    body_id = resource.body.get("id")
    if match is not None:
        if body_id is not None and body_id != match.id:
            raise InvalidRequest("The resource id in the body is not the id of the resource the criteria match")
        return await crud.update(uow, resource.with_body({**resource.body, "id": match.id}), if_match=if_match)
    if body_id is not None:
        if await uow.read(resource_type, body_id) is not None:
            raise Conflict(f"{resource_type}/{body_id} exists but does not match the criteria")
        require_valid_id(body_id)
        return await crud.update(uow, resource, if_match=if_match)
    return await crud.create(uow, resource), True


async def delete_by_criteria(uow: UnitOfWork, resource_type: str, criteria: str) -> StoredVersion | None:
    """DELETE [type]?criteria: delete the single match; nothing to do when none matches."""
    match = single(await find(uow, resource_type, criteria), "delete")
    if match is None:
        return None
    return await crud.delete(uow, resource_type, match.id)
