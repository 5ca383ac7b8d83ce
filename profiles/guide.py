"""The project's implementation guide, loaded from the files in this folder: StructureDefinitions
(differentials; snapshots generated here with profiles/snapshot), ValueSets, CodeSystems, the
intake Questionnaires, and the one ImplementationGuide resource, whose `definition.resource` list
is filled from the files so it cannot drift from them.

    guide = load_guide()          # once per process (cached)
    guide.resources               # every conformance resource, ready to serve
    guide.structure_definition(url)

The server seeds these into its store at start (read-only there) and validates against them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import definitions
from .canonical import CANONICAL_BASE
from .snapshot import generate_snapshot

__all__ = ["Guide", "GuideError", "load_guide", "GUIDE_DIR", "IG_URL"]

GUIDE_DIR = Path(__file__).parent
IG_URL = f"{CANONICAL_BASE}/ImplementationGuide/async-telehealth"

# folder -> the resource type every file in it must hold
_FOLDERS = {
    "structuredefinitions": "StructureDefinition",
    "valuesets": "ValueSet",
    "codesystems": "CodeSystem",
    "questionnaires": "Questionnaire",
    "operations": "OperationDefinition",
}


class GuideError(Exception):
    """A guide file is malformed, or a StructureDefinition's snapshot cannot be generated."""


@dataclass(frozen=True)
class Guide:
    resources: tuple[dict, ...]  # every resource, the ImplementationGuide last
    by_url: dict[str, dict] = field(repr=False)  # canonical url (and url|version) -> resource

    def of_type(self, resource_type: str) -> list[dict]:
        return [r for r in self.resources if r["resourceType"] == resource_type]

    def structure_definition(self, url: str) -> dict | None:
        found = self.by_url.get(url)
        return found if found is not None and found["resourceType"] == "StructureDefinition" else None

    def questionnaire(self, canonical: str) -> dict | None:
        found = self.by_url.get(canonical)
        return found if found is not None and found["resourceType"] == "Questionnaire" else None

    def profiles_by_type(self) -> dict[str, list[str]]:
        """Resource type -> the guide's resource profiles on it (CapabilityStatement.supportedProfile)."""
        out: dict[str, list[str]] = {}
        for sd in self.of_type("StructureDefinition"):
            if sd.get("kind") == "resource" and sd.get("derivation") == "constraint":
                out.setdefault(sd["type"], []).append(sd["url"])
        return {t: sorted(urls) for t, urls in sorted(out.items())}

    def keys(self) -> set[tuple[str, str]]:
        """(resource type, id) of every guide resource: these are read-only in the store."""
        return {(r["resourceType"], r["id"]) for r in self.resources}


def _read_folder(directory: Path, resource_type: str) -> list[dict]:
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            resource = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise GuideError(f"{path.name}: not JSON ({err})") from None
        if resource.get("resourceType") != resource_type or not resource.get("id") or not resource.get("url"):
            raise GuideError(f"{path.name}: expected a {resource_type} with an id and a url")
        out.append(resource)
    return out


def _with_snapshots(sds: list[dict]) -> list[dict]:
    """Generate every snapshot from its differential; a guide SD may build on another guide SD."""
    ours = {sd["url"]: sd for sd in sds}
    core = definitions.structure_definitions()
    done: dict[str, dict] = {}

    def resolve(url: str) -> dict | None:
        url = url.split("|")[0]
        if url in done:
            return done[url]
        if url in ours:
            return ours[url]  # differential only: the generator generates it first
        return core.get(url)

    for sd in sds:
        if "snapshot" in sd:
            raise GuideError(f"{sd['id']}: guide StructureDefinitions carry a differential only")
        try:
            done[sd["url"]] = generate_snapshot(sd, resolve)
        except Exception as err:  # SnapshotError, or a generator defect: name the profile either way
            raise GuideError(f"{sd['id']}: snapshot generation failed: {err}") from err
    return [done[sd["url"]] for sd in sds]


def _implementation_guide(directory: Path, resources: list[dict]) -> dict:
    ig = json.loads((directory / "implementationguide.json").read_text())
    entries = []
    for r in resources:
        entry: dict = {"reference": {"reference": f"{r['resourceType']}/{r['id']}"}, "name": r.get("title") or r.get("name") or r["id"]}
        if r.get("description"):
            entry["description"] = r["description"]
        entry["exampleBoolean"] = False
        entries.append(entry)
    ig.setdefault("definition", {})["resource"] = entries
    return ig


@lru_cache(maxsize=None)
def load_guide(directory: Path = GUIDE_DIR) -> Guide:
    resources: list[dict] = []
    for folder, resource_type in _FOLDERS.items():
        found = _read_folder(directory / folder, resource_type) if (directory / folder).is_dir() else []
        resources.extend(_with_snapshots(found) if resource_type == "StructureDefinition" else found)
    seen: set[tuple[str, str]] = set()
    for r in resources:
        key = (r["resourceType"], r["id"])
        if key in seen:
            raise GuideError(f"two guide resources are {key[0]}/{key[1]}")
        seen.add(key)
    resources.append(_implementation_guide(directory, resources))
    by_url: dict[str, dict] = {}
    for r in resources:
        by_url[r["url"]] = r
        if r.get("version"):
            by_url[f"{r['url']}|{r['version']}"] = r
    return Guide(tuple(resources), by_url)
