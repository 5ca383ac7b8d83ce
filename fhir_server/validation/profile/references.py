"""Reference targets (validation.md VAL-30, VAL-31).

The type a Reference points at is read from its literal `reference` (`Patient/123`, an absolute
`.../Patient/123`, `Patient/123/_history/2`, a conditional `Patient?identifier=...` as sent in
transactions, or `#id` for a contained resource) and from `Reference.type`; each must be one of
the types allowed by the element's `targetProfile`s. A logical reference (identifier only) or a
`urn:uuid:` has no type to check.

When the targetProfile is a constraint profile (not a base resource definition) and a resolver is
given, the target itself is fetched and must conform to one of the profiles for its type.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fhir_server.validation.definitions import CORE_PREFIX
from fhir_server.validation.profile.model import ElementNode, Scope

if TYPE_CHECKING:
    from fhir_server.validation.profile.walk import Walk

__all__ = ["referenced_type", "declared_type", "check_reference"]

# [base/]Type/id[/_history/vid] (R4 references.html#literal); ids are [A-Za-z0-9\-\.]{1,64}
_LITERAL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
_CONDITIONAL = re.compile(r"^([A-Z][A-Za-z]+)\?")


def referenced_type(reference: str, root: dict | None) -> str | None:
    """The resource type a literal reference names, None when it does not say."""
    if reference[:1] == "#":
        wanted = reference[1:]
        for contained in (root or {}).get("contained") or ():
            if isinstance(contained, dict) and contained.get("id") == wanted:
                found = contained.get("resourceType")
                return found if isinstance(found, str) else None
        return None  # ref-1 reports a dangling local reference
    match = _LITERAL.search(reference) or _CONDITIONAL.match(reference)
    return match.group(1) if match else None


def declared_type(value: Any) -> str | None:
    """Reference.type: a type name or a StructureDefinition url of one."""
    if not isinstance(value, str):
        return None
    return value[len(CORE_PREFIX):] if value.startswith(CORE_PREFIX) else value


def check_reference(walk: Walk, node: ElementNode, value: Any, expression: str, scope: Scope) -> None:
    """Target type (VAL-30) and, with a resolver, target profile of one Reference value."""
    if not isinstance(value, dict):
        return
    type_ref = next((t for t in node.types if t.code == "Reference"), None)
    if type_ref is None or not type_ref.target_profiles:
        return
    allowed = walk.registry.target_types(type_ref)
    reference = value.get("reference")
    found = referenced_type(reference, scope.root) if isinstance(reference, str) else None
    declared = declared_type(value.get("type"))
    where = f"{node.id} in {node.structure.canonical}"
    if allowed is not None:
        for what, type_name in (("implied by the reference", found), ("declared in Reference.type", declared)):
            if type_name is not None and type_name not in allowed:
                walk.report(
                    "error",
                    "structure",
                    expression,
                    f"The type '{type_name}' {what} is not a valid target for this element "
                    f"(must be one of {', '.join(sorted(allowed))}) ({where})",
                    "reference-type",
                )
                return
    if walk.resolver is None or not isinstance(reference, str):
        return
    target_type = found or declared
    profiles = []
    for url in type_ref.target_profiles:
        structure = walk.registry.structure(url)
        if structure is None:
            continue
        if not structure.is_profile and (target_type is None or structure.type == target_type):
            return  # a base resource type is allowed: the type check above is all there is
        if structure.is_profile and (target_type is None or structure.type == target_type):
            profiles.append(structure)
    if not profiles:
        return
    target = walk.resolve_reference(reference, scope)
    if target is None:
        walk.report(
            "information",
            "informational",
            expression,
            f"The reference could not be resolved, so its target profile was not checked ({where})",
            "reference-profile",
        )
        return
    if any(walk.conforms(target, structure) for structure in profiles if structure.type == target.get("resourceType")):
        return
    walk.report(
        "error",
        "structure",
        expression,
        f"The referenced resource does not conform to the target profile "
        f"{' or '.join(s.canonical for s in profiles)} ({where})",
        "reference-profile",
    )
