"""Snapshot -> element tree (validation.md PERF-01), once per StructureDefinition.

The snapshot is a flat, ordered list; nesting is implied by the element ids (SNAP-01, SNAP-02:
`Observation.component:SystolicBP.code` is the `code` child of the `SystolicBP` slice of
`Observation.component`). The compiler

- links every element to its parent by id, and slices to their slicing entry (SNAP-06);
- indexes children by element name and by every JSON key that can carry them: choice elements by
  `value` + type name for each FHIR type (so a type the profile removed is still recognised, and
  reported), primitives also by their `_name` partner (R4 json.html#primitive);
- reads cardinality, types, fixed[x]/pattern[x], binding, contentReference and isModifier;
- compiles each constraint (invariants.py) and fills in its guard keys;
- for profiles (derivation `constraint`), compares each element with its base definition
  (`ElementDefinition.base.path` in the core definition) and switches off the checks the base pass
  already makes (model.py).

Re-slices (`sliceName` `a/b`, SNAP-07) are not compiled: their repetitions are checked against the
slice they refine.
"""

from __future__ import annotations

from functools import lru_cache

from fhir_server.validation.definitions import CORE_PREFIX
from fhir_server.validation.ports import Definitions
from fhir_server.validation.profile.invariants import compile_invariant
from fhir_server.validation.profile.model import (
    PRIMITIVE_TYPES,
    Binding,
    CompiledStructure,
    Discriminator,
    ElementNode,
    Slicing,
    TypeRef,
    binding_applies,
)

__all__ = ["Compiler", "all_type_names", "normalise_type_code", "choice_key"]

FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
_BACKBONE = frozenset({"BackboneElement", "Element"})


@lru_cache(maxsize=1)
def all_type_names() -> tuple[str, ...]:
    """Every concrete R4 datatype name (the types a choice element may in principle carry)."""
    from profiles.definitions import structure_definitions

    names = [
        sd["type"]
        for sd in structure_definitions().values()
        if sd.get("kind") in ("primitive-type", "complex-type")
        and sd.get("derivation") == "specialization"
        and not sd.get("abstract")
        and sd.get("url") == CORE_PREFIX + sd.get("type", "")
    ]
    return tuple(sorted(set(names)))


def choice_key(base: str, type_code: str) -> str:
    """`value` + `Quantity` -> `valueQuantity`; `value` + `dateTime` -> `valueDateTime`."""
    return base + type_code[:1].upper() + type_code[1:]


def normalise_type_code(type_entry: dict) -> str:
    """The FHIR type of an ElementDefinition.type; the System.* types of `id`/`url`/`value`
    elements carry their FHIR type in the structuredefinition-fhir-type extension."""
    code = str(type_entry.get("code", ""))
    if not code.startswith(_SYSTEM_PREFIX):
        return code
    for ext in type_entry.get("extension") or ():
        if ext.get("url") == FHIR_TYPE_EXTENSION:
            value = ext.get("valueUrl") or ext.get("valueUri") or ext.get("valueString")
            if isinstance(value, str):
                return value
    suffix = code[len(_SYSTEM_PREFIX):]
    return suffix[:1].lower() + suffix[1:]


def _first_with_prefix(element: dict, prefix: str) -> tuple[str | None, object]:
    for key, value in element.items():
        if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
            return key[len(prefix):], value
    return None, None


def _max(value: object) -> int | None:
    if value == "*" or value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


class Compiler:
    """Compiles StructureDefinitions; holds the base-element index that profile comparison needs."""

    def __init__(self, definitions: Definitions) -> None:
        self._definitions = definitions
        self._base_index: dict[str, dict[str, dict]] = {}

    # -- base elements ------------------------------------------------------------------------

    def base_element(self, base_path: str) -> dict | None:
        """The element `base_path` (e.g. `Quantity.code`) in its core defining StructureDefinition."""
        type_name = base_path.split(".", 1)[0]
        index = self._base_index.get(type_name)
        if index is None:
            sd = self._definitions.structure_definition(CORE_PREFIX + type_name)
            index = {}
            if sd is not None:
                for element in (sd.get("snapshot") or {}).get("element") or ():
                    if element.get("id", element.get("path")) == element.get("path"):
                        index[element["path"]] = element
            self._base_index[type_name] = index
        return index.get(base_path)

    # -- compile ------------------------------------------------------------------------------

    def compile(self, sd: dict) -> CompiledStructure | None:
        """The element tree of `sd`, or None when it has no snapshot (VAL-71)."""
        elements = (sd.get("snapshot") or {}).get("element") or []
        if not elements:
            return None
        structure = CompiledStructure(
            url=str(sd.get("url", "")),
            version=sd.get("version"),
            type=str(sd.get("type", "")),
            kind=str(sd.get("kind", "")),
            is_profile=sd.get("derivation") == "constraint",
            contexts=tuple(
                (str(c.get("type", "")), str(c.get("expression", ""))) for c in sd.get("context") or ()
            ),
            modifier_extension=bool(elements[0].get("isModifier")),
        )
        skipped: list[str] = []
        for element in elements:
            element_id = str(element.get("id") or element.get("path", ""))
            if any(element_id == s or element_id.startswith(s + ".") for s in skipped):
                continue
            parent_id, _, last = element_id.rpartition(".")
            name, _, slice_name = last.partition(":")
            if "/" in slice_name:
                skipped.append(element_id)  # re-slice: see module docstring
                continue
            parent = structure.by_id.get(parent_id) if parent_id else None
            if parent_id and parent is None:
                continue  # orphan (malformed snapshot): nothing to attach it to
            node = self._node(element, element_id, name, slice_name or None, structure, is_root=not parent_id)
            structure.by_id[element_id] = node
            if parent is None:
                structure.root = node
            elif slice_name:
                entry = parent.children.get(name)
                if entry is None:
                    continue
                if entry.slicing is None:  # slices without a slicing entry; extensions are sliced by url
                    by_url = (Discriminator("value", "url"),) if name in ("extension", "modifierExtension") else ()
                    entry.slicing = Slicing(discriminators=by_url, rules="open", ordered=False)
                entry.slicing.slices.append(node)
            else:
                parent.children[name] = node
        for node in structure.by_id.values():
            self._finish(node)
        return structure if structure.root is not None else None

    def _node(
        self, element: dict, element_id: str, name: str, slice_name: str | None, structure: CompiledStructure,
        is_root: bool,
    ) -> ElementNode:
        types = tuple(
            TypeRef(
                code=normalise_type_code(t),
                profiles=tuple(t.get("profile") or ()),
                target_profiles=tuple(t.get("targetProfile") or ()),
            )
            for t in element.get("type") or ()
        )
        path = str(element.get("path", element_id))
        node = ElementNode(
            id=element_id,
            path=path,
            name=name if not is_root else path,
            structure=structure,
            min=int(element.get("min") or 0),
            max=_max(element.get("max")),
            slice_name=slice_name,
            types=types,
            type_codes=frozenset(t.code for t in types),
            choice=name.endswith("[x]"),
            is_modifier=bool(element.get("isModifier")),
            content_reference=element.get("contentReference"),
        )
        node.fixed_type, node.fixed = _first_with_prefix(element, "fixed")
        node.pattern_type, node.pattern = _first_with_prefix(element, "pattern")
        binding = element.get("binding")
        if isinstance(binding, dict) and (binding.get("valueSet") or binding.get("strength")):
            node.binding = Binding(str(binding.get("strength", "")), binding.get("valueSet"))
        slicing = element.get("slicing")
        if isinstance(slicing, dict):
            node.slicing = Slicing(
                discriminators=tuple(
                    Discriminator(str(d.get("type", "")), str(d.get("path", "")))
                    for d in slicing.get("discriminator") or ()
                ),
                rules=str(slicing.get("rules", "open")),
                ordered=bool(slicing.get("ordered", False)),
            )
        base_element = self._base_for(element) if structure.is_profile else None
        invariant_keys_in_base = {c.get("key") for c in (base_element or {}).get("constraint") or ()}
        if structure.is_profile and base_element is None and is_root:
            # the root of a profile on a datatype or resource: its base root lists the inherited keys
            base_root = self.base_element(structure.type)
            invariant_keys_in_base = {c.get("key") for c in (base_root or {}).get("constraint") or ()}
        focus_path = self.focus_path(node, is_root)
        invariants = []
        for constraint in element.get("constraint") or ():
            if structure.is_profile and constraint.get("key") in invariant_keys_in_base:
                continue  # inherited from the base definition: the base pass evaluates it
            invariant = compile_invariant(constraint, focus_path, on_resource=is_root and structure.kind == "resource")
            if invariant is not None:
                invariants.append(invariant)
        node.invariants = tuple(invariants)
        if structure.is_profile:
            self._profile_flags(node, element, base_element)
        return node

    def _base_for(self, element: dict) -> dict | None:
        base = element.get("base")
        if isinstance(base, dict) and isinstance(base.get("path"), str):
            return self.base_element(base["path"])
        return None

    @staticmethod
    def focus_path(node: ElementNode, is_root: bool) -> str:
        """The FHIRPath type context for invariants on this node: the resource or datatype name at a
        root, the element path for backbone elements, else the (first) type code."""
        if is_root:
            return node.structure.type
        if not node.types or node.type_codes & _BACKBONE:
            return node.path.replace("[x]", "")
        return node.types[0].code

    def _profile_flags(self, node: ElementNode, element: dict, base_element: dict | None) -> None:
        base = element.get("base") if isinstance(element.get("base"), dict) else {}
        if node.slice_name is None:
            node.check_min = node.min != int(base.get("min") or 0) if "min" in base else True
            node.check_max = node.max != _max(base.get("max")) if "max" in base else True
        if base_element is None:
            return
        base_binding = base_element.get("binding") or {}
        node.check_binding = node.binding is not None and (
            node.binding.strength != base_binding.get("strength")
            or str(node.binding.value_set or "").split("|")[0] != str(base_binding.get("valueSet") or "").split("|")[0]
        )
        base_targets = {p for t in base_element.get("type") or () for p in t.get("targetProfile") or ()}
        node.check_targets = {p for t in node.types for p in t.target_profiles} != base_targets

    def _finish(self, node: ElementNode) -> None:
        """Key index, required children, guard keys and the plain-primitive flag."""
        names = all_type_names()
        keys: dict[str, tuple[ElementNode, str, bool, bool]] = {}
        required = []
        for child in node.children.values():
            if child.choice:
                base = child.name[:-3]
                for type_code in names:
                    key = choice_key(base, type_code)
                    allowed = type_code in child.type_codes
                    keys[key] = (child, type_code, allowed, False)
                    if type_code in PRIMITIVE_TYPES:
                        keys["_" + key] = (child, type_code, allowed, True)
            else:
                type_code = child.types[0].code if child.types else "BackboneElement"
                keys[child.name] = (child, type_code, True, False)
                if type_code in PRIMITIVE_TYPES:
                    keys["_" + child.name] = (child, type_code, True, True)
            if child.min > 0 and child.check_min:
                required.append(child)
        node.keys = keys
        node.required = tuple(required)
        for invariant in node.invariants:
            if invariant.guard is None:
                continue
            guard_keys = frozenset(
                key for key, (child, _, _, _) in keys.items() if child.name in (invariant.guard, invariant.guard + "[x]")
            )
            if guard_keys:
                invariant.guard_keys = guard_keys
        node.plain = (
            bool(node.type_codes)
            and node.type_codes <= PRIMITIVE_TYPES
            and node.fixed is None
            and node.pattern is None
            and not node.invariants
            and not node.children
            and node.slicing is None
            and not (
                node.binding is not None
                and node.check_binding
                and node.binding.strength in ("required", "extensible")
                and any(binding_applies(code, node.type_codes) for code in node.type_codes)
            )
        )
