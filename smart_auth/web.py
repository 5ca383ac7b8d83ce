"""Small HTTP helpers the authorization server's routes share (Starlette in, Starlette out)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .oauth_request import SmartRequest
from .pages import SECURITY_HEADERS, render_error
from .service import AuthService

FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024
CORS_ANY = {"Access-Control-Allow-Origin": "*"}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def fhir_base(request: Request) -> str:
    """The FHIR base URL (the issuer of every token, the `aud` apps must send)."""
    configured = request.app.state.settings.base_url
    return (configured or str(request.base_url)).rstrip("/")


def auth_service(request: Request) -> AuthService:
    return request.app.state.auth


async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """A form body's parameters ([] when the body is not a form)."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != FORM:
        return []
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return []
    return parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)


def smart_request(request: Request, pairs: list[tuple[str, str]]) -> SmartRequest:
    base = fhir_base(request)
    # Starlette's Headers, not a dict of them: authlib looks up "Authorization" (client_secret_basic)
    # and a plain dict would only hold the lower-cased name.
    return SmartRequest(request.method, str(request.url), request.headers, pairs,
                        issuer=base, token_url=f"{base}/auth/token")


async def in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """authlib and the record store are synchronous: run them off the event loop."""
    return await asyncio.to_thread(func, *args, **kwargs)


def oauth_response(status: int, body: Any, headers: list[tuple[str, str]] | dict, *, cors: bool = False) -> Response:
    """authlib's (status, body, headers) as a response; JSON bodies are never cached."""
    merged = dict(headers) if not isinstance(headers, dict) else dict(headers)
    if status in (301, 302, 303, 307) and "Location" in merged:
        return RedirectResponse(merged["Location"], status_code=302, headers=NO_STORE)
    merged.update(NO_STORE)
    if cors:
        merged.update(CORS_ANY)
    merged.pop("Content-Type", None)
    content = body if isinstance(body, (dict, list)) else (orjson.loads(body) if body else {})
    return JSONResponse(content, status_code=status, headers=merged)


def html_page(body: str, *, status: int = 200, headers: dict | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **NO_STORE, **(headers or {})})


def error_page(title: str, message: str, *, status: int = 400) -> HTMLResponse:
    return html_page(render_error(title=title, message=message), status=status)
