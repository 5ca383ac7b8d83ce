"""Errors of snapshot generation.

A differential is checked as a whole: every problem found is collected with the id of the element
it concerns, and one `SnapshotError` lists them all, so a profile author fixes a differential in
one pass instead of one error at a time.
"""

from __future__ import annotations

__all__ = ["SnapshotError", "Problems"]


class SnapshotError(ValueError):
    """A StructureDefinition whose snapshot cannot be generated: its differential breaks a rule of
    R4 profiling.html (unknown element, cardinality widened, mustSupport removed, ...), or a
    definition it needs cannot be resolved. `messages` names the element id in each entry."""

    def __init__(self, messages: list[str] | str, url: str | None = None) -> None:
        self.messages: list[str] = [messages] if isinstance(messages, str) else list(messages)
        self.url = url
        where = f"{url}: " if url else ""
        super().__init__(where + "; ".join(self.messages))


class Problems:
    """The problems found while generating one snapshot, in the order found."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, element_id: str, message: str) -> None:
        self.messages.append(f"{element_id}: {message}")

    def __bool__(self) -> bool:
        return bool(self.messages)

    def raise_if_any(self, url: str | None) -> None:
        if self.messages:
            raise SnapshotError(self.messages, url)
