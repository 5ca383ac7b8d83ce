"""Who is calling: the bearer access token of a FHIR request, verified into a Principal
(SMART App Launch 2.2 "Access FHIR API", RFC 6750; research/smart.md RS-01, RS-02, RS-05).

With --no-auth (`app.state.auth is None`) every request is the unrestricted superuser. Otherwise a
request needs `Authorization: Bearer <token>` with one of this server's access tokens: signed by a
key it holds, issued by and for this FHIR base URL, unexpired, of a grant not revoked. Anything
else is 401 with a `WWW-Authenticate: Bearer` challenge. What the Principal may do is decided
per interaction by smart_auth/access.py.

A token's signature is verified once per key set: the Principal it became is kept (bounded, per
AuthService) and on every later use only its expiry and the revocation set are checked again.
Whenever the server reloads its keys (AuthService.refresh_revocations, at least once a minute)
the kept Principals are dropped, so a key removed from the store stops its tokens as it would
without the cache.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict

from starlette.requests import Request

from smart_auth.principal import InvalidToken, Principal, acting
from smart_auth.tokens import CLOCK_SKEW

from ..audit.context import note_principal
from ..errors import Unauthorized

SUPERUSER = Principal.anonymous_superuser()

_SCHEME = "bearer"
_CACHE_SIZE = 4096
_verified: "weakref.WeakKeyDictionary[object, tuple[object, OrderedDict[tuple[str, str], Principal]]]" = (
    weakref.WeakKeyDictionary())


async def request_principal(request: Request) -> Principal:
    """The request's Principal, also recorded as the acting principal of this request's context
    (smart_auth.principal.acting) for the write hooks that must know who acts (claiming a visit)."""
    principal = await _request_principal(request)
    acting.set(principal)
    note_principal(principal)  # who the request's AuditEvent names
    access = getattr(request.app.state, "visit_access", None)
    if access is not None:
        await access.prepare(principal)  # the clinician's licensed states, re-read at most every minute
    return principal


async def _request_principal(request: Request) -> Principal:
    auth = request.app.state.auth
    if auth is None:
        return SUPERUSER
    header = request.headers.get("authorization")
    if header is None:
        # RFC 6750 section 3.1: a request without credentials gets the bare challenge
        raise Unauthorized("This FHIR server needs an access token (Authorization: Bearer ...)", oauth_error=None)
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != _SCHEME or not token or " " in token:
        raise Unauthorized("The Authorization header must be 'Bearer' followed by an access token",
                           oauth_error="invalid_request")
    await auth.refresh_revocations()
    from .routes import base_url  # the routes import this module

    base = base_url(request)
    keys = auth.keys.verifying_keys
    kept = _verified.get(auth)
    if kept is None or kept[0] is not keys:  # first use, or the keys were reloaded
        kept = _verified[auth] = (keys, OrderedDict())
    cache = kept[1]
    key = (token, base)
    principal = cache.get(key)
    if principal is None:
        try:
            principal = auth.tokens.principal(token, issuer=base, audience=base)
        except InvalidToken as err:
            raise Unauthorized(str(err)) from None
        cache[key] = principal
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
        return principal
    if principal.expires_at is None or principal.expires_at <= time.time() - CLOCK_SKEW:
        cache.pop(key, None)
        raise Unauthorized("The access token has expired")
    if principal.grant_id in auth.revoked:
        cache.pop(key, None)
        raise Unauthorized("The access token has been revoked")
    return principal
