"""RFC 7662 token introspection as SMART describes it (research/smart.md INT-01..INT-05, matrix
item 18): who may ask, and what an active and an inactive token answer."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.e2e.smart_support import (REDIRECT, client_assertion, new_key, pkce_pair,
                                     seed_two_patients, start_smart_server)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
APP, OTHER_APP, RESOURCE_SERVER, BACKEND = "intro-app", "intro-other-app", "intro-rs", "intro-backend"
RS_SECRET = "resource-server-secret"
SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


@pytest.fixture(scope="module")
def backend_key():
    return new_key("ES384")


@pytest.fixture(scope="module")
def smart(tmp_path_factory, backend_key):
    server = start_smart_server(tmp_path_factory.mktemp("smart-introspection"))
    try:
        seed_two_patients(server)
        server.add_client(APP, "public", SCOPE)
        server.add_client(OTHER_APP, "public", SCOPE)
        server.add_client(RESOURCE_SERVER, "symmetric", "user/*.rs", secret=RS_SECRET)
        server.add_client(BACKEND, "asymmetric", "system/*.rs", jwks={"keys": [backend_key.as_dict(private=False)]},
                          redirect_uris=[])
        server.add_user("alice", "Patient/pat-a")
        yield server
    finally:
        server.process.stop()


def _token(smart, signed_in, client_id: str = APP) -> dict:
    verifier, challenge = pkce_pair()
    code = signed_in("alice").code_for(client_id=client_id, username="alice", scope=SCOPE, aud=smart.base,
                                       challenge=challenge)
    r = httpx.post(smart.token_url, data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                          "code_verifier": verifier, "client_id": client_id})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def app_token(smart, signed_in) -> dict:
    return _token(smart, signed_in)


def _introspect(smart, token: str, *, auth=(RESOURCE_SERVER, RS_SECRET), headers: dict | None = None,
                **extra) -> httpx.Response:
    return httpx.post(f"{smart.base}/auth/introspect", data={"token": token, **extra}, auth=auth, headers=headers)


@pytest.fixture(scope="module")
def introspected(smart, app_token) -> dict:
    r = _introspect(smart, app_token["access_token"])
    assert r.status_code == 200, r.text
    return r.json()


# -- an active access token -----------------------------------------------------------------------------

def test_active_access_token_is_active(introspected):
    assert introspected["active"] is True


def test_introspected_scope_has_the_members_of_the_token_response_scope(introspected, app_token):
    assert sorted(introspected["scope"].split()) == sorted(app_token["scope"].split())


def test_introspected_client_id_is_the_app(introspected):
    assert introspected["client_id"] == APP


def test_introspected_exp_matches_expires_in(introspected, app_token):
    assert isinstance(introspected["exp"], int)
    assert abs(introspected["exp"] - (time.time() + app_token["expires_in"])) < 60


def test_introspected_patient_matches_the_token_response(introspected, app_token):
    assert introspected["patient"] == app_token["patient"]


def test_introspected_iss_is_the_fhir_base(smart, introspected):
    assert introspected["iss"] == smart.base


def test_introspected_sub_is_the_id_token_subject(smart, introspected, app_token):
    jwks = KeySet.import_key_set(httpx.get(f"{smart.base}/auth/jwks").json())
    claims = jwt.decode(app_token["id_token"], jwks, algorithms=["RS256"]).claims
    assert introspected["sub"] == claims["sub"]


def test_introspected_fhir_user_names_the_patient(introspected):
    assert introspected["fhirUser"].endswith("Patient/pat-a")


# -- other tokens ---------------------------------------------------------------------------------------

def test_refresh_token_introspects_active(smart, app_token):
    body = _introspect(smart, app_token["refresh_token"], token_type_hint="refresh_token").json()
    assert body["active"] is True
    assert body["client_id"] == APP
    assert sorted(body["scope"].split()) == sorted(app_token["scope"].split())


def test_refresh_token_introspects_active_without_a_hint(smart, app_token):
    assert _introspect(smart, app_token["refresh_token"]).json()["active"] is True


def test_invalid_token_is_exactly_200_active_false(smart):
    r = _introspect(smart, "invalid_token_value")
    assert r.status_code == 200
    assert r.json() == {"active": False}


def test_expired_access_token_is_inactive(smart):
    expired, _ = smart.auth.tokens.access_token(issuer=smart.base, audience=smart.base, client_id=APP,
                                                subject="alice", scope="patient/*.rs", grant_id=uuid.uuid4().hex,
                                                lifetime=-100, patient="pat-a")
    assert _introspect(smart, expired).json() == {"active": False}


def test_backend_token_introspects_active_with_its_scope(smart, backend_key):
    assertion = client_assertion(backend_key, client_id=BACKEND, token_url=smart.token_url, alg="ES384")
    token = httpx.post(smart.token_url, data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                              "client_assertion_type": ASSERTION_TYPE,
                                              "client_assertion": assertion}).json()
    body = _introspect(smart, token["access_token"]).json()
    assert (body["active"], body["client_id"], body["scope"]) == (True, BACKEND, "system/*.rs")


# -- who may ask ----------------------------------------------------------------------------------------

def test_confidential_clients_bearer_token_may_introspect_any_token(smart, backend_key, app_token):
    assertion = client_assertion(backend_key, client_id=BACKEND, token_url=smart.token_url, alg="ES384")
    caller = httpx.post(smart.token_url, data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                               "client_assertion_type": ASSERTION_TYPE,
                                               "client_assertion": assertion}).json()["access_token"]
    r = _introspect(smart, app_token["access_token"], auth=None, headers={"Authorization": f"Bearer {caller}"})
    assert r.status_code == 200
    assert r.json()["active"] is True


def test_public_clients_bearer_token_may_introspect_only_its_own_tokens(smart, signed_in, app_token):
    caller = _token(smart, signed_in, OTHER_APP)["access_token"]
    other = _introspect(smart, app_token["access_token"], auth=None, headers={"Authorization": f"Bearer {caller}"})
    own = _introspect(smart, caller, auth=None, headers={"Authorization": f"Bearer {caller}"})
    assert other.json() == {"active": False}
    assert own.json()["active"] is True


def test_invalid_bearer_token_may_not_introspect(smart, app_token):
    r = _introspect(smart, app_token["access_token"], auth=None, headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401


def test_unauthenticated_introspection_is_refused(smart, app_token):
    r = _introspect(smart, app_token["access_token"], auth=None)
    assert r.status_code in (400, 401)
    assert "active" not in r.json()


def test_wrong_client_secret_may_not_introspect(smart, app_token):
    r = _introspect(smart, app_token["access_token"], auth=(RESOURCE_SERVER, "wrong"))
    assert r.status_code == 401


def test_public_client_may_introspect_its_own_token(smart, app_token):
    r = _introspect(smart, app_token["access_token"], auth=None, client_id=APP)
    assert r.status_code == 200
    assert r.json()["active"] is True


def test_public_client_may_not_introspect_another_clients_token(smart, app_token):
    r = _introspect(smart, app_token["access_token"], auth=None, client_id=OTHER_APP)
    assert r.status_code == 200
    assert r.json() == {"active": False}


@pytest.mark.parametrize("name,value", [("cache-control", "no-store"), ("pragma", "no-cache")])
def test_introspection_response_is_not_cached(smart, app_token, name, value):
    assert _introspect(smart, app_token["access_token"]).headers[name] == value
