"""fhirpathpy, for the expressions the compiler does not handle (and as the oracle in tests).

Set-up that the published R4 expressions need (research/validation.md, "fhirpathpy 2.2.4 —
measured gaps"):
- the R4 model, or choice elements do not resolve;
- `resolve()` is not implemented: we register one that "resolves" a Reference to a stub resource
  of the type its literal names, the same rule the compiler applies (values.references);
- `%resource` must be supplied as a variable;
- the expression goes through fixups.fix_r4_expression first (`as` on collections, `DateTime`).

fhirpathpy returns plain values without their FHIR type; `infer_fhir_type` guesses it from the
value's shape so the converters can be chosen per value.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fhir_server.search.fhirpath.fixups import fix_r4_expression
from fhir_server.search.values.references import reference_type

__all__ = ["OPTIONS", "compile_fallback", "infer_fhir_type"]


def _resolve(inputs: list) -> list:
    from fhirpathpy.engine.nodes import ResourceNode

    out = []
    for item in inputs:
        target = reference_type(item)
        if target is not None:
            out.append(ResourceNode.create_node({"resourceType": target}))
    return out


OPTIONS = {"userInvocationTable": {"resolve": {"fn": _resolve, "arity": {0: []}}}}


def compile_fallback(expression: str) -> Callable[[dict], list]:
    """A function resource -> values of `expression` (nulls from padded primitive arrays removed)."""
    # Imported here: no R4 expression needs it at run time, and the ANTLR parser is slow to load.
    import fhirpathpy
    from fhirpathpy.models import models

    compiled = fhirpathpy.compile(fix_r4_expression(expression), models["r4"], OPTIONS)

    def evaluate(resource: dict) -> list:
        return [v for v in compiled(resource, {"resource": resource}) if v is not None]

    return evaluate


_SHAPES: tuple[tuple[str, frozenset[str]], ...] = (
    ("CodeableConcept", frozenset({"coding"})),
    ("Reference", frozenset({"reference"})),
    ("HumanName", frozenset({"family", "given"})),
    ("Address", frozenset({"line", "city", "postalCode", "country"})),
    ("Period", frozenset({"start", "end"})),
    ("Timing", frozenset({"event", "repeat"})),
    ("Range", frozenset({"low", "high"})),
    ("Money", frozenset({"currency"})),
    ("Quantity", frozenset({"unit", "comparator"})),
    ("Coding", frozenset({"code", "display"})),
    ("Identifier", frozenset({"value", "system"})),
)


def infer_fhir_type(value: Any, param_type: str) -> str | None:
    """Best guess of the FHIR type of a value fhirpathpy returned."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, (float, Decimal)):
        return "decimal"
    if isinstance(value, str):
        return {"date": "dateTime", "uri": "uri", "reference": "uri", "token": "string"}.get(param_type, "string")
    if isinstance(value, dict):
        keys = value.keys()
        if "resourceType" in keys:
            return "Resource"
        if param_type == "quantity":
            return "Money" if "currency" in keys else "Range" if keys & {"low", "high"} else "Quantity"
        for type_name, markers in _SHAPES:
            if keys & markers:
                return type_name
        if "text" in keys and param_type == "token":
            return "CodeableConcept"
    return None
