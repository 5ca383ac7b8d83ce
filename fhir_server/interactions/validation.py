"""The write-path checks shared by every interaction that stores a resource."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidRequest, InvalidResource, NotFound, OutcomeIssue
from ..validation.resource_types import is_resource_type, is_valid_id, resource_types
from ..validation.structure import StructureError, validate_resource


def warm_up() -> None:
    """Load the R4B models and the structure table now, so the first write is not seconds slow."""
    resource_types()
    validate_resource({"resourceType": "Basic", "code": {"text": "warm-up"}}, "Basic")


def require_resource_type(resource_type: str) -> None:
    if not is_resource_type(resource_type):
        raise NotFound(f"Unknown resource type '{resource_type}'")


def require_valid_id(id: str) -> None:
    if not is_valid_id(id):
        raise InvalidRequest("Resource id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'")


@dataclass(frozen=True, slots=True)
class Checked:
    """A resource that passed check_resource: what create and update take, so validation runs
    before a unit of work opens (it is CPU-bound and must not hold the store's write lock)."""

    resource_type: str
    body: dict

    def with_body(self, body: dict) -> "Checked":
        """The same resource after a change that keeps it valid (reference strings rewritten)."""
        return Checked(self.resource_type, body)


def check(resource: object, resource_type: str) -> Checked:
    require_resource_type(resource_type)
    return Checked(resource_type, check_resource(resource, resource_type))


def check_resource(resource: object, resource_type: str) -> dict:
    """The resource as a dict once its type matches the URL and its structure is valid R4."""
    if not isinstance(resource, dict):
        raise InvalidRequest("The body must be a JSON object holding a FHIR resource")
    actual = resource.get("resourceType")
    if actual != resource_type:
        raise InvalidRequest(
            f"Resource type in the body ('{actual}') does not match the URL ('{resource_type}')"
            if isinstance(actual, str)
            else "The body has no resourceType",
            expression="resourceType",
        )
    try:
        validate_resource(resource, resource_type)
    except StructureError as err:
        raise InvalidResource(
            "The resource is not valid FHIR R4",
            issues=[OutcomeIssue(i.severity, i.code, i.diagnostics, i.expression) for i in err.issues],
        ) from None
    return resource
