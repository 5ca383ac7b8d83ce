"""Who is calling: the Principal an access token becomes (DESIGN.md "Data flow of one request").

The resource server never looks at a token again once it has a Principal: access.py decides every
FHIR interaction from it alone.
"""

from __future__ import annotations

from contextvars import ContextVar

from dataclasses import dataclass, field

from .scopes import ResourceScope, ScopeSet


class InvalidToken(Exception):
    """The bearer token is missing, malformed, forged, expired, revoked or for another audience."""


@dataclass(frozen=True)
class Principal:
    client_id: str
    subject: str  # the user's id (username) for user launches, the client id for backend services
    scopes: ScopeSet = field(default_factory=ScopeSet)
    patient: str | None = None  # the launch patient's id: patient/ scopes are confined to its compartment
    encounter: str | None = None
    fhir_user: str | None = None  # "Practitioner/123" or "Patient/456"
    grant_id: str | None = None
    expires_at: int | None = None
    unrestricted: bool = False  # --no-auth: local experiments only

    @classmethod
    def anonymous_superuser(cls) -> "Principal":
        """The principal of every request when the server runs with --no-auth."""
        return cls(client_id="no-auth", subject="no-auth", unrestricted=True)

    def granting(self, resource_type: str, permission: str) -> list[ResourceScope]:
        return self.scopes.granting(resource_type, permission)


# The principal of the request being served, set by the API layer once the token is checked
# (fhir_server/api/authorization.py): write hooks that must know who acts (a clinician claiming a
# visit for themselves) read it here instead of every interaction passing it down. Each request
# runs in its own context, so one request never sees another's.
acting: ContextVar["Principal | None"] = ContextVar("acting_principal", default=None)
