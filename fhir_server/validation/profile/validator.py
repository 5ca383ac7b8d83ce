"""Public entry points of the profile validator (validation.md §A3, VAL-70..72, VAL-81).

`ProfileValidator` holds the compiled trees (registry.py) and a membership cache, so it is built
once per process (or per guide) and shared by every write and `$validate`:

- `validate_base(resource)`: the resource's base definition — FHIRPath invariants of the resource
  and of every datatype and backbone element in it, bindings, reference target types, extensions
  against their definitions, contained resources against their own base type. It does not repeat
  structure.py's findings for a resource that passed it (unknown properties, JSON kinds), but
  stands alone: cardinality and required codes are checked too.
- `validate(resource, url)`: one profile — what it adds to the base definition. With a base
  resource url it is the same as `validate_base`. Unknown profile -> warning `profile-unknown`;
  a profile for another type -> error `profile-type`.
- `validate_claimed(resource)`: `validate_base` plus every `meta.profile` (unknown ones are a
  warning, never a silent pass).
"""

from __future__ import annotations

import logging

from fhir_server.validation.definitions import CORE_PREFIX
from fhir_server.validation.issues import Issue
from fhir_server.validation.ports import Definitions, Membership, ReferenceResolver, Terminology
from fhir_server.validation.profile.registry import Registry
from fhir_server.validation.profile.walk import Walk

__all__ = ["ProfileValidator", "BEST_PRACTICE_LEVELS"]

BEST_PRACTICE_LEVELS = ("ignore", "information", "warning", "error")
_MEMBERSHIP_CACHE_LIMIT = 50_000


log = logging.getLogger("fhir_server.validation")

class ProfileValidator:
    def __init__(self, definitions: Definitions, terminology: Terminology, *, best_practice: str = "warning") -> None:
        """`best_practice`: the severity of best-practice invariants such as dom-6 (VAL-62; Java's
        default is warning), or "ignore"."""
        if best_practice not in BEST_PRACTICE_LEVELS:
            raise ValueError(f"best_practice must be one of {BEST_PRACTICE_LEVELS}")
        self.registry = Registry(definitions)
        self._terminology = terminology
        self._best_practice = best_practice
        self._memberships: dict[tuple[str, str | None, str], Membership] = {}

    # -- public API -----------------------------------------------------------------------------

    def validate(self, resource: dict, profile_url: str, *, resolve: ReferenceResolver | None = None) -> list[Issue]:
        resource_type = _resource_type(resource)
        if resource_type is None:
            return [Issue("error", "structure", "Resource", "resourceType is missing", "profile-type")]
        structure = self.registry.structure(profile_url)
        if structure is None:
            return [
                Issue(
                    "warning",
                    "structure",
                    f"{resource_type}.meta.profile",
                    f"Profile reference '{profile_url}' has not been checked because "
                    f"{self.registry.reason(profile_url)}",
                    "profile-unknown",
                )
            ]
        if structure.kind != "resource" or structure.type != resource_type:
            return [
                Issue(
                    "error",
                    "invalid",
                    resource_type,
                    f"Specified profile type was '{structure.type}' in profile '{structure.canonical}', "
                    f"but found type '{resource_type}'",
                    "profile-type",
                )
            ]
        walk = Walk(self.registry, self._member, resolve, self._best_practice)
        try:
            return walk.run(resource, structure, resource_type)
        except Exception as exc:
            # a defect of ours must not reject the data, nor let it pass silently (as VAL-63 for invariants):
            # a warning in the outcome, and the defect in the log for the operator (type and profile only:
            # the traceback's locals and messages may hold patient data)
            log.warning("validator defect: %s while validating a %s against %s", type(exc).__name__,
                        resource_type, structure.canonical)
            return walk.issues + [
                Issue(
                    "warning",
                    "exception",
                    resource_type,
                    f"Validation against {structure.canonical} failed ({type(exc).__name__}); the resource was not "
                    "fully checked against it",
                    "validator-engine",
                )
            ]

    def validate_base(self, resource: dict, *, resolve: ReferenceResolver | None = None) -> list[Issue]:
        resource_type = _resource_type(resource)
        if resource_type is None:
            return [Issue("error", "structure", "Resource", "resourceType is missing", "profile-type")]
        return self.validate(resource, CORE_PREFIX + resource_type, resolve=resolve)

    def validate_claimed(self, resource: dict, *, resolve: ReferenceResolver | None = None) -> list[Issue]:
        issues = self.validate_base(resource, resolve=resolve)
        resource_type = _resource_type(resource)
        meta = resource.get("meta") if isinstance(resource, dict) else None
        claimed = meta.get("profile") if isinstance(meta, dict) else None
        if resource_type is None or not isinstance(claimed, list):
            return issues
        for index, url in enumerate(claimed):
            if not isinstance(url, str):
                continue
            where = f"{resource_type}.meta.profile[{index}]"
            structure = self.registry.structure(url)
            if structure is None:
                issues.append(
                    Issue(
                        "warning",
                        "structure",
                        where,
                        f"Profile reference '{url}' has not been checked because {self.registry.reason(url)}",
                        "profile-unknown",
                    )
                )
                continue
            if not structure.is_profile and structure.type == resource_type:
                continue  # the base definition: validated above
            for issue in self.validate(resource, url, resolve=resolve):
                if issue.rule == "profile-type":
                    issue = Issue(issue.severity, issue.code, where, issue.diagnostics, issue.rule)
                issues.append(issue)
        return _unique(issues)

    # -- terminology ----------------------------------------------------------------------------

    def _member(self, value_set: str, system: str | None, code: str) -> Membership:
        key = (value_set, system, code)
        found = self._memberships.get(key)
        if found is None:
            if len(self._memberships) >= _MEMBERSHIP_CACHE_LIMIT:
                self._memberships.clear()
            try:
                found = self._terminology.check(value_set, system, code)
            except Exception as exc:  # the terminology layer failing is not a verdict on the data
                found = Membership("unknown", f"the terminology service failed ({type(exc).__name__})")
            self._memberships[key] = found
        return found


def _resource_type(resource: object) -> str | None:
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
        return resource["resourceType"]
    return None


def _unique(issues: list[Issue]) -> list[Issue]:
    """The same finding reached through two profiles (a profile and the one it derives from) once."""
    seen: set[Issue] = set()
    out = []
    for issue in issues:
        if issue not in seen:
            seen.add(issue)
            out.append(issue)
    return out
