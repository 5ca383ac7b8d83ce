"""generate_snapshot: a StructureDefinition's snapshot from its differential and its base.

R4 profiling.html "Differential vs Snapshot"; the algorithm and its rules are summarised in
validation.md A2 (SNAP-01..20). The result is checked against the 44 core constraint profiles of
R4, whose published snapshots it reproduces (tests/unit/test_snapshot_generation.py).
"""

from __future__ import annotations

from .differential import read_differential
from .errors import Problems, SnapshotError
from .resolution import Definitions, Resolve
from .tree import clone, flatten
from .walk import Scope, Walk

__all__ = ["generate_snapshot"]

# The status of the base definition is not the status of a profile on it (the profile has its own
# StructureDefinition.status); the published R4 profiles drop these from their root element.
_STATUS_EXTENSIONS = frozenset({
    "http://hl7.org/fhir/StructureDefinition/structuredefinition-standards-status",
    "http://hl7.org/fhir/StructureDefinition/structuredefinition-normative-version",
})


def generate_snapshot(sd: dict, resolve: Resolve) -> dict:
    """A copy of `sd` with `snapshot.element` generated from its differential.

    `resolve(canonical)` returns a StructureDefinition or None: the base definition, the datatypes
    the differential walks into, and the profiles named in `type.profile` (extension definitions).
    A resolved definition without a snapshot gets one generated first. `sd` itself and everything
    `resolve` returns are left untouched. Raises SnapshotError listing every problem found.
    """
    return Definitions(resolve, _generate).generate(sd)


def _generate(sd: dict, definitions: Definitions) -> dict:
    url = sd.get("url")
    if sd.get("derivation") == "specialization":
        raise SnapshotError("only constraint profiles are supported, not specializations", url)
    base_url = sd.get("baseDefinition")
    if not base_url:
        raise SnapshotError("the StructureDefinition has no baseDefinition", url)
    base_sd = definitions.with_snapshot(base_url)
    base = definitions.structure(base_url)
    if base_sd is None or base is None:
        raise SnapshotError(f"the base definition {base_url} cannot be resolved", url)
    if sd.get("type") and sd["type"] != base.root.name:
        raise SnapshotError(f"type {sd['type']} does not match the base's root {base.root.name}", url)

    problems = Problems()
    differential = (sd.get("differential") or {}).get("element") or []
    diff_root = read_differential(differential, base.root.name, problems)
    walk = Walk(definitions, problems, stamp_url=base_sd.get("url", base_url))
    root = walk.constrain(base.root, diff_root, Scope(base, in_slice=False), base.root.name)
    if any(e.get("url") in _STATUS_EXTENSIONS for e in root.element.get("extension", ())):
        element = root.own()
        element["extension"] = [e for e in element["extension"] if e.get("url") not in _STATUS_EXTENSIONS]
        if not element["extension"]:
            del element["extension"]
    elements = flatten(root)

    seen: set[str] = set()
    for element in elements:
        if element["id"] in seen:
            problems.add(element["id"], "the snapshot would contain this id twice")
        seen.add(element["id"])
    problems.raise_if_any(url)

    result = clone(sd)
    result["snapshot"] = {"element": elements}
    return result
