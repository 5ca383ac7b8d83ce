"""Structural validation of a FHIR R4 resource in its JSON form, run on every write.

`validate_resource` checks, collecting every issue rather than stopping at the first:

1. the resource is a JSON object whose string `resourceType` is a type this server serves and
   FHIR R4 defines (resource_types.resource_types() and the generated table);
2. a strict walk over the generated R4 table (structure_table.py) for what fhir.resources' R4B
   models let through (research/validation.md §A1): unknown properties, the JSON kind of every
   primitive, arrays vs single values, nulls, empty objects/arrays/strings, `_name` primitive
   extensions, required-binding codes, nested resources, choice types, min cardinality;
3. only when the walk found nothing, the R4B pydantic model (pydantic_check.py) for what it
   checks beyond that, chiefly calendar validity of dates.

Diagnostics never contain the offending value (no patient data in an OperationOutcome); unknown
property names appear only in the expression, and only when they look like identifiers.
FHIRPath invariants and profiles are not checked here.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from fhir_server.validation.issues import Issue
from fhir_server.validation.resource_types import modelled_types, resource_types
from fhir_server.validation.structure_table import (
    JSON_BOOLEAN,
    JSON_INTEGER,
    JSON_STRING,
    Prop,
    Structure,
    Table,
    load_table,
)

__all__ = ["Issue", "StructureError", "validate_resource"]


class StructureError(Exception):
    """The resource is not structurally valid FHIR R4; `issues` lists every problem found."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("; ".join(f"{i.expression}: {i.diagnostics}" for i in issues[:5]))


def validate_resource(resource: object, expected_type: str | None = None) -> None:
    """Raise StructureError (with ALL issues found, not just the first) unless `resource` (parsed JSON, a dict)
    is a structurally valid FHIR R4 resource; expected_type, when given, must equal resourceType."""
    issues: list[Issue] = []
    table = load_table()
    if type(resource) is not dict:
        issues.append(_error("structure", "Resource", "a resource must be a JSON object"))
    else:
        _check_resource(table, resource, "", issues, expected_type)
        if not issues:
            from fhir_server.validation.pydantic_check import model_issues  # imports the R4B models lazily

            issues.extend(model_issues(table, resource))
    if any(issue.severity == "error" for issue in issues):
        raise StructureError(issues)


# -- issues --------------------------------------------------------------------------------------

_PLAIN_NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9]{0,63}")


def _error(code: str, expression: str, diagnostics: str) -> Issue:
    return Issue("error", code, expression, diagnostics)


def _join(path: str, segment: str) -> str:
    return f"{path}.{segment}" if path else segment


def _shown_name(key: str) -> str:
    # a property name is client input too: show it only when it looks like a FHIR element name
    return key if _PLAIN_NAME.fullmatch(key) else "(unrecognised property)"


# -- resources -----------------------------------------------------------------------------------


def _check_resource(
    table: Table, obj: dict[str, Any], path: str, issues: list[Issue], expected_type: str | None
) -> None:
    """A (possibly nested) resource; `path` is where it sits ("" at the top, "Bundle.entry[0].resource")."""
    rt_path = _join(path, "resourceType")
    resource_type = obj.get("resourceType")
    if resource_type is None:
        issues.append(_error("required", rt_path, "resourceType is missing"))
        return
    if type(resource_type) is not str:
        issues.append(_error("structure", rt_path, "resourceType must be a JSON string"))
        return
    structure = table.structures.get(resource_type)
    served = resource_type in resource_types()
    if structure is None or not structure.is_resource:
        if resource_type in modelled_types():
            issues.append(_error("not-supported", rt_path, "this resource type is not part of FHIR R4 (4.0.1)"))
        else:
            issues.append(_error("structure", rt_path, "unknown resource type"))
        return
    if not served:
        issues.append(_error("not-supported", rt_path, "this resource type is not served by this server"))
        return
    if expected_type is not None and resource_type != expected_type:
        issues.append(_error("invalid", rt_path, f"resourceType must be {_shown_name(expected_type)}"))
    _walk(table, obj, structure, path or resource_type, issues)


# -- the walk ------------------------------------------------------------------------------------
# Hot path: one dict lookup per property, and the common cases (a single primitive without `_name`,
# a non-empty object) are handled inline; the general helpers take everything else.


def _walk(table: Table, obj: dict[str, Any], structure: Structure, path: str, issues: list[Issue]) -> None:
    """Check the properties of one JSON object against `structure` (R4 json.html, formats.html)."""
    props = structure.props
    chosen: dict[str, str] | None = None  # choice element -> the variant seen
    for key, value in obj.items():
        prop = props.get(key)
        ext_only = False
        if prop is None:
            if key[:1] == "_" and (prop := props.get(key[1:])) is not None and prop.extensible:
                if key[1:] in obj:
                    continue  # checked together with its value
                ext_only = True
            elif key == "resourceType" and structure.is_resource:
                continue
            else:
                issues.append(_error("structure", f"{path}.{_shown_name(key)}", "unknown property"))
                continue
        if prop.choice is not None:
            if chosen is None:
                chosen = {}
            seen = chosen.setdefault(prop.choice, prop.name)
            if seen != prop.name:
                issues.append(
                    _error(
                        "structure",
                        f"{path}.{prop.choice}",
                        f"only one type may be given for {prop.choice}[x] (found {seen} and {prop.name})",
                    )
                )
        if ext_only:
            _check_extension_only(table, prop, value, path, issues)
        elif prop.primitive is not None:
            ext = obj.get(prop.ext_key) if prop.ext_key is not None else None
            if ext is None and not prop.is_array and value is not None and type(value) is not list:
                problem = _value_problem(prop, value)
                if problem is not None:
                    issues.append(_error(problem[0], f"{path}.{prop.segment}", problem[1]))
            else:
                _check_primitive(table, prop, value, ext, path, issues)
        elif not prop.is_array and type(value) is dict and value and not prop.is_resource and "id" not in value:
            _walk(table, value, prop.structure, f"{path}.{prop.segment}", issues)  # type: ignore[arg-type]
        else:
            _check_complex(table, prop, value, path, issues)
    for segment, keys, ext_keys in structure.required:
        if not _present(obj, keys, ext_keys):
            issues.append(_error("required", f"{path}.{segment}", "required element is missing (min cardinality 1)"))


def _present(obj: dict[str, Any], keys: tuple[str, ...], ext_keys: tuple[str, ...]) -> bool:
    for key in keys:
        if key in obj:
            return True
    # a primitive with no value but with extensions counts as present (R4 extensibility.html#primitive)
    for key in ext_keys:
        ext = obj.get(key)
        if type(ext) is dict and ext.get("extension"):
            return True
        if type(ext) is list and any(type(e) is dict and e.get("extension") for e in ext):
            return True
    return False


def _check_complex(table: Table, prop: Prop, value: Any, path: str, issues: list[Issue]) -> None:
    here = f"{path}.{prop.segment}"
    if prop.is_array:
        if type(value) is not list:
            issues.append(_error("structure", here, "expected a JSON array"))
            return
        if not value:
            issues.append(_error("structure", here, "arrays must not be empty"))
            return
        for index, item in enumerate(value):
            _check_object(table, prop, item, f"{here}[{index}]", issues)
    elif type(value) is list:
        issues.append(_error("structure", here, "expected a single JSON object, not an array"))
    else:
        _check_object(table, prop, value, here, issues)


def _check_object(table: Table, prop: Prop, item: Any, here: str, issues: list[Issue]) -> None:
    if type(item) is not dict:
        what = "null is not allowed" if item is None else "expected a JSON object"
        issues.append(_error("structure", here, what))
    elif not item:
        issues.append(_error("structure", here, "objects must not be empty"))
    elif prop.is_resource:
        _check_resource(table, item, here, issues, prop.resource_type)
    else:
        if len(item) == 1 and "id" in item:
            # ele-1: an element needs a value or children other than its id (R4 element.html)
            issues.append(_error("structure", here, "element has no content besides its id"))
        assert prop.structure is not None
        _walk(table, item, prop.structure, here, issues)


# -- primitives ----------------------------------------------------------------------------------


def _check_primitive(
    table: Table, prop: Prop, value: Any, ext: Any, path: str, issues: list[Issue]
) -> None:
    """A primitive property and its optional `_name` partner (R4 json.html#primitive)."""
    here = f"{path}.{prop.segment}"
    if not prop.is_array:
        if type(value) is list:
            issues.append(_error("structure", here, "expected a single value, not an array"))
        elif value is None:
            issues.append(_error("structure", here, "null is not allowed"))
        else:
            problem = _value_problem(prop, value)
            if problem is not None:
                issues.append(_error(problem[0], here, problem[1]))
        if ext is not None:
            _check_extension_object(table, ext, here, prop.ext_key, issues)
        return
    if type(value) is not list:
        issues.append(_error("structure", here, "expected a JSON array"))
        return
    if not value:
        issues.append(_error("structure", here, "arrays must not be empty"))
        return
    exts: list[Any] | None = None
    if ext is not None:
        if type(ext) is not list:
            issues.append(_error("structure", here, f"{prop.ext_key} must be a JSON array"))
        elif len(ext) != len(value):
            issues.append(_error("structure", here, f"{prop.name} and {prop.ext_key} must have the same length"))
        else:
            exts = ext
    for index, item in enumerate(value):
        item_ext = exts[index] if exts is not None else None
        if item is None:
            # null only pads the value array where `_name` carries this position's id/extensions
            if item_ext is None:
                issues.append(_error("structure", f"{here}[{index}]", "null is not allowed"))
        else:
            problem = _value_problem(prop, item)
            if problem is not None:
                issues.append(_error(problem[0], f"{here}[{index}]", problem[1]))
        if item_ext is not None:
            _check_extension_object(table, item_ext, f"{here}[{index}]", prop.ext_key, issues)


def _check_extension_only(table: Table, prop: Prop, ext: Any, path: str, issues: list[Issue]) -> None:
    """`_name` without `name`: each position needs extensions, since there is no value (ele-1)."""
    here = f"{path}.{prop.segment}"
    if not prop.is_array:
        if _check_extension_object(table, ext, here, prop.ext_key, issues) and not ext.get("extension"):
            issues.append(_error("structure", here, "a primitive with no value must have an extension"))
        return
    if type(ext) is not list:
        issues.append(_error("structure", here, f"{prop.ext_key} must be a JSON array"))
        return
    if not ext:
        issues.append(_error("structure", here, "arrays must not be empty"))
        return
    for index, item in enumerate(ext):
        if item is None:
            issues.append(_error("structure", f"{here}[{index}]", "null is not allowed where there is no value"))
        elif _check_extension_object(table, item, f"{here}[{index}]", prop.ext_key, issues) and not item.get(
            "extension"
        ):
            issues.append(_error("structure", f"{here}[{index}]", "a primitive with no value must have an extension"))


def _check_extension_object(table: Table, ext: Any, here: str, key: str | None, issues: list[Issue]) -> bool:
    """The id/extension object of a primitive; True when it is a non-empty object (then walked)."""
    if type(ext) is not dict:
        issues.append(_error("structure", here, f"{key} must be a JSON object"))
        return False
    if not ext:
        issues.append(_error("structure", here, "objects must not be empty"))
        return False
    _walk(table, ext, table.element, here, issues)
    return True


def _value_problem(prop: Prop, value: Any) -> tuple[str, str] | None:
    """(issue code, message) for one non-null primitive value, or None: JSON kind, emptiness,
    whitespace, lexical form (the R4 regex), range and required-binding codes."""
    primitive = prop.primitive
    assert primitive is not None
    kind = primitive.json_kind
    if kind == JSON_STRING:
        if type(value) is not str:
            return "structure", "expected a JSON string"
        if not value:
            return "value", "string values must not be empty"
        codes = prop.codes
        if codes is not None and value in codes:
            return None  # every code of a value set is a valid code: skip the regex
        if primitive.free_text:
            # R4 datatypes.html#string: "strings SHOULD always contain non-whitespace content"; an
            # all-whitespace value trims to the forbidden empty string, so it is rejected too
            if value.isspace():
                return "value", "value must not be only whitespace"
            if primitive.max_length is not None and len(value) > primitive.max_length:
                return "value", f"value is longer than {primitive.max_length} characters"
        elif primitive.regex is not None:
            # json.html#primitive: "no leading and trailing spaces for non-strings"
            if value[0].isspace() or value[-1].isspace():
                return "value", f"a {primitive.name} must not have leading or trailing whitespace"
            if primitive.regex.fullmatch(value) is None:
                return "value", f"value is not a valid {primitive.name}"
        if codes is not None:
            return "code-invalid", f"code is not in the required value set {prop.value_set}"
        return None
    if kind == JSON_BOOLEAN:
        return None if value is True or value is False else ("structure", "expected a JSON boolean")
    if kind == JSON_INTEGER:
        if type(value) is not int:
            return "structure", "expected a JSON integer"
        if (primitive.min_value is not None and value < primitive.min_value) or (
            primitive.max_value is not None and value > primitive.max_value
        ):
            return "value", f"value is out of range for {primitive.name}"
        return None
    # JSON_DECIMAL: a JSON number; parsers give int, float, or Decimal (json.loads(parse_float=Decimal))
    value_type = type(value)
    if value_type is int:
        return None
    if value_type is float:
        return None if math.isfinite(value) else ("value", "a decimal must be a finite number")
    if value_type is Decimal:
        return None if value.is_finite() else ("value", "a decimal must be a finite number")
    return "structure", "expected a JSON number"
