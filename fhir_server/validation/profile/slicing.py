"""Slicing: which slice each repetition belongs to, and the slicing rules (validation.md §A3.7).

For each slice the discriminators are resolved once (on first use) into tests on a repetition:

- `value` / `pattern`: the fixed[x] or pattern[x] found at the discriminator path inside the slice
  definition — on the element itself, on any of its slices (`code.coding.code` reaches the fixed
  code of a `coding:SBPCode` slice), or inside a pattern set on a *parent* element (a
  `patternCodeableConcept` on `code` answers the path `code.coding.code`, VAL-43), or else a
  required binding there (membership). Into an element the snapshot does not expand, the path
  continues in the element's `type.profile` (extension slices: the url is the extension
  definition's fixed `Extension.url`);
- `exists`: present when the slice sets min >= 1, absent when it sets max = 0 (VAL-44);
- `type`: the repetition's type is one of the slice's types (VAL-45; `$this` on `value[x]`);
- `profile`: the repetition conforms to the slice's `type.profile` (or `targetProfile` after
  `resolve()`), memoized per validation (VAL-46, PERF-05).

Paths are the restricted FHIRPath of ElementDefinition.slicing.discriminator.path: element names,
`$this`, `extension('url')`, `resolve()`, `ofType(T)` / `as(T)`.

Then (VAL-40..42): an unmatched repetition is an error when the slicing is `closed`, and must come
after every matched one when `openAtEnd`; with `ordered`, repetitions follow slice order; each
slice's own min/max is checked. Each repetition is then validated against the slice it matched
(a slice copies the whole definition of its entry, SNAP-06), or against the entry when it matched
none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_server.validation.profile.model import PRIMITIVE_TYPES, ElementNode, Item, Scope, Slicing
from fhir_server.validation.profile.values import equal_fixed, matches_pattern

if TYPE_CHECKING:
    from fhir_server.validation.profile.walk import Walk

__all__ = ["assign_slices", "parse_path"]

Step = tuple[str, str]  # ("name", n) | ("ext", url) | ("resolve", "") | ("type", T) | ("this", "")
Value = tuple[Any, "str | None"]  # a JSON value and its FHIR type, when known

_TYPE_STEP = re.compile(r"(?:ofType|as)\(\s*([A-Za-z][A-Za-z0-9]*)\s*\)")
_EXT_STEP = re.compile(r"extension\(\s*(['\"])(.+)\1\s*\)")


def parse_path(path: str) -> tuple[Step, ...]:
    tokens, depth, quote, current = [], 0, "", []
    for char in path:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
            continue
        if char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "." and depth == 0:
            tokens.append("".join(current))
            current = []
            continue
        current.append(char)
    tokens.append("".join(current))
    steps: list[Step] = []
    for token in (t.strip() for t in tokens):
        if token in ("$this", ""):
            steps.append(("this", ""))
        elif token == "resolve()":
            steps.append(("resolve", ""))
        elif match := _TYPE_STEP.fullmatch(token):
            steps.append(("type", match.group(1)))
        elif match := _EXT_STEP.fullmatch(token):
            steps.append(("ext", match.group(2)))
        else:
            steps.append(("name", token))
    return tuple(steps)


@dataclass(slots=True, eq=False)
class _Test:
    kind: str
    steps: tuple[Step, ...]
    expected: tuple[tuple[str, Any], ...] = ()  # ("fixed" | "pattern" | "binding", value)
    must_exist: bool | None = None
    types: frozenset[str] = frozenset()
    profiles: tuple[str, ...] = ()


# -- the slice side: what each slice expects ------------------------------------------------------


def _children_of(walk: Walk, node: ElementNode) -> ElementNode | None:
    """The node whose children describe `node`'s content: itself when expanded, else the root of
    its (single) type profile, so paths continue into extension definitions."""
    if node.children:
        return node
    if node.content_reference:
        return walk.registry.content_reference(node)
    for type_ref in node.types:
        for url in type_ref.profiles:
            structure = walk.registry.structure(url)
            if structure is not None and structure.root is not None:
                return structure.root
    return None


def _candidates(walk: Walk, node: ElementNode, step: Step) -> list[ElementNode]:
    kind, arg = step
    if kind == "this":
        return [node]
    if kind == "type":
        found = [node]
        if node.slicing is not None:
            found += [s for s in node.slicing.slices if arg in s.type_codes]
        return found
    if kind == "resolve":
        roots = []
        for type_ref in node.types:
            for url in type_ref.target_profiles:
                structure = walk.registry.structure(url)
                if structure is not None and structure.root is not None:
                    roots.append(structure.root)
        return roots
    holder = _children_of(walk, node)
    if holder is None:
        return []
    if kind == "ext":
        entry = holder.children.get("extension")
        if entry is None or entry.slicing is None:
            return []
        return [s for s in entry.slicing.slices if _slice_url(walk, s) == arg]
    child = holder.children.get(arg) or holder.children.get(arg + "[x]")
    if child is None:
        return []
    return [child] + (list(child.slicing.slices) if child.slicing is not None else [])


def _slice_url(walk: Walk, node: ElementNode) -> str | None:
    expected = _expected(walk, node, (("name", "url"),))
    for kind, value in expected:
        if kind == "fixed" and isinstance(value, str):
            return value
    return None


def _extract(value: Any, steps: tuple[Step, ...]) -> list[Any]:
    """Values at `steps` inside a fixed/pattern value (for a pattern on a parent element)."""
    current = [value]
    for kind, arg in steps:
        if kind in ("this", "type"):
            continue
        if kind != "name":
            return []
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict):
                found = item.get(arg)
                if found is None:
                    found = next((v for k, v in item.items() if k.startswith(arg) and k[len(arg):][:1].isupper()), None)
                if isinstance(found, list):
                    nxt.extend(found)
                elif found is not None:
                    nxt.append(found)
        current = nxt
    return current


def _expected(walk: Walk, node: ElementNode, steps: tuple[Step, ...]) -> list[tuple[str, Any]]:
    own_kind = "fixed" if node.fixed is not None else "pattern" if node.pattern is not None else None
    if own_kind is not None:
        own = node.fixed if own_kind == "fixed" else node.pattern
        if not [s for s in steps if s[0] not in ("this", "type")]:
            return [(own_kind, own)]
        extracted = _extract(own, steps)
        if extracted:
            return [(own_kind, value) for value in extracted]
    if not steps:
        binding = node.binding
        if binding is not None and binding.strength == "required" and binding.value_set:
            return [("binding", binding.value_set)]
        return []
    found: list[tuple[str, Any]] = []
    for child in _candidates(walk, node, steps[0]):
        found.extend(_expected(walk, child, steps[1:]))
    return found


def _nodes_at(walk: Walk, node: ElementNode, steps: tuple[Step, ...]) -> list[ElementNode]:
    current = [node]
    for step in steps:
        current = [c for n in current for c in _candidates(walk, n, step)]
    return current


def _test(walk: Walk, slice_node: ElementNode, kind: str, path: str) -> _Test:
    steps = parse_path(path)
    test = _Test(kind=kind, steps=steps)
    if kind in ("value", "pattern"):
        test.expected = tuple(_expected(walk, slice_node, steps))
        return test
    nodes = _nodes_at(walk, slice_node, steps)
    if kind == "exists":
        if any(n.min >= 1 for n in nodes):
            test.must_exist = True
        elif any(n.max == 0 for n in nodes):
            test.must_exist = False
    elif kind == "type":
        if steps and steps[-1][0] == "resolve":
            test.types = frozenset(n.structure.type for n in nodes)
        else:
            test.types = frozenset(code for n in nodes for code in n.type_codes)
    elif kind == "profile":
        if steps and steps[-1][0] == "resolve":
            test.profiles = tuple(n.structure.canonical for n in nodes)
        else:
            test.profiles = tuple(p for n in nodes for t in n.types for p in t.profiles)
    return test


def _prepare(walk: Walk, slicing: Slicing) -> list[list[_Test]]:
    if slicing.matchers is None:
        matchers = [[_test(walk, s, d.kind, d.path) for d in slicing.discriminators] for s in slicing.slices]
        if (
            len(slicing.discriminators) == 1
            and slicing.discriminators[0].kind == "value"
            and slicing.discriminators[0].path == "url"
        ):
            by_url: dict[str, ElementNode] = {}
            for slice_node, tests in zip(slicing.slices, matchers):
                urls = [v for k, v in tests[0].expected if k == "fixed" and isinstance(v, str)]
                if len(urls) != 1:
                    break
                by_url.setdefault(urls[0], slice_node)
            else:
                slicing.by_url = by_url
        slicing.matchers = matchers
    return slicing.matchers


# -- the instance side ----------------------------------------------------------------------------


def _child_values(value: Any, name: str) -> list[Value]:
    if not isinstance(value, dict):
        return []
    out: list[Value] = []
    if name in value:
        found = value[name]
        for item in found if isinstance(found, list) else [found]:
            if item is not None:
                out.append((item, item.get("resourceType") if isinstance(item, dict) else None))
        return out
    for key, found in value.items():  # a choice element: value -> valueQuantity
        if key.startswith(name) and key[len(name):][:1].isupper():
            type_code = key[len(name):]
            if type_code[:1].lower() + type_code[1:] in PRIMITIVE_TYPES:
                type_code = type_code[:1].lower() + type_code[1:]
            for item in found if isinstance(found, list) else [found]:
                out.append((item, type_code))
    return out


def _navigate(walk: Walk, start: list[Value], steps: tuple[Step, ...], scope: Scope) -> list[Value]:
    current = start
    for kind, arg in steps:
        if kind == "this":
            continue
        nxt: list[Value] = []
        for value, type_code in current:
            if kind == "name":
                nxt.extend(_child_values(value, arg))
            elif kind == "ext":
                for ext in (value.get("extension") or ()) if isinstance(value, dict) else ():
                    if isinstance(ext, dict) and ext.get("url") == arg:
                        nxt.append((ext, "Extension"))
            elif kind == "type":
                if type_code == arg or (isinstance(value, dict) and value.get("resourceType") == arg):
                    nxt.append((value, type_code))
            elif kind == "resolve" and isinstance(value, dict) and isinstance(value.get("reference"), str):
                target = walk.resolve_reference(value["reference"], scope)
                if target is not None:
                    nxt.append((target, target.get("resourceType")))
        current = nxt
    return current


def _passes(walk: Walk, test: _Test, item: Item, scope: Scope) -> bool:
    values = _navigate(walk, [(item.value, item.type_code)], test.steps, scope)
    kind = test.kind
    if kind in ("value", "pattern"):
        for expected_kind, expected in test.expected:
            for value, type_code in values:
                if expected_kind == "fixed" and equal_fixed(value, expected):
                    return True
                if expected_kind == "pattern" and matches_pattern(value, expected):
                    return True
                if expected_kind == "binding" and walk.in_value_set(value, type_code, expected):
                    return True
        return False
    if kind == "exists":
        return test.must_exist is not None and bool(values) == test.must_exist
    if kind == "type":
        return any(type_code in test.types for _, type_code in values)
    if kind == "profile":
        for url in test.profiles:
            structure = walk.registry.structure(url)
            if structure is not None and any(walk.conforms(value, structure, type_code) for value, type_code in values):
                return True
        return False
    return False


def _match(walk: Walk, slicing: Slicing, matchers: list[list[_Test]], item: Item, scope: Scope) -> int | None:
    if slicing.by_url is not None:
        url = item.value.get("url") if isinstance(item.value, dict) else None
        found = slicing.by_url.get(url) if isinstance(url, str) else None
        return slicing.slices.index(found) if found is not None else None
    for index, tests in enumerate(matchers):
        if tests and all(_passes(walk, test, item, scope) for test in tests):
            return index
    return None


def assign_slices(walk: Walk, entry: ElementNode, items: list[Item], expression: str, scope: Scope) -> list[ElementNode]:
    """The node each item is validated against; reports slicing-rule and slice cardinality issues.
    `expression` is where the sliced element is (for slice cardinality)."""
    slicing = entry.slicing
    assert slicing is not None
    matchers = _prepare(walk, slicing)
    where = f"{entry.id} in {entry.structure.canonical}"
    counts = [0] * len(slicing.slices)
    nodes: list[ElementNode] = []
    last = -1
    unmatched_seen = False
    for item in items:
        if not item.allowed:
            nodes.append(entry)  # the type error is reported; no slice can accept it
            continue
        index = _match(walk, slicing, matchers, item, scope)
        if index is None:
            nodes.append(entry)
            unmatched_seen = True
            if slicing.rules == "closed":
                walk.report(
                    "error",
                    "structure",
                    item.expression,
                    f"This element does not match any known slice of {where}, and slicing is closed",
                    "slice-closed",
                )
            continue
        slice_node = slicing.slices[index]
        if slicing.rules == "openAtEnd" and unmatched_seen:
            walk.report(
                "error",
                "structure",
                item.expression,
                f"Slice {slice_node.id} follows an element that matches no slice, but the slicing of {where} is "
                "open at the end only",
                "slice-order",
            )
        if slicing.ordered and index < last:
            walk.report(
                "error",
                "structure",
                item.expression,
                f"Element is out of order in the ordered slicing of {where} (slice {slice_node.id})",
                "slice-order",
            )
        last = max(last, index)
        counts[index] += 1
        nodes.append(slice_node)
    for slice_node, count in zip(slicing.slices, counts):
        if count < slice_node.min:
            walk.report(
                "error",
                "required",
                expression,
                f"{slice_node.id}: minimum required = {slice_node.min}, but only found {count} "
                f"(from {entry.structure.canonical})",
                "cardinality-min",
            )
        if slice_node.max is not None and count > slice_node.max:
            text = (
                f"{slice_node.id} is present in the instance but not allowed (max 0)"
                if slice_node.max == 0
                else f"{slice_node.id}: max allowed = {slice_node.max}, but found {count}"
            )
            walk.report("error", "structure", expression, f"{text} (from {entry.structure.canonical})", "cardinality-max")
    return nodes

