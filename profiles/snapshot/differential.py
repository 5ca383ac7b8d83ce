"""Reading a differential into a tree that mirrors the snapshot tree.

The differential is sparse and may omit the root and any intermediate element (R4 profiling.html
"Differential vs Snapshot"); its order is not trusted. Each element is placed by its id (or, when
it has none, by the id derived from path and sliceName), so the generator meets differential
elements in base order whatever order they were written in: an out-of-order differential is
sorted, never matched greedily (firely-net-sdk#1081, #3590; org.hl7.fhir.core#562). Slices keep
the order of their first mention, which is the order they are declared in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Problems
from .ids import assign_ids, parse_id, path_of

__all__ = ["DiffNode", "read_differential"]


@dataclass(slots=True, eq=False)
class DiffNode:
    name: str
    order: int  # index of the first differential element at or under this node
    element: dict | None = None  # None: only mentioned as the parent of other elements
    children: dict[str, DiffNode] = field(default_factory=dict)
    slices: dict[str, DiffNode] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return (self.element or {}).get("id", self.name)


def read_differential(elements: list[dict], root_name: str, problems: Problems) -> DiffNode:
    """The differential as a tree rooted at `root_name` (the base's root path)."""
    root = DiffNode(root_name, order=-1)
    ids = assign_ids(elements)
    for index, (element, element_id) in enumerate(zip(elements, ids)):
        path = element.get("path")
        if not path:
            problems.add(element_id or f"differential.element[{index}]", "element has no path")
            continue
        segments = parse_id(element_id)
        if path_of(segments) != path:
            problems.add(element_id, f"the id does not match the path {path}")
            continue
        if segments[0][0] != root_name:
            problems.add(element_id, f"path is not in the base: the base's root is {root_name}")
            continue
        slice_name = element.get("sliceName")
        last_name, last_slice = segments[-1]
        if slice_name and last_slice != slice_name:
            problems.add(element_id, f"the id's last part should be {last_name}:{slice_name} (sliceName {slice_name})")
            continue
        node = root
        if segments[0][1] is not None:
            problems.add(element_id, "the root element cannot be a slice")
            continue
        for name, s in segments[1:]:
            node = node.children.setdefault(name, DiffNode(name, index))
            if s is not None:
                node = node.slices.setdefault(s, DiffNode(name, index))
        if node.element is not None:
            problems.add(element_id, "appears twice in the differential")
            continue
        node.element = element
    return root
