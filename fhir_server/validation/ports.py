"""What the validators need from outside themselves, as small protocols, so each can be built and
tested on its own: terminology (value set membership), StructureDefinitions by canonical url, and
resolution of references to stored resources.

- `Terminology` is implemented by fhir_server/validation/terminology/ (local expansion of the core,
  v2, v3 and the guide's value sets; no terminology server).
- `Definitions` is implemented by the guide loader (profiles/guide.py): core definitions plus the
  guide's own, every StructureDefinition with a snapshot.
- `ReferenceResolver` is supplied by the interaction that validates (it reads the store); None
  where no store is at hand (then target profiles of references are not checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Membership", "Terminology", "Definitions", "ReferenceResolver"]


@dataclass(frozen=True, slots=True)
class Membership:
    """The answer to "is this code in that value set?".

    status "unknown" is never a silent pass: the caller reports `reason` as an information
    issue (required/extensible bindings) and accepts the value (research/validation.md VAL-22).
    """

    status: Literal["member", "not-member", "unknown"]
    reason: str = ""


class Terminology(Protocol):
    def check(self, value_set: str, system: str | None, code: str) -> Membership:
        """Whether (system, code) is in the value set (canonical, optionally `url|version`).
        system None: a bare `code` element; then membership is by code alone."""

    def display(self, system: str, code: str) -> str | None:
        """The code system's display for a code, None when unknown (for display warnings)."""

    def code_in_system(self, system: str, code: str) -> bool | None:
        """Whether the code system defines the code; None when we do not hold the whole code system."""


class Definitions(Protocol):
    def structure_definition(self, url: str) -> dict | None:
        """The StructureDefinition (with snapshot) for a canonical (`url` or `url|version`), or None."""


class ReferenceResolver(Protocol):
    def __call__(self, reference: str) -> dict | None:
        """The resource a literal reference (`Patient/123`, absolute URL on this server) points
        at, or None when it cannot be resolved."""
