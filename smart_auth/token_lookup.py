"""Find what a token string is, for introspection and revocation: one of our access tokens (a JWT
whose signature, issuer and expiry hold) or a live refresh token (looked up by its hash)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .principal import InvalidToken
from .store.records import AuthRecords, Grant, REFRESH, token_hash
from .tokens import TokenService


@dataclass
class AccessTokenInfo:
    claims: dict

    @property
    def client_id(self) -> str:
        return self.claims["client_id"]

    @property
    def grant_id(self) -> str:
        return self.claims["grant"]

    def check_client(self, client) -> bool:
        return client.client_id == self.client_id

    def is_expired(self) -> bool:
        return self.claims["exp"] <= time.time()

    def is_revoked(self) -> bool:
        return False  # TokenService.claims refused a revoked one already


@dataclass
class RefreshTokenInfo:
    client_id: str
    grant: Grant
    scope: str
    expires_at: float

    @property
    def grant_id(self) -> str:
        return self.grant.id

    def check_client(self, client) -> bool:
        return client.client_id == self.client_id

    def is_expired(self) -> bool:
        return self.expires_at <= time.time()

    def is_revoked(self) -> bool:
        return False  # a revoked grant's refresh tokens are not found


def find_token(records: AuthRecords, tokens: TokenService, token: str, hint: str | None, *, issuer: str):
    def access() -> AccessTokenInfo | None:
        try:
            return AccessTokenInfo(tokens.claims(token, issuer=issuer, audience=None))
        except InvalidToken:
            return None

    def refresh() -> RefreshTokenInfo | None:
        doc = records.store.get(REFRESH, token_hash(token))
        if doc is None:
            return None
        grant = records.grant(doc["grant_id"])
        if grant is None:
            return None
        return RefreshTokenInfo(doc["client_id"], grant, doc["scope"], doc["expires_at"])

    order = (refresh, access) if hint == "refresh_token" else (access, refresh)
    for lookup in order:
        found = lookup()
        if found is not None:
            return found
    return None


class TokenEndpointLookup:
    """What the introspection and revocation endpoints share: who may call them, and finding the
    token a request names (here, not in authlib's query_token, which gets no request and so no
    issuer)."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]

    records: AuthRecords
    tokens: TokenService

    def requested_token(self, request, client):
        self.check_params(request, client)
        return find_token(self.records, self.tokens, request.form["token"], request.form.get("token_type_hint"),
                          issuer=request.issuer)
