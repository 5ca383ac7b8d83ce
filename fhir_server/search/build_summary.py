"""Generate summary_r4.json: per resource type, the top-level elements `_summary=true` keeps
(ElementDefinition.isSummary) and those every subset must keep (min >= 1), from the official R4
StructureDefinitions. Run: python -m fhir_server.search.build_summary [--definitions DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUTPUT = Path(__file__).with_name("summary_r4.json")
DEFAULT_DEFINITIONS = Path(__file__).resolve().parents[3] / "shared" / "fhir-r4"


def build(definitions: Path) -> dict:
    bundle = json.loads((definitions / "profiles-resources.json").read_text(encoding="utf-8"))
    types: dict[str, dict[str, list[str]]] = {}
    for entry in bundle["entry"]:
        sd = entry["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource" or sd.get("abstract"):
            continue
        summary, mandatory = [], []
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            if path.count(".") != 1:
                continue
            name = path.split(".", 1)[1]
            if element.get("isSummary"):
                summary.append(name)
            if element.get("min", 0) > 0:
                mandatory.append(name)
        types[sd["type"]] = {"summary": summary, "mandatory": mandatory}
    return {"generated": "by fhir_server/search/build_summary.py from profiles-resources.json (R4 4.0.1); do not edit",
            "types": dict(sorted(types.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--definitions", type=Path, default=DEFAULT_DEFINITIONS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    args.output.write_text(json.dumps(build(args.definitions), indent=1, sort_keys=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
