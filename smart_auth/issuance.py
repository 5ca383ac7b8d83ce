"""The token response every grant answers with (SMART app-launch.html "Obtain access token",
scopes-and-launch-context.html "launch context"): a JWT access token, the granted scope, the
launch context, an id_token for `openid`, and a rotating refresh token for offline/online access.
"""

from __future__ import annotations

import secrets
import time
import uuid

from .lifetimes import Lifetimes
from .scopes import FHIR_USER, OFFLINE_ACCESS, ONLINE_ACCESS, OPENID, PROFILE, ScopeSet
from .store.records import AuthRecords, Grant, RefreshToken, token_hash
from .tokens import BACKEND_TOKEN_LIFETIME, TokenService

OFFLINE_PERIOD = 90 * 24 * 3600  # ONC: refresh tokens valid for at least three months, renewable (up to
# Lifetimes.refresh_token_max after the approval, which rotation does not extend)
ONLINE_PERIOD = 12 * 3600  # online_access: about a working day's session


def refresh_period(scope: str) -> float | None:
    scopes = ScopeSet.parse(scope)
    if OFFLINE_ACCESS in scopes:
        return OFFLINE_PERIOD
    if ONLINE_ACCESS in scopes:
        return ONLINE_PERIOD
    return None


class TokenIssuer:
    def __init__(self, records: AuthRecords, tokens: TokenService, lifetimes: Lifetimes | None = None):
        self.records = records
        self.tokens = tokens
        self.lifetimes = lifetimes or Lifetimes()

    def backend_grant(self, client_id: str, scope: str) -> Grant:
        """Backend services have no user and no refresh: each token gets a grant of its own, so
        revoking it (RFC 7009) stops exactly that token."""
        grant = Grant(id=uuid.uuid4().hex, client_id=client_id, scope=scope,
                      expires_at=time.time() + BACKEND_TOKEN_LIFETIME + 60)
        self.records.put_grant(grant)
        return grant

    def issue(self, *, issuer: str, grant: Grant, scope: str, backend: bool = False) -> dict:
        access = self.lifetimes.access_token
        lifetime = min(BACKEND_TOKEN_LIFETIME, access) if backend else access
        access_token, _ = self.tokens.access_token(
            issuer=issuer, audience=issuer, client_id=grant.client_id, subject=grant.username or grant.client_id,
            scope=scope, grant_id=grant.id, lifetime=lifetime, patient=grant.patient, encounter=grant.encounter,
            fhir_user=grant.fhir_user,
        )
        body: dict = {"access_token": access_token, "token_type": "Bearer", "expires_in": lifetime, "scope": scope}
        for name, value in (("patient", grant.patient), ("encounter", grant.encounter),
                            ("need_patient_banner", grant.need_patient_banner),
                            ("smart_style_url", grant.smart_style_url), ("intent", grant.intent)):
            if value is not None:
                body[name] = value
        if grant.fhir_context:
            body["fhirContext"] = grant.fhir_context
        scopes = ScopeSet.parse(scope)
        if not backend and grant.username and OPENID in scopes and (FHIR_USER in scopes or PROFILE in scopes):
            body["id_token"] = self.tokens.id_token(
                issuer=issuer, client_id=grant.client_id, subject=grant.username,
                fhir_user=f"{issuer}/{grant.fhir_user}" if grant.fhir_user and FHIR_USER in scopes else None,
                nonce=grant.nonce, auth_time=grant.auth_time, lifetime=lifetime,
            )
        period = None if backend else refresh_period(grant.scope)
        if period is not None:
            # Rotation (DESIGN.md): every refresh answers with a new refresh token and renews the
            # grant's period; the old one is spent, and presenting it again revokes the grant.
            # The renewal stops at the absolute limit counted from the approval (automatic logoff).
            grant.expires_at = min(time.time() + period, grant.created_at + self.lifetimes.refresh_token_max)
            if grant.expires_at <= time.time():
                return body  # past the absolute limit already (a code exchanged that late): no refresh
            refresh = secrets.token_urlsafe(48)
            self.records.put_grant(grant)
            self.records.put_refresh_token(RefreshToken(token_hash(refresh), grant.id, grant.client_id, grant.scope,
                                                        expires_at=grant.expires_at))
            body["refresh_token"] = refresh
        return body
