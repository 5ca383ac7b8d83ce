"""Reading the literal reference strings of R4 references.html#literal.

Forms and what we make of them (decisions noted where the spec leaves room):

- "Patient/123", "Patient/123/_history/2": type and id; the version is dropped (a reference
  search matches the resource, not one version; R4 search.html#reference).
- "http://host/fhir/Patient/123[/_history/2]": kept as `url` (without the version); type and id
  are filled from the last two segments when they look like Type/id with a known resource type.
  Turning references to this server's own base URL into relative ones is the API layer's job.
- "urn:uuid:...", "urn:oid:...": `url` only (transactions rewrite them before storage).
- "#id": a contained resource, not indexed (R4 search.html#contained).
- "Patient?identifier=x|y": a conditional reference (R4 http.html#trules) that should have been
  resolved by the transaction processing; indexed with its type and the literal as `url`.
- A canonical ("http://hl7.org/fhir/ValueSet/x|4.0.1"): `url` without the "|version"
  (R4 references.html#canonical); no type/id, because a canonical URL names a resource by its
  `url` element, not by its location.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["ParsedReference", "canonical_url", "parse_reference", "reference_type"]

_TYPE = r"[A-Z][A-Za-z]+"
_ID = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE = re.compile(rf"({_TYPE})/({_ID})(?:/_history/[^/]+)?")
_ABSOLUTE_TAIL = re.compile(rf"(.*/({_TYPE})/({_ID}))(?:/_history/[^/]+)?")
_CONDITIONAL = re.compile(rf"({_TYPE})\?.*", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ParsedReference:
    target_type: str | None
    target_id: str | None
    url: str | None


def _known_resource_types() -> frozenset[str]:
    from fhir_server.search.registry import resource_types  # late: the registry loads lazily

    return resource_types()


@lru_cache(maxsize=65_536)
def parse_reference(reference: str) -> ParsedReference | None:
    """The index form of a literal reference, or None for what is not indexed ("#contained", "")."""
    if not reference or reference.startswith("#"):
        return None
    match = _RELATIVE.fullmatch(reference)
    if match is not None:
        return ParsedReference(match.group(1), match.group(2), None)
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        return ParsedReference(None, None, reference)
    match = _CONDITIONAL.fullmatch(reference)
    if match is not None:
        return ParsedReference(match.group(1), None, reference)
    if "://" in reference:
        match = _ABSOLUTE_TAIL.fullmatch(reference)
        if match is not None and match.group(2) in _known_resource_types():
            return ParsedReference(match.group(2), match.group(3), match.group(1))
        return ParsedReference(None, None, reference)
    return ParsedReference(None, None, reference)


def reference_type(reference: object) -> str | None:
    """The resource type a Reference's literal reference names, as `resolve() is Type` needs it.

    This is the only "resolution" index extraction does: `X.where(resolve() is Patient)` keeps the
    references whose literal says Patient (relative, absolute or conditional). References with no
    literal (identifier only) or to contained resources resolve to nothing.
    """
    if not isinstance(reference, dict):
        return None
    literal = reference.get("reference")
    if not isinstance(literal, str):
        return None
    parsed = parse_reference(literal)
    return parsed.target_type if parsed is not None else None


def canonical_url(value: str) -> str:
    """A canonical without its "|version" suffix."""
    bar = value.find("|")
    return value if bar < 0 else value[:bar]
