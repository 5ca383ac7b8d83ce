"""The authorization server's pages in a real (headless) browser: the forms post what the user chose.

A tiny threaded http.server serves the rendered pages (with SECURITY_HEADERS, so the CSP is real)
and records every form it receives. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest

from smart_auth.pages import (SECURITY_HEADERS, ScopeChoice, describe_scope, render_consent, render_error,
                              render_launched, render_login, render_patient_picker)
from tests.e2e.browser import browser, save_screenshot  # noqa: F401  (browser is a fixture)

LAB = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
VITALS = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
HIDDEN = {"request": "req-123", "csrf": "tok&=\"x"}

PAGES = {
    "/login": lambda: render_login(action="/login", hidden=HIDDEN, client_name="Skin Check <beta>"),
    "/login-error": lambda: render_login(action="/login", hidden=HIDDEN, client_name="Skin Check",
                                         username="alice", error="Wrong username or password"),
    "/consent": lambda: render_consent(
        action="/consent", hidden=HIDDEN, client_name="Skin Check", user_display="Alice Example",
        patient_display="Alice Example (born 1980-01-01)", offline=True,
        choices=[ScopeChoice("openid fhirUser", describe_scope("openid fhirUser"), required=True),
                 ScopeChoice("launch/patient", describe_scope("launch/patient"), required=True),
                 ScopeChoice("patient/Patient.rs", describe_scope("patient/Patient.rs")),
                 ScopeChoice("patient/Observation.rs", describe_scope("patient/Observation.rs"),
                             narrowings=((LAB, "Laboratory"), (VITALS, "Vital signs"))),
                 ScopeChoice("patient/Condition.rs", describe_scope("patient/Condition.rs")),
                 ScopeChoice("patient/DocumentReference.cruds", describe_scope("patient/DocumentReference.cruds"),
                             checked=False),
                 ScopeChoice("offline_access", describe_scope("offline_access"))]),
    "/picker": lambda: render_patient_picker(
        action="/picker", hidden=HIDDEN, client_name="Skin Check",
        patients=[("p1", "Alice Example (born 1980-01-01)"), ("p2", "Bobby Example (born 2015-04-01)")]),
    "/error": lambda: render_error(title="Unknown app",
                                   message="The app's client_id is not registered with this server."),
    "/launched": lambda: render_launched(launch_url="https://app.example/launch?iss=x&launch=y",
                                         app_name="Skin Check"),
}


class PageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.posts: list[tuple[str, list[tuple[str, str]]]] = []
        self.base = f"http://127.0.0.1:{self.server_address[1]}"

    def wait_for_post(self, timeout: float = 10.0) -> tuple[str, list[tuple[str, str]]]:
        deadline = time.monotonic() + timeout
        while not self.posts:
            assert time.monotonic() < deadline, "the browser posted nothing"
            time.sleep(0.02)
        return self.posts.pop(0)


class Handler(BaseHTTPRequestHandler):
    server: PageServer

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        render = PAGES.get(self.path)
        self._send(200 if render else 404, render() if render else "not found")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.server.posts.append((self.path, parse_qsl(body, keep_blank_values=True)))
        self._send(200, "<!doctype html><title>Received</title><p>Received")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def pages():
    server = PageServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_login_posts_the_credentials(browser, pages):
    browser.get(pages.base + "/login")
    assert browser.title == "Sign in – Skin Check <beta>"
    # the inline stylesheet survived the CSP (it is allowed by hash): the button is styled
    assert browser.find_element("id", "sign-in").value_of_css_property("background-color") == "rgba(11, 79, 156, 1)"
    save_screenshot(browser, "login")
    browser.find_element("id", "username").send_keys("alice")
    browser.find_element("id", "password").send_keys("correct horse")
    browser.find_element("id", "sign-in").click()
    path, form = pages.wait_for_post()
    assert path == "/login"
    assert form == [("request", "req-123"), ("csrf", "tok&=\"x"), ("username", "alice"),
                    ("password", "correct horse")]


def test_login_error_page(browser, pages):
    browser.get(pages.base + "/login-error")
    alert = browser.find_element("css selector", "[role=alert]")
    assert "Wrong username or password" in alert.text
    assert browser.find_element("id", "username").get_attribute("value") == "alice"
    save_screenshot(browser, "login-error")


def test_consent_posts_the_kept_scopes(browser, pages):
    browser.get(pages.base + "/consent")
    save_screenshot(browser, "consent")
    # uncheck one scope by clicking its label (proves the label is tied to the box), narrow another
    browser.find_element("css selector", "label[for=scope-3]").click()
    assert browser.find_element("id", "scope-3").get_attribute("value") == "patient/Patient.rs"
    assert not browser.find_element("id", "scope-3").is_selected()
    browser.find_element("id", "scope-4").click()      # Observation: all -> ...
    browser.find_element("id", "scope-4-1").click()    # ... only laboratory
    browser.find_element("id", "approve").click()
    path, form = pages.wait_for_post()
    assert path == "/consent"
    scopes = [v for k, v in form if k == "scope"]
    assert scopes == ["openid fhirUser", "launch/patient", LAB, "patient/Condition.rs", "offline_access"]
    assert ("decision", "allow") in form and ("decision", "deny") not in form
    assert ("request", "req-123") in form and ("csrf", "tok&=\"x") in form


def test_consent_deny_and_narrow_screen(browser, pages):
    browser.set_window_size(390, 844)
    browser.get(pages.base + "/consent")
    save_screenshot(browser, "consent-narrow")
    browser.find_element("id", "deny").click()
    _, form = pages.wait_for_post()
    assert ("decision", "deny") in form and ("decision", "allow") not in form


def test_picker_error_and_launched_pages(browser, pages):
    from selenium.webdriver.common.keys import Keys

    browser.get(pages.base + "/picker")
    browser.find_element("css selector", "label[for=patient-2]").click()
    # keyboard focus is visible: tab from the chosen radio to the button
    browser.find_element("id", "patient-2").send_keys(Keys.TAB)
    choose = browser.find_element("id", "choose")
    assert browser.switch_to.active_element == choose
    assert choose.value_of_css_property("outline-style") == "solid"
    save_screenshot(browser, "patient-picker")
    choose.click()
    path, form = pages.wait_for_post()
    assert path == "/picker" and ("patient", "p2") in form

    browser.get(pages.base + "/error")
    assert browser.find_element("tag name", "h1").text == "Unknown app"
    save_screenshot(browser, "error")

    browser.get(pages.base + "/launched")
    assert browser.find_element("id", "open-app").get_attribute("href") == "https://app.example/launch?iss=x&launch=y"
    save_screenshot(browser, "launched")
