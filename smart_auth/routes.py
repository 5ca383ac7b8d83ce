"""The authorization server's HTTP routes, mounted beside the FHIR API.

Discovery documents are JSON whatever `Accept` says and open to any origin (SMART conformance.html);
the token endpoint answers CORS requests too, so browser apps (public clients) can call it.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from . import authorize as browser
from .discovery import SMART_STYLE, openid_configuration, smart_configuration
from .introspection import introspection_payload
from .pages.layout import esc, page
from .principal import InvalidToken
from .security_events import REVOCATION, TOKEN, report
from .tokens import unverified_claims
from .token_lookup import find_token
from .web import (CORS_ANY, NO_STORE, auth_service, fhir_base, form_pairs, html_page, in_thread, oauth_response,
                  smart_request)


def _json(content: dict, *, cache: str = "no-cache") -> Response:
    return JSONResponse(content, headers={**CORS_ANY, "Cache-Control": cache})


async def well_known_smart(request: Request) -> Response:
    return _json(smart_configuration(fhir_base(request)))


async def well_known_openid(request: Request) -> Response:
    return _json(openid_configuration(fhir_base(request)))


async def jwks(request: Request) -> Response:
    return _json(auth_service(request).keys.public_jwks, cache="max-age=300")


async def smart_style(request: Request) -> Response:
    return _json(SMART_STYLE, cache="max-age=3600")


async def token(request: Request) -> Response:
    oauth_request = smart_request(request, await form_pairs(request))
    status, body, headers = await in_thread(request.app.state.authorization_server.create_token_response,
                                             oauth_request)
    _report_token(request, oauth_request, status, body)
    return oauth_response(status, body, headers, cors=True)


def _report_token(request: Request, oauth_request, status: int, body: dict) -> None:
    """Token issued (with the claims it carries) or refused (with the OAuth error code)."""
    grant_type = oauth_request.form.get("grant_type")
    if status == 200 and isinstance(body, dict) and isinstance(body.get("access_token"), str):
        claims = unverified_claims(body["access_token"])  # ours, just signed: read, not checked again
        subject = claims.get("sub")
        report(request, TOKEN, True, client_id=claims.get("client_id"), grant_id=claims.get("grant"),
               username=subject if subject != claims.get("client_id") else None,
               fhir_user=claims.get("fhirUser"), detail=grant_type)
    else:
        client = getattr(oauth_request, "client", None)
        error = body.get("error") if isinstance(body, dict) else None
        report(request, TOKEN, False, client_id=getattr(client, "client_id", None) or oauth_request.form.get("client_id"),
               detail=f"{grant_type}: {error}" if error else grant_type)


async def introspect(request: Request) -> Response:
    oauth_request = smart_request(request, await form_pairs(request))
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        # SMART token-introspection.html: callers may authenticate with one of our access tokens.
        service = auth_service(request)
        base = fhir_base(request)
        try:
            caller = await in_thread(service.tokens.claims, authorization[7:].strip(), issuer=base, audience=base)
        except InvalidToken:
            return JSONResponse({"error": "invalid_token"}, status_code=401, headers={
                **NO_STORE, "WWW-Authenticate": 'Bearer error="invalid_token"'})
        token_string = oauth_request.form.get("token")
        if not token_string:
            return JSONResponse({"error": "invalid_request"}, status_code=400, headers=NO_STORE)
        found = await in_thread(find_token, service.records, service.tokens, token_string,
                                oauth_request.form.get("token_type_hint"), issuer=base)
        # "Appropriately scoped": a confidential client's token (a resource server or backend) may
        # introspect any token; a public client's only its own, as with client authentication.
        client = await in_thread(service.records.client, caller["client_id"])
        allowed = client is not None and (client.kind != "public" or (found and found.client_id == client.client_id))
        return JSONResponse(introspection_payload(found) if found and allowed else {"active": False},
                            headers=NO_STORE)
    status, body, headers = await in_thread(
        request.app.state.authorization_server.create_endpoint_response, "introspection", oauth_request)
    return oauth_response(status, body, headers)


async def revoke(request: Request) -> Response:
    oauth_request = smart_request(request, await form_pairs(request))
    result = await in_thread(request.app.state.authorization_server.create_endpoint_response, "revocation",
                             oauth_request)
    status, body, headers = result
    client = getattr(oauth_request, "client", None)
    report(request, REVOCATION, status == 200, client_id=getattr(client, "client_id", None))
    return oauth_response(status, body or {}, headers, cors=True)


# -- the user's own page: which apps have access, and revoking them (management_endpoint) ----------

async def manage(request: Request) -> Response:
    signed_in = await browser.current_session(request)
    if signed_in is None:
        return RedirectResponse(browser.auth_url(request, "login", next="/auth/manage"), status_code=303)
    session, user = signed_in
    records = auth_service(request).records
    if request.method == "POST":
        form = dict(await form_pairs(request))
        grant = await in_thread(records.grant, form.get("grant", ""))
        if grant is not None and grant.username == user.username:
            await in_thread(records.revoke_grant, grant.id)
            auth_service(request).revoked.add(grant.id)
            report(request, REVOCATION, True, client_id=grant.client_id, grant_id=grant.id,
                   username=user.username, fhir_user=user.fhir_user, detail="revoked by the user")
        return RedirectResponse(browser.auth_url(request, "manage"), status_code=303, headers=NO_STORE)
    grants = [g for g in await in_thread(records.grants) if g.username == user.username and g.expires_at
              and g.expires_at > time.time()]
    rows = "".join(
        f'<li><form method="post" action="{esc(browser.auth_url(request, "manage"))}">'
        f'<p><strong>{esc(g.client_id)}</strong>: {esc(g.scope)}</p>'
        f'<input type="hidden" name="grant" value="{esc(g.id)}">'
        f'<button type="submit" id="revoke-{esc(g.id)}">Revoke access</button></form></li>'
        for g in grants
    )
    body = ("<h1>Apps with access to your record</h1>" +
            (f"<ul>{rows}</ul>" if rows else "<p>No app has access.</p>"))
    return html_page(page("Apps with access", body))


ROUTES = [
    Route("/.well-known/smart-configuration", well_known_smart, methods=["GET"]),
    Route("/.well-known/openid-configuration", well_known_openid, methods=["GET"]),
    # One prefix to test on every FHIR request instead of each of these routes in turn.
    Mount("/auth", routes=[
        Route("/jwks", jwks, methods=["GET"]),
        Route("/smart-style.json", smart_style, methods=["GET"]),
        Route("/authorize", browser.authorize, methods=["GET", "POST"]),
        Route("/login", browser.login_form, methods=["GET"]),
        Route("/login", browser.login, methods=["POST"]),
        Route("/logout", browser.logout, methods=["POST"]),
        Route("/patient", browser.choose_patient, methods=["POST"]),
        Route("/consent", browser.consent_form, methods=["GET"]),
        Route("/consent", browser.consent, methods=["POST"]),
        Route("/ehr-launch", browser.ehr_launch, methods=["GET"]),
        Route("/manage", manage, methods=["GET", "POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/introspect", introspect, methods=["POST"]),
        Route("/revoke", revoke, methods=["POST"]),
    ]),
]
