"""Copy the FHIR R4 (4.0.1) conformance definitions the guide and the validator need into this
package, compacted, so the server and the tests run without the shared definitions folder.

    python -m profiles.definitions.build [--definitions DIR]

Writes one gzipped JSON array per source file (see FILES). Narratives (`text`) and the
`mapping` sections of StructureDefinitions and their elements are dropped: nothing here reads
them, and they are two thirds of the bytes. Everything else is copied as published, so the
snapshot generator and the validator work from the official definitions. The script is the
source of truth; its output is committed.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

DEFAULT_DEFINITIONS = Path(__file__).resolve().parents[3] / "shared" / "fhir-r4"
OUTPUT_DIR = Path(__file__).parent

# output name -> source file in the definitions folder
FILES = {
    "resources": "profiles-resources.json",  # StructureDefinitions of the resources (+ their OperationDefinitions ...)
    "types": "profiles-types.json",  # StructureDefinitions of the datatypes
    "others": "profiles-others.json",  # the 44 core constraint profiles (vitalsigns, bp, ...), differential + snapshot
    "extensions": "extension-definitions.json",  # the 393 core extension definitions
    "valuesets": "valuesets.json",  # core ValueSets and CodeSystems
    "v2": "v2-tables.json",  # HL7 v2 tables as CodeSystems and ValueSets
    "v3": "v3-codesystems.json",  # HL7 v3 CodeSystems and ValueSets
    "us-core": "uscore-v5.0.1-structuredefinitions.json",  # 8 US Core 5.0.1 StructureDefinitions (snapshots)
}

_KEEP_TYPES = {"StructureDefinition", "ValueSet", "CodeSystem"}


def _resources(document: Any) -> list[dict]:
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        return [entry["resource"] for entry in document.get("entry", [])]
    return list(document)


def _compact(resource: dict) -> dict:
    out = {k: v for k, v in resource.items() if k not in ("text", "mapping")}
    for part in ("snapshot", "differential"):
        if part in out:
            out[part] = {
                **out[part],
                "element": [{k: v for k, v in e.items() if k != "mapping"} for e in out[part]["element"]],
            }
    return out


def build(definitions: Path) -> dict[str, int]:
    counts = {}
    for name, source in FILES.items():
        resources = [
            _compact(r)
            for r in _resources(json.loads((definitions / source).read_text()))
            if r.get("resourceType") in _KEEP_TYPES
        ]
        data = json.dumps(resources, separators=(",", ":"), sort_keys=True).encode()
        # mtime=0: the same input gives the same bytes, so a rebuild shows no spurious diff
        (OUTPUT_DIR / f"{name}.json.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        counts[name] = len(resources)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--definitions", type=Path, default=DEFAULT_DEFINITIONS)
    args = parser.parse_args(argv)
    for name, count in build(args.definitions).items():
        print(f"{name}: {count} resources")


if __name__ == "__main__":
    main()
