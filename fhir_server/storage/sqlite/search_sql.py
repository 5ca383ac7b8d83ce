"""Translate a backend-neutral SearchQuery into SQL over the index tables (schema.sql).

Every filter becomes a condition on the alias of a `resources` row: `rid IN (SELECT rid FROM
idx_... WHERE ...)` for parameters, a join through idx_reference for chains and _has. The SQL is
built from fixed fragments with every value bound as a parameter.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

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
from .index_tables import TABLE_FOR_TYPE

_TOP = "\U0010ffff"  # sorts after every character: prefix ranges end at prefix + _TOP
_MISSING_TEXT = ""
_MISSING_NUMBER = -(2**63)


@dataclass
class Sql:
    """A condition or query with its bound arguments, built up piece by piece."""

    text: str
    args: list = field(default_factory=list)


class _Aliases:
    def __init__(self) -> None:
        self._n = itertools.count()

    def next(self, stem: str) -> str:
        return f"{stem}{next(self._n)}"


# -- value conditions on one index row (alias `i`) ---------------------------------------------


def _range(prefix: str, low_col: str, high_col: str, v: RangeValue) -> Sql:
    """search.html#prefix: the target [low_col, high_col] against the search range [lo, hi].

    Where the exact test is not a plain range, a redundant bound that follows from it (low <= high
    always holds) is ANDed in front, so the index led by that bound can range-scan."""
    lo, hi = v.low, v.high
    if v.kind != "date" and prefix not in ("eq", "ne", "ap") and v.value is not None:
        lo = hi = v.value  # numbers compare with their value; only eq uses implied precision
    inside = f"({low_col} >= ? AND {high_col} <= ?)"
    if prefix == "eq":
        return Sql(f"({low_col} >= ? AND {low_col} <= ? AND {high_col} <= ?)", [lo, hi, hi])
    if prefix == "ne":
        return Sql(f"NOT {inside}", [lo, hi])
    if prefix == "gt":
        return Sql(f"{high_col} > ?", [hi])
    if prefix == "lt":
        return Sql(f"{low_col} < ?", [lo])
    if prefix == "ge":
        return Sql(f"({high_col} >= ? AND ({high_col} > ? OR {inside}))", [lo, hi, lo, hi])
    if prefix == "le":
        return Sql(f"({low_col} <= ? AND ({low_col} < ? OR {inside}))", [hi, lo, lo, hi])
    if prefix == "sa":
        return Sql(f"{low_col} > ?", [hi])
    if prefix == "eb":
        return Sql(f"{high_col} < ?", [lo])
    if prefix == "ap":
        # "approximately": within 10% of the distance to now (dates) or of the value (numbers)
        if v.kind == "date":
            gap = abs(time.time() * 1000 - lo) * 0.1
        else:
            gap = abs(v.value or 0) * 0.1
        return Sql(f"({low_col} <= ? AND {high_col} >= ?)", [hi + gap, lo - gap])
    raise ValueError(prefix)


def _value_condition(kind: str, v: Value, i: str) -> Sql:
    if isinstance(v, StringValue):
        if v.modifier == "exact":
            return Sql(f"{i}.exact = ?", [v.text])
        if v.modifier == "contains":
            escaped = v.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return Sql(f"{i}.normalized LIKE ? ESCAPE '\\'", [f"%{escaped}%"])
        return Sql(f"({i}.normalized >= ? AND {i}.normalized < ?)", [v.text, v.text + _TOP])
    if isinstance(v, TokenValue):
        if v.modifier == "text":
            return Sql(f"({i}.text >= ? AND {i}.text < ?)", [v.text, v.text + _TOP])
        if v.modifier == "of-type":
            return Sql(f"({i}.type_system = ? AND {i}.type_code = ? AND {i}.code = ?)",
                       [v.type_system, v.type_code, v.code])
        parts, args = [], []
        if v.code is not None:
            parts.append(f"{i}.code = ?")
            args.append(v.code)
        if v.system_given:
            if v.system is None:
                parts.append(f"{i}.system IS NULL")
            else:
                parts.append(f"{i}.system = ?")
                args.append(v.system)
        return Sql("(" + " AND ".join(parts) + ")", args)
    if isinstance(v, ReferenceValue):
        if v.target_id is not None:
            cond = Sql(f"({i}.target_id = ?", [v.target_id])
            if v.target_type is not None:
                cond.text += f" AND {i}.target_type = ?"
                cond.args.append(v.target_type)
            cond.text += ")"
            if v.url is not None:
                cond = Sql(f"({cond.text} OR {i}.url = ?)", [*cond.args, v.url])
            return cond
        return Sql(f"{i}.url = ?", [v.url])
    if isinstance(v, RangeValue):
        cond = _range(v.prefix, f"{i}.low", f"{i}.high", v)
        if v.kind == "quantity":
            if v.system is not None:
                cond = Sql(f"{cond.text} AND {i}.system = ?", [*cond.args, v.system])
            if v.code is not None:
                cond = Sql(f"{cond.text} AND ({i}.code = ? OR {i}.unit = ?)", [*cond.args, v.code, v.code])
            cond.text = f"({cond.text})"
        return cond
    if isinstance(v, UriValue):
        if v.modifier == "below":
            return Sql(f"({i}.value >= ? AND {i}.value < ?)", [v.value, v.value + _TOP])
        if v.modifier == "above":
            return Sql(f"substr(?, 1, length({i}.value)) = {i}.value", [v.value])
        return Sql(f"{i}.value = ?", [v.value])
    raise ValueError(f"no condition for {type(v).__name__}")


# -- filters on a resources row (alias `r`) -----------------------------------------------------


def _or(parts: list[Sql]) -> Sql:
    if not parts:
        return Sql("1 = 0")
    if len(parts) == 1:
        return parts[0]
    return Sql("(" + " OR ".join(p.text for p in parts) + ")", [a for p in parts for a in p.args])


def _and(parts: list[Sql]) -> Sql:
    if not parts:
        return Sql("1 = 1")
    if len(parts) == 1:
        return parts[0]
    return Sql("(" + " AND ".join(p.text for p in parts) + ")", [a for p in parts for a in p.args])


def filter_condition(f: Filter, r: str, aliases: _Aliases) -> Sql:
    if isinstance(f, AnyFilter):
        return _or([filter_condition(inner, r, aliases) for inner in f.filters])
    if isinstance(f, AllFilter):
        return _and([filter_condition(inner, r, aliases) for inner in f.filters])
    if isinstance(f, TypeFilter):
        return Sql(f"{r}.type IN ({', '.join('?' * len(f.resource_types))})", list(f.resource_types))
    if isinstance(f, ChainFilter):
        # Driven from the inner filter: the few targets that match it, then the references to them.
        ref, t = aliases.next("ref"), aliases.next("t")
        inner = filter_condition(f.inner, t, aliases)
        return Sql(
            # the target type bound as a constant: with `= t.type` the planner used only two of the
            # index's four columns and scanned every reference of the parameter (117 ms -> 0.1 ms at 1M)
            f"{r}.rid IN (SELECT {ref}.rid FROM resources {t} JOIN idx_reference {ref} "
            f"ON {ref}.type = ? AND {ref}.param = ? AND {ref}.target_id = {t}.id AND {ref}.target_type = ? "
            f"WHERE +{t}.type = ? AND {t}.deleted = 0 AND {inner.text})",
            [f.resource_type, f.code, f.target_types[0], f.target_types[0], *inner.args],
        )
    if isinstance(f, HasFilter):
        # Driven from the inner filter: the referring resources that match it, their references,
        # then the referenced resources of this type.
        ref, s, t = aliases.next("ref"), aliases.next("s"), aliases.next("t")
        inner = filter_condition(f.inner, s, aliases)
        return Sql(
            f"{r}.rid IN (SELECT {t}.rid FROM resources {s} "
            f"JOIN idx_reference {ref} ON {ref}.rid = {s}.rid AND {ref}.param = ? AND {ref}.target_type = ? "
            f"JOIN resources {t} ON {t}.type = {ref}.target_type AND {t}.id = {ref}.target_id "
            f"WHERE +{s}.type = ? AND {s}.deleted = 0 AND {inner.text})",
            [f.reference_code, f.resource_type, f.source_type, *inner.args],
        )
    return _param_condition(f, r, aliases)


def _param_condition(f: ParamFilter, r: str, aliases: _Aliases) -> Sql:
    if f.code in ("_id", "_lastUpdated"):
        # Columns of `resources` itself, looked up through its (type, id) and (type, last_updated)
        # indexes: the outer query deliberately cannot use them (where_clause).
        if f.missing is not None:
            return Sql("1 = 1" if not f.missing else "1 = 0")
        x = aliases.next("x")
        if f.code == "_id":
            ids = [v.code for v in f.values if isinstance(v, TokenValue)]
            cond = Sql(f"{x}.id IN ({', '.join('?' * len(ids))})", ids)
        else:
            cond = _or([_range(v.prefix, f"{x}.last_updated", f"{x}.last_updated", v) for v in f.values])
        negate = any(getattr(v, "modifier", None) == "not" for v in f.values)
        return Sql(f"{r}.rid {'NOT IN' if negate else 'IN'} (SELECT {x}.rid FROM resources {x} "
                   f"WHERE {x}.type = ? AND {cond.text})", [f.resource_type, *cond.args])
    if f.type == "composite":
        return _composite_condition(f, r, aliases)
    table = TABLE_FOR_TYPE[f.type]
    i = aliases.next("i")
    scope = f"SELECT {i}.rid FROM {table} {i} WHERE {i}.type = ? AND {i}.param = ?"
    if f.missing is not None:
        return Sql(f"{r}.rid {'NOT IN' if f.missing else 'IN'} ({scope})", [f.resource_type, f.code])
    negated = [v for v in f.values if isinstance(v, TokenValue) and v.modifier == "not"]
    plain = [v for v in f.values if v not in negated]
    parts: list[Sql] = []
    if plain:
        cond = _or([_value_condition(f.type, v, i) for v in plain])
        parts.append(Sql(f"{r}.rid IN ({scope} AND {cond.text})", [f.resource_type, f.code, *cond.args]))
    for v in negated:
        # :not matches resources without the code, including those with no value (search.html#token)
        j = aliases.next("i")
        positive = TokenValue(v.system, v.code, v.system_given)
        cond = _value_condition(f.type, positive, j)
        parts.append(Sql(
            f"{r}.rid NOT IN (SELECT {j}.rid FROM idx_token {j} WHERE {j}.type = ? AND {j}.param = ? AND {cond.text})",
            [f.resource_type, f.code, *cond.args],
        ))
    return _or(parts)


def _composite_condition(f: ParamFilter, r: str, aliases: _Aliases) -> Sql:
    if f.missing is not None:
        i = aliases.next("i")
        table = TABLE_FOR_TYPE[f.component_types[0]]
        return Sql(f"{r}.rid {'NOT IN' if f.missing else 'IN'} (SELECT {i}.rid FROM {table} {i} "
                   f"WHERE {i}.type = ? AND {i}.param = ?)", [f.resource_type, f"{f.code}$0"])
    alternatives: list[Sql] = []
    for value in f.values:
        assert isinstance(value, CompositeValue)
        names = [aliases.next("c") for _ in value.components]
        first = names[0]
        joins: list[str] = []
        join_args: list = []
        where = Sql("", [])
        for n, (alias, kind, component) in enumerate(zip(names, f.component_types, value.components)):
            table = TABLE_FOR_TYPE[kind]
            cond = _value_condition(kind, component, alias)
            if n == 0:
                joins.append(f"{table} {alias}")
                where = Sql(f"{alias}.type = ? AND {alias}.param = ? AND {cond.text}",
                            [f.resource_type, f"{f.code}$0", *cond.args])
            else:
                # the components of one composite value share their rid and grp (index_tables.py)
                joins.append(f"JOIN {table} {alias} ON {alias}.rid = {first}.rid AND {alias}.grp = {first}.grp "
                             f"AND {alias}.param = ? AND {cond.text}")
                join_args += [f"{f.code}${n}", *cond.args]
        alternatives.append(Sql(f"{r}.rid IN (SELECT {first}.rid FROM {' '.join(joins)} WHERE {where.text})",
                                [*join_args, *where.args]))
    return _or(alternatives)


# -- the page query: filters, sort, keyset cursor -------------------------------------------------

_TEXT_SORTS = {"string", "token", "reference", "uri"}
_SORT_COLUMNS = {  # type -> (table, column for ascending, column for descending)
    "string": ("idx_string", "normalized", "normalized"),
    "token": ("idx_token", "code", "code"),
    "reference": ("idx_reference", "target_id", "target_id"),
    "date": ("idx_date", "low", "high"),
    "number": ("idx_number", "low", "high"),
    "quantity": ("idx_quantity", "low", "high"),
    "uri": ("idx_uri", "value", "value"),
}


def sort_expression(key: SortKey, r: str) -> Sql:
    """A resource's value for a sort key: the smallest (ascending) or largest (descending) of its
    values for the parameter (search.html#sort leaves multi-valued elements to the server);
    resources without one sort first ascending, last descending."""
    if key.code == "_id":
        return Sql(f"{r}.id")
    if key.code == "_lastUpdated":
        return Sql(f"{r}.last_updated")
    table, asc, desc = _SORT_COLUMNS[key.type]
    aggregate, column = ("max", desc) if key.descending else ("min", asc)
    missing = "''" if key.type in _TEXT_SORTS else str(_MISSING_NUMBER)
    return Sql(f"COALESCE((SELECT {aggregate}({column}) FROM {table} WHERE rid = {r}.rid AND param = ?), {missing})",
               [key.code])


def where_clause(resource_types: tuple[str, ...], filters: tuple[Filter, ...], r: str) -> Sql:
    aliases = _Aliases()
    # With filters, `+type` keeps SQLite from scanning every resource of the type through its
    # index and probing each; it drives from the filters' index lookups (rid IN ...) instead,
    # which at 1M resources is the difference between ~1 s and ~10 ms (bench/search_bench.py).
    type_column = f"+{r}.type" if filters else f"{r}.type"
    where = Sql(f"{type_column} IN ({', '.join('?' * len(resource_types))}) AND {r}.deleted = 0",
                list(resource_types))
    for f in filters:
        cond = filter_condition(f, r, aliases)
        where.text += f" AND {cond.text}"
        where.args += cond.args
    return where


def _keyset(sorts: list[tuple[Sql, bool]], position: list, backwards: bool, r: str) -> Sql:
    """Rows strictly after (or before) `position` = [sort values..., rid] in the page order."""
    keys = [(expr, desc) for expr, desc in sorts] + [(Sql(f"{r}.rid"), False)]
    alternatives: list[Sql] = []
    for n, (expr, desc) in enumerate(keys):
        parts: list[Sql] = [Sql(f"{e.text} = ?", [*e.args, position[m]]) for m, (e, _) in enumerate(keys[:n])]
        greater = desc == backwards  # after in ascending order, or before in descending order
        parts.append(Sql(f"{expr.text} {'>' if greater else '<'} ?", [*expr.args, position[n]]))
        alternatives.append(Sql(" AND ".join(p.text for p in parts), [a for p in parts for a in p.args]))
    return Sql("(" + " OR ".join(f"({a.text})" for a in alternatives) + ")", [x for a in alternatives for x in a.args])


def page_query(resource_types, filters, sort, count: int, cursor: tuple | None, r: str = "r") -> tuple[Sql, int]:
    """The query for one page (count + 1 rows, to know whether there is a next page);
    returns it with the number of sort columns that precede the version columns."""
    sorts = [(sort_expression(k, r), k.descending) for k in sort]
    where = where_clause(resource_types, filters, r)
    backwards = bool(cursor and cursor[0] == "before")
    if cursor is not None:
        keyset = _keyset(sorts, list(cursor[1]), backwards, r)
        where = Sql(f"{where.text} AND {keyset.text}", [*where.args, *keyset.args])
    select = ", ".join(f"{e.text}" for e, _ in sorts)
    order = [f"{e.text} {'DESC' if desc != backwards else 'ASC'}" for e, desc in sorts]
    order.append(f"{r}.rid {'DESC' if backwards else 'ASC'}")
    text = (
        f"SELECT {r}.rid{', ' + select if select else ''}, v.seq, v.type, v.id, v.version, v.last_updated, "
        f"v.method, v.body FROM resources {r} JOIN resource_versions v ON v.seq = {r}.seq "
        f"WHERE {where.text} ORDER BY {', '.join(order)} LIMIT ?"
    )
    args = [a for e, _ in sorts for a in e.args] + where.args + [a for e, _ in sorts for a in e.args] + [count + 1]
    return Sql(text, args), len(sorts)


def count_query(resource_types, filters, r: str = "r") -> Sql:
    single = _single_index_filter(resource_types, filters)
    if single is not None:
        # Index rows exist only for the live current version of a resource (index_tables.clear_index
        # on every update and delete), so one parameter's matches can be counted in its covering
        # index alone, without joining each rid back to `resources` (143 -> ~45 ms at 1M).
        f, i = single, "i0"
        cond = _or([_value_condition(f.type, v, i) for v in f.values])
        return Sql(f"SELECT count(DISTINCT {i}.rid) FROM {TABLE_FOR_TYPE[f.type]} {i} "
                   f"WHERE {i}.type = ? AND {i}.param = ? AND {cond.text}", [f.resource_type, f.code, *cond.args])
    where = where_clause(resource_types, filters, r)
    return Sql(f"SELECT count(*) FROM resources {r} WHERE {where.text}", where.args)


def _single_index_filter(resource_types, filters) -> ParamFilter | None:
    """The query's only filter, when it is a plain lookup in one index table."""
    if len(resource_types) != 1 or len(filters) != 1:
        return None
    f = filters[0]
    if (
        isinstance(f, ParamFilter)
        and f.missing is None
        and f.values
        and f.type in TABLE_FOR_TYPE
        and f.code not in ("_id", "_lastUpdated")
        and f.resource_type == resource_types[0]
        and not any(isinstance(v, TokenValue) and v.modifier == "not" for v in f.values)
    ):
        return f
    return None
