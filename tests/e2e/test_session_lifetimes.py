"""Automatic logoff end to end, on a server with short lifetimes set through the environment
(FHIR_SESSION_IDLE_SECONDS, FHIR_ACCESS_TOKEN_SECONDS, FHIR_REFRESH_TOKEN_MAX_SECONDS): an idle
sign-in session ends and the user signs in again; access tokens live the configured time; a
refresh token stops working at its absolute lifetime however often it was rotated."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from tests.e2e.smart_support import PASSWORD, REDIRECT, Browserless, pkce_pair, start_smart_server

IDLE, ACCESS, REFRESH_MAX = 3, 120, 8
CLIENT = "logoff-app"
SCOPE = "launch/patient openid fhirUser offline_access patient/Patient.rs"


@pytest.fixture(scope="module")
def smart(tmp_path_factory):
    server = start_smart_server(tmp_path_factory.mktemp("logoff"), env={
        "FHIR_SESSION_IDLE_SECONDS": str(IDLE), "FHIR_ACCESS_TOKEN_SECONDS": str(ACCESS),
        "FHIR_REFRESH_TOKEN_MAX_SECONDS": str(REFRESH_MAX)})
    try:
        server.put({"resourceType": "Patient", "id": "pat-l", "name": [{"family": "Logoff"}]})
        server.add_client(CLIENT, "public", SCOPE)
        server.add_user("lena", "Patient/pat-l")
        yield server
    finally:
        server.process.stop()


def _claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _sign_in(smart) -> tuple[Browserless, httpx.Response]:
    browser = Browserless(smart.base)
    r = browser.http.post("/auth/login", data={"username": "lena", "password": PASSWORD, "next": "/auth/manage"})
    assert r.status_code == 303, r.text
    return browser, r


def test_an_idle_session_ends_and_the_user_signs_in_again(smart):
    browser, signed_in = _sign_in(smart)
    try:
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "max-age" not in cookie and "expires" not in cookie  # a browser-session cookie
        # in use: each request restarts the idle clock, so the session outlives IDLE seconds of use
        started = time.monotonic()
        while time.monotonic() - started < 2 * IDLE:
            assert browser.http.get("/auth/manage").status_code == 200
            time.sleep(IDLE / 3)
        # idle: after IDLE seconds without a request the session is gone
        time.sleep(IDLE + 1)
        r = browser.http.get("/auth/manage")
        assert r.status_code == 303 and "/auth/login" in r.headers["location"]
        verifier, challenge = pkce_pair()
        r = browser.authorize(response_type="code", client_id=CLIENT, redirect_uri=REDIRECT, scope=SCOPE,
                              state="s-1", aud=smart.base, code_challenge=challenge, code_challenge_method="S256")
        assert r.status_code == 303 and "/auth/login" in r.headers["location"]  # not straight to consent
        # signing in again works and starts a new session
        assert browser.sign_in(r.headers["location"], "lena").status_code == 303
        assert browser.http.get("/auth/manage").status_code == 200
    finally:
        browser.close()


def _tokens(smart) -> dict:
    verifier, challenge = pkce_pair()
    browser = Browserless(smart.base)
    try:
        code = browser.code_for(client_id=CLIENT, username="lena", scope=SCOPE, aud=smart.base, challenge=challenge)
    finally:
        browser.close()
    r = httpx.post(smart.token_url, data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                          "code_verifier": verifier, "client_id": CLIENT})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


def test_access_tokens_live_the_configured_lifetime(smart):
    body = _tokens(smart)
    assert body["expires_in"] == ACCESS
    claims = _claims(body["access_token"])
    assert claims["exp"] - claims["iat"] == ACCESS
    id_claims = _claims(body["id_token"])
    assert id_claims["exp"] - id_claims["iat"] == ACCESS


def _refresh(smart, refresh_token: str) -> httpx.Response:
    return httpx.post(smart.token_url, data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                             "client_id": CLIENT})


def test_a_refresh_token_stops_at_its_absolute_lifetime_whatever_the_rotations(smart):
    approved = time.time()
    body = _tokens(smart)
    refresh_token = body["refresh_token"]
    rotations = 0
    while time.time() - approved < REFRESH_MAX - 3:  # rotate while well inside the lifetime
        r = _refresh(smart, refresh_token)
        assert r.status_code == 200, r.text
        refresh_token = r.json()["refresh_token"]
        rotations += 1
        time.sleep(1)
    assert rotations >= 2
    time.sleep(max(0.0, approved + REFRESH_MAX + 1 - time.time()))
    r = _refresh(smart, refresh_token)  # the newest one, never used: still past the absolute end
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
