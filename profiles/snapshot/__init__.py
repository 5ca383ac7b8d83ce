"""Snapshot generation for StructureDefinitions (R4 profiling.html "Differential vs Snapshot").

The implementation guide's profiles are written as differentials only; the server generates their
snapshots at start with `generate_snapshot`, from their base definitions' snapshots.

    from profiles.snapshot import generate_snapshot, SnapshotError
    sd_with_snapshot = generate_snapshot(sd, resolve)   # resolve(canonical) -> dict | None

Modules, one job each: `ids` (element ids), `tree` (snapshots as trees and back),
`differential` (the differential as a tree, in base order), `merge` (one differential element
into one element), `slicing` (slicing entries and slice rules), `typeinfo` (choice types, value
types, type derivation), `resolution` (finding definitions, recursively generating missing
snapshots), `walk` (base and differential side by side), `generator` (the entry point).
"""

from .errors import SnapshotError
from .generator import generate_snapshot

__all__ = ["generate_snapshot", "SnapshotError"]
