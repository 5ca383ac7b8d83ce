"""The backend-neutral search query: what `?params` mean, with no SQL or MongoDB in it.

parse.py turns a request's parameters into a SearchQuery; each storage backend translates it
(storage/sqlite/search_sql.py). Values are already normalised here (strings lower-cased and
accent-stripped, dates and numbers as the ranges they cover), so backends only compare.
R4 search.html is the reference for every rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

# Comparison prefixes (search.html#prefix)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True, slots=True)
class StringValue:
    text: str  # normalised for the default and :contains; as given for :exact
    modifier: str | None = None  # None (starts-with) | "exact" | "contains"


@dataclass(frozen=True, slots=True)
class TokenValue:
    """`code`, `system|code`, `|code` (system must be absent), `system|` (any code)."""

    system: str | None
    code: str | None
    system_given: bool  # False for a bare `code`: any system matches
    modifier: str | None = None  # None | "not" | "text" | "of-type"
    text: str | None = None  # :text (normalised)
    type_system: str | None = None  # :of-type
    type_code: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """`id`, `Type/id`, or an absolute/canonical `url`."""

    target_type: str | None
    target_id: str | None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class RangeValue:
    """Dates, numbers and quantities: the search value as the range [low, high] it covers."""

    prefix: str
    low: float | int
    high: float | int
    value: float | int | None = None  # the number as written (number/quantity)
    system: str | None = None  # quantity
    code: str | None = None  # quantity: matches code or unit
    kind: str = "date"  # date | number | quantity


@dataclass(frozen=True, slots=True)
class UriValue:
    value: str
    modifier: str | None = None  # None | "below" | "above"


@dataclass(frozen=True, slots=True)
class CompositeValue:
    components: tuple["Value", ...]


Value = Union[StringValue, TokenValue, ReferenceValue, RangeValue, UriValue, CompositeValue]


@dataclass(frozen=True, slots=True)
class ParamFilter:
    """One search parameter; its values are ORed (comma), filters in a query are ANDed."""

    resource_type: str
    code: str
    type: str  # the SearchParameter type: string, token, reference, date, number, quantity, uri, composite
    values: tuple[Value, ...]
    missing: bool | None = None  # :missing=true/false (then values is empty)
    component_types: tuple[str, ...] = ()  # composite: the types of its components, in order


@dataclass(frozen=True, slots=True)
class ChainFilter:
    """`ref.param=value`: resources whose reference `code` points at a `target_type` matching `inner`."""

    resource_type: str
    code: str
    target_types: tuple[str, ...]
    inner: "Filter"


@dataclass(frozen=True, slots=True)
class HasFilter:
    """`_has:Source:ref:param=value`: resources referred to by a `source_type` matching `inner`."""

    resource_type: str
    source_type: str
    reference_code: str
    inner: "Filter"


@dataclass(frozen=True, slots=True)
class AnyFilter:
    """Any of the filters (compartment membership through several reference parameters)."""

    filters: tuple["Filter", ...]


@dataclass(frozen=True, slots=True)
class AllFilter:
    """All of the filters (AND): what a query's top-level filters mean, nestable inside AnyFilter
    and inside a chain's or _has's inner filter (authorization narrows those: smart_auth/access.py).
    With no filters it matches everything."""

    filters: tuple["Filter", ...]


@dataclass(frozen=True, slots=True)
class TypeFilter:
    """Resources of one of these types: keeps a per-type condition to its type inside a search
    over several types (`AnyFilter((AllFilter((TypeFilter(("Observation",)), f)), TypeFilter(...)))`)."""

    resource_types: tuple[str, ...]


Filter = Union[ParamFilter, ChainFilter, HasFilter, AnyFilter, AllFilter, TypeFilter]


@dataclass(frozen=True, slots=True)
class SortKey:
    code: str
    type: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    """`_include=Source:param[:Target]` / `_revinclude=...`, with :iterate; param '*' for all."""

    source_type: str
    code: str
    target_type: str | None = None
    iterate: bool = False


@dataclass(frozen=True)
class SearchQuery:
    resource_types: tuple[str, ...]
    filters: tuple[Filter, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 50
    cursor: tuple | None = None  # keyset position after which the page starts (from a next link)
    total: str = "none"  # none | estimate | accurate
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    summary: str | None = None  # true | text | data | count | false
    elements: tuple[str, ...] = ()
    unknown: tuple[str, ...] = field(default=())  # parameters ignored (reported in the searchset)
