"""The token endpoint's authorization_code exchange: each client type's authentication, the token
response, the id_token, PKCE and code misuse (research/smart.md TOK-01..TOK-12, SC-07, matrix 10-14)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.e2e.smart_support import (REDIRECT, client_assertion, new_key, pkce_pair,
                                     seed_two_patients, start_smart_server)
from tests.support import FHIR_JSON

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs user/*.rs"
PUBLIC, SYMMETRIC, RSA, EC = "tok-public", "tok-symmetric", "tok-rsa", "tok-ec"
SECRET = "symmetric-secret-1"
PATIENT_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


@pytest.fixture(scope="module")
def keys():
    return {RSA: new_key("RS384"), EC: new_key("ES384")}


@pytest.fixture(scope="module")
def smart(tmp_path_factory, keys):
    server = start_smart_server(tmp_path_factory.mktemp("smart-token"))
    try:
        seed_two_patients(server)
        server.add_client(PUBLIC, "public", SCOPE)
        server.add_client(SYMMETRIC, "symmetric", SCOPE, secret=SECRET)
        for client_id, key in keys.items():
            server.add_client(client_id, "asymmetric", SCOPE, jwks={"keys": [key.as_dict(private=False)]})
        server.add_user("alice", "Patient/pat-a")
        server.add_user("dana", "Practitioner/doc-1")
        yield server
    finally:
        server.process.stop()


def _code(smart, signed_in, client_id: str = PUBLIC, username: str = "alice", scope: str = PATIENT_SCOPE,
          patient: str | None = None) -> tuple[str, str]:
    verifier, challenge = pkce_pair()
    code = signed_in(username).code_for(client_id=client_id, username=username, scope=scope, aud=smart.base,
                                        challenge=challenge, patient=patient)
    return code, verifier


def _post(smart, data: dict, **kwargs) -> httpx.Response:
    return httpx.post(smart.token_url, data={k: v for k, v in data.items() if v is not None}, **kwargs)


def _exchange(smart, code: str, verifier: str | None, client_id: str | None = PUBLIC, *, auth=None,
              headers: dict | None = None, **extra) -> httpx.Response:
    return _post(smart, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                         "code_verifier": verifier, "client_id": client_id, **extra}, auth=auth, headers=headers)


def _read(smart, url: str, token: str) -> httpx.Response:
    if not url.startswith("http"):
        url = f"{smart.base}/{url}"
    return httpx.get(url, headers={**FHIR_JSON, "Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def public_token(smart, signed_in) -> httpx.Response:
    """One code exchange by the public client for the patient user, looked at by several tests."""
    code, verifier = _code(smart, signed_in)
    r = _exchange(smart, code, verifier)
    assert r.status_code == 200, r.text
    return r


@pytest.fixture(scope="module")
def id_token_claims(smart, public_token) -> tuple[dict, dict]:
    jwks = httpx.get(f"{smart.base}/auth/jwks").json()
    decoded = jwt.decode(public_token.json()["id_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
    return decoded.header, decoded.claims


# -- each client type ---------------------------------------------------------------------------------

def test_public_client_exchanges_a_code_with_client_id_in_the_body(public_token):
    assert public_token.json()["access_token"]


def test_symmetric_client_exchanges_a_code_with_basic_auth(smart, signed_in):
    code, verifier = _code(smart, signed_in, SYMMETRIC)
    r = _exchange(smart, code, verifier, client_id=None, auth=(SYMMETRIC, SECRET))
    assert r.status_code == 200, r.text


def test_symmetric_client_exchanges_a_code_with_client_secret_post(smart, signed_in):
    code, verifier = _code(smart, signed_in, SYMMETRIC)
    r = _exchange(smart, code, verifier, client_id=SYMMETRIC, client_secret=SECRET)
    assert r.status_code == 200, r.text


def test_symmetric_client_may_repeat_its_client_id_beside_basic_auth(smart, signed_in):
    code, verifier = _code(smart, signed_in, SYMMETRIC)  # Python fhirclient sends both
    r = _exchange(smart, code, verifier, client_id=SYMMETRIC, auth=(SYMMETRIC, SECRET))
    assert r.status_code == 200, r.text


def test_symmetric_client_with_wrong_secret_is_401(smart, signed_in):
    code, verifier = _code(smart, signed_in, SYMMETRIC)
    r = _exchange(smart, code, verifier, client_id=None, auth=(SYMMETRIC, "not-the-secret"))
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"


def test_symmetric_client_with_wrong_secret_gets_a_basic_challenge(smart, signed_in):
    code, verifier = _code(smart, signed_in, SYMMETRIC)
    r = _exchange(smart, code, verifier, client_id=None, auth=(SYMMETRIC, "not-the-secret"))
    assert r.headers["www-authenticate"].lower().startswith("basic")


def test_symmetric_client_without_its_secret_is_refused(smart, signed_in):
    code, verifier = _code(smart, signed_in, SYMMETRIC)
    assert _exchange(smart, code, verifier, client_id=SYMMETRIC).status_code in (400, 401)


@pytest.mark.parametrize("client_id,alg", [(RSA, "RS384"), (EC, "ES384")])
def test_asymmetric_client_exchanges_a_code_with_private_key_jwt(smart, signed_in, keys, client_id, alg):
    code, verifier = _code(smart, signed_in, client_id)
    assertion = client_assertion(keys[client_id], client_id=client_id, token_url=smart.token_url, alg=alg)
    r = _exchange(smart, code, verifier, client_id=None, client_assertion_type=ASSERTION_TYPE,
                  client_assertion=assertion)
    assert r.status_code == 200, r.text


def test_asymmetric_client_without_an_assertion_is_refused(smart, signed_in):
    code, verifier = _code(smart, signed_in, RSA)
    assert _exchange(smart, code, verifier, client_id=RSA).status_code in (400, 401)


# -- the token response ---------------------------------------------------------------------------------

def test_token_response_is_bearer(public_token):
    assert public_token.json()["token_type"].lower() == "bearer"


def test_token_response_expires_in_is_a_number(public_token):
    expires_in = public_token.json()["expires_in"]
    assert isinstance(expires_in, int) and 0 < expires_in <= 3600


def test_token_response_carries_the_granted_scope(public_token):
    assert set(public_token.json()["scope"].split()) == set(PATIENT_SCOPE.split())


def test_token_response_carries_the_patient(public_token):
    assert public_token.json()["patient"] == "pat-a"


def test_token_response_carries_a_refresh_token_for_offline_access(public_token):
    assert isinstance(public_token.json()["refresh_token"], str)


def test_token_response_has_no_refresh_token_without_offline_access(smart, signed_in):
    code, verifier = _code(smart, signed_in, scope="launch/patient patient/*.rs")
    r = _exchange(smart, code, verifier)
    assert r.status_code == 200
    assert "refresh_token" not in r.json()


@pytest.mark.parametrize("name,value", [("cache-control", "no-store"), ("pragma", "no-cache")])
def test_token_response_is_not_cached(public_token, name, value):
    assert public_token.headers[name] == value


def test_token_endpoint_answers_cors_requests(smart, signed_in):
    code, verifier = _code(smart, signed_in)
    r = _exchange(smart, code, verifier, headers={"Origin": "https://app.example.org"})
    assert r.headers.get("access-control-allow-origin") in ("*", "https://app.example.org")


def test_access_token_reads_the_patient_in_context(smart, public_token):
    assert _read(smart, "Patient/pat-a", public_token.json()["access_token"]).status_code == 200


# -- the id_token ---------------------------------------------------------------------------------------

def test_id_token_is_rs256_with_a_published_kid(smart, id_token_claims):
    header, _ = id_token_claims
    jwks = httpx.get(f"{smart.base}/auth/jwks").json()
    assert header["alg"] == "RS256"
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}


def test_id_token_issuer_is_the_fhir_base(smart, id_token_claims):
    assert id_token_claims[1]["iss"] == smart.base


def test_id_token_audience_is_the_client(id_token_claims):
    aud = id_token_claims[1]["aud"]
    assert aud == PUBLIC or (isinstance(aud, list) and PUBLIC in aud)


def test_id_token_subject_is_set(id_token_claims):
    sub = id_token_claims[1]["sub"]
    assert isinstance(sub, str) and 0 < len(sub) <= 255


def test_id_token_is_fresh(id_token_claims):
    claims = id_token_claims[1]
    assert claims["iat"] <= time.time() + 5 < claims["exp"]


def test_id_token_fhir_user_names_the_patient(smart, id_token_claims):
    assert id_token_claims[1]["fhirUser"] in (f"{smart.base}/Patient/pat-a", "Patient/pat-a")


def test_patient_fhir_user_is_readable_with_the_access_token(smart, public_token, id_token_claims):
    r = _read(smart, id_token_claims[1]["fhirUser"], public_token.json()["access_token"])
    assert r.status_code == 200
    assert r.json()["id"] == "pat-a"


def test_practitioner_fhir_user_is_readable_with_user_practitioner_scope(smart, signed_in):
    code, verifier = _code(smart, signed_in, username="dana", scope="openid fhirUser user/Practitioner.rs")
    token = _exchange(smart, code, verifier).json()
    jwks = KeySet.import_key_set(httpx.get(f"{smart.base}/auth/jwks").json())
    fhir_user = jwt.decode(token["id_token"], jwks, algorithms=["RS256"]).claims["fhirUser"]
    assert fhir_user.endswith("Practitioner/doc-1")
    assert _read(smart, fhir_user, token["access_token"]).status_code == 200


def test_no_id_token_without_openid(smart, signed_in):
    code, verifier = _code(smart, signed_in, scope="launch/patient fhirUser patient/*.rs")
    assert "id_token" not in _exchange(smart, code, verifier).json()


# -- PKCE: four separate launches, each refused --------------------------------------------------------

@pytest.mark.parametrize("case", ["missing", "empty", "wrong", "challenge"])
def test_bad_code_verifier_is_refused(smart, signed_in, case):
    verifier, challenge = pkce_pair()
    code = signed_in("alice").code_for(client_id=PUBLIC, username="alice", scope=PATIENT_SCOPE, aud=smart.base,
                                       challenge=challenge)
    sent = {"missing": None, "empty": "", "wrong": f"{uuid.uuid4()}-{uuid.uuid4()}", "challenge": challenge}[case]
    assert _exchange(smart, code, sent).status_code in (400, 401)


# -- codes, clients, redirect URIs ----------------------------------------------------------------------

def test_invalid_code_is_exactly_400_invalid_grant(smart):
    r = _exchange(smart, "BAD_CODE", pkce_pair()[0])
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"


def test_unknown_client_with_basic_auth_is_refused(smart, signed_in):
    code, verifier = _code(smart, signed_in)
    r = _exchange(smart, code, verifier, client_id=None, auth=("no-such-client", "whatever"))
    assert r.status_code in (400, 401)
    assert r.json()["error"] == "invalid_client"


def test_unknown_public_client_id_is_refused(smart, signed_in):
    code, verifier = _code(smart, signed_in)
    assert _exchange(smart, code, verifier, client_id="no-such-client").status_code in (400, 401)


def test_wrong_redirect_uri_at_exchange_is_400(smart, signed_in):
    code, verifier = _code(smart, signed_in)
    r = _exchange(smart, code, verifier, redirect_uri="http://127.0.0.1:9/other")
    assert r.status_code == 400


def test_code_of_another_client_is_refused(smart, signed_in):
    code, verifier = _code(smart, signed_in, SYMMETRIC)
    assert _exchange(smart, code, verifier, client_id=PUBLIC).status_code == 400


def test_unsupported_grant_type_is_exactly_400(smart):
    r = _post(smart, {"grant_type": "not_a_grant_type", "client_id": PUBLIC})
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_grant_type"


def test_reused_code_is_400(smart, signed_in):
    code, verifier = _code(smart, signed_in)
    assert _exchange(smart, code, verifier).status_code == 200
    r = _exchange(smart, code, verifier)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"


def test_reused_code_revokes_the_access_token_it_issued(smart, signed_in):
    code, verifier = _code(smart, signed_in)
    token = _exchange(smart, code, verifier).json()["access_token"]
    assert _read(smart, "Patient/pat-a", token).status_code == 200
    assert _exchange(smart, code, verifier).status_code == 400
    deadline = time.monotonic() + 3.0
    while (status := _read(smart, "Patient/pat-a", token).status_code) != 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 401


def test_reused_code_revokes_the_refresh_token_it_issued(smart, signed_in):
    code, verifier = _code(smart, signed_in)
    refresh = _exchange(smart, code, verifier).json()["refresh_token"]
    assert _exchange(smart, code, verifier).status_code == 400
    r = _post(smart, {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": PUBLIC})
    assert r.status_code in (400, 401)
