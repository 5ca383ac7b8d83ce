"""Translate a backend-neutral SearchQuery into MongoDB filters and aggregation stages.

The twin of storage/sqlite/search_sql.py, rule for rule, so both backends find the same resources
in the same order. A SQLite condition on index rows `rid IN (SELECT rid FROM idx_x WHERE type = T
AND param = P AND cond)` becomes `{type: T, i_x: {$elemMatch: {p: P, cond}}}` on the embedded
index arrays (documents.py); `NOT IN` becomes `$nor`. Chains and _has need the ids of other
resources first: the translator asks a Resolver for them (one query per chain link, answered with
a batched `$in`, never one query per resource), so the translation itself stays testable without
a server.

Sorting mirrors SQLite's: a resource's value for a sort key is the smallest (ascending) or largest
(descending) of its index values for that parameter, "" or the int64 minimum when it has none.
Those values are computed by two $addFields stages and serve as the keyset-paging position.
"""

from __future__ import annotations

import re
import time
from typing import Any, Protocol, Sequence

from ...search.query import (
    AllFilter,
    AnyFilter,
    ChainFilter,
    CompositeValue,
    Filter,
    HasFilter,
    ParamFilter,
    RangeValue,
    ReferenceValue,
    SortKey,
    StringValue,
    TokenValue,
    TypeFilter,
    UriValue,
    Value,
)
from .documents import ARRAY_FOR_TYPE, COMPOSITE_ARRAY, VERSION_FIELDS

TOP = "\U0010ffff"  # sorts after every character: prefix ranges end at prefix + TOP
MISSING_TEXT = ""
MISSING_NUMBER = -(2**63)
NEVER: dict = {"_id": {"$in": []}}  # matches no document
ALWAYS: dict = {}


class Resolver(Protocol):
    """The sub-queries chains and _has need, run by the caller (search.py) or faked in tests."""

    async def ids(self, match: dict) -> list[str]:
        """The `id` of every `resources` document matching `match`."""

    async def referenced_ids(self, match: dict, code: str, target_type: str) -> list[str]:
        """The target ids of the `code` references to `target_type` held by documents matching `match`."""


# -- combining conditions ------------------------------------------------------------------------


def _is_operators(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(k.startswith("$") for k in value)


def merge(*clauses: dict) -> dict:
    """All of `clauses` (AND), as one flat document where their keys allow it, else with $and."""
    out: dict = {}
    rest: list[dict] = []
    for clause in clauses:
        for key, value in clause.items():
            if key not in out:
                out[key] = value
            elif out[key] == value:
                continue
            elif (not key.startswith("$") and _is_operators(out[key]) and _is_operators(value)
                  and not set(out[key]) & set(value)):
                out[key] = {**out[key], **value}
            else:
                rest.append({key: value})
    return {"$and": [out, *rest]} if rest else out


def any_of(clauses: Sequence[dict]) -> dict:
    if not clauses:
        return NEVER
    if len(clauses) == 1:
        return clauses[0]
    return {"$or": list(clauses)}


def none_of(clause: dict) -> dict:
    return {"$nor": [clause]}


# -- value conditions on one index element -------------------------------------------------------


def range_condition(v: RangeValue, low: str, high: str) -> dict:
    """search.html#prefix: the target [low, high] against the search range (search_sql._range)."""
    lo, hi = v.low, v.high
    if v.kind != "date" and v.prefix not in ("eq", "ne", "ap") and v.value is not None:
        lo = hi = v.value  # numbers compare with their value; only eq uses implied precision
    inside = merge({low: {"$gte": lo}}, {high: {"$lte": hi}})
    prefix = v.prefix
    if prefix == "eq":
        return inside
    if prefix == "ne":
        return {"$or": [{low: {"$lt": lo}}, {high: {"$gt": hi}}]}
    if prefix == "gt":
        return {high: {"$gt": hi}}
    if prefix == "lt":
        return {low: {"$lt": lo}}
    if prefix == "ge":
        return {"$or": [{high: {"$gt": hi}}, inside]}
    if prefix == "le":
        return {"$or": [{low: {"$lt": lo}}, inside]}
    if prefix == "sa":
        return {low: {"$gt": hi}}
    if prefix == "eb":
        return {high: {"$lt": lo}}
    if prefix == "ap":
        # "approximately": within 10% of the distance to now (dates) or of the value (numbers)
        gap = abs(time.time() * 1000 - lo) * 0.1 if v.kind == "date" else abs(v.value or 0) * 0.1
        return merge({low: {"$lte": hi + gap}}, {high: {"$gte": lo - gap}})
    raise ValueError(prefix)


def value_condition(v: Value, prefix: str = "") -> dict:
    """The condition one index element (fields under `prefix`) must meet to match value `v`."""
    f = lambda name: prefix + name  # noqa: E731
    if isinstance(v, StringValue):
        if v.modifier == "exact":
            return {f("x"): v.text}
        if v.modifier == "contains":
            return {f("n"): {"$regex": re.escape(v.text)}}
        return {f("n"): {"$gte": v.text, "$lt": v.text + TOP}}
    if isinstance(v, TokenValue):
        if v.modifier == "text":
            return {f("t"): {"$gte": v.text, "$lt": (v.text or "") + TOP}}
        if v.modifier == "of-type":
            return {f("ts"): v.type_system, f("tc"): v.type_code, f("c"): v.code}
        cond: dict = {}
        if v.code is not None:
            cond[f("c")] = v.code
        if v.system_given:
            cond[f("s")] = v.system  # None matches an absent system: "|code"
        return cond
    if isinstance(v, ReferenceValue):
        if v.target_id is not None:
            cond = {f("ti"): v.target_id}
            if v.target_type is not None:
                cond[f("tt")] = v.target_type
            if v.url is not None:
                return {"$or": [cond, {f("u"): v.url}]}
            return cond
        return {f("u"): v.url}
    if isinstance(v, RangeValue):
        cond = range_condition(v, f("lo"), f("hi"))
        if v.kind == "quantity":
            extra = []
            if v.system is not None:
                extra.append({f("s"): v.system})
            if v.code is not None:
                extra.append({"$or": [{f("c"): v.code}, {f("un"): v.code}]})
            cond = merge(cond, *extra)
        return cond
    if isinstance(v, UriValue):
        if v.modifier == "below":
            return {f("v"): {"$gte": v.value, "$lt": v.value + TOP}}
        if v.modifier == "above":
            # the stored uri is a prefix of the searched one: every prefix, as an indexable $in
            return {f("v"): {"$in": [v.value[:n] for n in range(len(v.value) + 1)]}}
        return {f("v"): v.value}
    raise ValueError(f"no condition for {type(v).__name__}")


# -- filters on a `resources` document --------------------------------------------------------------


async def filter_condition(f: Filter, resolver: Resolver) -> dict:
    if isinstance(f, AnyFilter):
        return any_of([await filter_condition(inner, resolver) for inner in f.filters])
    if isinstance(f, AllFilter):
        return merge(*[await filter_condition(inner, resolver) for inner in f.filters])
    if isinstance(f, TypeFilter):
        types = list(f.resource_types)
        return {"type": types[0] if len(types) == 1 else {"$in": types}}
    if isinstance(f, ChainFilter):
        target = f.target_types[0]
        inner = await filter_condition(f.inner, resolver)
        ids = await resolver.ids(merge({"type": target, "deleted": False}, inner))
        return {"type": f.resource_type,
                "i_ref": {"$elemMatch": {"p": f.code, "tt": target, "ti": {"$in": ids}}}}
    if isinstance(f, HasFilter):
        inner = await filter_condition(f.inner, resolver)
        ids = await resolver.referenced_ids(merge({"type": f.source_type, "deleted": False}, inner),
                                            f.reference_code, f.resource_type)
        return {"id": {"$in": ids}}
    return param_condition(f)


def param_condition(f: ParamFilter) -> dict:
    if f.code == "_id":
        if f.missing is not None:
            return ALWAYS if not f.missing else NEVER
        ids = [v.code for v in f.values if isinstance(v, TokenValue)]
        negated = any(getattr(v, "modifier", None) == "not" for v in f.values)
        return {"id": {"$nin" if negated else "$in": ids}}
    if f.code == "_lastUpdated":
        if f.missing is not None:
            return ALWAYS if not f.missing else NEVER
        return any_of([range_condition(v, "lu", "lu") for v in f.values])  # type: ignore[arg-type]
    if f.type == "composite":
        return _composite_condition(f)
    array = ARRAY_FOR_TYPE[f.type]
    if f.missing is not None:
        has = {"type": f.resource_type, f"{array}.p": f.code}
        return none_of(has) if f.missing else has
    negated = [v for v in f.values if isinstance(v, TokenValue) and v.modifier == "not"]
    plain = [v for v in f.values if v not in negated]
    parts: list[dict] = []
    if plain:
        parts.append({"type": f.resource_type, **_elem_any(array, f.code, [value_condition(v) for v in plain])})
    for v in negated:
        # :not matches resources without the code, including those with no value (search.html#token)
        positive = value_condition(TokenValue(v.system, v.code, v.system_given))
        parts.append(none_of({"type": f.resource_type, array: {"$elemMatch": merge({"p": f.code}, positive)}}))
    return any_of(parts)


def _elem_any(array: str, code: str, conditions: list[dict]) -> dict:
    """An element of `array` for parameter `code` meeting any of `conditions` (one $elemMatch each,
    so every alternative can use the compound index on (type, array.p, ...))."""
    matches = [{array: {"$elemMatch": merge({"p": code}, cond)}} for cond in conditions]
    return matches[0] if len(matches) == 1 else {"$or": matches}


def _composite_condition(f: ParamFilter) -> dict:
    if f.missing is not None:
        has = {"type": f.resource_type, f"{COMPOSITE_ARRAY}.p": f.code}
        return none_of(has) if f.missing else has
    alternatives: list[dict] = []
    for value in f.values:
        assert isinstance(value, CompositeValue)
        # the components of one composite value are one array element (documents.index_arrays)
        components = [value_condition(c, f"k{n}.") for n, c in enumerate(value.components)]
        alternatives.append(merge({"p": f.code}, *components))
    return {"type": f.resource_type, **_elem_any_conditions(COMPOSITE_ARRAY, alternatives)}


def _elem_any_conditions(array: str, conditions: list[dict]) -> dict:
    matches = [{array: {"$elemMatch": cond}} for cond in conditions]
    return matches[0] if len(matches) == 1 else {"$or": matches}


async def match_filter(resource_types: Sequence[str], filters: Sequence[Filter], resolver: Resolver) -> dict:
    """The $match of a search: live resources of the types, meeting every filter (AND)."""
    types = list(resource_types)
    base = {"type": types[0] if len(types) == 1 else {"$in": types}, "deleted": False}
    return merge(base, *[await filter_condition(f, resolver) for f in filters])


# -- sorting and keyset paging ----------------------------------------------------------------------

_TEXT_SORTS = {"string", "token", "reference", "uri"}
SORT_FIELDS = {  # type -> (array, field for ascending, field for descending)
    "string": ("i_str", "n", "n"),
    "token": ("i_tok", "c", "c"),
    "reference": ("i_ref", "ti", "ti"),
    "date": ("i_date", "lo", "hi"),
    "number": ("i_num", "lo", "hi"),
    "quantity": ("i_qty", "lo", "hi"),
    "uri": ("i_uri", "v", "v"),
}


def sort_stages(keys: Sequence[SortKey]) -> tuple[list[dict], list[str]]:
    """$addFields stages computing each sort key's value, and the field holding each key."""
    filtered: dict = {}
    computed: dict = {}
    fields: list[str] = []
    for n, key in enumerate(keys):
        if key.code == "_id":
            fields.append("id")
            continue
        if key.code == "_lastUpdated":
            fields.append("lu")
            continue
        array, asc, desc = SORT_FIELDS[key.type]
        operator, column = ("$max", desc) if key.descending else ("$min", asc)
        missing = MISSING_TEXT if key.type in _TEXT_SORTS else MISSING_NUMBER
        # the parameter's elements that have a value in the column (MongoDB would skip the others
        # in "$_fN.column" anyway; mongomock needs them gone)
        has_value = {"$ne": [{"$ifNull": [f"$$e.{column}", None]}, None]}
        filtered[f"_f{n}"] = {"$filter": {"input": {"$ifNull": [f"${array}", []]}, "as": "e",
                                          "cond": {"$and": [{"$eq": ["$$e.p", key.code]}, has_value]}}}
        computed[f"_k{n}"] = {"$ifNull": [{operator: f"$_f{n}.{column}"}, missing]}
        fields.append(f"_k{n}")
    stages = [{"$addFields": filtered}, {"$addFields": computed}] if computed else []
    return stages, fields


def keyset_condition(fields: Sequence[str], descending: Sequence[bool], position: Sequence, backwards: bool) -> dict:
    """Documents strictly after (or before) `position` = [sort values..., rid] in the page order."""
    keys = [*zip(fields, descending), ("rid", False)]
    alternatives: list[dict] = []
    for n, (field, desc) in enumerate(keys):
        equal = {keys[m][0]: position[m] for m in range(n)}
        greater = desc == backwards  # after in ascending order, or before in descending order
        alternatives.append({**equal, field: {"$gt" if greater else "$lt": position[n]}})
    return any_of(alternatives)


def page_pipeline(match: dict, sort: Sequence[SortKey], count: int, cursor: tuple | None,
                  *, with_references: bool = False) -> tuple[list[dict], list[str]]:
    """The aggregation for one page (count + 1 documents, to know whether a next page exists);
    returns it with the fields holding the sort values (the page positions, before `rid`)."""
    stages, fields = sort_stages(sort)
    descending = [k.descending for k in sort]
    backwards = bool(cursor and cursor[0] == "before")
    pipeline: list[dict] = []
    if cursor is not None:
        keyset = keyset_condition(fields, descending, list(cursor[1]), backwards)
        if stages:
            pipeline += [{"$match": match}, *stages, {"$match": keyset}]
        else:
            pipeline.append({"$match": merge(match, keyset)})
    else:
        pipeline += [{"$match": match}, *stages]
    order = {field: (-1 if desc != backwards else 1) for field, desc in zip(fields, descending)}
    order["rid"] = -1 if backwards else 1
    projection = {**VERSION_FIELDS, **{f: 1 for f in fields if f.startswith("_k")}}
    if with_references:
        projection["i_ref"] = 1
    pipeline += [{"$sort": order}, {"$limit": count + 1}, {"$project": projection}]
    return pipeline, fields
