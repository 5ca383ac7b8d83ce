"""RFC 7009 token revocation. Revoking any token of an authorization revokes the whole grant: its
access tokens stop working at the resource server at once (the revocation feed) and its refresh
token is gone."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import InvalidGrantError
from authlib.oauth2.rfc7009 import RevocationEndpoint

from .token_lookup import TokenEndpointLookup
from .tokens import RevokedGrants


class SmartRevocationEndpoint(TokenEndpointLookup, RevocationEndpoint):
    revoked: RevokedGrants

    def authenticate_token(self, request, client):
        token = self.requested_token(request, client)
        if token is not None and not token.check_client(client):
            raise InvalidGrantError("The token was issued to another client")
        return token

    def revoke_token(self, token, request) -> None:
        self.records.revoke_grant(token.grant_id)
        self.revoked.add(token.grant_id)
