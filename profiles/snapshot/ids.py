"""Element ids (R4 elementdefinition.html "ElementDefinition.id", SNAP-02).

An id has one part per path token, `name` or `name:sliceName` (a re-slice is `name:slice/reslice`,
a type slice `value[x]:valueQuantity`); with no slicing the id equals the path. The generator
computes snapshot ids from the position of each element in the tree, so they are unique by
construction; this module parses the ids of differentials and base snapshots, and derives the
ids of elements that have none from their path and sliceName.
"""

from __future__ import annotations

__all__ = ["Segment", "parse_id", "join_id", "path_of", "assign_ids", "child_id"]

Segment = tuple[str, "str | None"]  # (path token, slice name or None)


def parse_id(element_id: str) -> list[Segment]:
    """`Observation.component:SystolicBP.code` -> [(Observation, None), (component, SystolicBP),
    (code, None)]. Slice names cannot contain '.' (eld-16), so splitting on '.' is exact."""
    segments: list[Segment] = []
    for part in element_id.split("."):
        name, sep, slice_name = part.partition(":")
        segments.append((name, slice_name if sep else None))
    return segments


def join_id(segments: list[Segment]) -> str:
    return ".".join(name if s is None else f"{name}:{s}" for name, s in segments)


def path_of(segments: list[Segment]) -> str:
    """The path an id stands for: the id without its slice names."""
    return ".".join(name for name, _ in segments)


def child_id(parent_id: str | None, name: str, slice_name: str | None) -> str:
    own = name if slice_name is None else f"{name}:{slice_name}"
    return own if parent_id is None else f"{parent_id}.{own}"


def assign_ids(elements: list[dict]) -> list[str]:
    """Ids for a list of elements from path and sliceName, for lists written without ids.

    A slice stays "open" for the elements that follow it until an element with the same or a
    shorter path appears; a path token is suffixed with the open slice at that prefix. Elements
    that carry an id keep it (and it opens its slices for the elements after it).
    """
    open_slices: dict[str, str] = {}
    ids: list[str] = []
    for element in elements:
        path = element.get("path", "")
        for key in [k for k in open_slices if len(k) > len(path) or k == path]:
            del open_slices[key]
        given = element.get("id")
        if given:
            for name_path, slice_name in _slices_in_id(given):
                open_slices[name_path] = slice_name
            ids.append(given)
            continue
        if element.get("sliceName"):
            open_slices[path] = element["sliceName"]
        tokens = path.split(".")
        parts = []
        for i, token in enumerate(tokens):
            prefix = ".".join(tokens[: i + 1])
            parts.append(f"{token}:{open_slices[prefix]}" if i and prefix in open_slices else token)
        ids.append(".".join(parts))
    return ids


def _slices_in_id(element_id: str) -> list[tuple[str, str]]:
    out = []
    segments = parse_id(element_id)
    for i, (_, slice_name) in enumerate(segments):
        if slice_name is not None:
            out.append((path_of(segments[: i + 1]), slice_name))
    return out
