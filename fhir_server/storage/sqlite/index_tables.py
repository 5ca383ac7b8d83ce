"""Writing a resource's search index rows (one table per parameter type, see schema.sql)."""

from __future__ import annotations

import sqlite3
from typing import Iterable

from ...search.entries import (
    CompositeEntry,
    DateEntry,
    IndexEntry,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)

TABLES = ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_number", "idx_quantity", "idx_uri")

# SearchParameter.type -> the table holding its rows
TABLE_FOR_TYPE = {
    "string": "idx_string",
    "token": "idx_token",
    "reference": "idx_reference",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "uri": "idx_uri",
}

_INSERT = {
    StringEntry: ("idx_string", "INSERT INTO idx_string VALUES (?, ?, ?, ?, ?, ?)",
                  lambda e: (e.normalized, e.exact)),
    TokenEntry: ("idx_token", "INSERT INTO idx_token VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 lambda e: (e.system, e.code, e.text, e.type_system, e.type_code)),
    ReferenceEntry: ("idx_reference", "INSERT INTO idx_reference VALUES (?, ?, ?, ?, ?, ?, ?)",
                     lambda e: (e.target_type, e.target_id, e.url)),
    DateEntry: ("idx_date", "INSERT INTO idx_date VALUES (?, ?, ?, ?, ?, ?)", lambda e: (e.low, e.high)),
    NumberEntry: ("idx_number", "INSERT INTO idx_number VALUES (?, ?, ?, ?, ?, ?, ?)",
                  lambda e: (e.value, e.low, e.high)),
    QuantityEntry: ("idx_quantity", "INSERT INTO idx_quantity VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    lambda e: (e.system, e.code, e.unit, e.value, e.low, e.high)),
    UriEntry: ("idx_uri", "INSERT INTO idx_uri VALUES (?, ?, ?, ?, ?)", lambda e: (e.value,)),
}


def clear_index(conn: sqlite3.Connection, rid: int) -> None:
    for table in TABLES:
        conn.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))


def write_index(conn: sqlite3.Connection, rid: int, resource_type: str, entries: Iterable[IndexEntry]) -> None:
    """Insert the rows of `entries` (batched per table) for resource `rid`."""
    rows: dict[str, tuple[str, list[tuple]]] = {}

    def add(entry: IndexEntry, param: str, grp: int | None) -> None:
        table, sql, values = _INSERT[type(entry)]
        rows.setdefault(table, (sql, []))[1].append((rid, resource_type, param, *values(entry), grp))

    grp = 0
    for entry in entries:
        if isinstance(entry, CompositeEntry):
            grp += 1
            for n, component in enumerate(entry.components):
                add(component, f"{entry.param}${n}", grp)
        else:
            add(entry, entry.param, None)
    for sql, batch in rows.values():
        conn.executemany(sql, batch)
