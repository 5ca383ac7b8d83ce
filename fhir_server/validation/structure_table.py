"""The generated R4 structure table (structure_r4.json.gz), loaded once into objects the walk reads fast.

The table itself is produced by build_structure_table.py; this module only turns its rows into
linked `Structure` / `Prop` objects (a property points straight at the Structure or Primitive of
its type), so the validator does one dict lookup per JSON property and no string parsing.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("structure_r4.json.gz")

# JSON kinds of primitives (R4 json.html#primitive)
JSON_BOOLEAN, JSON_INTEGER, JSON_DECIMAL, JSON_STRING = range(4)
_JSON_KINDS = {"boolean": JSON_BOOLEAN, "integer": JSON_INTEGER, "decimal": JSON_DECIMAL, "string": JSON_STRING}

# Free text: leading/trailing whitespace is allowed, only all-whitespace is not (R4 datatypes.html#string,
# json.html "no leading and trailing spaces for non-strings").
_FREE_TEXT = frozenset({"string", "markdown", "xhtml"})
# Regexes the walk does not run: string/markdown only demand non-emptiness (checked directly), and
# base64Binary's `(\s*([0-9a-zA-Z\+/=]){4}\s*)+` backtracks badly on multi-megabyte attachments;
# the R4B model pass base64-decodes it instead.
_NO_REGEX = frozenset({"string", "markdown", "xhtml", "base64Binary"})


@dataclass(slots=True, eq=False)
class Primitive:
    name: str
    json_kind: int
    # compiled with re.ASCII: the spec's regexes are XML Schema / Java regexes, where \s is ASCII
    regex: re.Pattern[str] | None
    min_value: int | None
    max_value: int | None
    max_length: int | None
    free_text: bool


@dataclass(slots=True, eq=False)
class Structure:
    name: str
    is_resource: bool
    props: dict[str, Prop] = field(default_factory=dict)
    # (FHIRPath segment, JSON keys holding a value, `_` keys holding extensions) per element with min >= 1
    required: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()


@dataclass(slots=True, eq=False)
class Prop:
    name: str  # JSON property name, e.g. "valueQuantity"
    segment: str  # FHIRPath step, e.g. "value.ofType(Quantity)" (validation.md VAL-14)
    element: str  # element name, e.g. "value" for value[x]
    is_array: bool
    min: int
    choice: str | None  # the choice element this property is a variant of
    primitive: Primitive | None
    structure: Structure | None  # complex datatypes and BackboneElements
    is_resource: bool  # type Resource (or a named resource type)
    resource_type: str | None  # the named resource type, when the element fixes one
    codes: frozenset[str] | None  # required binding, enumerated
    value_set: str | None
    extensible: bool  # may carry `_name` (id/extension of a primitive, R4 json.html#primitive)
    ext_key: str | None  # "_name" when extensible


@dataclass(slots=True, eq=False)
class Table:
    structures: dict[str, Structure]
    resources: frozenset[str]
    element: Structure  # the content of a `_name` object: Element (id, extension)
    not_enumerated: dict[str, str]


def _primitive(name: str, row: dict) -> Primitive:
    regex = row.get("regex") if name not in _NO_REGEX else None
    return Primitive(
        name=name,
        json_kind=_JSON_KINDS[row["json"]],
        regex=re.compile(regex, re.ASCII) if regex else None,
        min_value=row.get("minValue"),
        max_value=row.get("maxValue"),
        max_length=row.get("maxLength"),
        free_text=name in _FREE_TEXT,
    )


def _build(raw: dict) -> Table:
    primitives = {name: _primitive(name, row) for name, row in raw["primitives"].items()}
    resources = frozenset(raw["resources"])
    structures = {
        name: Structure(name=name, is_resource=tdef["kind"] == "resource") for name, tdef in raw["types"].items()
    }
    value_sets = {url: frozenset(codes) for url, codes in raw["valueSets"].items()}
    for name, tdef in raw["types"].items():
        structure = structures[name]
        required: dict[str, tuple[list[str], list[str]]] = {}
        for prop_name, (type_name, is_array, minimum, choice, value_set, extensible) in tdef["elements"].items():
            is_resource = type_name == "Resource" or type_name in resources
            element = choice if choice is not None else prop_name
            segment = f"{choice}.ofType({type_name})" if choice is not None else prop_name
            prop = Prop(
                name=prop_name,
                segment=segment,
                element=element,
                is_array=bool(is_array),
                min=minimum,
                choice=choice,
                primitive=primitives.get(type_name),
                structure=None if is_resource else structures.get(type_name),
                is_resource=is_resource,
                resource_type=type_name if is_resource and type_name != "Resource" else None,
                codes=value_sets.get(value_set) if value_set else None,
                value_set=value_set,
                extensible=bool(extensible),
                ext_key="_" + prop_name if extensible else None,
            )
            structure.props[prop_name] = prop
            if minimum >= 1:
                keys, ext_keys = required.setdefault(element, ([], []))
                keys.append(prop_name)
                if prop.extensible:
                    ext_keys.append("_" + prop_name)
        structure.required = tuple((el, tuple(k), tuple(e)) for el, (k, e) in required.items())
    return Table(
        structures=structures,
        resources=resources,
        element=structures["Element"],
        not_enumerated=dict(raw["notEnumerated"]),
    )


@lru_cache(maxsize=1)
def load_table(path: Path = TABLE_PATH) -> Table:
    """The table, read and linked on first use (a few ms), then shared."""
    with gzip.open(path, "rb") as fh:
        return _build(json.loads(fh.read()))
