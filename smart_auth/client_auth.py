"""Client authentication at the token endpoint, beyond authlib's built-in secret methods.

- `none` (public clients): the client is named by `client_id`, or, on a refresh, by the refresh
  token itself (client-js refreshes without sending client_id; authlib's own `none` needs it).
- `private_key_jwt` (SMART client-confidential-asymmetric, RFC 7523 section 3): authlib's
  JWTBearerClientAssertion with what SMART adds and authlib lacks: RS384/ES384 only (authlib's
  JOSE registry refuses both by default), `exp` at most five minutes ahead, `kid` required and
  matched together with the key type, `jku` only if it is the registered JWKS URL, keys from an
  inline JWKS or from the client's JWKS URL cached no longer than its Cache-Control allows, and
  every `jti` used once.
"""

from __future__ import annotations

import logging
import re
import threading
import time

import httpx
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhir_server import outbound

from .clients import PRIVATE_KEY_JWT, SmartClient
from .store.records import AuthRecords, token_hash, REFRESH

log = logging.getLogger("smart_auth")

ASSERTION_ALGORITHMS = {"RS384": "RSA", "ES384": "EC"}
MAX_ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future
CLOCK_SKEW = 30
JWKS_DEFAULT_CACHE = 300  # seconds, when the client's JWKS response says nothing
JWKS_MAX_CACHE = 3600


def public_client_authenticator(records: AuthRecords):
    """authlib client-auth function for method `none`."""

    def authenticate(query_client, request) -> SmartClient | None:
        form = request.form
        if request.headers.get("Authorization") or form.get("client_secret") or form.get("client_assertion") \
                or form.get("client_assertion_type"):
            return None  # the request carries another method's credentials: that method decides
        client_id = request.payload.client_id
        if not client_id and request.payload.grant_type == "refresh_token":
            refresh = request.form.get("refresh_token")
            doc = records.store.get(REFRESH, token_hash(refresh)) if refresh else None
            client_id = doc["client_id"] if doc else None
        if not client_id:
            return None
        client = query_client(client_id)
        if client is None:
            raise InvalidClientError(description="The client does not exist on this server.")
        return client if client.is_public else None

    return authenticate


class JwksCache:
    """Clients' JWK Sets fetched from their registered URLs, cached per Cache-Control."""

    def __init__(self, fetch=None):
        self._fetch = fetch or self._http_get
        self._cache: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _http_get(url: str) -> tuple[dict, str | None]:
        # certificates verified against the server's outbound trust store (fhir_server/outbound.py)
        response = outbound.get(url, headers={"Accept": "application/json"}, timeout=5.0, follow_redirects=False)
        response.raise_for_status()
        return response.json(), response.headers.get("cache-control")

    @staticmethod
    def _lifetime(cache_control: str | None) -> float:
        if cache_control is None:
            return JWKS_DEFAULT_CACHE
        directives = cache_control.lower()
        if "no-store" in directives or "no-cache" in directives:
            return 0
        match = re.search(r"max-age\s*=\s*(\d+)", directives)
        return min(int(match.group(1)), JWKS_MAX_CACHE) if match else JWKS_DEFAULT_CACHE

    def get(self, url: str, *, refresh: bool = False) -> dict:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(url)
        if cached and not refresh and cached[0] > now:
            return cached[1]
        try:
            jwks, cache_control = self._fetch(url)
        except (httpx.HTTPError, ValueError) as err:
            raise InvalidClientError(description="The client's JWKS URL could not be read") from err
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise InvalidClientError(description="The client's JWKS URL does not serve a JWK Set")
        lifetime = self._lifetime(cache_control)
        with self._lock:
            if lifetime > 0:
                self._cache[url] = (now + lifetime, jwks)
            else:
                self._cache.pop(url, None)
        return jwks


class PrivateKeyJwt(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, records: AuthRecords, jwks_cache: JwksCache):
        super().__init__(validate_jti=True, leeway=CLOCK_SKEW)
        self.records = records
        self.jwks_cache = jwks_cache
        self._local = threading.local()  # one server object serves concurrent token requests

    def get_audiences(self) -> list[str]:
        return self._local.audiences

    def __call__(self, query_client, request) -> SmartClient | None:
        data = request.form
        assertion_type = data.get("client_assertion_type")
        assertion = data.get("client_assertion")
        if assertion_type is None and assertion is None:
            return None  # another method may apply
        if assertion_type != self.CLIENT_ASSERTION_TYPE or not assertion:
            raise InvalidClientError(description="client_assertion_type must be "
                                                 "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        headers, claims = self.extract_assertion(assertion)
        client_id = claims.get("sub")
        if not isinstance(client_id, str) or claims.get("iss") != client_id:
            raise InvalidClientError(description="The assertion's iss and sub must both be the client_id")
        client = query_client(client_id)
        if client is None or client.record.kind != "asymmetric":
            raise InvalidClientError(description="The client does not exist or has no registered keys")
        key = self._select_key(client, headers)
        self._local.audiences = [request.token_url]  # RFC 7523: aud is the token endpoint URL
        try:
            token = jwt.decode(assertion, key, algorithms=[headers["alg"]])
        except (JoseError, ValueError) as err:
            raise InvalidClientError(description="The assertion's signature does not verify") from err
        self.verify_claims(token.claims)
        exp = token.claims["exp"]
        if not isinstance(exp, (int, float)) or exp > time.time() + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
            raise InvalidClientError(description="The assertion's exp is more than five minutes in the future")
        request.client = client
        return self.authenticate_client(client)

    def _select_key(self, client: SmartClient, headers: dict):
        alg, kid, jku = headers.get("alg"), headers.get("kid"), headers.get("jku")
        if alg not in ASSERTION_ALGORITHMS:
            raise InvalidClientError(description="The assertion must be signed with RS384 or ES384")
        if not kid:
            raise InvalidClientError(description="The assertion header must carry a kid")
        record = client.record
        if jku is not None and jku != record.jwks_url:
            raise InvalidClientError(description="The assertion's jku is not the client's registered JWKS URL")
        kty = ASSERTION_ALGORITHMS[alg]

        def matching(jwks: dict) -> list[dict]:
            return [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid and k.get("kty") == kty]

        if record.jwks_url:
            candidates = matching(self.jwks_cache.get(record.jwks_url))
            if not candidates:  # the client may have rotated its keys since we cached them
                candidates = matching(self.jwks_cache.get(record.jwks_url, refresh=True))
        else:
            candidates = matching(record.jwks or {})
        if len(candidates) != 1:
            raise InvalidClientError(description="No single registered key matches the assertion's kid and alg")
        public = {k: v for k, v in candidates[0].items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            return KeySet.import_key_set({"keys": [public]})
        except (JoseError, ValueError, TypeError) as err:
            raise InvalidClientError(description="The registered key cannot be used") from err

    def validate_jti(self, claims: dict, jti: str) -> bool:
        expires_at = float(claims.get("exp", time.time())) + CLOCK_SKEW
        return self.records.remember_jti(str(claims.get("iss")), str(jti), expires_at)
