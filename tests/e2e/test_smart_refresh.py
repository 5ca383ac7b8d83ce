"""grant_type=refresh_token: scope handling, rotation with reuse detection, public clients that
send no client_id, and asymmetric clients (research/smart.md REF-01..REF-07, AL-05..AL-07,
matrix item 15)."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.e2e.smart_support import (PASSWORD, REDIRECT, Browserless, client_assertion, new_key, pkce_pair,
                                     seed_two_patients, start_smart_server)
from tests.support import FHIR_JSON

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PUBLIC, RSA = "refresh-public", "refresh-rsa"
SCOPE = "launch/patient openid fhirUser offline_access patient/Observation.rs patient/Patient.rs"


@pytest.fixture(scope="module")
def rsa_key():
    return new_key("RS384")


@pytest.fixture(scope="module")
def smart(tmp_path_factory, rsa_key):
    server = start_smart_server(tmp_path_factory.mktemp("smart-refresh"))
    try:
        seed_two_patients(server)
        server.add_client(PUBLIC, "public", SCOPE)
        server.add_client(RSA, "asymmetric", SCOPE, jwks={"keys": [rsa_key.as_dict(private=False)]})
        server.add_user("alice", "Patient/pat-a")
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="module")
def alice(smart):
    """alice, signed in once for the whole module (each sign-in costs an argon2 hash)."""
    browser = Browserless(smart.base)
    r = browser.http.post("/auth/login", data={"username": "alice", "password": PASSWORD, "next": "/auth/manage"})
    assert r.status_code == 303, r.text
    yield browser
    browser.close()


def _assertion(smart, key) -> dict:
    return {"client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(key, client_id=RSA, token_url=smart.token_url, alg="RS384")}


def _first_token(smart, browser: Browserless, client_id: str = PUBLIC, auth: dict | None = None) -> dict:
    """A fresh authorization (code flow) with a refresh token."""
    verifier, challenge = pkce_pair()
    code = browser.code_for(client_id=client_id, username="alice", scope=SCOPE, aud=smart.base, challenge=challenge)
    client = auth if auth is not None else {"client_id": client_id}
    r = httpx.post(smart.token_url, data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                          "code_verifier": verifier, **client})
    assert r.status_code == 200, r.text
    return r.json()


def _refresh(smart, refresh_token: str, scope: str | None = None, client: dict | None = None) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token,
            **(client if client is not None else {"client_id": PUBLIC})}
    if scope is not None:
        data["scope"] = scope
    return httpx.post(smart.token_url, data=data)


@pytest.fixture()
def token(smart, alice) -> dict:
    return _first_token(smart, alice)


# -- scope --------------------------------------------------------------------------------------------

def test_refresh_without_scope_keeps_the_granted_scope(smart, token):
    r = _refresh(smart, token["refresh_token"])
    assert r.status_code == 200, r.text
    assert set(r.json()["scope"].split()) == set(token["scope"].split())


def test_refresh_with_the_identical_scope_string_succeeds(smart, token):
    r = _refresh(smart, token["refresh_token"], scope=token["scope"])
    assert r.status_code == 200, r.text
    assert set(r.json()["scope"].split()) == set(token["scope"].split())


def test_refresh_with_a_strict_subset_grants_that_subset(smart, token):
    r = _refresh(smart, token["refresh_token"], scope="patient/Observation.rs")
    assert r.status_code == 200, r.text
    assert r.json()["scope"].split() == ["patient/Observation.rs"]


def test_refresh_with_a_narrower_permission_is_a_subset(smart, token):
    r = _refresh(smart, token["refresh_token"], scope="patient/Observation.r")
    assert r.status_code == 200, r.text
    assert r.json()["scope"].split() == ["patient/Observation.r"]


def test_refresh_asking_for_more_scope_is_invalid_scope(smart, token):
    r = _refresh(smart, token["refresh_token"], scope=token["scope"] + " patient/Condition.rs")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_scope"


def test_refresh_asking_for_wider_permissions_is_invalid_scope(smart, token):
    r = _refresh(smart, token["refresh_token"], scope="patient/Observation.cruds")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_scope"


def test_refused_wider_scope_does_not_use_up_the_refresh_token(smart, token):
    assert _refresh(smart, token["refresh_token"], scope="patient/*.cruds").status_code == 400
    assert _refresh(smart, token["refresh_token"]).status_code == 200


# -- the response -------------------------------------------------------------------------------------

def test_refresh_response_is_a_complete_bearer_token(smart, token):
    body = _refresh(smart, token["refresh_token"]).json()
    assert body["token_type"].lower() == "bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert body["access_token"] and body["access_token"] != token["access_token"]


@pytest.mark.parametrize("name,value", [("cache-control", "no-store"), ("pragma", "no-cache")])
def test_refresh_response_is_not_cached(smart, token, name, value):
    assert _refresh(smart, token["refresh_token"]).headers[name] == value


def test_refresh_response_repeats_the_patient(smart, token):
    assert _refresh(smart, token["refresh_token"]).json()["patient"] == "pat-a"


def test_refreshed_access_token_reads_the_patient(smart, token):
    access = _refresh(smart, token["refresh_token"]).json()["access_token"]
    r = httpx.get(f"{smart.base}/Patient/pat-a", headers={**FHIR_JSON, "Authorization": f"Bearer {access}"})
    assert r.status_code == 200


# -- rotation -----------------------------------------------------------------------------------------

def test_refresh_rotates_the_refresh_token(smart, token):
    new = _refresh(smart, token["refresh_token"]).json()["refresh_token"]
    assert new and new != token["refresh_token"]


def test_rotated_refresh_token_works(smart, token):
    new = _refresh(smart, token["refresh_token"]).json()["refresh_token"]
    assert _refresh(smart, new).status_code == 200


def test_refreshing_twice_in_a_row_without_then_with_scope_works(smart, token):
    first = _refresh(smart, token["refresh_token"])
    second = _refresh(smart, first.json()["refresh_token"], scope=token["scope"])
    assert (first.status_code, second.status_code) == (200, 200)


def test_reused_refresh_token_is_400(smart, token):
    assert _refresh(smart, token["refresh_token"]).status_code == 200
    r = _refresh(smart, token["refresh_token"])
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"


def test_reused_refresh_token_revokes_the_newest_refresh_token(smart, token):
    newest = _refresh(smart, token["refresh_token"]).json()["refresh_token"]
    assert _refresh(smart, token["refresh_token"]).status_code == 400
    assert _refresh(smart, newest).status_code in (400, 401)


# -- client authentication ----------------------------------------------------------------------------

def test_public_client_refreshes_without_client_id(smart, token):
    r = _refresh(smart, token["refresh_token"], client={})
    assert r.status_code == 200, r.text


def test_random_refresh_token_is_refused(smart):
    assert _refresh(smart, secrets.token_urlsafe(48)).status_code in (400, 401)


def test_random_refresh_token_without_client_id_is_refused(smart):
    assert _refresh(smart, secrets.token_urlsafe(48), client={}).status_code in (400, 401)


def test_refresh_token_of_another_client_is_refused(smart, token, rsa_key):
    r = _refresh(smart, token["refresh_token"], client=_assertion(smart, rsa_key))
    assert r.status_code in (400, 401)


def test_another_clients_attempt_does_not_use_up_the_refresh_token(smart, token, rsa_key):
    assert _refresh(smart, token["refresh_token"], client=_assertion(smart, rsa_key)).status_code in (400, 401)
    assert _refresh(smart, token["refresh_token"]).status_code == 200


def test_asymmetric_client_refreshes_with_a_new_assertion(smart, alice, rsa_key):
    first = _first_token(smart, alice, RSA, auth=_assertion(smart, rsa_key))
    r = _refresh(smart, first["refresh_token"], client=_assertion(smart, rsa_key))
    assert r.status_code == 200, r.text
    assert r.json()["refresh_token"]


def test_asymmetric_client_refresh_without_assertion_is_refused(smart, alice, rsa_key):
    first = _first_token(smart, alice, RSA, auth=_assertion(smart, rsa_key))
    assert _refresh(smart, first["refresh_token"], client={"client_id": RSA}).status_code in (400, 401)
