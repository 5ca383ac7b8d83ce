"""Keyset paging shared by the backends: which cursors and which total a search page gets.

A backend fetches count + 1 rows in page order (reversed for a "before" cursor, then put back), so
`more` says whether a row lies beyond the page in the direction it was read.
"""

from __future__ import annotations

from ..search.query import SearchQuery


def reads_backwards(q: SearchQuery) -> bool:
    return bool(q.cursor and q.cursor[0] == "before")


def page_cursors(q: SearchQuery, positions: list[list], more: bool) -> tuple[tuple | None, tuple | None]:
    """(next, previous) cursors from the page's keyset positions (sort values..., rid)."""
    backwards = reads_backwards(q)
    has_next = more if not backwards else q.cursor is not None
    has_previous = (q.cursor is not None) if not backwards else more
    next_cursor = ("after", positions[-1]) if has_next and positions else None
    previous_cursor = ("before", positions[0]) if has_previous and positions else None
    return next_cursor, previous_cursor


def counts_total(q: SearchQuery) -> bool:
    """Whether the client asked for the total (_total, _summary=count, or _count=0: no entries,
    only how many there are, which is how fhirpy's count() asks)."""
    return q.total in ("accurate", "estimate") or q.summary == "count" or q.count == 0


def free_total(q: SearchQuery, more: bool, matches: int) -> int | None:
    """The total when it costs nothing: a first page that holds every match."""
    return matches if q.cursor is None and not more else None
