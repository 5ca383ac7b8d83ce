"""Finding the definitions a snapshot is built from.

Generation needs the base definition, the datatypes the differential walks into and the profiles
named in `type.profile` (SimpleQuantity, extension definitions). Each comes from the caller's
`resolve(canonical)`; one that has only a differential gets its snapshot generated first
(validation.md A2.2 step 1), guarded against cycles (TC ext-recursion-1). Trees are built once
per definition and generation.
"""

from __future__ import annotations

from typing import Callable

from .errors import SnapshotError
from .tree import Structure

__all__ = ["Resolve", "Definitions"]

Resolve = Callable[[str], "dict | None"]


class Definitions:
    def __init__(self, resolve: Resolve, generate: Callable[[dict, "Definitions"], dict]) -> None:
        self._resolve = resolve
        self._generate = generate
        self._with_snapshot: dict[str, dict | None] = {}
        self._structures: dict[str, Structure | None] = {}
        self.in_progress: list[str] = []

    def lookup(self, url: str) -> dict | None:
        """The StructureDefinition for a canonical, trying it without `|version` too."""
        found = self._resolve(url)
        if found is None and "|" in url:
            found = self._resolve(url.partition("|")[0])
        return found

    def with_snapshot(self, url: str) -> dict | None:
        """The definition with a snapshot, generating it when the definition has none."""
        if url in self._with_snapshot:
            return self._with_snapshot[url]
        sd = self.lookup(url)
        if sd is not None and not (sd.get("snapshot") or {}).get("element"):
            sd = self.generate(sd)
        self._with_snapshot[url] = sd
        return sd

    def generate(self, sd: dict) -> dict:
        key = sd.get("url") or sd.get("id") or "?"
        if key in self.in_progress:
            chain = " -> ".join([*self.in_progress, key])
            raise SnapshotError(f"circular definitions: {chain}", key)
        self.in_progress.append(key)
        try:
            return self._generate(sd, self)
        finally:
            self.in_progress.pop()

    def structure(self, url: str) -> Structure | None:
        """The snapshot tree of the definition at `url`, or None when it cannot be resolved."""
        if url not in self._structures:
            sd = self.with_snapshot(url)
            self._structures[url] = Structure(sd.get("url", url), sd["snapshot"]["element"]) if sd else None
        return self._structures[url]
