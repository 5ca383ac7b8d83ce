"""Which invariants of a set of definitions cannot be evaluated (validation.md VAL-63, A-19).

For the given StructureDefinitions and, transitively, every datatype and `type.profile` they use:
each invariant is compiled (invariants.py records parse failures and functions the engine lacks)
and then evaluated on a synthetic instance in which every element of the focus is present, so
engine failures that only show with data (type mismatches, singleton errors) surface here rather
than on a patient's record. The test suite asserts the list is empty for the resources we serve.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_server.validation.ports import Definitions
from fhir_server.validation.profile.invariants import evaluate
from fhir_server.validation.profile.model import PRIMITIVE_TYPES, CompiledStructure, ElementNode, Scope
from fhir_server.validation.profile.registry import Registry

__all__ = ["unevaluable_invariants"]

_SAMPLES: dict[str, Any] = {
    "boolean": True, "integer": 1, "unsignedInt": 1, "positiveInt": 1, "decimal": 1.5, "string": "a",
    "markdown": "a", "code": "a", "id": "a", "uri": "http://example.org/a", "url": "http://example.org/a",
    "canonical": "http://example.org/a", "oid": "urn:oid:1.2.3", "uuid": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520",
    "date": "2020-01-01", "dateTime": "2020-01-01T10:00:00Z", "instant": "2020-01-01T10:00:00Z", "time": "10:00:00",
    "base64Binary": "YQ==", "xhtml": '<div xmlns="http://www.w3.org/1999/xhtml">a</div>',
}


def _holder(registry: Registry, node: ElementNode, type_code: str) -> ElementNode | None:
    if node.children:
        return node
    if node.content_reference:
        return registry.content_reference(node)
    tree = registry.type_tree(type_code)
    return tree.root if tree is not None else None


def _is_resource_type(registry: Registry, type_code: str) -> bool:
    tree = registry.type_tree(type_code) if type_code[:1].isupper() else None
    return tree is not None and tree.kind == "resource"


def _sample(registry: Registry, node: ElementNode | None, depth: int) -> dict:
    out: dict[str, Any] = {}
    if node is None or depth > 2:
        return out
    for child in node.children.values():
        if child.name in ("extension", "modifierExtension", "contained") or not child.types and not child.content_reference:
            continue
        type_code = child.types[0].code if child.types else "BackboneElement"
        if type_code in ("Resource", "Extension") or _is_resource_type(registry, type_code):
            continue  # nested resources and extensions are sampled on their own definitions
        key = child.name if not child.choice else child.name[:-3] + type_code[:1].upper() + type_code[1:]
        if type_code in PRIMITIVE_TYPES:
            value: Any = _SAMPLES.get(type_code, "a")
        else:
            value = _sample(registry, _holder(registry, child, type_code), depth + 1) or {"id": "a"}
        out[key] = value if child.max == 1 else [value]
    return out


def _structures(registry: Registry, urls: Iterable[str]) -> list[CompiledStructure]:
    seen: dict[str, CompiledStructure] = {}
    pending = list(urls)
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        structure = registry.structure(url)
        if structure is None:
            continue
        seen[url] = structure
        for node in structure.by_id.values():
            for type_ref in node.types:
                if type_ref.code[:1].isupper() and type_ref.code not in ("Resource", "BackboneElement", "Element"):
                    pending.append("http://hl7.org/fhir/StructureDefinition/" + type_ref.code)
                pending.extend(type_ref.profiles)
    return list(seen.values())


def unevaluable_invariants(
    structure_definitions: Iterable[dict | str], definitions: Definitions | None = None
) -> list[str]:
    """Sorted `key` list of the invariants that cannot be evaluated, over the given
    StructureDefinitions (resources, or canonical urls) and every definition they use; `definitions`
    resolves those (default: the core ones plus the given resources)."""
    given = list(structure_definitions)
    resources = [sd for sd in given if isinstance(sd, dict)]
    if definitions is None:
        from fhir_server.validation.definitions import DefinitionIndex

        definitions = DefinitionIndex(extra=resources)
    registry = Registry(definitions)
    urls = [sd if isinstance(sd, str) else str(sd.get("url", "")) for sd in given]
    failed: set[str] = set()
    for sd in resources:  # definitions the resolver does not hold are compiled from the resource
        registry.remember(sd)
    for structure in _structures(registry, urls):
        for node in structure.by_id.values():
            if not node.invariants:
                continue
            is_root = node is structure.root
            type_code = structure.type if is_root else (node.types[0].code if node.types else "BackboneElement")
            focus_path = (
                structure.type
                if is_root
                else node.path.replace("[x]", "") if type_code in ("BackboneElement", "Element") else type_code
            )
            holder = node if is_root else _holder(registry, node, type_code)
            focus: Any
            if type_code in PRIMITIVE_TYPES:
                focus = _SAMPLES.get(type_code, "a")
            else:
                focus = _sample(registry, holder, 0)
                if is_root and structure.kind == "resource":
                    focus["resourceType"] = structure.type
            for invariant in node.invariants:
                if invariant.problem is not None:
                    failed.add(invariant.key)
                    continue
                empty: Any = {"resourceType": structure.type} if isinstance(focus, dict) and "resourceType" in focus else {}
                for candidate in (focus, empty):
                    try:
                        evaluate(invariant, candidate, focus_path, Scope(candidate, candidate, structure.type))
                    except Exception:
                        failed.add(invariant.key)
    return sorted(failed)
