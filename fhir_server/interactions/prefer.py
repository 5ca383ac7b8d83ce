"""The Prefer header (RFC 7240) as FHIR uses it: return= (http.html#ops) and handling= (search.html#errors)."""

from __future__ import annotations

from dataclasses import dataclass

RETURN_MINIMAL = "minimal"
RETURN_REPRESENTATION = "representation"
RETURN_OUTCOME = "OperationOutcome"
_RETURNS = {RETURN_MINIMAL, RETURN_REPRESENTATION, RETURN_OUTCOME}


@dataclass(frozen=True, slots=True)
class Prefer:
    return_: str = RETURN_REPRESENTATION
    strict: bool = False


def parse_prefer(header: str | None) -> Prefer:
    """Unknown or malformed preferences are ignored, as RFC 7240 section 2 asks."""
    if not header:
        return Prefer()
    return_ = RETURN_REPRESENTATION
    strict = False
    for part in header.split(","):
        for token in part.split(";"):
            name, _, value = token.strip().partition("=")
            value = value.strip().strip('"')
            if name.strip().lower() == "return" and value in _RETURNS:
                return_ = value
            elif name.strip().lower() == "handling":
                strict = value.lower() == "strict"
    return Prefer(return_, strict)
