"""`ValueSet.compose.include.filter` evaluated over a code system we hold.

Operators as defined by R4 (valueset.html "Filters", code system filter-operator):
`=`, `is-a` (the value and its descendants), `descendent-of` (descendants only), `is-not-a`
(everything but the value and its descendants), `regex` (the whole property value matches),
`in` / `not-in` (comma-separated values), `generalizes` (the value and its ancestors) and
`exists` ("true"/"false": the property is present or not).

Properties: `concept` and `code` are the concept's own code (the hierarchy operators only make
sense on them); `display` its display; `parent` / `child` its neighbours in the hierarchy;
anything else a concept property the code system declares (CodeSystem.property). A filter on a
property the code system does not declare cannot be evaluated here (it may be an implicit
property only a terminology server knows), and says so instead of guessing an empty result.
"""

from __future__ import annotations

import re

from .code_systems import CodeSystemIndex, Concept

__all__ = ["FilterNotEvaluable", "evaluate_filter"]

_SELF = frozenset({"concept", "code"})
_HIERARCHY_OPS = frozenset({"is-a", "descendent-of", "is-not-a", "generalizes"})


class FilterNotEvaluable(Exception):
    """The filter cannot be evaluated from the code system's content; the message says why."""


def evaluate_filter(index: CodeSystemIndex, flt: dict) -> frozenset[str]:
    """The codes of `index` (all concepts, selectable or not) that satisfy one filter."""
    prop, op, value = flt.get("property"), flt.get("op"), flt.get("value")
    if not prop or not op or value is None:
        raise FilterNotEvaluable(f"incomplete filter {flt!r}")
    if op in _HIERARCHY_OPS:
        if prop not in _SELF:
            raise FilterNotEvaluable(f"filter {prop} {op} {value}: hierarchy operators apply to 'concept' only")
        return _hierarchy(index, op, value)
    if prop not in _SELF | {"display", "parent", "child"} and prop not in index.declared_properties:
        raise FilterNotEvaluable(f"filter {prop} {op} {value}: {index.url} does not define the property '{prop}'")
    if op == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise FilterNotEvaluable(f"filter {prop} regex {value!r}: not a valid regular expression ({exc})") from exc
    return frozenset(c.code for c in index.concepts.values() if _matches(index, c, prop, op, value))


def _hierarchy(index: CodeSystemIndex, op: str, value: str) -> frozenset[str]:
    root = index.lookup(value)
    if root is None:
        # a complete code system without the code: nothing stands in that relation to it
        return frozenset()
    code = root.code
    if op == "is-a":
        return index.descendants(code) | {code}
    if op == "descendent-of":
        return index.descendants(code)
    if op == "generalizes":
        return index.ancestors(code) | {code}
    return frozenset(index.concepts) - index.descendants(code) - {code}  # is-not-a


def _values(index: CodeSystemIndex, concept: Concept, prop: str) -> tuple[str, ...]:
    if prop in _SELF:
        return (concept.code,)
    if prop == "display":
        return (concept.display,) if concept.display else ()
    if prop == "parent":
        return tuple(index.parents.get(concept.code, ()))
    if prop == "child":
        return tuple(index.children.get(concept.code, ()))
    return concept.properties.get(prop, ())


def _matches(index: CodeSystemIndex, concept: Concept, prop: str, op: str, value: str) -> bool:
    values = _values(index, concept, prop)
    if op == "=":
        return value in values
    if op == "in":
        return bool(set(values) & {v.strip() for v in value.split(",")})
    if op == "not-in":
        return not set(values) & {v.strip() for v in value.split(",")}
    if op == "exists":
        return bool(values) == (value.strip().lower() == "true")
    if op == "regex":
        # re caches compiled patterns; validity was checked once in evaluate_filter
        return any(re.fullmatch(value, v) for v in values)
    raise FilterNotEvaluable(f"filter operator '{op}' is not defined in FHIR R4")
