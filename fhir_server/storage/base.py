"""The Store protocol: what every storage backend offers the interaction layer.

A backend keeps every version of every resource as the JSON bytes it was stored as, so reads
serve those bytes without re-parsing or re-validating them. Writes happen inside a unit of work
(one backend transaction): the FHIR transaction Bundle, a single create and a conditional update
all use the same shape, so a backend that can commit several writes atomically (SQLite,
a MongoDB replica set) is all a caller needs.

Search plugs in as another read method taking a backend-neutral query (fhir_server/search), and
index rows are written by the backend inside the same unit of work as the version they index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, AsyncContextManager, Callable, Iterable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..search.query import SearchQuery


Indexer = Callable[[dict], Iterable]
"""resource -> its search index entries (fhir_server.search.extract.extract_index); a backend
computes them on every write, inside the unit of work that stores the version."""


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of one resource as the store holds it."""

    resource_type: str
    id: str
    version: int
    last_updated: datetime  # timezone-aware UTC, the version's meta.lastUpdated
    method: str  # the HTTP verb that made this version: POST, PUT, PATCH or DELETE
    body: bytes | None  # the stored JSON bytes; None for a deletion marker
    seq: int = 0  # position in the store's global change order (history paging)

    @property
    def deleted(self) -> bool:
        return self.body is None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """History at system (type and id None), type (id None) or instance level."""

    resource_type: str | None = None
    id: str | None = None
    since: datetime | None = None  # only versions with lastUpdated >= since
    at_or_before_seq: int | None = None  # paging cursor: start from this change, going back
    count: int = 50


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[StoredVersion]  # newest first, as R4 http.html#history requires
    total: int | None  # versions matching the query (all pages); None when not known (a filtered history)
    next_seq: int | None  # cursor for the next (older) page, or None on the last page


@dataclass(frozen=True, slots=True)
class SearchPage:
    matches: list[StoredVersion]  # in the requested order
    included: list[StoredVersion]  # _include / _revinclude results, each once, none of them a match
    total: int | None  # when asked (_total) or known for free (a first page that holds everything)
    next_cursor: tuple | None  # ("after", [sort values..., rid]) for the next page, None on the last
    previous_cursor: tuple | None  # ("before", [...]) for the previous page, None on the first


@runtime_checkable
class ResourceReader(Protocol):
    """Reads shared by the store (committed data) and a unit of work (its own view)."""

    async def read(self, resource_type: str, id: str) -> StoredVersion | None:
        """The current version, a deletion marker (body None) if deleted, None if never existed."""

    async def vread(self, resource_type: str, id: str, version: int) -> StoredVersion | None: ...

    async def history(self, query: HistoryQuery) -> HistoryPage: ...

    async def search(self, query: "SearchQuery") -> SearchPage:
        """One page of the resources matching a backend-neutral query (fhir_server/search/query.py)."""


class UnitOfWork(ResourceReader, Protocol):
    """Writes that commit together when the context exits cleanly, and vanish when it raises."""

    async def write(
        self,
        resource_type: str,
        id: str,
        resource: dict,
        *,
        method: str,
        expected_version: int | None = None,
        must_not_exist: bool = False,
    ) -> StoredVersion:
        """Store `resource` as the next version of Type/id and return it.

        The store sets `id`, `meta.versionId` and `meta.lastUpdated` (the resource dict is not
        modified). With `expected_version`, raises VersionConflict unless that is the current
        version (If-Match). With `must_not_exist`, raises ResourceExists if Type/id has any version.
        """

    async def delete(
        self, resource_type: str, id: str, *, expected_version: int | None = None
    ) -> StoredVersion | None:
        """Record a deletion; return the marker, or None when there was nothing live to delete."""


class Store(ResourceReader, Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def unit_of_work(self) -> AsyncContextManager[UnitOfWork]: ...
