"""Security headers over HTTP on a real server with authorization on: no-store on everything that
may carry patient data (FHIR API, Binary content, sign-in pages, token responses), cacheable public
conformance, nosniff/Referrer-Policy/frame protection everywhere, and HTML that can neither run
scripts nor be framed (the sign-in pages keep their own hash-based policy; HTML Binary content, as
the consult note's rendering is served, is sandboxed)."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.e2e.smart_support import start_smart_server
from tests.support import FHIR_JSON, ONE_PIXEL_PNG


@pytest.fixture(scope="module")
def smart(tmp_path_factory):
    server = start_smart_server(tmp_path_factory.mktemp("headers"))
    try:
        server.add_user("hanna", "Patient/pat-h")
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="module")
def api(smart):
    with httpx.Client(base_url=smart.base, timeout=30.0,
                      headers={**FHIR_JSON, "Authorization": f"Bearer {smart.system_token()}"}) as client:
        yield client


def everywhere(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] in ("no-referrer", "same-origin")  # same-origin: the sign-in pages' own
    assert "strict-transport-security" not in r.headers  # plain HTTP (HTTPS: tests/e2e/test_tls.py)


def test_fhir_api_responses_are_not_stored(api):
    created = api.post("/Patient", json={"resourceType": "Patient", "id": "x", "name": [{"family": "Hidden"}]})
    assert created.status_code == 201
    for r in (created, api.get(f"/Patient/{created.json()['id']}"), api.get("/Patient", params={"family": "Hidden"}),
              api.get(f"/Patient/{created.json()['id']}/_history"), api.get("/Patient/unknown")):
        assert r.headers["cache-control"] == "no-store", r.request.url
        assert r.headers["referrer-policy"] == "no-referrer"
        everywhere(r)
        assert "content-security-policy" not in r.headers  # JSON is not rendered


def test_binary_content_is_not_stored_and_html_is_sandboxed(api):
    png = api.post("/Binary", content=base64.b64decode(ONE_PIXEL_PNG), headers={"Content-Type": "image/png"})
    assert png.status_code == 201, png.text
    raw = api.get(f"/Binary/{png.json()['id']}", headers={"Accept": "image/png"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert raw.headers["cache-control"] == "no-store"
    everywhere(raw)
    # HTML Binary content (the consult note's rendering is one): no scripts, no styles from elsewhere, no framing
    page = "<!DOCTYPE html><html><body><h1>Note</h1><script>alert(1)</script></body></html>"
    html = api.post("/Binary", json={"resourceType": "Binary", "contentType": "text/html",
                                     "data": base64.b64encode(page.encode()).decode()})
    assert html.status_code == 201, html.text
    served = api.get(f"/Binary/{html.json()['id']}", headers={"Accept": "text/html"})
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")
    csp = [d.strip() for d in served.headers["content-security-policy"].split(";")]
    assert "sandbox" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert served.headers["cache-control"] == "no-store"
    everywhere(served)


def test_sign_in_pages_keep_their_own_strict_policy(smart):
    r = httpx.get(f"{smart.base}/auth/login", params={"next": "/auth/manage"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'sha256-" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["cache-control"] == "no-store"
    everywhere(r)


def test_token_responses_are_not_stored(smart):
    r = httpx.post(f"{smart.base}/auth/token", data={"grant_type": "client_credentials", "client_id": "nobody"})
    assert r.status_code in (400, 401)
    assert r.headers["cache-control"] == "no-store"
    everywhere(r)


def test_public_conformance_may_be_cached(smart):
    metadata = httpx.get(f"{smart.base}/metadata")
    assert metadata.headers["cache-control"] == "no-cache"  # revalidated; the same for every caller
    discovery = httpx.get(f"{smart.base}/.well-known/smart-configuration")
    assert discovery.headers["cache-control"] == "no-cache"  # the route's own
    jwks = httpx.get(f"{smart.base}/auth/jwks")
    assert jwks.headers["cache-control"] == "max-age=300"  # the route's own: public keys
    for r in (metadata, discovery, jwks):
        everywhere(r)


def test_errors_carry_the_headers_too(api):
    bad = api.post("/Patient", content=b"{not json", headers={"Content-Type": "application/fhir+json"})
    assert bad.status_code == 400
    assert bad.headers["cache-control"] == "no-store"
    everywhere(bad)
    unauthenticated = httpx.get(f"{api.base_url}/Patient")
    assert unauthenticated.status_code == 401 and unauthenticated.headers["cache-control"] == "no-store"
    everywhere(unauthenticated)
