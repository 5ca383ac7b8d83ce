"""An index of one CodeSystem resource: its concepts by code, their hierarchy and properties.

Built once per code system on first use (v3-ActCode, the largest core one, has ~1,100 concepts).

Hierarchy (R4 codesystem.html "Concept hierarchy"): concepts nest inside their parents, and a
concept can also name further parents or children through the `parent`, `child` (the v3 code
systems use it for poly-hierarchy, e.g. v3-RouteOfAdministration) and `subsumedBy` properties;
all of them are merged into one parent/child graph.

Selectability (R4 codesystem-concept-properties): a concept with `notSelectable` = true (or the
older `abstract` = true, used by questionnaire-item-control) is a grouper, e.g. item-type#question
or v3-ActCode#_ActEncounterCode; implicit expansions (whole system, filters) leave it out.

Activity: status `retired` or `inactive` = true mark a concept inactive (`deprecated` concepts
are still active, per the same page); only `compose.inactive = false` removes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["Concept", "CodeSystemIndex", "property_value_text"]


def property_value_text(prop: dict) -> str | None:
    """The value of a concept property (`value[x]`) as text, for `=`/`in`/`regex` filters.

    Booleans are "true"/"false" as in filter values (R4 ValueSet.compose.include.filter.value);
    a Coding compares by its code."""
    for key, value in prop.items():
        if not key.startswith("value"):
            continue
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict):
            return value.get("code")
        return str(value)
    return None


@dataclass(slots=True)
class Concept:
    code: str
    display: str | None
    designations: tuple[str, ...]
    properties: dict[str, tuple[str, ...]]
    selectable: bool
    active: bool


@dataclass
class CodeSystemIndex:
    """Concepts, hierarchy and declared properties of one CodeSystem resource."""

    url: str
    version: str | None
    content: str  # complete | fragment | example | not-present | supplement
    case_sensitive: bool
    concepts: dict[str, Concept] = field(default_factory=dict)
    parents: dict[str, set[str]] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    declared_properties: frozenset[str] = frozenset()
    _folded: dict[str, str] | None = None

    @classmethod
    def build(cls, resource: dict) -> CodeSystemIndex:
        index = cls(
            url=resource["url"],
            version=resource.get("version"),
            content=resource.get("content", "complete"),
            # R4 CodeSystem.caseSensitive: absent means "not stated"; codes compare exactly then
            case_sensitive=resource.get("caseSensitive") is not False,
            declared_properties=frozenset(p.get("code") for p in resource.get("property", []) if p.get("code")),
        )
        for parent, concept in _walk(resource.get("concept", []), None):
            index._add(parent, concept)
        return index

    @property
    def complete(self) -> bool:
        """Whether every code of the system is here (R4 CodeSystem.content = complete)."""
        return self.content == "complete"

    @property
    def holds_codes(self) -> bool:
        """Whether the listed codes are real codes of the system (complete, fragment, example)."""
        return self.content in {"complete", "fragment", "example"}

    def lookup(self, code: str) -> Concept | None:
        concept = self.concepts.get(code)
        if concept is None and not self.case_sensitive:
            if self._folded is None:
                self._folded = {c.casefold(): c for c in self.concepts}
            canonical = self._folded.get(code.casefold())
            concept = self.concepts.get(canonical) if canonical else None
        return concept

    def descendants(self, code: str) -> frozenset[str]:
        return _closure(code, self.children)

    def ancestors(self, code: str) -> frozenset[str]:
        return _closure(code, self.parents)

    def _add(self, parent: str | None, concept: dict) -> None:
        code = concept["code"]
        properties: dict[str, list[str]] = {}
        for prop in concept.get("property", []):
            name, value = prop.get("code"), property_value_text(prop)
            if not name or value is None:
                continue
            properties.setdefault(name, []).append(value)
            if name in {"parent", "subsumedBy"}:
                self._link(value, code)
            elif name == "child":
                self._link(code, value)
        if parent is not None:
            self._link(parent, code)
        not_selectable = "true" in properties.get("notSelectable", ()) or "true" in properties.get("abstract", ())
        inactive = "true" in properties.get("inactive", ()) or bool(
            {"retired", "inactive"} & set(properties.get("status", ()))
        )
        self.concepts[code] = Concept(
            code=code,
            display=concept.get("display"),
            designations=tuple(d["value"] for d in concept.get("designation", []) if d.get("value")),
            properties={k: tuple(v) for k, v in properties.items()},
            selectable=not not_selectable,
            active=not inactive,
        )

    def _link(self, parent: str, child: str) -> None:
        self.children.setdefault(parent, set()).add(child)
        self.parents.setdefault(child, set()).add(parent)


def _walk(concepts: Iterable[dict], parent: str | None) -> Iterator[tuple[str | None, dict]]:
    for concept in concepts:
        if "code" not in concept:
            continue
        yield parent, concept
        yield from _walk(concept.get("concept", []), concept["code"])


def _closure(code: str, edges: dict[str, set[str]]) -> frozenset[str]:
    """All codes reachable from `code` along `edges`, `code` itself excluded (cycle-safe)."""
    found: set[str] = set()
    todo = list(edges.get(code, ()))
    while todo:
        other = todo.pop()
        if other not in found and other != code:
            found.add(other)
            todo.extend(edges.get(other, ()))
    return frozenset(found)
