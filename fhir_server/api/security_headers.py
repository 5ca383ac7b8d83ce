"""Security headers on every response, in one place (HIPAA access hygiene; OWASP secure headers).

- `Cache-Control: no-store` on everything that may carry patient data: the FHIR API, Binary
  content, export files, the sign-in pages and token responses. A response whose route set its own
  Cache-Control keeps it (the SMART discovery documents, JWKS and style: public and cacheable on
  purpose), and so does the public conformance below, which gets `no-cache` (revalidate, never
  stale; not per-patient, so caches may keep it).
- `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`
  on every response, unless the route chose otherwise (the sign-in pages send `same-origin`).
- HTML gets a Content-Security-Policy that allows no scripts, nothing external and no framing. A
  route's own CSP (the sign-in pages' hash-based one; raw Binary's `sandbox; default-src 'none'`,
  which covers the consult note's HTML rendering) is kept and only gains `frame-ancestors 'none'`
  when it lacks it: tightening, never loosening.
- `Strict-Transport-Security` on HTTPS (uvicorn with --tls-cert, or a trusted proxy's
  X-Forwarded-Proto), where browsers honour it; over plain HTTP it would be ignored.

A pure ASGI middleware (no BaseHTTPMiddleware): it only edits the header list of
`http.response.start`, so streamed bodies (Binary, export files) pass through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
HTML_CSP = (b"default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
            b"form-action 'none'; frame-ancestors 'none'; sandbox")
NO_STORE = b"no-store"
# Public conformance, the same for every caller: may be cached, but revalidated.
CACHEABLE_PATHS = frozenset({"/metadata", "/.well-known/smart-configuration", "/.well-known/openid-configuration",
                             "/auth/jwks", "/auth/smart-style.json"})
ALWAYS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
          (b"x-frame-options", b"DENY"))


def secured(headers: list[tuple[bytes, bytes]], path: str, https: bool) -> list[tuple[bytes, bytes]]:
    """The response headers with what is missing added (names are lower-case, as ASGI sends them)."""
    present = {name.lower() for name, _ in headers}
    out = list(headers)
    for name, value in ALWAYS:
        if name not in present:
            out.append((name, value))
    if b"cache-control" not in present:
        out.append((b"cache-control", b"no-cache" if path in CACHEABLE_PATHS else NO_STORE))
    if https and b"strict-transport-security" not in present:
        out.append(HSTS)
    content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
    if content_type[:9].lower() == b"text/html" or content_type[:21].lower() == b"application/xhtml+xml":
        _secure_html(out, present)
    return out


def _secure_html(out: list[tuple[bytes, bytes]], present: set[bytes]) -> None:
    if b"content-security-policy" not in present:
        out.append((b"content-security-policy", HTML_CSP))
        return
    for i, (name, value) in enumerate(out):
        if name.lower() == b"content-security-policy" and b"frame-ancestors" not in value:
            out[i] = (name, value.rstrip(b"; ") + b"; frame-ancestors 'none'")


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        https = scope.get("scheme") == "https"

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = secured(list(message.get("headers", ())), path, https)
            await send(message)

        await self.app(scope, receive, send_secured)
