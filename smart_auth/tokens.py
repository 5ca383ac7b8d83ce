"""Access tokens: short-lived signed JWTs the FHIR API verifies locally (DESIGN.md "Authorization"),
plus a cheap revocation check against a cached set of revoked grant ids.

Claims: iss (this server), aud (the FHIR base URL), sub, client_id, scope (the granted string),
iat, exp, jti, grant (the grant id), and the launch context (patient, encounter, fhirUser).
"""

from __future__ import annotations

import base64
import json

import threading
import time
import uuid

from joserfc import jwt
from joserfc.errors import JoseError

from .keys import ALGORITHM, KeyRing
from .principal import InvalidToken, Principal
from .scopes import InvalidScope, ScopeSet
from .store.records import AuthRecords

ACCESS_TOKEN_LIFETIME = 3600  # seconds; SMART: at most an hour
BACKEND_TOKEN_LIFETIME = 300  # backend services: SHOULD be at most five minutes
CLOCK_SKEW = 30


class RevokedGrants:
    """The grant ids revoked so far, followed from the store's revocation feed.

    Each check costs a set lookup; the feed is read again at most every `refresh_every` seconds
    (other worker processes revoke too), and a revocation made in this process counts at once.
    """

    def __init__(self, records: AuthRecords, refresh_every: float = 1.0):
        self.records = records
        self.refresh_every = refresh_every
        self._ids: set[str] = set()
        self._after = 0
        self._checked = 0.0
        self._lock = threading.Lock()

    def add(self, grant_id: str) -> None:
        self._ids.add(grant_id)

    def stale(self) -> bool:
        return time.monotonic() - self._checked >= self.refresh_every

    def refresh(self) -> None:
        """Read the feed (blocking: call from a worker thread when on the event loop)."""
        with self._lock:
            for seq, grant_id in self.records.revocations(self._after):
                self._ids.add(grant_id)
                self._after = max(self._after, seq)
            self._checked = time.monotonic()

    def __contains__(self, grant_id: str | None) -> bool:
        return grant_id is not None and grant_id in self._ids


class TokenService:
    def __init__(self, keys: KeyRing, revoked: RevokedGrants):
        self.keys = keys
        self.revoked = revoked

    def _sign(self, claims: dict) -> str:
        key = self.keys.signing_key
        return jwt.encode({"alg": ALGORITHM, "typ": "JWT", "kid": key.kid}, claims, key)

    def access_token(
        self,
        *,
        issuer: str,
        audience: str,
        client_id: str,
        subject: str,
        scope: str,
        grant_id: str,
        lifetime: int = ACCESS_TOKEN_LIFETIME,
        patient: str | None = None,
        encounter: str | None = None,
        fhir_user: str | None = None,
    ) -> tuple[str, dict]:
        now = int(time.time())
        claims = {
            "iss": issuer, "aud": audience, "sub": subject, "client_id": client_id, "scope": scope,
            "iat": now, "exp": now + lifetime, "jti": uuid.uuid4().hex, "grant": grant_id,
        }
        for name, value in (("patient", patient), ("encounter", encounter), ("fhirUser", fhir_user)):
            if value:
                claims[name] = value
        return self._sign(claims), claims

    def id_token(self, *, issuer: str, client_id: str, subject: str, fhir_user: str | None,
                 nonce: str | None, auth_time: float, lifetime: int = ACCESS_TOKEN_LIFETIME) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "sub": subject, "aud": client_id, "iat": now, "exp": now + lifetime,
                  "auth_time": int(auth_time)}
        if fhir_user:
            claims["fhirUser"] = fhir_user
        if nonce:
            claims["nonce"] = nonce
        return self._sign(claims)

    def claims(self, token: str, *, issuer: str, audience: str | None) -> dict:
        """The verified claims of one of our access tokens: signature, iss, aud, exp, not revoked."""
        try:
            decoded = jwt.decode(token, self.keys.verifying_keys, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            raise InvalidToken("The access token is malformed or its signature does not verify") from None
        claims = decoded.claims
        now = time.time()
        if claims.get("iss") != issuer:
            raise InvalidToken("The access token was issued by another server")
        if audience is not None and claims.get("aud") != audience:
            raise InvalidToken("The access token is for another audience")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= now - CLOCK_SKEW:
            raise InvalidToken("The access token has expired")
        if "grant" not in claims or "scope" not in claims or "client_id" not in claims:
            raise InvalidToken("The token is not an access token")
        if claims["grant"] in self.revoked:
            raise InvalidToken("The access token has been revoked")
        return claims

    def principal(self, token: str, *, issuer: str, audience: str) -> Principal:
        claims = self.claims(token, issuer=issuer, audience=audience)
        try:
            scopes = ScopeSet.parse(claims["scope"])
        except InvalidScope:
            raise InvalidToken("The access token carries a malformed scope") from None
        return Principal(
            client_id=claims["client_id"], subject=claims.get("sub", claims["client_id"]), scopes=scopes,
            patient=claims.get("patient"), encounter=claims.get("encounter"), fhir_user=claims.get("fhirUser"),
            grant_id=claims["grant"], expires_at=int(claims["exp"]),
        )


def unverified_claims(token: str) -> dict:
    """The claims of a JWT this server has just signed, read without checking the signature (to
    describe it in the audit trail; never to authorise anything)."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
