"""The browser side of the authorization code flow (SMART app-launch.html "Obtain authorization
code"): authorize -> sign in -> pick a patient (clinicians, standalone launch) -> consent -> back
to the app with a code (or an error).

authlib validates the request (client, exact redirect URI, response type, scopes, PKCE and the
SMART checks in server.py) on arrival and again at approval, and issues the code. Everything in
between is a PendingAuthorization record keyed by an unguessable id, bound at sign-in to the
browser session that may approve it (so a forged form from elsewhere cannot consent).
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Protocol
from urllib.parse import urlencode

from authlib.oauth2 import OAuth2Error
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .consent import Offer, is_clinician
from .lifetimes import SESSION_MAX_SECONDS
from .pages import render_consent, render_login, render_patient_picker
from .passwords import verify_secret
from .scopes import LAUNCH_ENCOUNTER, OFFLINE_ACCESS, ONLINE_ACCESS
from .server import SmartAuthorizationServer
from .store.records import BrowserSession, Grant, Launch, PendingAuthorization, User
from .security_events import CONSENT, LOGIN, LOGOUT, report
from .web import (NO_STORE, auth_service, error_page, fhir_base, form_pairs, html_page, in_thread, oauth_response,
                  smart_request)

SESSION_COOKIE = "smart_session"
PENDING_LIFETIME = 10 * 60
LAUNCH_LIFETIME = 5 * 60
LOGIN_WINDOW = 15 * 60  # failed sign-ins counted over this window...
LOGIN_MAX_FAILURES = 5  # ...and this many lock the username at that address (or the address) until it passes
DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"


class PatientDirectory(Protocol):
    """How the consent pages see patients (the FHIR store, through the app)."""

    async def patients(self, limit: int) -> list[tuple[str, str]]: ...

    async def display(self, reference: str) -> str | None: ...


def _server(request: Request) -> SmartAuthorizationServer:
    return request.app.state.authorization_server


def _directory(request: Request) -> PatientDirectory:
    return request.app.state.patient_directory


def auth_url(http: Request, path: str, **params: str) -> str:
    return f"{fhir_base(http)}/auth/{path}" + (f"?{urlencode(params)}" if params else "")


async def current_session(request: Request) -> tuple[BrowserSession, User] | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    records = auth_service(request).records
    session = await in_thread(records.session, session_id)
    if session is None:  # never issued, signed out, or idle past its timeout (the store expired it)
        return None
    user = await in_thread(records.user, session.username)
    if user is None:
        return None
    await in_thread(records.put_session, _touched(session, auth_service(request).lifetimes.session_idle))
    return session, user


def _touched(session: BrowserSession, idle: int) -> BrowserSession:
    """Automatic logoff: a session lives `idle` seconds past its latest request, and never more
    than SESSION_MAX_SECONDS after the sign-in."""
    session.expires_at = min(time.time() + idle, session.created_at + SESSION_MAX_SECONDS)
    return session


async def _validated(request: Request, pending: PendingAuthorization):
    """Re-run authlib's validation of the stored request (the client may have changed since)."""
    oauth_request = smart_request(request, [tuple(p) for p in pending.params])
    grant = await in_thread(_server(request).get_consent_grant, oauth_request, None)
    return oauth_request, grant


def _oauth_error(request: Request, oauth_request, error: OAuth2Error) -> Response:
    """An error goes back to the app only when its redirect URI is valid (RFC 6749 4.1.2.1)."""
    if error.redirect_uri:
        return oauth_response(*_server(request).handle_error_response(oauth_request, error))
    return error_page("This app's sign-in request cannot be accepted", error.description or error.error)


# -- authorize --------------------------------------------------------------------------------------

async def authorize(request: Request) -> Response:
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        pairs += await form_pairs(request)
    oauth_request = smart_request(request, pairs)
    server = _server(request)
    try:
        await in_thread(server.get_consent_grant, oauth_request, None)
    except OAuth2Error as error:
        return _oauth_error(request, oauth_request, error)
    records = auth_service(request).records
    pending = PendingAuthorization(id=secrets.token_urlsafe(32), client_id=oauth_request.client.client_id,
                                   params=[list(p) for p in pairs], expires_at=time.time() + PENDING_LIFETIME)
    signed_in = await current_session(request)
    if signed_in is not None:
        pending.session_id = signed_in[0].id
    await in_thread(records.put_pending, pending)
    target = "consent" if signed_in else "login"
    return RedirectResponse(auth_url(request, target, request=pending.id), status_code=303, headers=NO_STORE)


# -- sign in ----------------------------------------------------------------------------------------

async def _pending(request: Request, pending_id: str | None) -> PendingAuthorization | None:
    if not pending_id:
        return None
    return await in_thread(auth_service(request).records.pending, pending_id)


async def _client_name(request: Request, client_id: str) -> str:
    """The name the app was registered with (clients add --name), else its client_id."""
    client = await in_thread(auth_service(request).records.client, client_id)
    return (client.name if client and client.name else None) or client_id


def _login_page(request: Request, hidden: dict[str, str], client_name: str, *, error: str | None = None,
                username: str = "", status: int = 200) -> Response:
    return html_page(render_login(action=auth_url(request, "login"), hidden=hidden, client_name=client_name,
                                  error=error, username=username), status=status)


def _login_target(request: Request, params) -> tuple[dict[str, str], str | None]:
    """Where a sign-in leads: a pending authorization (`request`) or an /auth/ page (`next`)."""
    if params.get("request"):
        return {"request": params["request"]}, None
    next_path = params.get("next") or "/auth/manage"
    if not next_path.startswith("/auth/") or "//" in next_path or "\\" in next_path:
        next_path = "/auth/manage"
    return {"next": next_path}, next_path


async def login_form(request: Request) -> Response:
    hidden, next_path = _login_target(request, request.query_params)
    if next_path is None:
        pending = await _pending(request, hidden["request"])
        if pending is None:
            return error_page("This sign-in link has expired", "Start again from the app.")
        return _login_page(request, hidden, await _client_name(request, pending.client_id))
    return _login_page(request, hidden, "This server's account page")


def _too_many(failures: list[float]) -> bool:
    return len([t for t in failures if t > time.time() - LOGIN_WINDOW]) >= LOGIN_MAX_FAILURES


async def login(request: Request) -> Response:
    form = dict(await form_pairs(request))
    hidden, next_path = _login_target(request, form)
    pending = None
    if next_path is None:
        pending = await _pending(request, hidden["request"])
        if pending is None:
            return error_page("This sign-in link has expired", "Start again from the app.")
    client_name = await _client_name(request, pending.client_id) if pending else "This server's account page"
    username = form.get("username", "").strip()
    password = form.get("password", "")
    records = auth_service(request).records
    address = f"addr:{request.client.host if request.client else '?'}"
    # Per account *and* address, plus per address: a guesser is stopped, but nobody elsewhere can
    # lock a user out of their own account by failing to sign in as them.
    account = f"user:{username}|{address}"
    if _too_many(await in_thread(records.login_failures, account)) or _too_many(
            await in_thread(records.login_failures, address)):
        report(request, LOGIN, False, username=username or None, client_id=pending.client_id if pending else None,
               detail="locked out: too many failures")
        return _login_page(request, hidden, client_name, username=username, status=429,
                           error=f"Too many failed sign-ins; try again in {LOGIN_WINDOW // 60} minutes")
    user = await in_thread(records.user, username) if username else None
    # Verify against a dummy hash for unknown users too, so timing does not reveal who exists.
    ok = await in_thread(verify_secret, user.password_hash if user else DUMMY_HASH, password)
    if user is None or not ok:
        await in_thread(records.record_login_failure, account, LOGIN_WINDOW)
        await in_thread(records.record_login_failure, address, LOGIN_WINDOW)
        report(request, LOGIN, False, username=username or None, client_id=pending.client_id if pending else None,
               detail="wrong username or password")
        return _login_page(request, hidden, client_name, username=username, status=401,
                           error="Wrong username or password")
    await in_thread(records.clear_login_failures, account)
    report(request, LOGIN, True, username=user.username, fhir_user=user.fhir_user,
           client_id=pending.client_id if pending else None)
    session = _touched(BrowserSession(id=secrets.token_urlsafe(32), username=user.username),
                       auth_service(request).lifetimes.session_idle)
    await in_thread(records.put_session, session)
    if pending is not None:
        pending.session_id = session.id
        await in_thread(records.put_pending, pending)
        target = auth_url(request, "consent", request=pending.id)
    else:
        target = f"{fhir_base(request)}{next_path}"
    response = RedirectResponse(target, status_code=303, headers=NO_STORE)
    # A browser-session cookie (no max_age): the server's record decides when the session ends.
    response.set_cookie(SESSION_COOKIE, session.id, path="/auth", httponly=True,
                        samesite="lax", secure=fhir_base(request).startswith("https:"))
    return response


async def logout(request: Request) -> Response:
    signed_in = await current_session(request)
    if signed_in is not None:
        await in_thread(auth_service(request).records.remove_session, signed_in[0].id)
        report(request, LOGOUT, True, username=signed_in[1].username, fhir_user=signed_in[1].fhir_user)
    response = html_page("<!doctype html><title>Signed out</title><p>You are signed out.</p>")
    response.delete_cookie(SESSION_COOKIE, path="/auth")
    return response


# -- patient and consent ----------------------------------------------------------------------------

async def _consent_context(request: Request, pending_id: str | None):
    """The pending request, its signed-in user, authlib's grant and the offer; or an error response."""
    pending = await _pending(request, pending_id)
    if pending is None:
        return error_page("This authorization request has expired", "Start again from the app.")
    signed_in = await current_session(request)
    if signed_in is None or pending.session_id != signed_in[0].id:
        return RedirectResponse(auth_url(request, "login", request=pending.id), status_code=303, headers=NO_STORE)
    session, user = signed_in
    try:
        oauth_request, grant = await _validated(request, pending)
    except OAuth2Error as error:
        return _oauth_error(request, smart_request(request, [tuple(p) for p in pending.params]), error)
    offer = Offer.build(oauth_request.scope, user)
    return pending, session, user, oauth_request, grant, offer


def _patient_for(user: User, pending: PendingAuthorization, launch: Launch | None) -> str | None:
    if launch is not None:
        return launch.patient
    if user.patient_id:
        return user.patient_id
    return pending.patient


async def consent_form(request: Request) -> Response:
    context = await _consent_context(request, request.query_params.get("request"))
    if isinstance(context, Response):
        return context
    pending, session, user, oauth_request, grant, offer = context
    hidden = {"request": pending.id}
    patient = _patient_for(user, pending, oauth_request.launch)
    if offer.needs_patient and patient is None:
        patients = await _directory(request).patients(100)
        return html_page(render_patient_picker(action=auth_url(request, "patient"), hidden=hidden,
                                               patients=patients,
                                               client_name=await _client_name(request, pending.client_id)))
    patient_display = await _directory(request).display(f"Patient/{patient}") if patient else None
    user_display = await _directory(request).display(user.fhir_user) or user.username
    offline = OFFLINE_ACCESS in offer.scopes or ONLINE_ACCESS in offer.scopes
    return html_page(render_consent(action=auth_url(request, "consent"), hidden=hidden,
                                    client_name=await _client_name(request, pending.client_id),
                                    user_display=user_display,
                                    choices=offer.choices(), patient_display=patient_display, offline=offline,
                                    for_clinician=offer.for_clinician))


async def choose_patient(request: Request) -> Response:
    form = dict(await form_pairs(request))
    context = await _consent_context(request, form.get("request"))
    if isinstance(context, Response):
        return context
    pending, session, user, oauth_request, grant, offer = context
    chosen = form.get("patient", "")
    if not is_clinician(user) or not chosen or await _directory(request).display(f"Patient/{chosen}") is None:
        patients = await _directory(request).patients(100)
        return html_page(render_patient_picker(action=auth_url(request, "patient"), hidden={"request": pending.id},
                                               patients=patients,
                                               client_name=await _client_name(request, pending.client_id),
                                               error="Choose one of the listed patients"), status=400)
    pending.patient = chosen
    await in_thread(auth_service(request).records.put_pending, pending)
    return RedirectResponse(auth_url(request, "consent", request=pending.id), status_code=303, headers=NO_STORE)


async def consent(request: Request) -> Response:
    pairs = await form_pairs(request)
    form = dict(pairs)
    context = await _consent_context(request, form.get("request"))
    if isinstance(context, Response):
        return context
    pending, session, user, oauth_request, grant, offer = context
    records = auth_service(request).records
    server = _server(request)
    if form.get("decision") != "allow":
        await in_thread(records.remove_pending, pending.id)
        report(request, CONSENT, True, username=user.username, fhir_user=user.fhir_user,
               client_id=pending.client_id, detail="deny")
        status, body, headers = await in_thread(server.create_authorization_response, oauth_request, None, grant)
        return oauth_response(status, body, headers)
    posted = [word for key, value in pairs if key == "scope" for word in value.split()]
    launch: Launch | None = oauth_request.launch
    approved = offer.decide(posted)
    if not (launch and launch.encounter):  # no encounter in context: launch/encounter grants nothing
        approved = approved.without([LAUNCH_ENCOUNTER])
    patient = _patient_for(user, pending, launch)
    if offer.needs_patient and patient is None:
        return RedirectResponse(auth_url(request, "consent", request=pending.id), status_code=303, headers=NO_STORE)
    if launch is not None:
        taken, first = await in_thread(records.take_launch, launch.id)
        if taken is None or not first:
            return error_page("This launch has already been used", "Launch the app again from the EHR.")
    oauth_request.consent = {"grant": Grant(
        id=uuid.uuid4().hex, client_id=pending.client_id, scope=approved.text, username=user.username,
        fhir_user=user.fhir_user, patient=patient if (approved.has_context("patient") or offer.needs_patient) else None,
        encounter=launch.encounter if launch else None,
        need_patient_banner=launch.need_patient_banner if launch else None,
        smart_style_url=f"{fhir_base(request)}/auth/smart-style.json" if launch else None,
        intent=launch.intent if launch else None, fhir_context=list(launch.fhir_context) if launch else [],
        nonce=oauth_request.payload.data.get("nonce"), auth_time=session.created_at,
        expires_at=time.time() + 600,  # until the code is exchanged; issuance extends it for refresh
    )}
    status, body, headers = await in_thread(server.create_authorization_response, oauth_request, user, grant)
    await in_thread(records.remove_pending, pending.id)
    report(request, CONSENT, True, username=user.username, fhir_user=user.fhir_user, client_id=pending.client_id,
           grant_id=oauth_request.consent["grant"].id, detail=f"allow {approved.text}")
    return oauth_response(status, body, headers)


# -- EHR launch -------------------------------------------------------------------------------------

async def ehr_launch(request: Request) -> Response:
    """A signed-in clinician opens an app for a patient (and encounter): the EHR side of an EHR
    launch. Answers with a redirect to the app's launch URL carrying `iss` and `launch`."""
    signed_in = await current_session(request)
    if signed_in is None:
        next_path = f"/auth/ehr-launch?{request.url.query}"
        return RedirectResponse(auth_url(request, "login", next=next_path), status_code=303, headers=NO_STORE)
    _, user = signed_in
    params = request.query_params
    if not is_clinician(user):
        return error_page("Only clinicians can launch apps", "Sign in with a clinician account.", status=403)
    client = await in_thread(auth_service(request).records.client, params.get("client_id", ""))
    if client is None or not client.launch_url:
        return error_page("Unknown app", "This app is not registered for EHR launch.", status=404)
    patient = params.get("patient")
    if not patient or await _directory(request).display(f"Patient/{patient}") is None:
        return error_page("Unknown patient", "Choose an existing patient to launch the app for.", status=404)
    encounter = params.get("encounter") or None
    if encounter and await _directory(request).display(f"Encounter/{encounter}") is None:
        return error_page("Unknown encounter", "Choose an existing encounter.", status=404)
    url = await mint_launch(auth_service(request).records, base=fhir_base(request), client=client,
                            patient=patient, encounter=encounter, fhir_user=user.fhir_user, username=user.username)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


async def mint_launch(records, *, base: str, client, patient: str, encounter: str | None, fhir_user: str | None,
                      username: str | None) -> str:
    launch = Launch(id=secrets.token_urlsafe(24), patient=patient, encounter=encounter, fhir_user=fhir_user,
                    username=username, client_id=client.client_id, need_patient_banner=True,
                    expires_at=time.time() + LAUNCH_LIFETIME)
    await in_thread(records.put_launch, launch)
    separator = "&" if "?" in client.launch_url else "?"
    return f"{client.launch_url}{separator}{urlencode({'iss': base, 'launch': launch.id})}"

