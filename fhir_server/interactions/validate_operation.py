"""$validate (R4 operation-resource-validate): check a resource against the server's rules without
storing it, at type level (`POST [type]/$validate`) and instance level (`POST|GET [type]/[id]/$validate`).

Input is a Parameters resource (`resource`, `mode`, `profile`) or the bare resource with `mode` and
`profile` as URL parameters, as both forms appear in the spec's examples. The answer is an
OperationOutcome with 200 whether or not the resource is valid; a 4xx means the validation itself
could not run (an unreadable body, an unknown mode, a nominated profile the server does not know:
"If a profile is nominated, and the server cannot validate against the nominated profile, it SHALL
return an error").

Modes (R4 valueset-resource-validation-mode): none or `create` (content, as a create would take
it), `update` (content, and acceptable as an update of [id]), `delete` (whether [id] may be
deleted), `profile` (the stored [id] against `profile`).
"""

from __future__ import annotations

import orjson

from smart_auth.access import CREATE, DELETE, READ, UPDATE, decide
from smart_auth.principal import Principal

from ..errors import InvalidRequest, InvalidResource, NotFound
from ..storage import ResourceReader
from ..validation.issues import Issue
from ..validation.service import Validation
from .guard import check_read
from .profile_check import validate_with_store
from .validation import check_resource, require_resource_type, require_valid_id

__all__ = ["ValidateRequest", "parse_validate_request", "validate_operation"]

MODES = ("create", "update", "delete", "profile")


class ValidateRequest:
    def __init__(self, resource: dict | None, mode: str | None, profile: str | None):
        self.resource, self.mode, self.profile = resource, mode, profile


def parse_validate_request(body: object | None, query: list[tuple[str, str]]) -> ValidateRequest:
    """The operation's in-parameters from a Parameters body, a bare resource, and/or the URL."""
    resource: dict | None = None
    named: dict[str, str] = {}
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            if not isinstance(p, dict):
                raise InvalidRequest("Parameters.parameter entries must be objects")
            name = p.get("name")
            if name == "resource":
                if not isinstance(p.get("resource"), dict):
                    raise InvalidRequest("The 'resource' parameter must carry a resource")
                resource = p["resource"]
            elif name in ("mode", "profile"):
                value = p.get("valueCode") if name == "mode" else (p.get("valueUri") or p.get("valueCanonical"))
                if not isinstance(value, str):
                    raise InvalidRequest(f"The '{name}' parameter needs a {'valueCode' if name == 'mode' else 'valueUri'}")
                named[name] = value
    elif isinstance(body, dict):
        resource = body
    elif body is not None:
        raise InvalidRequest("The body must be a Parameters resource or the resource to validate")
    for key, value in query:
        if key in ("mode", "profile"):
            named.setdefault(key, value)
    mode = named.get("mode")
    if mode is not None and mode not in MODES:
        raise InvalidRequest(f"Unknown $validate mode; expected one of {', '.join(MODES)}", expression="mode")
    return ValidateRequest(resource, mode, named.get("profile"))


async def validate_operation(
    reader: ResourceReader, validation: Validation, resource_type: str, request: ValidateRequest,
    *, id: str | None = None, principal: Principal,
) -> list[Issue]:
    """The issues found (none: the resource is valid); raises for a request that cannot be validated."""
    require_resource_type(resource_type)
    mode, profile = request.mode, request.profile
    if profile is not None and not validation.knows_profile(profile):
        raise InvalidRequest(f"The nominated profile {profile} is not known to this server, so it cannot validate against it",
                             expression="profile")
    if mode in ("update", "delete", "profile") and id is None:
        raise InvalidRequest(f"$validate mode '{mode}' needs an instance: POST [type]/[id]/$validate")
    if id is not None:
        require_valid_id(id)
    permission = {"update": UPDATE, "delete": DELETE, "profile": READ}.get(mode or "", CREATE)
    decide(principal, resource_type, permission)

    if mode in ("delete", "profile"):
        stored = await reader.read(resource_type, id)  # type: ignore[arg-type]
        if stored is None or stored.deleted:
            raise NotFound(f"Resource {resource_type}/{id} is not known")
        await check_read(reader, principal, decide(principal, resource_type, READ), stored)
        if mode == "delete":
            if (resource_type, id) in validation.guide.keys():
                return [Issue("error", "business-rule", resource_type,
                              f"{resource_type}/{id} is part of this server's implementation guide and cannot be deleted",
                              "guide-read-only")]
            return []
        resource = orjson.loads(stored.body)
    else:
        resource = request.resource
        if resource is None:
            raise InvalidRequest("$validate needs the resource to validate (the 'resource' parameter or the body)")

    issues: list[Issue] = []
    if mode == "update":
        if resource.get("id") != id:
            issues.append(Issue("error", "invalid", f"{resource_type}.id",
                                "An update must carry the resource id of the URL in the body", "update-id"))
        if (resource_type, id) in validation.guide.keys():
            issues.append(Issue("error", "business-rule", resource_type,
                                f"{resource_type}/{id} is part of this server's implementation guide and is read-only",
                                "guide-read-only"))
    try:
        check_resource(resource, resource_type)
    except InvalidResource as err:  # structurally broken: report it; profiles cannot be checked on it
        return issues + [Issue(i.severity, i.code, i.expression or resource_type, i.diagnostics, i.rule) for i in err.issues]
    except InvalidRequest as err:  # wrong resourceType
        return issues + [Issue("error", i.code, i.expression or resource_type, i.diagnostics, i.rule) for i in err.issues]
    return issues + await validate_with_store(reader, validation, resource, profiles=(profile,) if profile else ())
