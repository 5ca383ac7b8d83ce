"""Unit tests of the transport and access-hygiene pieces: the security-headers rules, what counts as
a loopback address, the start-up transport decision, the lifetime bounds, and outbound TLS."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace

import pytest

from fhir_server import outbound
from fhir_server.api.security_headers import HTML_CSP, SecurityHeaders, secured
from fhir_server.config import Settings
from fhir_server.tls import TransportRefused, is_loopback, listen_options
from smart_auth.lifetimes import Lifetimes


def as_dict(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in headers}


# -- security headers ----------------------------------------------------------------------------

def test_a_fhir_response_is_not_stored_and_not_sniffed():
    out = as_dict(secured([(b"content-type", b"application/fhir+json")], "/Patient/1", https=False))
    assert out["cache-control"] == "no-store"
    assert out["x-content-type-options"] == "nosniff"
    assert out["referrer-policy"] == "no-referrer"
    assert out["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in out  # plain HTTP: browsers ignore HSTS there
    assert "content-security-policy" not in out  # JSON is not rendered


def test_hsts_on_https():
    out = as_dict(secured([], "/Patient", https=True))
    assert out["strict-transport-security"] == "max-age=63072000; includeSubDomains"


def test_public_conformance_may_be_cached_but_revalidated():
    assert as_dict(secured([], "/metadata", https=False))["cache-control"] == "no-cache"
    assert as_dict(secured([], "/Patient/metadata", https=False))["cache-control"] == "no-store"


def test_a_route_s_own_headers_are_kept():
    route = [(b"cache-control", b"max-age=300"), (b"referrer-policy", b"same-origin"),
             (b"x-content-type-options", b"nosniff")]
    out = secured(route, "/auth/jwks", https=False)
    assert out.count((b"x-content-type-options", b"nosniff")) == 1
    assert as_dict(out)["cache-control"] == "max-age=300"
    assert as_dict(out)["referrer-policy"] == "same-origin"


def test_html_without_a_policy_gets_the_strict_one():
    out = as_dict(secured([(b"content-type", b"text/html; charset=utf-8")], "/auth/logout", https=False))
    assert out["content-security-policy"] == HTML_CSP.decode()
    assert "script-src" not in out["content-security-policy"]  # default-src 'none' covers scripts


def test_html_with_its_own_policy_keeps_it_and_gains_frame_ancestors():
    own = b"sandbox; default-src 'none'"
    out = as_dict(secured([(b"content-type", b"text/html"), (b"content-security-policy", own)], "/Binary/1",
                          https=False))
    assert out["content-security-policy"] == "sandbox; default-src 'none'; frame-ancestors 'none'"
    hashed = b"default-src 'none'; style-src 'sha256-abc'; frame-ancestors 'none'"
    out = as_dict(secured([(b"content-type", b"text/html"), (b"content-security-policy", hashed)], "/auth/login",
                          https=False))
    assert out["content-security-policy"] == hashed.decode()


def test_the_middleware_edits_only_the_start_message():
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"image/png")]})
        await send({"type": "http.response.body", "body": b"\x89PNG", "more_body": False})

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/Binary/x", "scheme": "https", "method": "GET", "headers": []}
    asyncio.run(SecurityHeaders(app)(scope, None, send))
    headers = as_dict(sent[0]["headers"])
    assert headers["cache-control"] == "no-store" and "strict-transport-security" in headers
    assert sent[1] == {"type": "http.response.body", "body": b"\x89PNG", "more_body": False}


# -- the start-up transport decision --------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.0.2.1", "fhir.example.org", ""])
def test_not_loopback(host):
    assert not is_loopback(host)


def test_plain_http_on_loopback_is_allowed():
    assert listen_options(Settings(host="127.0.0.1")) == {}


def test_plain_http_on_a_public_address_needs_insecure_http(caplog):
    with pytest.raises(TransportRefused, match="--insecure-http"):
        listen_options(Settings(host="0.0.0.0"))
    assert listen_options(Settings(host="0.0.0.0", insecure_http=True)) == {}
    assert "PLAIN HTTP on 0.0.0.0" in caplog.text


def test_tls_options_need_both_files(tmp_path):
    with pytest.raises(TransportRefused, match="go together"):
        listen_options(Settings(tls_cert=str(tmp_path / "c.pem")))
    with pytest.raises(TransportRefused, match="no such file"):
        listen_options(Settings(tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem")))


def test_tls_settings_reach_worker_processes(monkeypatch):
    settings = Settings(host="0.0.0.0", tls_cert="/c.pem", tls_key="/k.pem", insecure_http=False,
                        access_token_seconds=600, session_idle_seconds=300, refresh_token_max_seconds=86400)
    env = settings.to_env()
    assert env["FHIR_TLS_CERT"] == "/c.pem" and env["FHIR_TLS_KEY"] == "/k.pem"
    for name, value in env.items():  # what `serve --workers N` hands each worker
        monkeypatch.setenv(name, value)
    back = Settings.from_env()
    assert (back.tls_cert, back.tls_key, back.insecure_http) == ("/c.pem", "/k.pem", False)
    assert back.auth_lifetimes == Lifetimes(session_idle=300, access_token=600, refresh_token_max=86400)


# -- lifetimes ------------------------------------------------------------------------------------

def test_lifetime_defaults():
    assert Lifetimes() == Lifetimes(session_idle=900, access_token=3600, refresh_token_max=90 * 24 * 3600)


@pytest.mark.parametrize("field,value", [("access_token", 3601), ("access_token", 0), ("session_idle", 0),
                                         ("refresh_token_max", -1)])
def test_lifetimes_out_of_bounds_are_refused(field, value):
    with pytest.raises(ValueError):
        replace(Lifetimes(), **{field: value})


def test_settings_refuse_an_access_token_over_an_hour():
    with pytest.raises(ValueError, match="at most an hour"):
        Settings(access_token_seconds=7200).auth_lifetimes


# -- outbound TLS ---------------------------------------------------------------------------------

def test_outbound_clients_verify_certificates(monkeypatch):
    monkeypatch.delenv(outbound.CA_FILE_ENV, raising=False)
    context = outbound.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    client = outbound.async_client()
    try:
        assert client._transport._pool._ssl_context is context  # what httpx actually connects with
        assert client._trust_env is False
    finally:
        asyncio.run(client.aclose())


def test_a_missing_outbound_ca_file_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv(outbound.CA_FILE_ENV, str(tmp_path / "nope.pem"))
    assert "FHIR_OUTBOUND_CA_FILE" in outbound.check_configuration()


def test_every_outbound_client_of_the_server_uses_the_verifying_context(monkeypatch):
    """The e-prescribing gateway and FHIR pharmacies (one HttpDelivery client), subscription
    rest-hooks, and JWKS fetches (smart_auth/client_auth.py, through outbound.get)."""
    from fhir_server.erx.config import ErxSettings
    from fhir_server.erx.delivery import HttpDelivery
    from fhir_server.exchange.subscriptions.config import SubscriptionSettings
    from fhir_server.exchange.subscriptions.delivery import SubscriptionDelivery

    monkeypatch.delenv(outbound.CA_FILE_ENV, raising=False)
    context = outbound.ssl_context()
    erx = HttpDelivery(None, ErxSettings(gateway_url="https://gateway.example/script"))
    subs = SubscriptionDelivery(None, SubscriptionSettings())
    try:
        for client in (erx._http(), subs._client):
            assert client._transport._pool._ssl_context is context
    finally:
        asyncio.run(erx.aclose())
        asyncio.run(subs.aclose())
