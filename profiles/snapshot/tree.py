"""Snapshots as trees.

A snapshot is a flat list in which nesting is implied by `path` and slices follow their slicing
entry (R4 profiling.html "Differential vs Snapshot", "Slicing"). The generator works on a tree
instead: each node holds one element, its children (in order) and, for a slicing entry, its
slices (each with its own children). Walking a tree makes "copy the base subtree under a slice",
"re-root a datatype under an element" and "ids are unique" structural facts instead of cursor
arithmetic; `flatten` writes the list back in snapshot order (entry, entry's children, then each
slice and its children).

Nodes of a base tree hold the definitions' own dicts, which are shared and never mutated: a result
node either points at a base dict (unchanged element) or owns a private copy (`owned`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import orjson

from .errors import SnapshotError
from .ids import assign_ids, child_id, join_id, parse_id

__all__ = ["Node", "Structure", "clone", "base_of", "flatten"]


def clone(value):
    """A deep copy of JSON data; orjson is several times faster than copy.deepcopy, which stays
    the fallback for data orjson cannot write (Decimal values from `json.loads(parse_float=...)`)."""
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return copy.deepcopy(value)


def base_of(element: dict) -> dict:
    """ElementDefinition.base for an element derived from `element`: its own base when it has one,
    else itself (the original definition), as SNAP-03 requires base to be always populated."""
    base = element.get("base")
    if base:
        return {"path": base["path"], "min": base["min"], "max": base["max"]}
    return {"path": element["path"], "min": element.get("min", 0), "max": element.get("max", "*")}


@dataclass(slots=True, eq=False)
class Node:
    element: dict
    name: str  # the last path token, e.g. "value[x]"
    children: list[Node] = field(default_factory=list)
    slices: list[Node] = field(default_factory=list)
    owned: bool = False  # True when `element` is a private copy that may be changed

    def own(self) -> dict:
        """The element, copied first if it is still a shared base dict."""
        if not self.owned:
            self.element = clone(self.element)
            self.owned = True
        return self.element

    @property
    def is_sliced(self) -> bool:
        return "slicing" in self.element or bool(self.slices)


class Structure:
    """One StructureDefinition's snapshot as a tree, with an index by id to resolve
    `contentReference` (R4 uses `#Observation.referenceRange`; R5 prefixes the canonical)."""

    def __init__(self, url: str, elements: list[dict]) -> None:
        if not elements:
            raise SnapshotError("the snapshot has no elements", url)
        self.url = url
        self.by_id: dict[str, Node] = {}
        ids = assign_ids(elements)
        root: Node | None = None
        for element, element_id in zip(elements, ids):
            segments = parse_id(element_id)
            name, slice_name = segments[-1]
            node = Node(element, name)
            if len(segments) == 1:
                if root is not None:
                    raise SnapshotError(f"{element_id}: a second root element in the snapshot", url)
                root = node
            else:
                parent_id = join_id(segments[:-1])
                parent = self.by_id.get(parent_id)
                if parent is None:
                    raise SnapshotError(f"{element_id}: its parent {parent_id} is not before it in the snapshot", url)
                entry = self.by_id.get(f"{parent_id}.{name}") if slice_name is not None else None
                # A slice goes under its slicing entry; a "slice" with no entry (as R4's generator
                # wrote for a single sliceName on an unsliced element) is an ordinary child.
                (entry.slices if entry is not None else parent.children).append(node)
            self.by_id[element_id] = node
        assert root is not None
        self.root = root

    def content_target(self, reference: str) -> Node | None:
        return self.by_id.get(reference.partition("#")[2])


def flatten(root: Node) -> list[dict]:
    """The snapshot element list of a result tree, with ids and paths computed from the tree
    (SNAP-02) and every element a fresh copy, detached from the definitions it came from."""
    out: list[dict] = []

    def emit(node: Node, parent_id: str | None, parent_path: str | None) -> None:
        element = node.element
        slice_name = element.get("sliceName")
        element_id = child_id(parent_id, node.name, slice_name)
        path = node.name if parent_path is None else f"{parent_path}.{node.name}"
        written = {"id": element_id, "path": path}
        for key, value in element.items():
            if key not in ("id", "path"):
                written[key] = value
        if "base" not in written:
            written["base"] = base_of(element)
        out.append(written)
        for child in node.children:
            emit(child, element_id, path)
        # the slices of this element share its parent (their ids differ by ":sliceName")
        for s in node.slices:
            emit(s, parent_id, parent_path)

    emit(root, None, None)
    return clone(out)
