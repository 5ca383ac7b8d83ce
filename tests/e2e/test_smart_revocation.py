"""Revocation: RFC 7009 at /auth/revoke and the user's own management page (research/smart.md
REV-01, REV-02, RS-05, matrix item 19). Revoking a token ends its whole grant; the resource server
follows the revocation feed at most once a second, so access tokens die within about two seconds."""

from __future__ import annotations

import re
import secrets
import time

import httpx
import pytest

from tests.e2e.smart_support import (PASSWORD, REDIRECT, Browserless, client_assertion, new_key, pkce_pair,
                                     seed_two_patients, start_smart_server)
from tests.support import FHIR_JSON

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
APP, OTHER_APP, SYMMETRIC, BACKEND = "rev-app", "rev-other-app", "rev-symmetric", "rev-backend"
SECRET = "rev-secret"
SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


@pytest.fixture(scope="module")
def backend_key():
    return new_key("RS384")


@pytest.fixture(scope="module")
def smart(tmp_path_factory, backend_key):
    server = start_smart_server(tmp_path_factory.mktemp("smart-revocation"))
    try:
        seed_two_patients(server)
        server.add_client(APP, "public", SCOPE)
        server.add_client(OTHER_APP, "public", SCOPE)
        server.add_client(SYMMETRIC, "symmetric", SCOPE, secret=SECRET)
        server.add_client(BACKEND, "asymmetric", "system/*.rs", jwks={"keys": [backend_key.as_dict(private=False)]},
                          redirect_uris=[])
        server.add_user("alice", "Patient/pat-a")
        server.add_user("bob", "Patient/pat-b")
        yield server
    finally:
        server.process.stop()


def _token(smart, signed_in, client_id: str = APP, username: str = "alice") -> dict:
    verifier, challenge = pkce_pair()
    code = signed_in(username).code_for(client_id=client_id, username=username, scope=SCOPE, aud=smart.base,
                                        challenge=challenge)
    client = {"client_id": client_id} if client_id != SYMMETRIC else {}
    r = httpx.post(smart.token_url, data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                          "code_verifier": verifier, **client},
                   auth=(SYMMETRIC, SECRET) if client_id == SYMMETRIC else None)
    assert r.status_code == 200, r.text
    return r.json()


def _revoke(smart, token: str, client_id: str = APP, **extra) -> httpx.Response:
    return httpx.post(f"{smart.base}/auth/revoke", data={"token": token, "client_id": client_id, **extra})


def _read_status(smart, access_token: str, patient: str = "pat-a") -> int:
    r = httpx.get(f"{smart.base}/Patient/{patient}", headers={**FHIR_JSON, "Authorization": f"Bearer {access_token}"})
    return r.status_code


def _status_settles(smart, access_token: str, expected: int, patient: str = "pat-a", within: float = 2.5) -> int:
    """The read's status once it equals `expected`, or the last one seen after `within` seconds."""
    deadline = time.monotonic() + within
    while (status := _read_status(smart, access_token, patient)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return status


def _refresh(smart, refresh_token: str, client_id: str = APP) -> httpx.Response:
    return httpx.post(smart.token_url, data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                             "client_id": client_id})


@pytest.fixture()
def token(smart, signed_in) -> dict:
    return _token(smart, signed_in)


# -- /auth/revoke ---------------------------------------------------------------------------------------

def test_revoking_a_refresh_token_is_200(smart, token):
    assert _revoke(smart, token["refresh_token"], token_type_hint="refresh_token").status_code == 200


def test_revoking_a_refresh_token_stops_its_access_token(smart, token):
    assert _read_status(smart, token["access_token"]) == 200
    _revoke(smart, token["refresh_token"], token_type_hint="refresh_token")
    assert _status_settles(smart, token["access_token"], 401) == 401


def test_revoking_a_refresh_token_stops_the_refresh_token(smart, token):
    _revoke(smart, token["refresh_token"])
    r = _refresh(smart, token["refresh_token"])
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"


def test_revoking_an_access_token_is_200(smart, token):
    assert _revoke(smart, token["access_token"], token_type_hint="access_token").status_code == 200


def test_revoking_an_access_token_stops_it(smart, token):
    _revoke(smart, token["access_token"])
    assert _status_settles(smart, token["access_token"], 401) == 401


def test_revoking_an_access_token_stops_the_refresh_token(smart, token):
    _revoke(smart, token["access_token"])
    assert _refresh(smart, token["refresh_token"]).status_code in (400, 401)


def test_revoked_access_token_introspects_inactive(smart, token):
    _revoke(smart, token["access_token"])
    r = httpx.post(f"{smart.base}/auth/introspect", data={"token": token["access_token"], "client_id": APP})
    assert r.json() == {"active": False}


def test_revoking_an_unknown_token_is_200(smart):
    assert _revoke(smart, secrets.token_urlsafe(32)).status_code == 200


def _revoked_grants(smart) -> set[str]:
    """Every grant id on the revocation feed the resource server follows."""
    return {grant_id for _, grant_id in smart.auth.records.revocations(0)}


def _grant_of(smart, access_token: str) -> str:
    return smart.auth.tokens.claims(access_token, issuer=smart.base, audience=smart.base)["grant"]


def test_revoking_another_clients_token_leaves_it_working(smart, token):
    _revoke(smart, token["access_token"], client_id=OTHER_APP)
    assert _grant_of(smart, token["access_token"]) not in _revoked_grants(smart)
    assert _read_status(smart, token["access_token"]) == 200


def test_revoking_without_client_authentication_is_refused(smart, token):
    r = httpx.post(f"{smart.base}/auth/revoke", data={"token": token["access_token"]})
    assert r.status_code in (400, 401)
    assert _read_status(smart, token["access_token"]) == 200


def test_symmetric_client_revokes_with_basic_auth(smart, signed_in):
    token = _token(smart, signed_in, SYMMETRIC)
    r = httpx.post(f"{smart.base}/auth/revoke", data={"token": token["refresh_token"]}, auth=(SYMMETRIC, SECRET))
    assert r.status_code == 200
    assert _status_settles(smart, token["access_token"], 401) == 401


def test_backend_client_revokes_its_token_with_an_assertion(smart, backend_key):
    def assertion() -> str:
        return client_assertion(backend_key, client_id=BACKEND, token_url=smart.token_url, alg="RS384")

    access = httpx.post(smart.token_url, data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                               "client_assertion_type": ASSERTION_TYPE,
                                               "client_assertion": assertion()}).json()["access_token"]
    r = httpx.post(f"{smart.base}/auth/revoke", data={"token": access, "client_assertion_type": ASSERTION_TYPE,
                                                      "client_assertion": assertion()})
    assert r.status_code == 200
    assert _status_settles(smart, access, 401) == 401


# -- the management page (management_endpoint) ---------------------------------------------------------

def _listed_grants(page: str) -> list[str]:
    return re.findall(r'name="grant" value="([^"]+)"', page)


def test_manage_page_without_sign_in_redirects_to_sign_in(smart):
    r = httpx.get(f"{smart.base}/auth/manage")
    assert r.status_code == 303
    assert "/auth/login" in r.headers["location"]


def test_sign_in_with_next_leads_to_the_manage_page(smart):
    browser = Browserless(smart.base)
    try:
        r = browser.http.post("/auth/login", data={"username": "bob", "password": PASSWORD, "next": "/auth/manage"})
    finally:
        browser.close()
    assert r.status_code == 303
    assert r.headers["location"] == f"{smart.base}/auth/manage"


def test_manage_page_lists_the_app(smart, signed_in):
    _token(smart, signed_in, OTHER_APP, username="bob")
    page = signed_in("bob").http.get("/auth/manage")
    assert page.status_code == 200
    assert OTHER_APP in page.text
    assert _listed_grants(page.text)


def test_manage_page_revoke_stops_the_access_token(smart, signed_in):
    token = _token(smart, signed_in, OTHER_APP, username="bob")
    bob = signed_in("bob")
    for grant in _listed_grants(bob.http.get("/auth/manage").text):
        r = bob.http.post("/auth/manage", data={"grant": grant})
        assert r.status_code == 303
    assert _status_settles(smart, token["access_token"], 401, patient="pat-b") == 401
    assert _refresh(smart, token["refresh_token"], OTHER_APP).status_code in (400, 401)


def test_manage_page_cannot_revoke_another_users_grant(smart, signed_in):
    token = _token(smart, signed_in, APP, username="alice")
    for grant in _listed_grants(signed_in("alice").http.get("/auth/manage").text):
        signed_in("bob").http.post("/auth/manage", data={"grant": grant})
    assert _grant_of(smart, token["access_token"]) not in _revoked_grants(smart)
    assert _read_status(smart, token["access_token"]) == 200
