"""Parse a search request's parameters into a SearchQuery (R4 search.html).

Parsing only: no storage here. Unknown parameters are collected (lenient: reported in the
searchset) or refused (Prefer: handling=strict); a malformed value is a 400 naming the parameter.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Iterable, Sequence

from ..errors import InvalidRequest
from .query import (
    PREFIXES,
    AnyFilter,
    ChainFilter,
    CompositeValue,
    Filter,
    HasFilter,
    Include,
    ParamFilter,
    RangeValue,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
    Value,
)
from .registry import SearchParam, param_by_url, patient_compartment_params, search_param
from .registry import resource_types as known_types
from .values.dates import date_range
from .values.numbers import implied_range
from .values.references import parse_reference
from .values.text import normalize

DEFAULT_COUNT = 50
MAX_COUNT = 1000
CURSOR = "_cursor"

# Result parameters this module interprets, and those it accepts but leaves to the HTTP layer.
_RESULT_PARAMS = {"_count", "_sort", "_total", "_include", "_revinclude", "_summary", "_elements", CURSOR, "_type"}
_TRANSPORT_PARAMS = {"_format", "_pretty"}
_SUPPORTED_MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "of-type", "missing"},
    "reference": {"missing"},  # plus a resource type (":Patient")
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
    "composite": {"missing"},
}
_PREFIXED = re.compile(rf"({'|'.join(PREFIXES)})?(.*)", re.DOTALL)
_MAX_CHAIN = 3


def _bad(name: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"Search parameter '{name}': {why}", expression=name)


def split_values(raw: str, separator: str = ",") -> list[str]:
    """Split on unescaped separators, keeping escapes (search.html#escaping: `\\,` `\\$` `\\|`)
    for the next split; `_unescape` removes them at the end."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            current.append(raw[i : i + 2])
            i += 2
            continue
        if ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([,$|\\])", r"\1", text)


def _split_token(raw: str) -> tuple[str | None, str, bool]:
    """`system|code` -> (system, code, system_given); unescaped `|` only."""
    pieces = split_values(raw, "|")
    if len(pieces) == 1:
        return None, _unescape(pieces[0]), False
    system, code = pieces[0], "|".join(pieces[1:])
    return (_unescape(system) or None), _unescape(code), True


# -- values by parameter type ----------------------------------------------------------------


def _prefixed(name: str, raw: str) -> tuple[str, str]:
    m = _PREFIXED.fullmatch(raw)
    assert m is not None
    prefix, rest = m.group(1) or "eq", m.group(2)
    if m.group(1) and not rest:
        raise _bad(name, "a prefix needs a value after it")
    return prefix, rest


def parse_value(param: SearchParam, name: str, raw: str, modifier: str | None) -> Value:
    kind = param.type
    if kind == "string":
        if modifier == "exact":
            return StringValue(_unescape(raw), "exact")
        return StringValue(normalize(_unescape(raw)), modifier)
    if kind == "token":
        return _token_value(name, raw, modifier)
    if kind == "reference":
        return _reference_value(name, raw, modifier)
    if kind == "date":
        prefix, rest = _prefixed(name, raw)
        bounds = date_range(rest)
        if bounds is None:
            raise _bad(name, "the value is not a FHIR date or dateTime (yyyy-mm-ddThh:mm:ss[Z|+hh:mm])")
        return RangeValue(prefix, bounds[0], bounds[1], kind="date")
    if kind == "number":
        prefix, rest = _prefixed(name, raw)
        number = _decimal(name, rest)
        low, high = implied_range(number)
        return RangeValue(prefix, low, high, float(number), kind="number")
    if kind == "quantity":
        prefix, rest = _prefixed(name, raw)
        pieces = [_unescape(p) for p in split_values(rest, "|")]
        if len(pieces) not in (1, 3):
            raise _bad(name, "a quantity is number, or number|system|code")
        number = _decimal(name, pieces[0])
        low, high = implied_range(number)
        system = pieces[1] or None if len(pieces) == 3 else None
        code = pieces[2] or None if len(pieces) == 3 else None
        return RangeValue(prefix, low, high, float(number), system, code, kind="quantity")
    if kind == "uri":
        return UriValue(_unescape(raw), modifier)
    if kind == "composite":
        return _composite_value(param, name, raw)
    raise _bad(name, f"parameters of type {kind} are not supported")


def _decimal(name: str, text: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise _bad(name, "the value is not a number") from None
    if not number.is_finite():
        raise _bad(name, "the value is not a number")
    return number


def _token_value(name: str, raw: str, modifier: str | None) -> TokenValue:
    if modifier == "text":
        return TokenValue(None, None, False, "text", text=normalize(_unescape(raw)))
    if modifier == "of-type":
        pieces = [_unescape(p) for p in split_values(raw, "|")]
        if len(pieces) != 3 or not all(pieces):
            raise _bad(name, ":of-type takes system|code|value")
        return TokenValue(None, pieces[2], False, "of-type", type_system=pieces[0], type_code=pieces[1])
    system, code, system_given = _split_token(raw)
    if not code and not system:
        raise _bad(name, "an empty token")
    return TokenValue(system, code or None, system_given, modifier)


def _reference_value(name: str, raw: str, modifier: str | None) -> ReferenceValue:
    value = _unescape(raw)
    if not value:
        raise _bad(name, "an empty reference")
    target_type = modifier if modifier and modifier[0].isupper() else None
    if "/" not in value and ":" not in value:
        return ReferenceValue(target_type, value)
    parsed = parse_reference(value)
    if parsed is None:
        raise _bad(name, "not a reference this server can search for")
    if parsed.target_id is not None:
        return ReferenceValue(parsed.target_type, parsed.target_id, parsed.url)
    return ReferenceValue(None, None, parsed.url)


def _composite_value(param: SearchParam, name: str, raw: str) -> CompositeValue:
    parts = split_values(raw, "$")
    if len(parts) != len(param.components):
        raise _bad(name, f"a composite value has {len(param.components)} parts joined by '$'")
    values: list[Value] = []
    for (url, _), part in zip(param.components, parts):
        component = param_by_url(url)
        if component is None:
            raise _bad(name, "this composite parameter is not supported")
        values.append(parse_value(component, name, part, None))
    return CompositeValue(tuple(values))


# -- parameter names --------------------------------------------------------------------------


def _param_filter(resource_type: str, name: str, raw_values: Sequence[str], depth: int = 0) -> Filter | None:
    """A filter for `name=value` on resource_type; None when the parameter is unknown there."""
    if name.startswith("_has:"):
        return _has_filter(resource_type, name, raw_values, depth)
    head, dot, rest = name.partition(".")
    code, colon, modifier = head.partition(":")
    param = search_param(resource_type, code)
    if param is None or not param.supported:
        return None
    if dot:
        return _chain_filter(resource_type, param, name, modifier or None, rest, raw_values, depth)
    modifier_ = modifier or None
    if modifier_ and modifier_ not in _SUPPORTED_MODIFIERS.get(param.type, set()):
        if not (param.type == "reference" and modifier_ in param.targets):
            raise _bad(name, f"the modifier ':{modifier_}' is not supported for {param.type} parameters")
    if modifier_ == "missing":
        values = {v.strip().lower() for raw in raw_values for v in raw.split(",")}
        if values not in ({"true"}, {"false"}):
            raise _bad(name, ":missing takes true or false")
        return ParamFilter(resource_type, code, param.type, (), missing=values == {"true"})
    values = tuple(parse_value(param, name, v, modifier_) for raw in raw_values for v in split_values(raw))
    component_types = tuple((param_by_url(u) or param).type for u, _ in param.components)
    return ParamFilter(resource_type, code, param.type, values, component_types=component_types)


def _chain_filter(resource_type, param, name, type_modifier, rest, raw_values, depth) -> Filter:
    if param.type != "reference":
        raise _bad(name, "only reference parameters can be chained")
    if depth >= _MAX_CHAIN:
        raise _bad(name, f"chains may be at most {_MAX_CHAIN} links long")
    targets = (type_modifier,) if type_modifier else param.targets
    inner: list[Filter] = []
    for target in targets:
        f = _param_filter(target, rest, raw_values, depth + 1)
        if f is not None:
            inner.append(ChainFilter(resource_type, param.code, (target,), f))
    if not inner:
        raise _bad(name, "no target type of this reference has the chained parameter")
    return inner[0] if len(inner) == 1 else AnyFilter(tuple(inner))


def _has_filter(resource_type, name, raw_values, depth) -> Filter:
    # _has:Observation:patient:code=... ; nestable: _has:A:ref:_has:B:ref:param=...
    pieces = name.split(":", 3)
    if len(pieces) != 4 or not all(pieces):
        raise _bad(name, "_has takes _has:Type:reference:parameter")
    _, source_type, ref_code, inner_name = pieces
    ref = search_param(source_type, ref_code)
    if ref is None or ref.type != "reference":
        raise _bad(name, f"{source_type} has no reference parameter '{ref_code}'")
    if depth >= _MAX_CHAIN:
        raise _bad(name, f"_has may be nested at most {_MAX_CHAIN} deep")
    inner = _param_filter(source_type, inner_name, raw_values, depth + 1)
    if inner is None:
        raise _bad(name, f"{source_type} has no search parameter '{inner_name}'")
    return HasFilter(resource_type, source_type, ref_code, inner)


# -- result parameters ------------------------------------------------------------------------


def _includes(name: str, raws: Iterable[str]) -> tuple[Include, ...]:
    out: list[Include] = []
    iterate = name.endswith(":iterate") or name.endswith(":recurse")
    for raw in raws:
        if raw == "*":
            out.append(Include("*", "*", None, iterate))
            continue
        pieces = raw.split(":")
        if len(pieces) not in (2, 3):
            raise _bad(name, "takes Type:parameter[:TargetType] or *")
        source, code = pieces[0], pieces[1]
        target = pieces[2] if len(pieces) == 3 else None
        if code != "*":
            param = search_param(source, code)
            if param is None or param.type != "reference":
                raise _bad(name, f"{source} has no reference parameter '{code}'")
        out.append(Include(source, code, target, iterate))
    return tuple(out)


def _sort_keys(types: Sequence[str], raws: Sequence[str]) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    for raw in raws:
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            descending = item.startswith("-")
            code = item.lstrip("-")
            kinds = {p.type for t in types if (p := search_param(t, code)) is not None}
            if not kinds:
                raise _bad("_sort", f"'{code}' is not a search parameter of {', '.join(types)}")
            kind = kinds.pop()
            if kind in ("composite", "special") or kinds:
                raise _bad("_sort", f"cannot sort by '{code}'")
            keys.append(SortKey(code, kind, descending))
    return tuple(keys)


def parse_search(
    resource_types: Sequence[str],
    params: Sequence[tuple[str, str]],
    *,
    strict: bool = False,
    extra_filters: Sequence[Filter] = (),
) -> SearchQuery:
    """A SearchQuery for `params` (pairs, repeats allowed) over `resource_types`."""
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(name, []).append(value)
    types = tuple(resource_types)
    if "_type" in grouped:
        asked = tuple(t.strip() for raw in grouped["_type"] for t in raw.split(",") if t.strip())
        unknown = [t for t in asked if t not in known_types()]
        if unknown:
            raise _bad("_type", "unknown resource type")
        types = tuple(t for t in asked if not resource_types or t in resource_types) if resource_types else asked

    filters: list[Filter] = list(extra_filters)
    ignored: list[str] = []
    for name, raws in grouped.items():
        base = name.split(":", 1)[0]
        if base in _RESULT_PARAMS or base in _TRANSPORT_PARAMS:
            continue
        for raw in raws:  # a repeated parameter ANDs its occurrences (search.html#combining)
            per_type = [f for t in types if (f := _param_filter(t, name, [raw])) is not None]
            if not per_type:
                if strict:
                    raise _bad(name, "unknown search parameter")
                ignored.append(name)
                break
            filters.append(per_type[0] if len(per_type) == 1 else AnyFilter(tuple(per_type)))

    count = DEFAULT_COUNT
    if "_count" in grouped:
        raw = grouped["_count"][-1]
        if not raw.isdigit():
            raise _bad("_count", "must be a non-negative integer")
        count = min(int(raw), MAX_COUNT)
    total = grouped.get("_total", ["none"])[-1]
    if total not in ("none", "estimate", "accurate"):
        raise _bad("_total", "takes none, estimate or accurate")
    summary = grouped.get("_summary", [None])[-1]
    if summary not in (None, "true", "false", "text", "data", "count"):
        raise _bad("_summary", "takes true, false, text, data or count")
    if summary == "count":
        count = 0  # only the total is wanted
    elements = tuple(e.strip() for raw in grouped.get("_elements", []) for e in raw.split(",") if e.strip())
    includes = tuple(i for n, raws in grouped.items() if n.split(":")[0] == "_include" for i in _includes(n, raws))
    revincludes = tuple(
        i for n, raws in grouped.items() if n.split(":")[0] == "_revinclude" for i in _includes(n, raws)
    )
    return SearchQuery(
        resource_types=types,
        filters=tuple(filters),
        sort=_sort_keys(types, grouped.get("_sort", [])),
        count=count,
        total=total,
        includes=includes,
        revincludes=revincludes,
        summary=summary,
        elements=elements,
        unknown=tuple(ignored),
    )


def compartment_filter(compartment_type: str, compartment_id: str, resource_type: str) -> Filter:
    """Membership of resource_type in Patient/{id}'s compartment (compartmentdefinition-patient)."""
    codes = patient_compartment_params(resource_type) if compartment_type == "Patient" else ()
    if not codes:
        raise InvalidRequest(f"{resource_type} is not in the {compartment_type} compartment")
    filters: list[Filter] = []
    for code in codes:
        if code == "{def}":
            filters.append(ParamFilter(resource_type, "_id", "token", (TokenValue(None, compartment_id, False),)))
        else:
            filters.append(ParamFilter(resource_type, code, "reference",
                                       (ReferenceValue(compartment_type, compartment_id),)))
    return filters[0] if len(filters) == 1 else AnyFilter(tuple(filters))


__all__ = ["CURSOR", "compartment_filter", "parse_search", "parse_value", "split_values"]
