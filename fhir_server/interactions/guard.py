"""Applying the access decision (smart_auth/access.py) to stored resources: the part that needs
a reader, because a Binary is admitted through the resource its securityContext references and
a deletion is judged by the version it deleted.

Reads of what the principal may not see answer 404 (existence is not revealed); writes it may
not make answer 403. An unrestricted principal, and a Rule without narrowing, never parse a body.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import orjson

from smart_auth.access import BINARY, READ, SEARCH, Rule, allowed, decide, matches, security_context_target
from smart_auth.principal import Principal

from ..errors import Forbidden, NotFound
from ..search.parse import parse_search
from ..search.query import AllFilter, AnyFilter, ChainFilter, HasFilter
from ..storage import ResourceReader, StoredVersion


async def _body_of(reader: ResourceReader, version: StoredVersion) -> dict | None:
    """The JSON a version is judged by: its own, or for a deletion the version it deleted."""
    body = version.body
    if body is None:
        if version.version <= 1:
            return None
        previous = await reader.vread(version.resource_type, version.id, version.version - 1)
        body = previous.body if previous is not None else None
        if body is None:
            return None
    return orjson.loads(body)


def _has_chain(f: object) -> bool:
    """Whether a filter follows references (a chain or _has): those need the store to evaluate."""
    if isinstance(f, (AnyFilter, AllFilter)):
        return any(_has_chain(g) for g in f.filters)
    return isinstance(f, (ChainFilter, HasFilter))


async def _stored_resource_matches(reader: ResourceReader, rule: Rule, resource: dict, id: str | None) -> bool:
    """A rule whose filter follows references (the visit policy's Task -> Encounter -> Location
    chain) judged by the store: the stored resource with this id meets the filter. A resource not
    stored yet (a create) does not."""
    resource_id = id or resource.get("id")
    if not isinstance(resource_id, str) or not resource_id:
        return False
    query = parse_search([rule.resource_type], [("_id", resource_id)])
    page = await reader.search(replace(query, filters=(*query.filters, rule.filter), count=1))
    return bool(page.matches)


async def admits(reader: ResourceReader, principal: Principal, rule: Rule, resource: dict,
                 *, id: str | None = None) -> bool:
    """Whether `rule` admits `resource`, including a Binary's securityContext gate."""
    if rule.everything:
        return True
    if rule.filter is not None:
        if _has_chain(rule.filter):
            if await _stored_resource_matches(reader, rule, resource, id):
                return True
        elif rule.admits(resource, id=id):
            return True
    if not rule.security_context:
        return False
    if rule.context_filter is not None and not matches(rule.context_filter, resource):
        return False
    target = security_context_target(resource)
    if target is None or target[0] == BINARY:
        return False
    found = await reader.read(*target)
    if found is None or found.body is None:
        return False
    return await sees(reader, principal, found)


async def sees(reader: ResourceReader, principal: Principal, version: StoredVersion,
               permissions: Iterable[str] = (READ, SEARCH)) -> bool:
    """Whether the principal may be shown `version` (read or search scopes by default)."""
    if principal.unrestricted:
        return True
    rules = [r for p in permissions if (r := allowed(principal, version.resource_type, p)) is not None]
    if not rules:
        return False
    if any(r.everything for r in rules):
        return True
    body = await _body_of(reader, version)
    if body is None:
        return False
    for rule in rules:
        if await admits(reader, principal, rule, body):
            return True
    return False


async def visible(reader: ResourceReader, principal: Principal, versions: list[StoredVersion],
                  permissions: Iterable[str] = (READ, SEARCH)) -> list[StoredVersion]:
    """The versions the principal may be shown (includes, revincludes, history entries)."""
    if principal.unrestricted:
        return versions
    permissions = tuple(permissions)
    return [v for v in versions if await sees(reader, principal, v, permissions)]


async def check_read(reader: ResourceReader, principal: Principal, rule: Rule, version: StoredVersion) -> None:
    """NotFound unless `rule` admits the version found by a read or vread."""
    if rule.everything:
        return
    body = await _body_of(reader, version)
    if body is None or not await admits(reader, principal, rule, body):
        raise NotFound(f"Resource {version.resource_type}/{version.id} is not known")


async def check_write(
    reader: ResourceReader,
    principal: Principal,
    permission: str,
    resource_type: str,
    new: dict | None,
    *,
    id: str | None = None,
    current: StoredVersion | None = None,
) -> None:
    """Forbidden unless the principal may make this write: `permission` (c, u or d) on the type,
    the current version (update, patch, delete) and the new resource (create, update, patch) both
    within what its scopes allow (for patient/ scopes: in the patient's compartment)."""
    if principal.unrestricted:
        return
    rule = decide(principal, resource_type, permission)
    if rule.everything:
        return
    if current is not None and current.body is not None:
        if not await admits(reader, principal, rule, orjson.loads(current.body)):
            raise Forbidden(f"The access token may not change {resource_type}/{current.id}")
    if new is not None and not await admits(reader, principal, rule, new, id=id):
        raise Forbidden(f"The access token may not write this {resource_type}: it is outside the "
                        "patient compartment or the scopes' restrictions")
