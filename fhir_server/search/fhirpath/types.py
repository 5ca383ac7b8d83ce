"""The slice of the R4 type model the compiler needs: for a type and an element name, its types.

Type names are resource and datatype names ("Observation", "Quantity") or, for backbone elements,
their path ("Observation.component"), as in the StructureDefinition snapshots. The table is built
by build_registry.py from profiles-resources.json / profiles-types.json and stored (only the
elements search expressions walk) in the registry artefact.

Row layout, per element name (choice elements keep their "[x]"):
    [types joined by "|", repeats (0|1), required-binding code system or null, reference targets or null]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["ElementInfo", "TypeTable", "QUANTITY_TYPES"]

# R4 datatypes.html#Quantity: these are Quantity specialisations / profiles with Quantity's elements.
QUANTITY_TYPES = frozenset({"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"})


@dataclass(frozen=True, slots=True)
class ElementInfo:
    types: tuple[str, ...]
    choice: bool
    repeats: bool
    code_system: str | None = None
    targets: tuple[str, ...] | None = None

    def to_row(self) -> list:
        return ["|".join(self.types), int(self.repeats), self.code_system, list(self.targets) if self.targets else None]


class TypeTable:
    """Element lookup over `rows[type_name][element_name] = row` (see the module docstring)."""

    def __init__(self, rows: Mapping[str, Mapping[str, list]], resource_types: Iterable[str],
                 parents: Mapping[str, str] | None = None) -> None:
        self._rows = rows
        self._cache: dict[tuple[str, str], ElementInfo | None] = {}
        self.resource_types = frozenset(resource_types)
        self._parents = dict(parents or {})

    def is_a(self, type_name: str, ancestor: str) -> bool:
        """Type specialisation, as FHIRPath `is`/`ofType` apply it: a canonical is a uri, a code a
        string, an Age a Quantity (R4 datatypes.html; StructureDefinition.baseDefinition)."""
        current: str | None = type_name
        while current is not None:
            if current == ancestor:
                return True
            current = self._parents.get(current)
        return False

    def element(self, type_name: str, name: str) -> ElementInfo | None:
        key = (type_name, name)
        if key not in self._cache:
            self._cache[key] = self._lookup(type_name, name)
        return self._cache[key]

    def _lookup(self, type_name: str, name: str) -> ElementInfo | None:
        elements = self._rows.get(_navigation_type(type_name))
        if elements is None:
            return None
        row, choice = elements.get(name), False
        if row is None:
            row, choice = elements.get(name + "[x]"), True
        if row is None:
            return None
        types, repeats, code_system, targets = row
        return ElementInfo(tuple(types.split("|")), choice, bool(repeats), code_system, tuple(targets) if targets else None)


def _navigation_type(type_name: str) -> str:
    # SimpleQuantity and MoneyQuantity are constraints on Quantity: same elements.
    return "Quantity" if type_name in ("SimpleQuantity", "MoneyQuantity") else type_name
