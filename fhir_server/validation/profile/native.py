"""The universal invariants, implemented in Python (validation.md PERF-02, §A3.9).

They hold on every resource or on datatypes that occur everywhere, so evaluating them with
fhirpathpy (~30-100 µs each) would dominate the cost of a write; several of them also break in
fhirpathpy (dom-3 raises on any contained resource, per-1 needs `hasValue()`, txt-1/txt-2 need
`htmlChecks()`). ele-1 and ext-1 are checked by the walk itself (walk.py, extensions.py).

Each function takes the focus (the JSON value the constraint sits on) and the resource scope, and
returns whether the constraint holds. A native implementation is used only when the published
expression is the one it implements (`NATIVE`, keyed by constraint key *and* expression), so a
profile that reuses a key for a different rule is still evaluated as written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.validation.profile.model import Scope
from fhir_server.validation.profile.xhtml import narrative_has_content, narrative_ok

__all__ = ["NATIVE", "native_for", "dom6"]

NativeCheck = Callable[[Any, Scope], bool]


def _present(obj: dict, name: str) -> bool:
    """FHIRPath `name.exists()` on JSON: a value, or a primitive's `_name` with an extension/id."""
    return name in obj or f"_{name}" in obj


def _contained(resource: Any) -> list:
    contained = resource.get("contained") if isinstance(resource, dict) else None
    return contained if isinstance(contained, list) else []


def dom2(focus: Any, scope: Scope) -> bool:
    """dom-2: a contained resource SHALL NOT contain resources."""
    return not any(isinstance(c, dict) and c.get("contained") for c in _contained(focus))


def _local_references(value: Any, out: set[str]) -> None:
    # every string starting with '#': Reference.reference, canonical/uri/url values (dom-3 reads all four)
    if isinstance(value, str):
        if value[:1] == "#":
            out.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _local_references(item, out)
    elif isinstance(value, list):
        for item in value:
            _local_references(item, out)


def dom3(focus: Any, scope: Scope) -> bool:
    """dom-3: each contained resource is referenced from elsewhere in the resource (`#id`), or
    refers to its container (`#`)."""
    contained = _contained(focus)
    if not contained:
        return True
    refs: set[str] = set()
    _local_references(focus, refs)
    for resource in contained:
        if not isinstance(resource, dict):
            continue
        if f"#{resource.get('id')}" in refs:
            continue
        inner: set[str] = set()
        _local_references(resource, inner)
        if "#" not in inner:
            return False
    return True


def dom4(focus: Any, scope: Scope) -> bool:
    """dom-4: a contained resource has no meta.versionId or meta.lastUpdated."""
    for resource in _contained(focus):
        meta = resource.get("meta") if isinstance(resource, dict) else None
        if isinstance(meta, dict) and (_present(meta, "versionId") or _present(meta, "lastUpdated")):
            return False
    return True


def dom5(focus: Any, scope: Scope) -> bool:
    """dom-5: a contained resource has no security labels."""
    for resource in _contained(focus):
        meta = resource.get("meta") if isinstance(resource, dict) else None
        if isinstance(meta, dict) and meta.get("security"):
            return False
    return True


def dom6(focus: Any, scope: Scope) -> bool:
    """dom-6 (best practice): a resource should have a narrative. Contained resources are exempt
    (Java's fix `(%rootResource != $this) or ...`, validation.md §A3.9)."""
    if scope.is_contained:
        return True
    text = focus.get("text") if isinstance(focus, dict) else None
    return isinstance(text, dict) and _present(text, "div")


def ref1(focus: Any, scope: Scope) -> bool:
    """ref-1: a local reference `#id` resolves to a contained resource of the root resource; a bare
    `#` (the container itself) is valid (Java's R4 fix)."""
    if not isinstance(focus, dict):
        return True
    reference = focus.get("reference")
    if not isinstance(reference, str) or reference[:1] != "#" or reference == "#":
        return True
    wanted = reference[1:]
    return any(isinstance(c, dict) and c.get("id") == wanted for c in _contained(scope.root))


def _date_key(value: str) -> tuple[str, bool]:
    """(comparable text, has a time): dateTimes with a time are compared in UTC."""
    if len(value) > 10 and "T" in value:
        from datetime import datetime, timezone

        text = value.replace("Z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return value, False
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).isoformat(), True
    return value, False


def per1(focus: Any, scope: Scope) -> bool:
    """per-1: start <= end when both have a value. Values of different precision that agree as far
    as both go are incomparable in FHIRPath (an empty result), which is not a failure."""
    if not isinstance(focus, dict):
        return True
    start, end = focus.get("start"), focus.get("end")
    if not isinstance(start, str) or not isinstance(end, str):
        return True
    (start_key, start_time), (end_key, end_time) = _date_key(start), _date_key(end)
    if start_time and end_time:
        return start_key <= end_key
    common = min(len(start[:10]), len(end[:10]))
    start_part, end_part = start[:common], end[:common]
    if start_part != end_part:
        return start_part < end_part
    return True


def att1(focus: Any, scope: Scope) -> bool:
    """att-1: inline data needs a contentType."""
    return not isinstance(focus, dict) or not _present(focus, "data") or _present(focus, "contentType")


def qty3(focus: Any, scope: Scope) -> bool:
    """qty-3: a coded unit needs its system."""
    return not isinstance(focus, dict) or not _present(focus, "code") or _present(focus, "system")


def sqty1(focus: Any, scope: Scope) -> bool:
    """sqty-1: a SimpleQuantity has no comparator."""
    return not isinstance(focus, dict) or not _present(focus, "comparator")


def txt1(focus: Any, scope: Scope) -> bool:
    return narrative_ok(focus)


def txt2(focus: Any, scope: Scope) -> bool:
    return narrative_has_content(focus)


def qrs1(focus: Any, scope: Scope) -> bool:
    """qrs-1: a QuestionnaireResponse item has answers or nested items, not both. It sits on every
    item of every response (a 40-item intake evaluated it 40 times through fhirpathpy: ~1 ms)."""
    return not (isinstance(focus, dict) and _present(focus, "answer") and _present(focus, "item"))


def cpt2(focus: Any, scope: Scope) -> bool:
    """cpt-2: a ContactPoint with a value has a system (on every telecom of every Patient/Practitioner)."""
    return not isinstance(focus, dict) or not _present(focus, "value") or _present(focus, "system")


# (key, published R4 expression) -> implementation
NATIVE: dict[tuple[str, str], NativeCheck] = {
    ("dom-2", "contained.contained.empty()"): dom2,
    (
        "dom-3",
        "contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants().as(canonical)"
        " | %resource.descendants().as(uri) | %resource.descendants().as(url))) or descendants().where(reference"
        " = '#').exists() or descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical)"
        " = '#').exists()).not()).trace('unmatched', id).empty()",
    ): dom3,
    ("dom-4", "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()"): dom4,
    ("dom-5", "contained.meta.security.empty()"): dom5,
    ("dom-6", "text.`div`.exists()"): dom6,
    (
        "ref-1",
        "reference.startsWith('#').not() or (reference.substring(1).trace('url') in"
        " %rootResource.contained.id.trace('ids'))",
    ): ref1,
    ("per-1", "start.hasValue().not() or end.hasValue().not() or (start <= end)"): per1,
    ("att-1", "data.empty() or contentType.exists()"): att1,
    ("qty-3", "code.empty() or system.exists()"): qty3,
    ("sqty-1", "comparator.empty()"): sqty1,
    ("txt-1", "htmlChecks()"): txt1,
    ("txt-2", "htmlChecks()"): txt2,
    ("qrs-1", "(answer.exists() and item.exists()).not()"): qrs1,
    ("cpt-2", "value.empty() or system.exists()"): cpt2,
}


def native_for(key: str, expression: str) -> NativeCheck | None:
    return NATIVE.get((key, " ".join(expression.split())))


def _quantity_value(quantity: Any) -> tuple[Any, tuple] | None:
    if not isinstance(quantity, dict) or "value" not in quantity:
        return None
    unit = (quantity.get("system"), quantity.get("code")) if "code" in quantity else (None, quantity.get("unit"))
    return quantity["value"], unit


def rng2(focus: Any, scope: Scope) -> bool:
    """rng-2: low <= high. fhirpathpy cannot compare Quantity values at all (validation.md §A3.9
    gap); here they are compared when their units are the same (system + code, or the unit text
    when uncoded). Different units would need UCUM conversion: incomparable, so not a failure."""
    if not isinstance(focus, dict):
        return True
    low, high = _quantity_value(focus.get("low")), _quantity_value(focus.get("high"))
    if low is None or high is None or low[1] != high[1]:
        return True
    try:
        return low[0] <= high[0]
    except TypeError:
        return True


NATIVE[("rng-2", "low.empty() or high.empty() or (low <= high)")] = rng2
