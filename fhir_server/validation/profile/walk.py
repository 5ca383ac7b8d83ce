"""The instance walk: one resource against one compiled tree (validation.md §A3.2-§A3.9).

For each JSON object the walk looks every property up in the node's key index, groups the
repetitions per element, and per element checks

- cardinality (VAL-10; a primitive given only as `_name` with extensions counts as present, R4
  extensibility.html "Special Case"); max = 0 present is an error;
- slicing (slicing.py), then per repetition:
- the type: a choice variant the definition does not allow (VAL-12);
- fixed[x] / pattern[x] (values.py), the binding (bindings.py), reference targets (references.py),
  the invariants on the element (invariants.py), ele-1 (base trees);
- extensions (extensions.py, base trees);
- the content: the snapshot's children when it expands the element, the target of a
  contentReference, or — in a base tree — the datatype's own definition (with the invariants on
  its root, e.g. per-1 on a Period); contained and other nested resources against their own base
  definition (contained ones with %rootResource = the container);
- `type.profile`: the value must conform to the profile (one of them, VAL-13), e.g. SimpleQuantity.

Expressions are Java style (VAL-14): `Observation.value.ofType(Quantity)`, `Patient.name[0].given[1]`.
Issues never quote the instance's values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.validation.issues import Issue, has_errors
from fhir_server.validation.ports import Membership, ReferenceResolver
from fhir_server.validation.profile.bindings import check_binding
from fhir_server.validation.profile.extensions import Host, check_extension
from fhir_server.validation.profile.invariants import EvaluationHooks, evaluate, hooks
from fhir_server.validation.profile.model import (
    PRIMITIVE_TYPES,
    CompiledStructure,
    ElementNode,
    Item,
    Scope,
    binding_applies,
)
from fhir_server.validation.profile.references import check_reference
from fhir_server.validation.profile.registry import Registry
from fhir_server.validation.profile.slicing import assign_slices
from fhir_server.validation.profile.values import equal_fixed, matches_pattern

__all__ = ["Walk"]

_BACKBONE = frozenset({"BackboneElement", "Element"})
_EXTENSION_SLOTS = ("extension", "modifierExtension")

Member = Callable[[str, "str | None", str], Membership]


def _element_expression(item: Item) -> str:
    expression = item.expression
    return expression[: expression.rfind("[")] if expression.endswith("]") else expression


class Walk:
    """One validation: the issues found, and the per-validation memos (resolved references,
    profile conformance for profile discriminators and target profiles, PERF-05)."""

    def __init__(
        self,
        registry: Registry,
        member: Member,
        resolver: ReferenceResolver | None,
        best_practice: str = "warning",
    ) -> None:
        self.registry = registry
        self.resolver = resolver
        self.issues: list[Issue] = []
        self._member = member
        self._best_practice = best_practice
        self._conformance: dict[tuple[int, str], bool] = {}
        self._resolved: dict[str, dict | None] = {}
        self.hooks = EvaluationHooks(
            resolve=self._resolve_external, member_of=self._member_of, conforms_to=self._conforms_to
        )

    # -- entry point and reporting -----------------------------------------------------------

    def run(self, resource: dict, structure: CompiledStructure, expression: str) -> list[Issue]:
        token = hooks.set(self.hooks)
        try:
            self.resource(resource, structure, Scope(resource, resource, expression))
        finally:
            hooks.reset(token)
        return self.issues

    def report(self, severity: str, code: str, expression: str, diagnostics: str, rule: str) -> None:
        self.issues.append(Issue(severity, code, expression, diagnostics, rule))

    # -- resources ------------------------------------------------------------------------------

    def resource(self, resource: dict, structure: CompiledStructure, scope: Scope) -> None:
        root = structure.root
        assert root is not None
        type_code = str(resource.get("resourceType", structure.type))
        self.invariants(root, resource, type_code, scope.expression, scope)
        self.object(root, resource, scope.expression, scope, type_code, type_code, True)

    def validate_against(
        self, value: Any, structure: CompiledStructure, expression: str, scope: Scope, path: str, type_code: str
    ) -> None:
        """`value` (a datatype value, an extension or a resource) against a profile's tree."""
        root = structure.root
        if root is None or not isinstance(value, dict):
            return
        if structure.kind == "resource" and "resourceType" in value:
            inner = scope if scope.resource is value else Scope(value, value, expression, False, False)
            self.resource(value, structure, inner)
            return
        self._value_checks(root, value, Item(value, None, type_code, expression), scope)  # incl. root invariants
        self.object(root, value, expression, scope, path, type_code, False)

    def conforms(self, value: Any, structure: CompiledStructure, type_code: str | None = None, scope: Scope | None = None) -> bool:
        """Whether `value` meets `structure` without errors (memoized per value and profile)."""
        key = (id(value), structure.canonical)
        known = self._conformance.get(key)
        if known is not None:
            return known
        self._conformance[key] = True  # a profile that (indirectly) refers to itself
        saved, self.issues = self.issues, []
        try:
            if isinstance(value, dict) and "resourceType" in value:
                self.resource(value, structure, Scope(value, value, str(value.get("resourceType")), False, False))
            else:
                here = scope or Scope({}, {}, "")
                self.validate_against(value, structure, structure.type, here, structure.type, type_code or structure.type)
            result = not has_errors(self.issues)
        finally:
            self.issues = saved
        self._conformance[key] = result
        return result

    # -- objects and elements -------------------------------------------------------------------

    def object(
        self, node: ElementNode, obj: dict, expression: str, scope: Scope, path: str, type_code: str,
        is_resource: bool = False, definition_path: str | None = None,
    ) -> None:
        """The properties of one JSON object, against the children of `node`. `path` is the
        object's element path from the resource root and `definition_path` its path in the
        definition that declares it (`HumanName.family`), both for extension contexts."""
        keys = node.keys
        groups: dict[ElementNode, list[Item]] = {}
        for key, value in obj.items():
            entry = keys.get(key)
            if entry is None:
                continue  # resourceType, or an unknown property (structure.py reports those)
            child, item_type, allowed, is_ext = entry
            if is_ext:
                if key[1:] in obj:
                    continue  # taken with its value
                values, exts = None, value
            else:
                values, exts = value, (obj.get("_" + key) if item_type in PRIMITIVE_TYPES else None)
            segment = child.name if not child.choice else f"{child.name[:-3]}.ofType({item_type})"
            here = f"{expression}.{segment}"
            items = groups.get(child)
            if items is None:
                items = groups[child] = []
            shape = exts if values is None else values
            if isinstance(shape, list):
                ext_list = exts if isinstance(exts, list) else None
                for index in range(len(shape)):
                    items.append(
                        Item(
                            values[index] if values is not None else None,
                            ext_list[index] if ext_list is not None and index < len(ext_list) else None,
                            item_type,
                            f"{here}[{index}]",
                            allowed,
                        )
                    )
            else:
                items.append(Item(values, exts, item_type, here, allowed))
        host = Host(path, definition_path or node.path, type_code, is_resource)
        for child, items in groups.items():
            self.element(child, items, expression, scope, path, host)
        for child in node.required:
            if child not in groups:
                self.report(
                    "error",
                    "required",
                    f"{expression}.{child.name.replace('[x]', '')}",
                    f"{child.id}: minimum required = {child.min}, but only found 0 (from {child.structure.canonical})",
                    "cardinality-min",
                )

    def element(self, child: ElementNode, items: list[Item], expression: str, scope: Scope, path: str, host: Host) -> None:
        count = len(items)
        canonical = child.structure.canonical
        if child.max == 0:
            self.report(
                "error",
                "structure",
                _element_expression(items[0]),
                f"{child.id} is present in the instance but not allowed (max 0) (from {canonical})",
                "cardinality-max",
            )
        elif child.check_max and child.max is not None and count > child.max:
            self.report(
                "error",
                "structure",
                _element_expression(items[0]),
                f"{child.id}: max allowed = {child.max}, but found {count} (from {canonical})",
                "cardinality-max",
            )
        if child.check_min and count < child.min:
            self.report(
                "error",
                "required",
                _element_expression(items[0]),
                f"{child.id}: minimum required = {child.min}, but only found {count} (from {canonical})",
                "cardinality-min",
            )
        child_path = f"{path}.{child.name}"
        slicing = child.slicing
        if slicing is not None and slicing.slices:
            nodes = assign_slices(self, child, items, _element_expression(items[0]), scope)
            for node, item in zip(nodes, items):
                self.item(node, item, scope, child_path, host)
        else:
            for item in items:
                self.item(child, item, scope, child_path, host)

    def item(self, node: ElementNode, item: Item, scope: Scope, path: str, host: Host) -> None:
        if not item.allowed:
            allowed = ", ".join(sorted(node.type_codes)) or "none"
            self.report(
                "error",
                "structure",
                item.expression,
                f"The type {item.type_code} is not allowed for {node.id} (allowed: {allowed}) "
                f"(from {node.structure.canonical})",
                "type",
            )
            return
        if node.plain and item.ext is None:
            return
        value = item.value
        type_code = item.type_code
        base = not node.structure.is_profile
        if type_code in PRIMITIVE_TYPES:
            if value is not None or node.fixed is not None or node.pattern is not None:
                self._value_checks(node, value, item, scope)
            ext = item.ext
            if isinstance(ext, dict):
                if base and value is None and not ext.get("extension"):
                    self._ele1(item.expression)
                holder = node if node.children else None
                if holder is None and base:
                    tree = self.registry.type_tree(type_code)
                    holder = tree.root if tree is not None else None
                if holder is not None:
                    self.object(holder, ext, item.expression, scope, path, type_code, False, node.path)
            return
        if not isinstance(value, dict):
            return  # structure.py reports JSON of the wrong kind
        if base and (not value or (len(value) == 1 and "id" in value)):
            self._ele1(item.expression)
            return
        self._value_checks(node, value, item, scope)
        if "resourceType" in value and (type_code == "Resource" or type_code == value.get("resourceType")):
            self._nested_resource(node, value, item, scope)
            return
        if base and type_code == "Extension" and node.name in _EXTENSION_SLOTS:
            check_extension(self, value, item.expression, node.name, host, scope)
        if node.children:
            self.object(node, value, item.expression, scope, path, type_code)
        elif node.content_reference:
            target = self.registry.content_reference(node)
            if target is not None:
                focus_path = target.path if type_code == "BackboneElement" else type_code
                self.invariants(target, value, focus_path, item.expression, scope)
                self.object(target, value, item.expression, scope, path, type_code, False, node.path)
        elif base:
            tree = self.registry.type_tree(type_code)
            if tree is not None and tree.root is not None:
                self.invariants(tree.root, value, type_code, item.expression, scope)
                self.object(tree.root, value, item.expression, scope, path, type_code, False, node.path)
        for type_ref in node.types:
            if type_ref.code == type_code and type_ref.profiles:
                self._type_profiles(node, type_ref.profiles, value, item, scope, path)

    # -- checks on one value --------------------------------------------------------------------

    def _value_checks(self, node: ElementNode, value: Any, item: Item, scope: Scope) -> None:
        type_code = item.type_code
        where = f"{node.id} in {node.structure.canonical}"
        if node.fixed is not None:
            ext = item.ext
            ok = value is not None and equal_fixed(value, node.fixed)
            if ok and type_code in PRIMITIVE_TYPES and isinstance(ext, dict) and ext.get("extension"):
                ok = False  # the fixed value carries no extensions, so the instance may not either
            if not ok:
                self.report(
                    "error", "value", item.expression, f"Value does not match the fixed value of {where}", "fixed"
                )
        if node.pattern is not None and (value is None or not matches_pattern(value, node.pattern)):
            self.report(
                "error", "value", item.expression, f"Value does not match the pattern of {where}", "pattern"
            )
        binding = node.binding
        if binding is not None and node.check_binding and value is not None and binding_applies(type_code, node.type_codes):
            issue = check_binding(binding, value, type_code, self._member, item.expression, where)
            if issue is not None:
                self.issues.append(issue)
        if type_code == "Reference" and node.check_targets:
            check_reference(self, node, value, item.expression, scope)
        if node.invariants and value is not None:
            focus_path = node.path.replace("[x]", "") if (not node.types or node.type_codes & _BACKBONE) else type_code
            self.invariants(node, value, focus_path, item.expression, scope)

    def invariants(self, node: ElementNode, focus: Any, focus_path: str, expression: str, scope: Scope) -> None:
        for invariant in node.invariants:
            guard = invariant.guard_keys
            if guard and isinstance(focus, dict) and focus.keys().isdisjoint(guard):
                continue
            severity = invariant.severity
            if invariant.best_practice:
                severity = self._best_practice
                if severity == "ignore":
                    continue
            if invariant.problem is not None:
                self._engine_failure(invariant.key, invariant.problem, expression, node)
                continue
            self.hooks.scope = scope
            try:
                holds = evaluate(invariant, focus, focus_path, scope)
            except Exception as exc:  # an engine defect must not reject the data, nor pass silently
                self._engine_failure(invariant.key, type(exc).__name__, expression, node)
                continue
            if not holds:
                text = invariant.describe()
                if not invariant.source:  # a profile's own constraint (SNAP-18): the same text as its derived profiles give
                    text += f" (defined in {node.structure.url})"
                self.report(severity, "invariant", expression, text, invariant.key)

    def _engine_failure(self, key: str, reason: str, expression: str, node: ElementNode) -> None:
        self.report(
            "warning",
            "exception",
            expression,
            f"Constraint {key} of {node.structure.canonical} could not be evaluated ({reason}); it was not checked",
            "invariant-engine",
        )

    def _ele1(self, expression: str) -> None:
        self.report(
            "error",
            "invariant",
            expression,
            "Constraint failed: ele-1: 'All FHIR elements must have a @value or children' "
            "(defined in http://hl7.org/fhir/StructureDefinition/Element)",
            "ele-1",
        )

    def _nested_resource(self, node: ElementNode, value: dict, item: Item, scope: Scope) -> None:
        resource_type = value.get("resourceType")
        if not node.structure.is_profile and isinstance(resource_type, str):
            structure = self.registry.type_tree(resource_type)
            if structure is not None and structure.kind == "resource" and structure.root is not None:
                contained = node.name == "contained"
                inner = Scope(value, scope.root if contained else value, item.expression, contained, False)
                self.resource(value, structure, inner)
        for type_ref in node.types:
            if type_ref.profiles and type_ref.code in ("Resource", resource_type):
                self._type_profiles(node, type_ref.profiles, value, item, scope, str(resource_type))

    def _type_profiles(
        self, node: ElementNode, urls: tuple[str, ...], value: dict, item: Item, scope: Scope, path: str
    ) -> None:
        """VAL-13: the value conforms to (one of) the profiles of its type."""
        if item.type_code == "Extension" and isinstance(value.get("url"), str):
            if any(url.split("|", 1)[0] == value["url"] for url in urls):
                return  # its own definition: the base pass validates every extension against it
        structures = [(url, self.registry.structure(url)) for url in urls]
        known = [s for _, s in structures if s is not None]
        resource_type = value.get("resourceType")
        if known and isinstance(resource_type, str):
            known = [s for s in known if s.type == resource_type]
            if not known:
                self.report(
                    "error",
                    "structure",
                    item.expression,
                    f"The resource type is not that of any profile required by {node.id} in {node.structure.canonical}",
                    "type",
                )
                return
        if not known:
            url = urls[0]
            self.report(
                "warning",
                "structure",
                item.expression,
                f"Profile {url} (required by {node.id} in {node.structure.canonical}) has not been checked "
                f"because {self.registry.reason(url)}",
                "profile-unknown",
            )
            return
        if len(known) == 1:
            self.validate_against(value, known[0], item.expression, scope, path, item.type_code)
            return
        if not any(self.conforms(value, s, item.type_code, scope) for s in known):
            self.report(
                "error",
                "structure",
                item.expression,
                f"Unable to find a match among the profiles {', '.join(s.canonical for s in known)} "
                f"required by {node.id} in {node.structure.canonical}",
                "type",
            )

    # -- references and terminology -------------------------------------------------------------

    def resolve_reference(self, reference: str, scope: Scope) -> dict | None:
        if reference[:1] == "#":
            for contained in scope.root.get("contained") or ():
                if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                    return contained
            return None
        return self._resolve_external(reference)

    def _resolve_external(self, reference: str) -> dict | None:
        if self.resolver is None:
            return None
        if reference not in self._resolved:
            try:
                found = self.resolver(reference)
            except Exception:  # a store failure is not a validation result
                found = None
            self._resolved[reference] = found if isinstance(found, dict) else None
        return self._resolved[reference]

    def in_value_set(self, value: Any, type_code: str | None, value_set: str) -> bool:
        answer = self._member_of(value, value_set)
        return bool(answer)

    def _member_of(self, value: Any, value_set: str) -> bool | None:
        """memberOf(): True / False, None when the terminology cannot tell."""
        pairs: list[tuple[str | None, str]] = []
        if isinstance(value, str):
            pairs = [(None, value)]
        elif isinstance(value, dict):
            codings = value.get("coding") if "coding" in value else [value]
            for coding in codings or ():
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    system = coding.get("system")
                    pairs.append((system if isinstance(system, str) else None, coding["code"]))
        unknown = False
        for system, code in pairs:
            status = self._member(value_set, system, code).status
            if status == "member":
                return True
            unknown = unknown or status == "unknown"
        return None if unknown else False

    def _conforms_to(self, value: Any, url: str) -> bool | None:
        structure = self.registry.structure(url)
        if structure is None:
            return None
        return self.conforms(value, structure)
