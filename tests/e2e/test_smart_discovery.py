"""SMART discovery against the real server: /.well-known/smart-configuration, OIDC discovery, the
JWKS and the CapabilityStatement's security block (research/smart.md DISC-01..DISC-11)."""

from __future__ import annotations

from urllib.parse import urlparse

import httpx
import pytest

from tests.e2e.smart_support import start_smart_server

CAPABILITIES = [
    "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
    "client-confidential-asymmetric", "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient",
    "permission-offline", "permission-online", "permission-patient", "permission-user", "permission-v1",
    "permission-v2", "sso-openid-connect", "authorize-post",
]
URL_FIELDS = ["issuer", "jwks_uri", "authorization_endpoint", "token_endpoint", "introspection_endpoint",
              "revocation_endpoint"]
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
ORIGIN = "https://app.example.org"


@pytest.fixture(scope="module")
def smart(tmp_path_factory):
    server = start_smart_server(tmp_path_factory.mktemp("smart-discovery"))
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def http(smart):
    with httpx.Client(base_url=smart.base, timeout=30.0) as c:
        yield c


@pytest.fixture(scope="module")
def config(http) -> dict:
    r = http.get("/.well-known/smart-configuration")
    assert r.status_code == 200
    return r.json()


def _is_absolute(url: str) -> bool:
    parts = urlparse(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def test_smart_configuration_is_json_even_when_html_is_asked_for(http):
    r = http.get("/.well-known/smart-configuration", headers={"Accept": "text/html"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json(), dict)


@pytest.mark.parametrize("name", [*URL_FIELDS, "token_endpoint_auth_methods_supported", "grant_types_supported",
                                  "scopes_supported", "response_types_supported", "capabilities"])
def test_smart_configuration_has_required_field(config, name):
    assert config.get(name), f"{name} missing or empty"


@pytest.mark.parametrize("name", URL_FIELDS)
def test_smart_configuration_urls_are_absolute(config, name):
    assert _is_absolute(config[name]), config[name]


def test_smart_configuration_issuer_is_the_fhir_base(smart, config):
    assert config["issuer"] == smart.base


def test_smart_configuration_pkce_is_s256_only(config):
    assert config["code_challenge_methods_supported"] == ["S256"]


def test_smart_configuration_grant_types_include_code_refresh_and_client_credentials(config):
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(config["grant_types_supported"])


def test_smart_configuration_auth_methods_cover_every_client_type(config):
    assert {"client_secret_basic", "private_key_jwt"} <= set(config["token_endpoint_auth_methods_supported"])


def test_smart_configuration_asymmetric_signing_algorithms_listed(config):
    assert {"RS384", "ES384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])


def test_smart_configuration_response_types_is_code(config):
    assert config["response_types_supported"] == ["code"]


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_smart_configuration_lists_capability(config, capability):
    assert capability in config["capabilities"]


@pytest.mark.parametrize("path", ["/.well-known/smart-configuration", "/metadata"])
def test_cors_allows_any_origin(http, path):
    r = http.get(path, headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert r.headers.get("access-control-allow-origin") in ("*", ORIGIN)


def test_openid_configuration_has_required_fields(http, smart):
    r = http.get("/.well-known/openid-configuration")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
                 "subject_types_supported", "id_token_signing_alg_values_supported"):
        assert doc.get(name), name
    assert doc["issuer"] == smart.base


def test_openid_configuration_signs_id_tokens_with_rs256(http):
    assert "RS256" in http.get("/.well-known/openid-configuration").json()["id_token_signing_alg_values_supported"]


def test_jwks_publishes_rsa_keys_with_kid(http, config):
    r = http.get(config["jwks_uri"])
    assert r.status_code == 200
    keys = r.json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "RSA" and key.get("kid") and key.get("n") and key.get("e")


def test_jwks_publishes_no_private_key_material(http, config):
    for key in http.get(config["jwks_uri"]).json()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_metadata_is_readable_without_a_token(http):
    r = http.get("/metadata", headers={"Accept": "application/fhir+json"})
    assert r.status_code == 200
    assert r.json()["resourceType"] == "CapabilityStatement"


def _security(http) -> dict:
    return http.get("/metadata", headers={"Accept": "application/fhir+json"}).json()["rest"][0]["security"]


def test_metadata_security_names_the_smart_on_fhir_service(http):
    codings = [(c.get("system"), c.get("code")) for s in _security(http)["service"] for c in s.get("coding", [])]
    assert ("http://terminology.hl7.org/CodeSystem/restful-security-service", "SMART-on-FHIR") in codings


def test_metadata_oauth_uris_extension_has_authorize_and_token(http, config):
    extension = next(e for e in _security(http)["extension"] if e["url"] == OAUTH_URIS)
    uris = {e["url"]: e["valueUri"] for e in extension["extension"]}
    assert uris["authorize"] == config["authorization_endpoint"]
    assert uris["token"] == config["token_endpoint"]
