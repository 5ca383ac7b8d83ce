"""What every grant shares: tokens come from smart_auth.issuance, not authlib's generator."""

from __future__ import annotations

from ..issuance import TokenIssuer
from ..store.records import Grant


class SmartTokenMixin:
    issuer: TokenIssuer  # set on the subclass the server registers

    def generate_token(self, user: Grant | None = None, scope: str | None = None, grant_type=None,
                       expires_in=None, include_refresh_token=True) -> dict:
        request = self.request
        if user is None:  # client_credentials: no user, a grant per token
            grant = self.issuer.backend_grant(request.client.client_id, scope or "")
            return self.issuer.issue(issuer=request.issuer, grant=grant, scope=scope or "", backend=True)
        return self.issuer.issue(issuer=request.issuer, grant=user, scope=scope or user.scope)
