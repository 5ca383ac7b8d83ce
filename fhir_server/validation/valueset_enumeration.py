"""Enumerate the codes of a core ValueSet from the definitions, for the structure-table generator.

Only what can be computed exactly from the files is enumerated (R4 valueset.html "Value Set
Expansion"): `compose.include` of whole CodeSystems whose content is complete (nested concepts
included), explicit concept lists, other value sets (intersected, as include.valueSet means), and
the hierarchy filters `is-a` / `descendent-of` / `is-not-a` on the `concept` property of a code
system whose hierarchy is expressed by nesting; `compose.exclude` is subtracted. Anything else
(external systems such as urn:ietf:bcp:13 or ISO 4217, other filter operators, code systems that
are fragments or absent) makes the value set "not enumerable": it is reported, never guessed.

Used at generation time only; the server reads the result from the generated table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


class NotEnumerable(Exception):
    """Raised with the reason why a value set cannot be fully enumerated from the core files."""


@dataclass
class _CodeSystem:
    url: str
    complete: bool
    # code -> codes of its direct children (hierarchy by nesting, R4 codesystem.html#hierarchy)
    children: dict[str, list[str]] = field(default_factory=dict)
    # concepts with the notSelectable property (e.g. item-type#question): grouping concepts that an
    # instance cannot use, so an implicit expansion leaves them out (R4 codesystem-concept-properties)
    not_selectable: set[str] = field(default_factory=set)
    uses_parent_property: bool = False


def _walk_concepts(concepts: Iterable[dict], system: _CodeSystem) -> Iterator[str]:
    for concept in concepts:
        code = concept["code"]
        nested = concept.get("concept", [])
        system.children[code] = [c["code"] for c in nested]
        for prop in concept.get("property", []):
            if prop.get("code") in {"parent", "child", "subsumedBy"}:
                system.uses_parent_property = True
            elif prop.get("code") == "notSelectable" and prop.get("valueBoolean") is True:
                system.not_selectable.add(code)
        yield code
        yield from _walk_concepts(nested, system)


class ValueSetEnumerator:
    """Holds the ValueSets and CodeSystems of the core files and enumerates value sets on demand."""

    def __init__(self, resources: Iterable[dict]) -> None:
        self._value_sets: dict[str, dict] = {}
        self._code_systems: dict[str, _CodeSystem] = {}
        for res in resources:
            url = res.get("url")
            if not url:
                continue
            if res["resourceType"] == "ValueSet":
                self._value_sets.setdefault(url, res)
            elif res["resourceType"] == "CodeSystem" and url not in self._code_systems:
                system = _CodeSystem(url=url, complete=res.get("content") == "complete")
                list(_walk_concepts(res.get("concept", []), system))
                self._code_systems[url] = system
        self._cache: dict[str, frozenset[str]] = {}

    def enumerate(self, url: str) -> frozenset[str]:
        """All codes of the value set `url` (version suffix ignored), or raise NotEnumerable."""
        url = url.split("|", 1)[0]
        if url not in self._cache:
            self._cache[url] = self._expand(url, ())
        return self._cache[url]

    def _expand(self, url: str, stack: tuple[str, ...]) -> frozenset[str]:
        if url in stack:
            raise NotEnumerable(f"value set {url} includes itself")
        value_set = self._value_sets.get(url)
        if value_set is None:
            raise NotEnumerable(f"value set {url} is not defined in the core files")
        compose = value_set.get("compose")
        if not compose:
            raise NotEnumerable(f"value set {url} has no compose")
        stack = (*stack, url)
        codes: set[str] = set()
        for include in compose.get("include", []):
            codes |= self._include(include, stack)
        for exclude in compose.get("exclude", []):
            codes -= self._include(exclude, stack)
        return frozenset(codes)

    def _include(self, include: dict, stack: tuple[str, ...]) -> frozenset[str]:
        parts: list[frozenset[str]] = []
        system_url = include.get("system")
        if system_url:
            if include.get("concept"):
                parts.append(frozenset(c["code"] for c in include["concept"]))
            else:
                parts.append(self._from_system(system_url, include.get("filter", [])))
        # include.valueSet: "the content of the value sets are intersected" (R4 ValueSet.compose.include.valueSet)
        for nested in include.get("valueSet", []):
            parts.append(self._expand(nested.split("|", 1)[0], stack))
        if not parts:
            raise NotEnumerable("an include with neither system nor valueSet")
        result = parts[0]
        for part in parts[1:]:
            result &= part
        return result

    def _from_system(self, system_url: str, filters: list[dict]) -> frozenset[str]:
        system = self._code_systems.get(system_url)
        if system is None:
            raise NotEnumerable(f"code system {system_url} is external to the core files")
        if not system.complete:
            raise NotEnumerable(f"code system {system_url} is not complete in the core files")
        codes = frozenset(system.children) - system.not_selectable
        for flt in filters:
            codes &= self._filter(system, flt)
        return codes

    def _filter(self, system: _CodeSystem, flt: dict) -> frozenset[str]:
        op, prop, value = flt.get("op"), flt.get("property"), flt.get("value")
        if prop != "concept" or op not in {"is-a", "descendent-of", "is-not-a"} or system.uses_parent_property:
            raise NotEnumerable(f"filter {prop} {op} on {system.url} cannot be evaluated locally")
        if value not in system.children:
            raise NotEnumerable(f"filter value is not a code of {system.url}")
        below = self._descendants(system, value)
        if op == "is-a":
            return below | {value}
        if op == "descendent-of":
            return below
        return frozenset(system.children) - below - {value}

    @staticmethod
    def _descendants(system: _CodeSystem, code: str) -> frozenset[str]:
        found: set[str] = set()
        todo = list(system.children.get(code, []))
        while todo:
            child = todo.pop()
            if child not in found:
                found.add(child)
                todo.extend(system.children.get(child, []))
        return frozenset(found)
