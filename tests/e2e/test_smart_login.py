"""The sign-in page and the browser session that consent is bound to: wrong passwords, lockout,
forged consent, open redirects (authorize.py). Failed sign-ins are also counted per client
address, so each test that fails on purpose signs in from its own loopback address."""

from __future__ import annotations

import itertools
from urllib.parse import urlencode, urlparse

import httpx
import pytest

from tests.e2e.smart_support import FORM, PASSWORD, REDIRECT, Browserless, pkce_pair, query_of, start_smart_server

APP = "login-app"
SCOPE = "launch/patient patient/*.rs"
_addresses = (f"127.0.0.{n}" for n in itertools.count(10))


@pytest.fixture(scope="module")
def smart(tmp_path_factory):
    server = start_smart_server(tmp_path_factory.mktemp("smart-login"))
    try:
        server.put({"resourceType": "Patient", "id": "pat-a", "name": [{"family": "Alpha"}]})
        server.add_client(APP, "public", SCOPE)
        for username in ("alice", "locked", "unlocked", "victim"):
            server.add_user(username, "Patient/pat-a")
        yield server
    finally:
        server.process.stop()


class Browser(Browserless):
    """A Browserless from its own loopback address (its own failed-sign-in counter)."""

    def __init__(self, base: str):
        self.http = httpx.Client(base_url=base, timeout=30.0,
                                 transport=httpx.HTTPTransport(local_address=next(_addresses)))


@pytest.fixture()
def browser(smart):
    b = Browser(smart.base)
    yield b
    b.close()


def _pending(smart, browser: Browserless) -> str:
    """Start an authorization; returns the sign-in page's location."""
    r = browser.authorize(response_type="code", client_id=APP, redirect_uri=REDIRECT, scope=SCOPE, state="st",
                          aud=smart.base, code_challenge=pkce_pair()[1], code_challenge_method="S256")
    assert r.status_code == 303, r.text
    return r.headers["location"]


def test_sign_in_page_is_shown_for_a_pending_request(smart, browser):
    r = browser.http.get(_pending(smart, browser))
    assert r.status_code == 200
    assert 'name="password"' in r.text


def test_sign_in_page_for_an_unknown_request_is_an_error(browser):
    assert browser.http.get("/auth/login?request=no-such-request").status_code == 400


def test_wrong_password_is_401_with_an_error(smart, browser):
    r = browser.sign_in(_pending(smart, browser), "alice", password="wrong password")
    assert r.status_code == 401
    assert "Wrong username or password" in r.text
    assert "set-cookie" not in r.headers


def test_unknown_user_is_401_like_a_wrong_password(smart, browser):
    r = browser.sign_in(_pending(smart, browser), "nobody", password="wrong password")
    assert r.status_code == 401
    assert "Wrong username or password" in r.text


def test_right_password_leads_to_consent(smart, browser):
    r = browser.sign_in(_pending(smart, browser), "alice")
    assert r.status_code == 303
    assert "/auth/consent?" in r.headers["location"]


def test_session_cookie_is_http_only_and_same_site(smart, browser):
    cookie = browser.sign_in(_pending(smart, browser), "alice").headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie or "samesite=strict" in cookie


def test_five_failures_lock_the_account_even_for_the_right_password(smart, browser):
    location = _pending(smart, browser)
    for _ in range(5):
        assert browser.sign_in(location, "locked", password="wrong password").status_code == 401
    assert browser.sign_in(location, "locked").status_code == 429


def test_failures_at_one_address_do_not_lock_the_user_out_elsewhere(smart, browser):
    location = _pending(smart, browser)
    for _ in range(5):
        browser.sign_in(location, "victim", password="wrong password")
    assert browser.sign_in(location, "victim").status_code == 429
    other = Browser(smart.base)
    try:
        assert other.sign_in(_pending(smart, other), "victim").status_code == 303
    finally:
        other.close()


def test_four_failures_do_not_lock_the_account(smart, browser):
    location = _pending(smart, browser)
    for _ in range(4):
        browser.sign_in(location, "unlocked", password="wrong password")
    assert browser.sign_in(location, "unlocked").status_code == 303


def test_consent_from_another_browser_session_is_refused(smart, browser):
    location = browser.sign_in(_pending(smart, browser), "alice").headers["location"]
    request_id = query_of(location)["request"]
    forger = Browser(smart.base)  # no cookie: not the session that signed in
    try:
        r = forger.http.post("/auth/consent", headers=FORM, content=urlencode(
            [("request", request_id), ("decision", "allow"), ("scope", "launch/patient"), ("scope", "patient/*.rs")]))
    finally:
        forger.close()
    assert r.status_code == 303
    assert urlparse(r.headers["location"]).path == "/auth/login"
    assert "code=" not in r.headers["location"]


def test_consent_from_another_signed_in_user_is_refused(smart, browser):
    location = browser.sign_in(_pending(smart, browser), "alice").headers["location"]
    request_id = query_of(location)["request"]
    other = Browser(smart.base)
    try:
        other.sign_in(_pending(smart, other), "unlocked")  # signed in, but as someone else's session
        r = other.http.post("/auth/consent", headers=FORM, content=urlencode(
            [("request", request_id), ("decision", "allow"), ("scope", "patient/*.rs")]))
    finally:
        other.close()
    assert r.status_code == 303
    assert "code=" not in r.headers["location"]


def test_consent_page_without_sign_in_redirects_to_sign_in(smart, browser):
    location = _pending(smart, browser)
    request_id = query_of(location)["request"]
    r = browser.http.get(f"/auth/consent?request={request_id}")
    assert r.status_code == 303
    assert urlparse(r.headers["location"]).path == "/auth/login"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/auth/manage", "/Patient/pat-a",
                                    "/auth//evil.example"])
def test_sign_in_next_never_leaves_the_auth_pages(smart, browser, target):
    r = browser.http.post("/auth/login", data={"username": "alice", "password": PASSWORD, "next": target})
    assert r.status_code == 303
    assert r.headers["location"] == f"{smart.base}/auth/manage"


def test_sign_out_ends_the_session(smart, browser):
    browser.http.post("/auth/login", data={"username": "alice", "password": PASSWORD, "next": "/auth/manage"})
    assert browser.http.get("/auth/manage").status_code == 200
    assert browser.http.post("/auth/logout").status_code == 200
    assert browser.http.get("/auth/manage").status_code == 303
