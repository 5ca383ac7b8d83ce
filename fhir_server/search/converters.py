"""Turn one FHIR value into index entries, by (search parameter type, FHIR type of the value).

The pair is known when an expression is compiled, so `converter_for` is called once per
expression branch, not per value. Pairs without a converter are not indexed (see UNINDEXED).
Spec: R4 search.html, per parameter type; the token table of search.html#token for which
element of each datatype becomes system / code / text.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fhir_server.search.entries import (
    DateEntry,
    IndexEntry,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)
from fhir_server.search.fhirpath.types import QUANTITY_TYPES
from fhir_server.search.values.dates import DATE_MAX, DATE_MIN, date_range
from fhir_server.search.values.numbers import as_decimal, implied_range
from fhir_server.search.values.references import canonical_url, parse_reference
from fhir_server.search.values.text import normalize

__all__ = ["Converter", "UNINDEXED", "converter_for"]

# (out, param code, value, code system of a bound `code` element) -> appends entries to `out`
Converter = Callable[[list[IndexEntry], str, Any, str | None], None]

_INF = float("inf")
_ISO_4217 = "urn:iso:std:iso:4217"

# What the R4 expressions reach but no entry can represent (reported by the registry tests):
UNINDEXED = {
    ("date", "Age"): "an age is not a point in time without the birth date",
    ("date", "Range"): "a Range of ages, likewise",
    ("date", "string"): "free text (e.g. Procedure.performedString)",
    ("reference", "Attachment"): "Consent.source[x] as Attachment is no reference",
    ("quantity", "SampledData"): "a series, not one quantity",
    ("token", "Quantity"): "Group.characteristic.value[x] as Quantity: no token form",
    ("token", "Range"): "likewise",
    ("token", "Reference"): "likewise",
}


# --- string: R4 search.html#string ----------------------------------------------------------------

def _string(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is str:
        normalized = normalize(value)
        if normalized:
            out.append(StringEntry(code, normalized, value))


def _string_parts(parts: tuple[str, ...]) -> Converter:
    # HumanName and Address: "match any of the string elements" (search.html#string), so each part
    # is its own entry.
    def convert(out: list, code: str, value: Any, system: str | None) -> None:
        if value.__class__ is not dict:
            return
        for part in parts:
            item = value.get(part)
            if item.__class__ is list:
                for text in item:
                    _string(out, code, text, system)
            elif item is not None:
                _string(out, code, item, system)

    return convert


_HUMAN_NAME = _string_parts(("family", "given", "prefix", "suffix", "text"))
_ADDRESS = _string_parts(("line", "city", "district", "state", "postalCode", "country", "text"))


# --- token: R4 search.html#token ------------------------------------------------------------------

def _text(value: Any) -> str | None:
    return normalize(value) or None if value.__class__ is str else None


def _coding(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is not dict:
        return
    system, token, display = value.get("system"), value.get("code"), _text(value.get("display"))
    if system is not None or token is not None or display is not None:
        out.append(TokenEntry(code, system, token, display))


def _codeable_concept(out: list, code: str, value: Any, system: str | None) -> None:
    if value.__class__ is not dict:
        return
    for coding in value.get("coding") or ():
        _coding(out, code, coding, system)
    text = _text(value.get("text"))
    if text is not None:
        out.append(TokenEntry(code, None, None, text))


def _identifier(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is not dict:
        return
    system, token = value.get("system"), value.get("value")
    if system is None and token is None:
        return
    id_type = value.get("type")
    text = _text(id_type.get("text")) if id_type.__class__ is dict else None
    codings = [c for c in id_type.get("coding") or () if c.__class__ is dict] if id_type.__class__ is dict else []
    if not codings:
        out.append(TokenEntry(code, system, token, text))
    for coding in codings:  # `:of-type` matches any of the type's codings
        out.append(TokenEntry(code, system, token, text, coding.get("system"), coding.get("code")))


def _contact_point(out: list, code: str, value: Any, _system: str | None) -> None:
    # search.html#token: a ContactPoint matches on its value; ContactPoint.system ("phone") is
    # no code system. (HAPI puts it in `system`; we follow the spec table.)
    if value.__class__ is dict and value.get("value").__class__ is str:
        out.append(TokenEntry(code, None, value["value"], None))


def _boolean(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is bool:
        out.append(TokenEntry(code, None, "true" if value else "false", None))


def _code(out: list, code: str, value: Any, system: str | None) -> None:
    # A `code` bound (required) to a value set drawn from one code system gets that system, so
    # `status=http://hl7.org/fhir/observation-status|final` matches (search.html#token: "the
    # system is implied by the binding").
    if value.__class__ is str:
        out.append(TokenEntry(code, system, value, None))


def _plain_token(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is str:
        out.append(TokenEntry(code, None, value, None))


# --- reference: R4 search.html#reference ----------------------------------------------------------

def _reference(out: list, code: str, value: Any, _system: str | None) -> None:
    # A Reference with only an identifier (or only a display) has no literal to match: skipped
    # here; `:identifier` searches would need the identifier indexed separately.
    if value.__class__ is not dict:
        return
    literal = value.get("reference")
    if literal.__class__ is not str:
        return
    parsed = parse_reference(literal)
    if parsed is None:
        return
    target_type = parsed.target_type or value.get("type")
    out.append(ReferenceEntry(code, target_type, parsed.target_id, parsed.url))


def _canonical_reference(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is str and value:
        out.append(ReferenceEntry(code, None, None, canonical_url(value)))


def _uri_reference(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is str and value:
        out.append(ReferenceEntry(code, None, None, value))


def _resource_reference(out: list, code: str, value: Any, _system: str | None) -> None:
    # Bundle.entry[0].resource (Bundle composition / message): the resource itself, by type and id.
    if value.__class__ is dict and value.get("resourceType").__class__ is str:
        out.append(ReferenceEntry(code, value["resourceType"], value.get("id"), None))


# --- date: R4 search.html#date --------------------------------------------------------------------

def _date(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is str:
        covered = date_range(value)
        if covered is not None:
            out.append(DateEntry(code, covered[0], covered[1]))


def _bounds(value: Any) -> tuple[int, int] | None:
    """A Period's range; an absent or unreadable end is open (the period is ongoing)."""
    if value.__class__ is not dict:
        return None
    start, end = value.get("start"), value.get("end")
    low_range = date_range(start) if start.__class__ is str else None
    high_range = date_range(end) if end.__class__ is str else None
    if low_range is None and high_range is None:
        return None
    return (low_range[0] if low_range else DATE_MIN), (high_range[1] if high_range else DATE_MAX)


def _period(out: list, code: str, value: Any, _system: str | None) -> None:
    covered = _bounds(value)
    if covered is not None:
        out.append(DateEntry(code, covered[0], covered[1]))


def _timing(out: list, code: str, value: Any, _system: str | None) -> None:
    # One range from the earliest to the latest of Timing.event and repeat.boundsPeriod; the
    # other bounds (boundsDuration, boundsRange) and the repeat rules are not expanded.
    if value.__class__ is not dict:
        return
    ranges = [date_range(e) for e in value.get("event") or () if e.__class__ is str]
    repeat = value.get("repeat")
    if repeat.__class__ is dict:
        ranges.append(_bounds(repeat.get("boundsPeriod")))
    found = [r for r in ranges if r is not None]
    if found:
        out.append(DateEntry(code, min(r[0] for r in found), max(r[1] for r in found)))


# --- number and quantity: R4 search.html#number, #quantity ----------------------------------------

def _decimal_number(out: list, code: str, value: Any, _system: str | None) -> None:
    number = as_decimal(value)
    if number is not None:
        low, high = implied_range(number)
        out.append(NumberEntry(code, float(number), low, high))


def _integer_number(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is int:
        out.append(NumberEntry(code, float(value), float(value), float(value)))


def _range_bound(value: Any, name: str) -> Decimal | None:
    bound = value.get(name)
    return as_decimal(bound.get("value")) if bound.__class__ is dict else None


def _range_number(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is not dict:
        return
    low, high = _range_bound(value, "low"), _range_bound(value, "high")
    if low is not None or high is not None:
        out.append(NumberEntry(code, None, float(low) if low is not None else -_INF,
                               float(high) if high is not None else _INF))


def _quantity(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is not dict:
        return
    number = as_decimal(value.get("value"))
    if number is None:
        return
    low, high = implied_range(number)
    comparator = value.get("comparator")
    if comparator in ("<", "<="):  # "<5" means the actual value lies below 5
        low, high = -_INF, float(number)
    elif comparator in (">", ">="):
        low, high = float(number), _INF
    out.append(QuantityEntry(code, value.get("system"), value.get("code"), value.get("unit"), float(number), low, high))


def _money(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is not dict:
        return
    number = as_decimal(value.get("value"))
    if number is not None:
        low, high = implied_range(number)
        out.append(QuantityEntry(code, _ISO_4217, value.get("currency"), None, float(number), low, high))


def _range_quantity(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is not dict:
        return
    low, high = _range_bound(value, "low"), _range_bound(value, "high")
    if low is None and high is None:
        return
    unit_source = value.get("low") if low is not None else value.get("high")
    out.append(QuantityEntry(code, unit_source.get("system"), unit_source.get("code"), unit_source.get("unit"), None,
                             float(low) if low is not None else -_INF, float(high) if high is not None else _INF))


# --- uri: R4 search.html#uri ----------------------------------------------------------------------

def _uri(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is str and value:
        out.append(UriEntry(code, value))


def _canonical_uri(out: list, code: str, value: Any, _system: str | None) -> None:
    if value.__class__ is str and value:
        out.append(UriEntry(code, canonical_url(value)))


_CONVERTERS: dict[tuple[str, str], Converter] = {
    ("string", "string"): _string,
    ("string", "markdown"): _string,
    ("string", "HumanName"): _HUMAN_NAME,
    ("string", "Address"): _ADDRESS,
    ("token", "CodeableConcept"): _codeable_concept,
    ("token", "Coding"): _coding,
    ("token", "Identifier"): _identifier,
    ("token", "ContactPoint"): _contact_point,
    ("token", "boolean"): _boolean,
    ("token", "code"): _code,
    ("token", "string"): _plain_token,
    ("token", "id"): _plain_token,
    ("token", "uri"): _plain_token,
    ("reference", "Reference"): _reference,
    ("reference", "canonical"): _canonical_reference,
    ("reference", "uri"): _uri_reference,
    ("reference", "Resource"): _resource_reference,
    ("date", "date"): _date,
    ("date", "dateTime"): _date,
    ("date", "instant"): _date,
    ("date", "Period"): _period,
    ("date", "Timing"): _timing,
    ("number", "decimal"): _decimal_number,
    ("number", "integer"): _integer_number,
    ("number", "positiveInt"): _integer_number,
    ("number", "unsignedInt"): _integer_number,
    ("number", "Range"): _range_number,
    ("quantity", "Money"): _money,
    ("quantity", "Range"): _range_quantity,
    ("uri", "uri"): _uri,
    ("uri", "url"): _uri,
    ("uri", "canonical"): _canonical_uri,
    ("uri", "oid"): _uri,
    ("uri", "uuid"): _uri,
}
for _quantity_type in QUANTITY_TYPES:
    _CONVERTERS[("quantity", _quantity_type)] = _quantity


def converter_for(param_type: str, fhir_type: str) -> Converter | None:
    """The converter for values of `fhir_type` under a parameter of `param_type`, or None."""
    return _CONVERTERS.get((param_type, fhir_type))
