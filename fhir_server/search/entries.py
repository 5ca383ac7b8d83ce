"""Index entries: what one resource contributes to the search index, one row per searchable value.

Computed once per write by extract.py and stored by the storage layer beside the resource version
(SQLite index tables, or arrays embedded in the MongoDB document). Each entry names the
parameter `code` it serves. Components of a CompositeEntry carry the code of their component
parameter (e.g. "code" and "value-quantity"), which storage may ignore.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.search.values.dates import DATE_MAX, DATE_MIN

__all__ = [
    "CompositeEntry",
    "DATE_MAX",
    "DATE_MIN",
    "DateEntry",
    "IndexEntry",
    "NumberEntry",
    "QuantityEntry",
    "ReferenceEntry",
    "StringEntry",
    "TokenEntry",
    "UriEntry",
]


@dataclass(frozen=True, slots=True)
class StringEntry:
    """R4 search.html#string. `normalized` (values.text.normalize) serves the default starts-with
    and `:contains`; `exact` is the value as written, for `:exact`."""

    param: str
    normalized: str
    exact: str


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """R4 search.html#token: `system|code`, `|code`, `code`, `system|`; `text` (normalised like
    StringEntry) serves `:text`; `type_system`/`type_code` (Identifier.type codings) serve
    `:of-type`. A CodeableConcept.text is its own entry with only `text` set."""

    param: str
    system: str | None
    code: str | None
    text: str | None
    type_system: str | None = None
    type_code: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceEntry:
    """R4 search.html#reference: match by `target_type`/`target_id` ("Patient/123", "123",
    `:Patient`) or by `url` (absolute and canonical references). See values/references.py."""

    param: str
    target_type: str | None
    target_id: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class DateEntry:
    """R4 search.html#date: the inclusive range [low, high] of UTC epoch milliseconds the value
    covers; open Period ends are DATE_MIN / DATE_MAX."""

    param: str
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class NumberEntry:
    """R4 search.html#number, floats. A decimal covers low <= x < high (its implied precision);
    an integer is exact (low == value == high); a Range has value None and its bounds as given
    (inclusive; a missing bound is -inf/+inf)."""

    param: str
    value: float | None
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class QuantityEntry:
    """R4 search.html#quantity, floats, with NumberEntry's low/high conventions. A comparator on
    the Quantity ("<5 mg") opens the corresponding side. Money: system urn:iso:std:iso:4217,
    code = currency. No unit conversion (UCUM canonicalisation) is done."""

    param: str
    system: str | None
    code: str | None
    unit: str | None
    value: float | None
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class UriEntry:
    """R4 search.html#uri (exact, `:below`, `:above`); canonicals without their "|version"."""

    param: str
    value: str


@dataclass(frozen=True, slots=True)
class CompositeEntry:
    """R4 search.html#composite: one entry per focus element and combination of its component
    values, components in the order the parameter defines them."""

    param: str
    components: tuple[IndexEntry, ...]


IndexEntry = (
    StringEntry | TokenEntry | ReferenceEntry | DateEntry | NumberEntry | QuantityEntry | UriEntry | CompositeEntry
)
