"""_summary and _elements (R4 search.html#summary, #elements): subsets of a resource's top level.

A subsetted resource is marked with the SUBSETTED tag (R4 v3-ObservationValue) so nobody mistakes
it for the whole. The element lists come from summary_r4.json (build_summary.py).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _table() -> dict[str, dict[str, frozenset[str]]]:
    raw = json.loads(Path(__file__).with_name("summary_r4.json").read_text(encoding="utf-8"))["types"]
    return {t: {k: frozenset(v) for k, v in lists.items()} for t, lists in raw.items()}


def _element_of(key: str, names: frozenset[str]) -> bool:
    """Is JSON key `key` (or `_key`) one of `names`, choice elements `value[x]` included?"""
    key = key[1:] if key.startswith("_") else key
    if key in names:
        return True
    return any(n.endswith("[x]") and key.startswith(n[:-3]) and key[len(n) - 3 : len(n) - 2].isupper() for n in names)


def _mark(resource: dict) -> dict:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    resource["meta"] = meta
    return resource


def subset(resource: dict, summary: str | None, elements: tuple[str, ...]) -> dict:
    """The resource reduced as `_summary` / `_elements` ask; unchanged for none or `false`."""
    lists = _table().get(resource.get("resourceType", ""), {"summary": frozenset(), "mandatory": frozenset()})
    if summary == "true":
        keep = lists["summary"] | lists["mandatory"]
        return _mark({k: v for k, v in resource.items() if k in _ALWAYS or _element_of(k, keep)})
    if summary == "text":
        keep = lists["mandatory"] | {"text"}
        return _mark({k: v for k, v in resource.items() if k in _ALWAYS or _element_of(k, keep)})
    if summary == "data":
        return _mark({k: v for k, v in resource.items() if k != "text"})
    if elements:
        keep = lists["mandatory"] | frozenset(elements)
        return _mark({k: v for k, v in resource.items() if k in _ALWAYS or _element_of(k, keep)})
    return resource
