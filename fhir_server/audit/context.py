"""What one request did, as the audit trail needs to know it (filled in along the request's way).

The audit middleware (audit/middleware.py) opens a RequestAudit for every HTTP request and keeps
it in a context variable; the layers below add to it without knowing the audit trail: the API's
authorization step names the Principal, the response builders name the resources they return, and
the auditing store (audit/store.py) counts the AuditEvents it committed with the request's writes.
Each request runs in its own context, so one request never sees another's.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from smart_auth.principal import Principal

    from ..storage import StoredVersion


@dataclass
class RequestAudit:
    request_id: str
    method: str
    address: str | None  # the client's network address
    principal: "Principal | None" = None
    returned: list["StoredVersion"] = field(default_factory=list)  # resources the response carries
    total: int | None = None  # a search's total, when known
    committed_events: int = 0  # AuditEvents committed with this request's writes (audit/store.py)
    interaction: str | None = None  # when the route's code is not enough: "batch" for a batch Bundle
    query: str | None = None  # the search asked, when its parameters were not all in the URL (POST _search)


current: ContextVar[RequestAudit | None] = ContextVar("request_audit", default=None)


def note_principal(principal: "Principal") -> None:
    audit = current.get()
    if audit is not None:
        audit.principal = principal


def note_interaction(interaction: str) -> None:
    audit = current.get()
    if audit is not None:
        audit.interaction = interaction


def note_search(method: str, path: str, params: Iterable[tuple[str, str]]) -> None:
    """The search asked, with every parameter (a POST _search has some in its body)."""
    audit = current.get()
    if audit is not None:
        from urllib.parse import urlencode

        pairs = list(params)
        audit.query = f"{method} {path}" + (f"?{urlencode(pairs)}" if pairs else "")


def note_returned(versions: Iterable["StoredVersion"], *, total: int | None = None) -> None:
    """The response carries these versions (read, vread, search matches and includes, history)."""
    audit = current.get()
    if audit is not None:
        audit.returned.extend(versions)
        if total is not None:
            audit.total = total
