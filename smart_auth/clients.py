"""A registered client as authlib sees it (ClientMixin), over the stored Client record."""

from __future__ import annotations

import hashlib

from authlib.oauth2.rfc6749 import ClientMixin

from .access import UnenforceableScope, check_scope
from .passwords import verify_secret
from .scopes import InvalidScope, ResourceScope, ScopeSet
from .store.records import Client

PRIVATE_KEY_JWT = "private_key_jwt"
_VERIFIED_SECRETS: set[tuple[str, str, str]] = set()


def enforceable(scope: ResourceScope) -> bool:
    try:
        check_scope(scope)
    except UnenforceableScope:
        return False
    return True


class SmartClient(ClientMixin):
    def __init__(self, record: Client):
        self.record = record

    @property
    def client_id(self) -> str:
        return self.record.client_id

    @property
    def is_public(self) -> bool:
        return self.record.kind == "public"

    @property
    def is_backend(self) -> bool:
        """An asymmetric client with no redirect URI: SMART Backend Services only."""
        return self.record.kind == "asymmetric" and not self.record.redirect_uris

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> str | None:
        # SMART apps must send redirect_uri; never guess one (it would be an open redirect).
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scopes this client's registration allows (None: nothing grantable)."""
        if not scope:
            return None
        try:
            granted = ScopeSet.parse(scope).grant(ScopeSet.parse(self.record.scope))
        except InvalidScope:
            return None
        # A query restriction the resource server cannot enforce is never granted (SMART: be
        # explicit about unsupported parameters), rather than granted and then matching nothing.
        granted = ScopeSet(tuple(s for s in granted.resource if enforceable(s)), granted.other)
        return granted.text or None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.record.redirect_uris  # exact match (SMART: fully specified)

    def check_client_secret(self, client_secret: str) -> bool:
        """argon2 costs ~90 ms, and a confidential client sends its secret with every token and
        introspection request: a secret that verified is remembered (by its SHA-256, tied to the
        stored hash, so a changed secret is verified afresh)."""
        stored = self.record.secret_hash
        if stored is None or not isinstance(client_secret, str):
            return False
        key = (self.record.client_id, stored, hashlib.sha256(client_secret.encode()).hexdigest())
        if key in _VERIFIED_SECRETS:
            return True
        if not verify_secret(stored, client_secret):
            return False
        if len(_VERIFIED_SECRETS) >= 1024:
            _VERIFIED_SECRETS.clear()
        _VERIFIED_SECRETS.add(key)
        return True

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.record.auth_method or (
            method == "client_secret_post" and self.record.kind == "symmetric")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and not self.is_backend

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials":
            return self.record.kind == "asymmetric"
        if grant_type in ("authorization_code", "refresh_token"):
            return not self.is_backend
        return False
