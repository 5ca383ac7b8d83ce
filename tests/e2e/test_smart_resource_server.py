"""The FHIR API as a resource server: which bearer tokens it accepts (research/smart.md RS-01..RS-03,
RS-05, matrix item 20). Tokens are minted with the server's own signing key through the shared
record store, or forged with a key of our own."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.e2e.smart_support import seed_two_patients, start_smart_server
from tests.support import FHIR_JSON


@pytest.fixture(scope="module")
def smart(tmp_path_factory):
    server = start_smart_server(tmp_path_factory.mktemp("smart-resource-server"))
    try:
        seed_two_patients(server)
        yield server
    finally:
        server.process.stop()


def _mint(smart, scope: str = "system/*.rs", *, issuer: str | None = None, audience: str | None = None,
          lifetime: int = 300, grant_id: str | None = None, **context) -> str:
    token, _ = smart.auth.tokens.access_token(
        issuer=issuer or smart.base, audience=audience or smart.base, client_id="rs-test", subject="rs-test",
        scope=scope, grant_id=grant_id or uuid.uuid4().hex, lifetime=lifetime, **context)
    return token


def _claims(smart, **overrides) -> dict:
    now = int(time.time())
    return {"iss": smart.base, "aud": smart.base, "sub": "rs-test", "client_id": "rs-test", "scope": "system/*.rs",
            "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex, "grant": uuid.uuid4().hex, **overrides}


def _read(smart, token: str | None, path: str = "Patient/pat-a", scheme: str = "Bearer") -> httpx.Response:
    headers = dict(FHIR_JSON)
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    return httpx.get(f"{smart.base}/{path}", headers=headers)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# -- accepted -------------------------------------------------------------------------------------------

def test_valid_token_reads(smart):
    assert _read(smart, _mint(smart)).status_code == 200


def test_metadata_needs_no_token(smart):
    assert _read(smart, None, "metadata").status_code == 200


# -- 401 ------------------------------------------------------------------------------------------------

def test_no_token_is_401(smart):
    assert _read(smart, None).status_code == 401


def test_no_token_challenges_with_bearer(smart):
    assert _read(smart, None).headers["www-authenticate"].lower().startswith("bearer")


def test_no_token_answers_with_an_operation_outcome(smart):
    assert _read(smart, None).json()["resourceType"] == "OperationOutcome"


def test_no_token_search_is_401(smart):
    assert _read(smart, None, "Observation").status_code == 401


def test_basic_credentials_are_401(smart):
    assert _read(smart, base64.b64encode(b"user:pass").decode(), scheme="Basic").status_code == 401


def test_malformed_token_is_401(smart):
    r = _read(smart, "not-a-jwt")
    assert r.status_code == 401
    assert "invalid_token" in r.headers["www-authenticate"]


def test_token_signed_by_another_key_is_401(smart):
    key = RSAKey.generate_key(2048, parameters={"kid": smart.auth.keys.signing_key.kid})  # even with our kid
    forged = jwt.encode({"alg": "RS256", "typ": "JWT", "kid": key.kid}, _claims(smart), key)
    assert _read(smart, forged).status_code == 401


def test_unsigned_token_is_401(smart):
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(smart))}."
    assert _read(smart, forged).status_code == 401


def test_token_for_another_audience_is_401(smart):
    assert _read(smart, _mint(smart, audience="https://other.example/fhir")).status_code == 401


def test_token_from_another_issuer_is_401(smart):
    assert _read(smart, _mint(smart, issuer="https://other.example/fhir")).status_code == 401


def test_expired_token_is_401(smart):
    r = _read(smart, _mint(smart, lifetime=-100))
    assert r.status_code == 401
    assert "invalid_token" in r.headers["www-authenticate"]


def test_id_token_is_not_an_access_token(smart):
    id_token = smart.auth.tokens.id_token(issuer=smart.base, client_id=smart.base, subject="alice",
                                          fhir_user="Patient/pat-a", nonce=None, auth_time=time.time())
    assert _read(smart, id_token).status_code == 401


def test_token_of_a_revoked_grant_is_401(smart):
    grant_id = uuid.uuid4().hex
    token = _mint(smart, grant_id=grant_id)
    assert _read(smart, token).status_code == 200
    smart.auth.records.revoke_grant(grant_id)  # as another worker process would
    deadline = time.monotonic() + 2.5
    while (status := _read(smart, token).status_code) != 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 401


# -- 403: a good token whose scopes do not cover the interaction --------------------------------------

def test_type_not_in_scope_is_403(smart):
    assert _read(smart, _mint(smart, "system/Observation.rs"), "Patient/pat-a").status_code == 403


def test_read_only_scope_cannot_search(smart):
    assert _read(smart, _mint(smart, "system/Patient.r"), "Patient").status_code == 403


def test_search_only_scope_cannot_read(smart):
    assert _read(smart, _mint(smart, "system/Patient.s"), "Patient/pat-a").status_code == 403


def test_read_scope_cannot_create(smart):
    r = httpx.post(f"{smart.base}/Patient", json={"resourceType": "Patient"},
                   headers={**FHIR_JSON, "Authorization": f"Bearer {_mint(smart)}"})
    assert r.status_code == 403


def test_patient_scope_cannot_read_another_patient(smart):
    token = _mint(smart, "patient/Patient.rs", patient="pat-a")
    assert _read(smart, token, "Patient/pat-b").status_code in (403, 404)


def test_patient_scope_reads_its_own_patient(smart):
    assert _read(smart, _mint(smart, "patient/Patient.rs", patient="pat-a")).status_code == 200
