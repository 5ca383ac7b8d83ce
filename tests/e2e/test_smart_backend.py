"""SMART Backend Services: grant_type=client_credentials with private_key_jwt client assertions
(research/smart.md JWT-01..JWT-09, BS-01..BS-06, matrix item 16). Keys come from inline JWK Sets
and from JWKS URLs served by a small local HTTP server that counts how often it is asked."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from tests.e2e.smart_support import client_assertion, new_key, seed_two_patients, start_smart_server
from tests.support import FHIR_JSON

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REGISTERED = "system/*.rs"
RSA, EC, MIXED = "bs-rsa", "bs-ec", "bs-mixed"
CACHED, NO_STORE, JKU = "bs-url-cached", "bs-url-no-store", "bs-url-jku"
ROTATING, MISSING = "bs-url-rotating", "bs-url-missing"


class JwksServer:
    """Serves JWK Sets at paths, each with its own Cache-Control, and counts the requests."""

    def __init__(self):
        self.routes: dict[str, tuple[dict, str]] = {}
        self.hits: dict[str, int] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                if self.path not in owner.routes:
                    self.send_response(404)
                    self.end_headers()
                    return
                jwks, cache_control = owner.routes[self.path]
                body = json.dumps(jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", cache_control)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def serve(self, path: str, jwks: dict, cache_control: str) -> str:
        self.routes[path] = (jwks, cache_control)
        return self.url(path)


@pytest.fixture(scope="module")
def jwks_server():
    server = JwksServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="module")
def keys():
    return {RSA: new_key("RS384"), EC: new_key("ES384"), "mixed-rsa": new_key("RS384"), "mixed-ec": new_key("ES384"),
            CACHED: new_key("RS384"), NO_STORE: new_key("ES384"), JKU: new_key("RS384"), ROTATING: new_key("ES384"),
            "rotated": new_key("ES384"), MISSING: new_key("RS384")}


def _public(*keys) -> dict:
    return {"keys": [k.as_dict(private=False) for k in keys]}


@pytest.fixture(scope="module")
def smart(tmp_path_factory, keys, jwks_server):
    server = start_smart_server(tmp_path_factory.mktemp("smart-backend"))
    try:
        seed_two_patients(server)
        for client_id in (RSA, EC):
            server.add_client(client_id, "asymmetric", REGISTERED, jwks=_public(keys[client_id]), redirect_uris=[])
        server.add_client(MIXED, "asymmetric", REGISTERED, jwks=_public(keys["mixed-rsa"], keys["mixed-ec"]),
                          redirect_uris=[])
        server.add_client(CACHED, "asymmetric", REGISTERED, redirect_uris=[],
                          jwks_url=jwks_server.serve("/cached.json", _public(keys[CACHED]), "public, max-age=600"))
        server.add_client(NO_STORE, "asymmetric", REGISTERED, redirect_uris=[],
                          jwks_url=jwks_server.serve("/no-store.json", _public(keys[NO_STORE]), "no-store"))
        server.add_client(JKU, "asymmetric", REGISTERED, redirect_uris=[],
                          jwks_url=jwks_server.serve("/jku.json", _public(keys[JKU]), "max-age=600"))
        server.add_client(ROTATING, "asymmetric", REGISTERED, redirect_uris=[],
                          jwks_url=jwks_server.serve("/rotating.json", _public(keys[ROTATING]), "max-age=600"))
        server.add_client(MISSING, "asymmetric", REGISTERED, redirect_uris=[],
                          jwks_url=jwks_server.url("/missing.json"))
        server.add_client("bs-public", "public", REGISTERED)
        server.add_client("bs-symmetric", "symmetric", REGISTERED, secret="bs-secret")
        yield server
    finally:
        server.process.stop()


def _assertion(smart, keys, client_id: str = RSA, **kwargs) -> str:
    key = keys[client_id]
    return client_assertion(key, client_id=client_id, token_url=smart.token_url,
                            alg="RS384" if key.key_type == "RSA" else "ES384", **kwargs)


def _token_request(smart, assertion: str, *, scope: str | None = "system/*.rs", **extra) -> httpx.Response:
    data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion, **extra}
    if scope is not None:
        data["scope"] = scope
    return httpx.post(smart.token_url, data=data)


def _refused(r: httpx.Response) -> bool:
    return r.status_code in (400, 401) and r.json().get("error") in ("invalid_client", "invalid_request",
                                                                      "unauthorized_client", "invalid_grant")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(smart, client_id: str) -> dict:
    return {"iss": client_id, "sub": client_id, "aud": smart.token_url, "exp": int(time.time()) + 240,
            "jti": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def rsa_token(smart, keys) -> httpx.Response:
    r = _token_request(smart, _assertion(smart, keys))
    assert r.status_code == 200, r.text
    return r


# -- success --------------------------------------------------------------------------------------------

def test_rs384_assertion_from_inline_jwks_gets_a_token(rsa_token):
    assert rsa_token.json()["access_token"]


def test_es384_assertion_from_inline_jwks_gets_a_token(smart, keys):
    r = _token_request(smart, _assertion(smart, keys, EC))
    assert r.status_code == 200, r.text


def test_backend_token_is_bearer(rsa_token):
    assert rsa_token.json()["token_type"].lower() == "bearer"


def test_backend_token_lives_at_most_five_minutes(rsa_token):
    expires_in = rsa_token.json()["expires_in"]
    assert isinstance(expires_in, int) and 0 < expires_in <= 300


def test_backend_token_response_carries_the_scope(rsa_token):
    assert rsa_token.json()["scope"] == "system/*.rs"


def test_backend_token_response_has_no_refresh_token(rsa_token):
    assert "refresh_token" not in rsa_token.json()


@pytest.mark.parametrize("name,value", [("cache-control", "no-store"), ("pragma", "no-cache")])
def test_backend_token_response_is_not_cached(rsa_token, name, value):
    assert rsa_token.headers[name] == value


def test_mixed_jwks_selects_the_key_by_kid_and_type(smart, keys):
    key = keys["mixed-ec"]
    assertion = client_assertion(key, client_id=MIXED, token_url=smart.token_url, alg="ES384")
    assert _token_request(smart, assertion).status_code == 200


# -- JWKS URLs ------------------------------------------------------------------------------------------

def test_jwks_url_with_max_age_is_fetched_once_for_two_tokens(smart, keys, jwks_server):
    for _ in range(2):
        assert _token_request(smart, _assertion(smart, keys, CACHED)).status_code == 200
    assert jwks_server.hits.get("/cached.json") == 1


def test_jwks_url_with_no_store_is_fetched_for_every_token(smart, keys, jwks_server):
    before = jwks_server.hits.get("/no-store.json", 0)
    for _ in range(2):
        assert _token_request(smart, _assertion(smart, keys, NO_STORE)).status_code == 200
    assert jwks_server.hits.get("/no-store.json", 0) - before == 2


def test_jku_equal_to_the_registered_jwks_url_is_accepted(smart, keys, jwks_server):
    assertion = _assertion(smart, keys, JKU, header_extra={"jku": jwks_server.url("/jku.json")})
    assert _token_request(smart, assertion).status_code == 200


def test_jku_not_equal_to_the_registered_jwks_url_is_refused(smart, keys, jwks_server):
    jwks_server.serve("/attacker.json", _public(keys[JKU]), "no-store")
    assertion = _assertion(smart, keys, JKU, header_extra={"jku": jwks_server.url("/attacker.json")})
    assert _refused(_token_request(smart, assertion))
    assert jwks_server.hits.get("/attacker.json", 0) == 0


def test_jku_on_a_client_with_inline_jwks_is_refused(smart, keys, jwks_server):
    assertion = _assertion(smart, keys, RSA, header_extra={"jku": jwks_server.url("/jku.json")})
    assert _refused(_token_request(smart, assertion))


def test_new_key_at_a_cached_jwks_url_is_picked_up(smart, keys, jwks_server):
    assert _token_request(smart, _assertion(smart, keys, ROTATING)).status_code == 200  # cached now
    rotated = keys["rotated"]
    jwks_server.serve("/rotating.json", _public(rotated), "max-age=600")
    assertion = client_assertion(rotated, client_id=ROTATING, token_url=smart.token_url, alg="ES384")
    assert _token_request(smart, assertion).status_code == 200


def test_unreadable_jwks_url_is_refused(smart, keys):
    assert _refused(_token_request(smart, _assertion(smart, keys, MISSING)))


# -- scope ----------------------------------------------------------------------------------------------

def test_granted_scope_is_the_intersection_with_the_registered_scope(smart, keys):
    r = _token_request(smart, _assertion(smart, keys), scope="system/Patient.rs system/Observation.cruds")
    assert r.status_code == 200, r.text
    assert set(r.json()["scope"].split()) == {"system/Patient.rs", "system/Observation.rs"}


def test_scope_outside_the_registration_is_invalid_scope(smart, keys):
    r = _token_request(smart, _assertion(smart, keys), scope="user/*.rs patient/*.rs")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_scope"


def test_missing_scope_is_refused(smart, keys):
    r = _token_request(smart, _assertion(smart, keys), scope=None)
    assert r.status_code == 400
    assert r.json()["error"] in ("invalid_scope", "invalid_request")


# -- the request ----------------------------------------------------------------------------------------

def test_unknown_grant_type_is_exactly_400_unsupported_grant_type(smart, keys):
    r = _token_request(smart, _assertion(smart, keys), grant_type="not_a_grant_type")
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_grant_type"


def test_unknown_client_assertion_type_is_refused(smart, keys):
    r = _token_request(smart, _assertion(smart, keys), client_assertion_type="not_an_assertion_type")
    assert _refused(r)


def test_iss_different_from_sub_is_refused(smart, keys):
    assert _refused(_token_request(smart, _assertion(smart, keys, claims_extra={"iss": "not_a_valid_iss"})))


def test_unknown_client_is_refused(smart, keys):
    assertion = client_assertion(keys[RSA], client_id="no-such-client", token_url=smart.token_url, alg="RS384")
    assert _refused(_token_request(smart, assertion))


def test_wrong_aud_is_refused(smart, keys):
    assert _refused(_token_request(smart, _assertion(smart, keys, claims_extra={"aud": "https://other.example/token"})))


def test_exp_ten_minutes_ahead_is_refused(smart, keys):
    assert _refused(_token_request(smart, _assertion(smart, keys, lifetime=600)))


def test_expired_assertion_is_refused(smart, keys):
    assert _refused(_token_request(smart, _assertion(smart, keys, lifetime=-120)))


def test_missing_jti_is_refused(smart, keys):
    claims = _claims(smart, RSA)
    del claims["jti"]
    key = keys[RSA]
    assertion = jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])
    assert _refused(_token_request(smart, assertion))


def test_replayed_assertion_is_refused(smart, keys):
    assertion = _assertion(smart, keys)
    assert _token_request(smart, assertion).status_code == 200
    assert _refused(_token_request(smart, assertion))


def test_replayed_jti_in_a_new_assertion_is_refused(smart, keys):
    jti = uuid.uuid4().hex
    assert _token_request(smart, _assertion(smart, keys, jti=jti)).status_code == 200
    assert _refused(_token_request(smart, _assertion(smart, keys, jti=jti, lifetime=200)))


def test_unknown_kid_is_refused(smart, keys):
    assert _refused(_token_request(smart, _assertion(smart, keys, header_extra={"kid": "no-such-kid"})))


def test_missing_kid_is_refused(smart, keys):
    key = keys[RSA]
    assertion = jwt.encode({"alg": "RS384", "typ": "JWT"}, _claims(smart, RSA), key, algorithms=["RS384"])
    assert _refused(_token_request(smart, assertion))


def test_kid_of_a_key_of_the_wrong_type_is_refused(smart, keys):
    # signed RS384 with the RSA key, but naming the EC key's kid: the kid/kty pair must match
    assertion = client_assertion(keys["mixed-rsa"], client_id=MIXED, token_url=smart.token_url, alg="RS384",
                                 header_extra={"kid": keys["mixed-ec"].kid})
    assert _refused(_token_request(smart, assertion))


def test_signature_by_another_key_with_the_registered_kid_is_refused(smart, keys):
    impostor = new_key("RS384", kid=keys[RSA].kid)
    assertion = client_assertion(impostor, client_id=RSA, token_url=smart.token_url, alg="RS384")
    assert _refused(_token_request(smart, assertion))


def test_rs256_assertion_is_refused(smart, keys):
    key = RSAKey.import_key({k: v for k, v in keys[RSA].as_dict(private=True).items() if k != "alg"})
    assertion = jwt.encode({"alg": "RS256", "kid": keys[RSA].kid, "typ": "JWT"}, _claims(smart, RSA), key,
                           algorithms=["RS256"])
    assert _refused(_token_request(smart, assertion))


def test_hs256_assertion_is_refused(smart, keys):
    # HMAC keyed with the public key's modulus: the classic algorithm-confusion attempt
    secret = OctKey.import_key(keys[RSA].as_dict(private=False)["n"].encode())
    assertion = jwt.encode({"alg": "HS256", "kid": keys[RSA].kid, "typ": "JWT"}, _claims(smart, RSA), secret,
                           algorithms=["HS256"])
    assert _refused(_token_request(smart, assertion))


def test_unsigned_assertion_is_refused(smart, keys):
    assertion = f"{_b64({'alg': 'none', 'kid': keys[RSA].kid, 'typ': 'JWT'})}.{_b64(_claims(smart, RSA))}."
    assert _refused(_token_request(smart, assertion))


def test_public_client_cannot_use_client_credentials(smart):
    r = httpx.post(smart.token_url, data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                          "client_id": "bs-public"})
    assert r.status_code in (400, 401)
    assert "access_token" not in r.json()


def test_symmetric_client_cannot_use_client_credentials(smart):
    r = httpx.post(smart.token_url, data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                   auth=("bs-symmetric", "bs-secret"))
    assert r.status_code in (400, 401)
    assert "access_token" not in r.json()


# -- using the token ------------------------------------------------------------------------------------

def test_system_read_search_token_can_search(smart, rsa_token):
    r = httpx.get(f"{smart.base}/Patient",
                  headers={**FHIR_JSON, "Authorization": f"Bearer {rsa_token.json()['access_token']}"})
    assert r.status_code == 200
    assert r.json()["total"] == 2


def test_system_read_search_token_cannot_create(smart, rsa_token):
    r = httpx.post(f"{smart.base}/Patient", json={"resourceType": "Patient", "gender": "male"},
                   headers={**FHIR_JSON, "Authorization": f"Bearer {rsa_token.json()['access_token']}"})
    assert r.status_code == 403
