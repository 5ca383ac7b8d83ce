"""Repairs applied to published R4 search expressions before they are compiled or evaluated.

The published R4 expressions are kept verbatim in the registry; these rewrites run when an
expression is loaded (the same idea as HAPI's `FHIRPathExpressionFixer`). Each is what later
FHIR versions publish for the same parameter:

1. `(X as T)` and `X.as(T)` -> `X.ofType(T)`. FHIRPath N1 `as` requires a single input item and
   errors on more (fhirpathpy does); R4 applies it to collections, e.g.
   "(Observation.component.value as Quantity)". R5 rewrote these expressions with `ofType()`.
2. System type names where the FHIR primitive is meant: `value.as(DateTime)` (component of
   Observation-code-value-date) would match nothing, because a FHIR `dateTime` is not a
   `System.DateTime` in strict FHIRPath typing (fhirpathpy returns empty); R5 uses `dateTime`.
"""

from __future__ import annotations

import re

__all__ = ["fix_r4_expression"]

_SYSTEM_TO_FHIR = {"DateTime": "dateTime", "Boolean": "boolean", "String": "string"}
_AS_OPERATOR = re.compile(r"\(([A-Za-z%][\w.\[\]]*) as ([A-Za-z]\w*)\)")
_AS_FUNCTION = re.compile(r"\.as\(([A-Za-z]\w*)\)")
_TYPE_ARGUMENT = re.compile(r"\.ofType\(([A-Za-z]\w*)\)")


def fix_r4_expression(expression: str) -> str:
    fixed = _AS_OPERATOR.sub(r"\1.ofType(\2)", expression)
    fixed = _AS_FUNCTION.sub(r".ofType(\1)", fixed)
    return _TYPE_ARGUMENT.sub(lambda m: f".ofType({_SYSTEM_TO_FHIR.get(m.group(1), m.group(1))})", fixed)
