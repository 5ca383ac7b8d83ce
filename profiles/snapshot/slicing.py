"""Slicing rules: the slicing entries generators add by themselves, how a derived profile may
change an inherited slicing, where new slices go, and the cardinality of slices.
"""

from __future__ import annotations

from .errors import Problems

__all__ = [
    "extension_slicing",
    "type_slicing",
    "is_extension_name",
    "merge_slicing",
    "reslice_position",
    "check_slice_cardinality",
    "max_value",
]

_RULES_ORDER = {"open": 0, "openAtEnd": 1, "closed": 2}


def extension_slicing() -> dict:
    """Extensions are "always sliced by (at least) url": the entry generators add when a
    differential declares extension slices without one (TC snapshot tests t11, t12)."""
    return {"discriminator": [{"type": "value", "path": "url"}], "ordered": False, "rules": "open"}


def type_slicing() -> dict:
    """The entry of a type slice made from a renamed choice element (`Observation.valueQuantity`),
    as in the published R4 snapshots (SNAP-15; firely-net-sdk#1051: a type slice always has one)."""
    return {"discriminator": [{"type": "type", "path": "$this"}], "ordered": False, "rules": "closed"}


def is_extension_name(name: str) -> bool:
    return name in ("extension", "modifierExtension")


def merge_slicing(base: dict, diff: dict, at: str, problems: Problems) -> dict:
    """An inherited slicing as constrained by a derived profile (profiling.html "Re-profiling and
    Re-slicing", SNAP-07): discriminators are kept and may be added to, `ordered` may go from
    false to true, `rules` may only get tighter (open -> openAtEnd -> closed)."""
    merged = dict(base)
    base_discriminators = base.get("discriminator", [])
    diff_discriminators = diff.get("discriminator", [])
    if diff_discriminators:
        keys = [(d.get("type"), d.get("path")) for d in diff_discriminators]
        inherited = [(d.get("type"), d.get("path")) for d in base_discriminators]
        if keys[: len(inherited)] != inherited:
            problems.add(at, f"slicing discriminators {keys} do not keep the inherited ones {inherited}")
        merged["discriminator"] = [dict(d) for d in diff_discriminators]
    if "ordered" in diff:
        if base.get("ordered") and not diff["ordered"]:
            problems.add(at, "slicing.ordered cannot change from true to false")
        merged["ordered"] = diff["ordered"]
    if "rules" in diff:
        if _RULES_ORDER.get(diff["rules"], -1) < _RULES_ORDER.get(base.get("rules", "open"), 0):
            problems.add(at, f"slicing.rules cannot be loosened from {base.get('rules')} to {diff['rules']}")
        merged["rules"] = diff["rules"]
    if "description" in diff:
        merged["description"] = diff["description"]
    return merged


def reslice_position(slice_names: list[str], name: str) -> int:
    """Where a new slice goes among the existing ones: a re-slice `a/b` right after slice `a` and
    its other re-slices; any other new slice after all inherited ones (medstmt-nsw)."""
    parent = name.rpartition("/")[0]
    if parent:
        positions = [i for i, n in enumerate(slice_names) if n == parent or n.startswith(parent + "/")]
        if positions:
            return positions[-1] + 1
    return len(slice_names)


def max_value(value: str | None) -> float:
    if value is None or value == "*":
        return float("inf")
    return int(value)


def check_slice_cardinality(entry: dict, slices: list[dict], at: str, problems: Problems) -> None:
    """profiling.html "Slice Cardinality" (SNAP-05): no slice may allow more repetitions than the
    sliced element, and the slices' minimums together must fit in its maximum (two type slices
    of a 0..1 choice that are both required cannot be satisfied)."""
    limit = max_value(entry.get("max"))
    total = 0
    for s in slices:
        if max_value(s.get("max")) > limit:
            problems.add(f"{at}:{s.get('sliceName')}", f"slice max {s.get('max')} is greater than the max {entry.get('max')} of {at}")
        total += s.get("min", 0)
    if total > limit:
        problems.add(at, f"the slices' minimums add up to {total}, more than the max {entry.get('max')}")
