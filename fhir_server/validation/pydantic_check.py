"""Second pass: the fhir.resources R4B pydantic model, for value checks the table walk does not make.

It runs only on a resource the R4 walk accepted, so its structural complaints (unknown or missing
properties, wrong JSON shapes, choice rules) can only come from the models being FHIR 4.3.0: R4B
added, removed or retyped some elements. Those are ignored, because the 4.0.1 definitions are
the authority. What is kept are failures on a primitive value (calendar-invalid dates such as
2023-02-30, UUIDs, base64 that does not decode, ...), reported at the element's FHIRPath
location with a message of our own: pydantic's messages can quote the input.
"""

from __future__ import annotations

import logging
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_server.validation.structure import Issue
from fhir_server.validation.structure_table import Primitive, Structure, Table

_log = logging.getLogger(__name__)

# Shape complaints: after the R4 walk these can only be R4B-vs-R4 differences (json kinds, arrays,
# unknown and missing properties are the walk's job), whatever element they point at.
_STRUCTURAL_ERRORS = frozenset(
    {"extra_forbidden", "missing", "too_short", "too_long", "literal_error", "union_tag_invalid", "union_tag_not_found"}
)


def model_issues(table: Table, resource: dict[str, Any]) -> list[Issue]:
    """Issues the R4B model finds on primitive values of `resource` (already walked without issues)."""
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except ValidationError as exc:
        issues = []
        for error in exc.errors(include_input=False, include_url=False):
            if error["type"] in _STRUCTURAL_ERRORS or error["type"].endswith("_type"):
                _log.debug("R4B-only model complaint ignored: %s at %s", error["type"], error["loc"])
                continue
            located = _locate(table, resource, error["loc"])
            if located is None:
                _log.debug("R4B-only model complaint ignored: %s at %s", error["type"], error["loc"])
                continue
            expression, primitive = located
            issues.append(Issue("error", "value", expression, f"value is not a valid {primitive.name}"))
        return issues
    except Exception:  # noqa: BLE001 - the models can raise e.g. KeyError on input they do not expect
        _log.warning("R4B model validation failed unexpectedly on a resource the R4 walk accepted", exc_info=True)
    return []


def _locate(table: Table, resource: dict[str, Any], loc: tuple[int | str, ...]) -> tuple[str, Primitive] | None:
    """Map a pydantic `loc` to (FHIRPath expression, primitive type), or None when it does not end on a
    primitive value (then the error is structural, about the R4B shape)."""
    node: Any = resource
    structure: Structure | None = table.structures.get(resource["resourceType"])
    path = resource["resourceType"]
    primitive: Primitive | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if structure is None and isinstance(node, dict) and primitive is None:
                structure = table.structures.get(node.get("resourceType", ""))  # an item of contained[]
            continue
        if structure is None or not isinstance(node, dict):
            return None
        key, is_ext = (part[1:], True) if part.startswith("_") else (part, False)
        prop = structure.props.get(key)
        if prop is None:
            return None
        path += "." + prop.segment
        node = node.get(part)
        primitive = None
        if is_ext:
            structure = table.element
        elif prop.primitive is not None:
            structure, primitive = None, prop.primitive
        elif prop.is_resource:
            # the resource's own type is only known from the data
            structure = table.structures.get(node.get("resourceType", "")) if isinstance(node, dict) else None
        else:
            structure = prop.structure
    return (path, primitive) if primitive is not None else None
