"""ValueSet and CodeSystem resources by canonical url and version: the core definitions
(profiles/definitions: FHIR R4 core, HL7 v3, HL7 v2) plus the guide's own, which take precedence.

Version resolution of `url|version` (R4 references.html "Canonical URLs"):
1. a held resource whose `version` is exactly the one asked for (the guide's first);
2. a guide resource that states no version (nothing contradicts the reference);
3. `|4.0.1` on a core resource: everything in the core package was published as part of FHIR
   4.0.1, and the R4 StructureDefinitions bind e.g. v3 value sets (own version 2018-08-12) as
   `...|4.0.1`;
otherwise the value set is reported as not known, naming the versions that are held.

The core dicts are read lazily (first use, not construction) and never copied or mutated.
"""

from __future__ import annotations

from collections.abc import Iterable

from profiles.definitions import code_systems as core_code_systems
from profiles.definitions import value_sets as core_value_sets

__all__ = ["TerminologyResources", "split_canonical"]

CORE_VERSION = "4.0.1"


def split_canonical(canonical: str) -> tuple[str, str | None]:
    url, _, version = canonical.partition("|")
    return url, version or None


class TerminologyResources:
    def __init__(self, extra: Iterable[dict] = ()) -> None:
        self._extra: dict[str, dict[str, list[dict]]] = {"ValueSet": {}, "CodeSystem": {}}
        for resource in extra:
            kind, url = resource.get("resourceType"), resource.get("url")
            if kind in self._extra and url:
                self._extra[kind].setdefault(url, []).append(resource)

    def value_set(self, canonical: str) -> tuple[dict | None, str]:
        """The ValueSet for `url` or `url|version`, or None and the reason."""
        return self._resolve("ValueSet", canonical, core_value_sets())

    def code_system(self, canonical: str) -> dict | None:
        return self._resolve("CodeSystem", canonical, core_code_systems())[0]

    def _resolve(self, kind: str, canonical: str, core: dict[str, dict]) -> tuple[dict | None, str]:
        if "|" in canonical and canonical in core:
            # the v2 file holds a few table versions under urls like ".../v2-0006|2.4"
            return core[canonical], ""
        url, version = split_canonical(canonical)
        extra = self._extra[kind].get(url, [])
        core_resource = core.get(url)
        candidates = [*extra, *([core_resource] if core_resource else [])]
        label = "value set" if kind == "ValueSet" else "code system"
        if not candidates:
            return None, f"{label} {url} is not known to this server"
        if version is None:
            return candidates[0], ""
        for resource in candidates:
            if resource.get("version") == version:
                return resource, ""
        for resource in extra:
            if not resource.get("version"):
                return resource, ""
        if version == CORE_VERSION and core_resource is not None:
            return core_resource, ""
        held = ", ".join(sorted({str(r.get("version")) for r in candidates}))
        return None, f"{label} {url} version {version} is not known to this server (held: {held})"
