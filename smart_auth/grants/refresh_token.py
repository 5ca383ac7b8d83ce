"""grant_type=refresh_token with rotation (SMART app-launch.html#refresh-access-token,
best-practices: a refresh token used twice ends the authorization)."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import InvalidScopeError, grants

from ..clients import PRIVATE_KEY_JWT
from ..scopes import InvalidScope, ScopeSet
from ..store.records import REFRESH, AuthRecords, Grant, RefreshToken, token_hash
from .issue import SmartTokenMixin


class StoredRefreshToken:
    def __init__(self, record: RefreshToken, grant: Grant):
        self.record = record
        self.grant = grant

    def check_client(self, client) -> bool:
        return client.client_id == self.record.client_id

    def get_scope(self) -> str:
        return self.record.scope


class RefreshTokenGrant(SmartTokenMixin, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT]
    INCLUDE_NEW_REFRESH_TOKEN = True

    records: AuthRecords

    def authenticate_refresh_token(self, refresh_token: str) -> StoredRefreshToken | None:
        # Refuse what can be refused without spending the token first (another client's token, a wider
        # scope): a refused request must not use it up, or the client's next refresh looks like a replay.
        peeked = self.records.store.get(REFRESH, token_hash(refresh_token))
        if peeked is not None:
            if peeked["client_id"] != self.request.client.client_id:
                return None
            self._check_scope(peeked["scope"])
        record, first_use = self.records.take_refresh_token(refresh_token)
        if record is None:
            return None
        if not first_use:  # a spent token came back: stolen or replayed, so end the authorization
            self.records.revoke_grant(record.grant_id)
            return None
        grant = self.records.grant(record.grant_id)
        return StoredRefreshToken(record, grant) if grant is not None else None

    def _validate_token_scope(self, token: StoredRefreshToken) -> None:
        self._check_scope(token.get_scope())

    def _check_scope(self, granted: str) -> None:
        """A refresh may ask for the granted scopes or fewer (compared as SMART scopes, so
        `patient/Observation.r` is within `patient/*.rs`), never more."""
        asked = self.request.payload.scope
        if not asked:
            return
        try:
            if not ScopeSet.parse(granted).covers(ScopeSet.parse(asked)):
                raise InvalidScopeError("The requested scope exceeds the scope originally granted")
        except InvalidScope:
            raise InvalidScopeError("The requested scope is malformed") from None

    def authenticate_user(self, refresh_token: StoredRefreshToken) -> Grant:
        return refresh_token.grant

    def revoke_old_credential(self, refresh_token: StoredRefreshToken) -> None:
        pass  # taking it (authenticate_refresh_token) already spent it
