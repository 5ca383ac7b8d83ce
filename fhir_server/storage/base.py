"""The Store protocol: what every storage backend offers the interaction layer.

A backend keeps every version of every resource as the JSON bytes it was stored as, so reads
serve those bytes without re-parsing or re-validating them. Writes happen inside a unit of work
(one backend transaction): the FHIR transaction Bundle, a single create and a conditional update
all use the same shape, so a backend that can commit several writes atomically (SQLite,
a MongoDB replica set) is all a caller needs.

Search plugs in as another read method taking a backend-neutral query (fhir_server/search), and
index rows are written by the backend inside the same unit of work as the version they index.

The transactional outbox lives here too (DESIGN.md, "outbox/"): whatever must happen because of a
change is enqueued as an OutboxJob by the unit of work that makes the change, in the same backend
transaction, and the store leases due jobs to the worker (fhir_server/outbox) afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import (
    TYPE_CHECKING, AsyncContextManager, Callable, Collection, Iterable, Literal, Protocol, runtime_checkable,
)

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
    exclude_types: tuple[str, ...] = ()  # system history without these types (the audit trail)


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


JobState = Literal["pending", "leased", "done", "dead"]
PENDING: JobState = "pending"  # waiting for available_at
LEASED: JobState = "leased"  # a worker holds it until leased_until (then anyone may claim it again)
DONE: JobState = "done"  # its handler succeeded; kept, so the (kind, key) stays taken
DEAD: JobState = "dead"  # given up on (Permanent, or too many attempts): waits for requeue_job
JOB_STATES: tuple[JobState, ...] = (PENDING, LEASED, DONE, DEAD)

MAX_ERROR_CHARS = 500
"""last_error is cut to this length by the store. It describes what went wrong (an error class, a
gateway status code), never patient data: the worker records what the handler says, not payloads."""


@dataclass(frozen=True, slots=True)
class OutboxJob:
    """A durable job, committed with the change that caused it (the transactional outbox).

    `key` is unique per `kind` (the idempotency key, e.g. a SCRIPT MessageID): enqueueing it again
    returns the job already there, so a change retried by its client cannot enqueue twice. Delivery is
    at least once: a handler must tolerate running again for the same job (its lease can expire
    while it runs), which is what the key is for at the receiving end.
    """

    id: str
    kind: str  # what to do, e.g. "erx.send"; the worker picks the handler by it
    key: str  # unique per kind: the idempotency key
    payload: dict = field(repr=False)  # what the handler needs (may hold patient data: never logged, not in repr)
    state: JobState
    attempts: int  # claims so far (the running attempt's number while leased)
    available_at: datetime  # not claimed before this (retries back off by moving it)
    leased_until: datetime | None  # while leased: when the lease expires and the job is claimable again
    last_error: str | None  # the last failure, short and free of patient data
    created_at: datetime
    updated_at: datetime
    lease_token: str | None = None  # while leased: proves the holder (complete/retry/dead-letter need it)


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

    async def append_chained(
        self, resource_type: str, build: Callable[[bytes | None], list[tuple[str, dict]]]
    ) -> None:
        """Create new resources of one type as `build` makes them from the stored body of the
        latest version of that type (None when there is none): (id, resource) pairs, created as
        write(..., method="POST", must_not_exist=True) would. The latest version is read and the new
        ones written in one step under the write lock, so what `build` chains to is what precedes it
        in the store (the audit trail's hash chain, fhir_server/audit/chain.py); on SQLite `build`
        runs on the writer thread, with no other request's work in between."""

    async def enqueue(
        self, kind: str, key: str, payload: dict, *, available_at: datetime | None = None
    ) -> OutboxJob:
        """Add a job to the outbox in this unit of work's transaction: it exists once the unit of
        work commits, and never if it rolls back. When (kind, key) is already taken (by a job of
        any state, or earlier in this unit of work) nothing is written and that job is returned.
        `available_at` (default: now) delays the first attempt."""

    async def job_range(
        self, kind: str, key_from: str, key_to: str, *, limit: int = 100, descending: bool = False
    ) -> list[OutboxJob]:
        """As Outbox.job_range, seeing the jobs this unit of work enqueued."""


class Outbox(Protocol):
    """The store's side of the outbox: leasing due jobs to workers and recording what happened.

    Every state change after a claim names the lease it was made under (`lease_token`): a worker
    whose lease expired and whose job another worker has since claimed changes nothing (the call
    returns False). `now` parameters default to the wall clock (tests pass a fake one)."""

    async def claim_jobs(
        self, kinds: Collection[str], *, limit: int, lease_seconds: float, now: datetime | None = None
    ) -> list[OutboxJob]:
        """Atomically lease up to `limit` due jobs of these kinds, oldest due first: pending with
        available_at <= now, or leased with leased_until <= now (their worker died or hung). Each
        gets a new lease_token, leased_until = now + lease_seconds, and attempts + 1. No job is
        ever held by two unexpired leases."""

    async def complete_job(self, job_id: str, *, lease_token: str, now: datetime | None = None) -> bool:
        """leased -> done, if `lease_token` still holds the job."""

    async def retry_job(
        self, job_id: str, *, lease_token: str, available_at: datetime, error: str, now: datetime | None = None
    ) -> bool:
        """leased -> pending until `available_at`, recording `error`, if `lease_token` still holds the job."""

    async def dead_letter_job(
        self, job_id: str, *, lease_token: str, error: str, now: datetime | None = None
    ) -> bool:
        """leased -> dead, recording `error`, if `lease_token` still holds the job."""

    async def requeue_job(self, job_id: str, *, now: datetime | None = None) -> OutboxJob | None:
        """dead -> pending, due now, attempts back to 0 (an operator's retry). None when the job
        does not exist or is not dead."""

    async def get_job(self, job_id: str) -> OutboxJob | None: ...

    async def jobs(
        self, kind: str | None = None, states: Collection[str] | None = None, limit: int = 100
    ) -> list[OutboxJob]:
        """Jobs of that kind and those states (any when None), newest first."""

    # Keyed groups (the subscription event log): a job's group is its key up to the first
    # `separator` ("sub-1:" of "sub-1:000000000007"); keys without the separator belong to none.

    async def job_range(
        self, kind: str, key_from: str, key_to: str, *, limit: int = 100, descending: bool = False
    ) -> list[OutboxJob]:
        """Jobs of `kind` with key_from <= key <= key_to in key order (descending: highest first),
        at most `limit`: an indexed range of the (kind, key) unique index."""

    async def claim_jobs_in_order(
        self, kinds: Collection[str], *, limit: int, lease_seconds: float, separator: str,
        now: datetime | None = None,
    ) -> list[OutboxJob]:
        """As claim_jobs, but a pending job of a group is due only once the job with the next lower
        key of its group is done or dead (or gone): each group runs one job at a time, in key order."""

    async def purge_jobs(
        self, kind: str, *, updated_before: datetime, states: Collection[str] = ("done", "dead"),
        keep_last_of_group: str | None = None, limit: int = 1000,
    ) -> int:
        """Delete up to `limit` jobs of `kind` in `states` last changed before `updated_before`
        (their keys become free again); with `keep_last_of_group` (a separator), the highest key
        of each group is kept. The number deleted."""


class Store(ResourceReader, Outbox, Protocol):
    async def open(self) -> None: ...

    async def purge_before(self, resource_type: str, before: datetime) -> int:
        """Remove for good every version of every resource of this type last changed before
        `before`, with its index entries; returns how many versions went. Only the audit trail's
        retention uses it (`audit purge`): everything else keeps every version."""

    async def close(self) -> None: ...

    def unit_of_work(self) -> AsyncContextManager[UnitOfWork]: ...
