"""grant_type=authorization_code (RFC 6749 section 4.1, SMART app-launch.html).

A code is stored hashed and bound to its client, redirect URI, PKCE challenge and grant (the
user's approval with its launch context). It is single-use and lives one minute; presenting it
again revokes the grant and with it every token it issued (RFC 6749 section 4.1.2).
"""

from __future__ import annotations

import time

from authlib.oauth2.rfc6749 import grants

from ..clients import PRIVATE_KEY_JWT
from ..store.records import AuthorizationCode, AuthRecords, Grant, token_hash
from .issue import SmartTokenMixin

CODE_LIFETIME = 60


class StoredCode:
    """What authlib asks of a code (its redirect URI, scope and PKCE challenge)."""

    def __init__(self, record: AuthorizationCode, grant: Grant):
        self.record = record
        self.grant = grant
        self.code_challenge = record.code_challenge
        self.code_challenge_method = record.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.record.redirect_uri

    def get_scope(self) -> str:
        return self.record.scope


class AuthorizationCodeGrant(SmartTokenMixin, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT]

    records: AuthRecords  # set on the subclass the server registers

    def save_authorization_code(self, code: str, request) -> None:
        """Called when the user approved: `request.consent` holds the Grant the consent step built."""
        grant: Grant = request.consent["grant"]
        self.records.put_grant(grant)
        data = request.payload.data
        self.records.put_code(AuthorizationCode(
            code_hash=token_hash(code), grant_id=grant.id, client_id=request.client.client_id,
            redirect_uri=data["redirect_uri"], scope=grant.scope, code_challenge=data["code_challenge"],
            code_challenge_method="S256", expires_at=time.time() + CODE_LIFETIME,
        ))

    def query_authorization_code(self, code: str, client) -> StoredCode | None:
        record, first_use = self.records.take_code(code)
        if record is None:
            return None
        if not first_use:
            self.records.revoke_grant(record.grant_id)
            return None
        if record.client_id != client.client_id:
            return None
        grant = self.records.grant(record.grant_id)
        return StoredCode(record, grant) if grant is not None else None

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        pass  # taking it (query_authorization_code) already spent it

    def authenticate_user(self, authorization_code: StoredCode) -> Grant:
        return authorization_code.grant
