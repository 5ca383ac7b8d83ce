"""Security events of the authorization server, told to whoever keeps the audit trail.

Sign-ins (success and failure), sign-outs, consent decisions, tokens issued, refreshed and
refused, revocations: the routes report a SecurityEvent and the application decides what to keep
(fhir_server/audit/security.py turns them into AuditEvents). The sink is `app.state.security_events`;
without one, nothing is reported. Events carry names and ids, never passwords or tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from starlette.requests import Request

LOGIN = "login"
LOGOUT = "logout"
CONSENT = "consent"
TOKEN = "token"
REVOCATION = "revocation"


@dataclass(frozen=True)
class SecurityEvent:
    kind: str  # one of the constants above
    success: bool
    client_id: str | None = None
    username: str | None = None
    fhir_user: str | None = None
    grant_id: str | None = None
    detail: str | None = None  # a grant type, an OAuth error code, "allow"/"deny": never a secret
    address: str | None = None


SecuritySink = Callable[[SecurityEvent], None]


def report(request: Request, kind: str, success: bool, **fields: str | None) -> None:
    sink: SecuritySink | None = getattr(request.app.state, "security_events", None)
    if sink is not None:
        sink(SecurityEvent(kind, success, address=request.client.host if request.client else None, **fields))
