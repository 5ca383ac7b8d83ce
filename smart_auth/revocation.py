"""RFC 7009 token revocation. Revoking any token of an authorization revokes the whole grant: its
access tokens stop working at the resource server at once (the revocation feed) and its refresh
token is gone."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import InvalidGrantError
from authlib.oauth2.rfc7009 import RevocationEndpoint

from .clients import PRIVATE_KEY_JWT
from .store.records import AuthRecords
from .token_lookup import find_token
from .tokens import RevokedGrants, TokenService


class SmartRevocationEndpoint(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT, "none"]

    records: AuthRecords
    tokens: TokenService
    revoked: RevokedGrants

    def authenticate_token(self, request, client):
        # authlib's query_token gets no request, and the issuer is per request: look up here.
        self.check_params(request, client)
        token = find_token(self.records, self.tokens, request.form["token"], request.form.get("token_type_hint"),
                           issuer=request.issuer)
        if token is not None and not token.check_client(client):
            raise InvalidGrantError("The token was issued to another client")
        return token

    def revoke_token(self, token, request) -> None:
        self.records.revoke_grant(token.grant_id)
        self.revoked.add(token.grant_id)
