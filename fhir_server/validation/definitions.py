"""StructureDefinitions by canonical url: the core R4 set plus the guide's own (ports.Definitions).

The profile validator looks every definition up here: the resource and datatype definitions it
walks, the profiles named in `meta.profile`, `type.profile` and `targetProfile`, and extension
definitions by `Extension.url`. Canonicals may carry a version (`url|version`, R4
references.html#canonical); a versioned lookup only succeeds when the stored definition has that
version, so a claim of a version we do not hold is reported as unknown rather than checked against
another version (validation.md VAL-70).

Extra definitions (the implementation guide's, already with snapshots, VAL-71) take precedence
over core ones with the same url. Nothing here is copied: callers must not mutate what they get.
"""

from __future__ import annotations

from collections.abc import Iterable

from profiles.definitions import structure_definitions

__all__ = ["DefinitionIndex", "CORE_PREFIX", "split_canonical"]

CORE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"


def split_canonical(canonical: str) -> tuple[str, str | None]:
    """`url|version` -> (url, version); a fragment (`#x`) is not part of a StructureDefinition url."""
    url, _, version = canonical.partition("|")
    return url, (version or None)


class DefinitionIndex:
    """Implements ports.Definitions over the core definitions and `extra` StructureDefinitions."""

    def __init__(self, extra: Iterable[dict] = ()) -> None:
        self._core = structure_definitions()
        self._extra: dict[str, dict] = {}
        self._extra_versions: dict[tuple[str, str], dict] = {}
        for sd in extra:
            if sd.get("resourceType") != "StructureDefinition" or not sd.get("url"):
                continue
            self._extra[sd["url"]] = sd  # the last one given wins (a guide reloaded in place)
            if sd.get("version"):
                self._extra_versions[(sd["url"], sd["version"])] = sd

    def structure_definition(self, url: str) -> dict | None:
        base, version = split_canonical(url)
        if version is not None:
            found = self._extra_versions.get((base, version))
            if found is not None:
                return found
            sd = self._extra.get(base) or self._core.get(base)
            return sd if sd is not None and sd.get("version") == version else None
        return self._extra.get(base) or self._core.get(base)

    def urls(self) -> list[str]:
        """Every url held (core and extra), for listings and tests."""
        return sorted({*self._core, *self._extra})
