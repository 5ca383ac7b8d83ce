"""A standalone launch clicked through in a real headless Chromium, against the real server.

The test plays the app: it builds the authorize URL (public client, PKCE S256, state, aud) and
runs the app's redirect URI as a tiny http.server on a free loopback port. The browser plays the
user: it opens the URL, signs in, (a clinician) picks a patient, unticks a scope on the consent
page and approves; the server's final redirect really lands the browser on the app's callback
with `code` and `state`. The test then exchanges the code with httpx and reads FHIR data with the
token. Screenshots of the pages land in tests/artifacts/launch-*.png.

Skips, as the harness does, where Chromium or chromedriver is missing.
"""

from __future__ import annotations

import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from tests.e2e.browser import browser, save_screenshot  # noqa: F401  (browser is a fixture)
from tests.e2e.smart_support import PASSWORD, pkce_pair, query_of, seed_two_patients, start_smart_server
from tests.support import FHIR_JSON

PATIENT_USER, CLINICIAN = "alice", "drdana"
PATIENT_SCOPE = ("launch/patient openid fhirUser offline_access "
                 "patient/Patient.rs patient/Observation.rs patient/Condition.rs")
CLINICIAN_SCOPE = "launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs"
UNTICKED = "patient/Condition.rs"


class AppCallback(ThreadingHTTPServer):
    """The app's redirect URI: records every query it is called with and shows a small page."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CallbackHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/callback"
        self.hits: list[dict[str, str]] = []

    def wait_for_hit(self, timeout: float = 15.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while not self.hits:
            assert time.monotonic() < deadline, "the browser never reached the app's redirect URI"
            time.sleep(0.02)
        return self.hits.pop(0)


class CallbackHandler(BaseHTTPRequestHandler):
    server: AppCallback

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self.send_error(404)
            return
        self.server.hits.append(query_of(self.path))
        body = b"<!doctype html><title>App callback</title><h1 id='app-callback'>Back in the app</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def app():
    callback = AppCallback()
    thread = threading.Thread(target=callback.serve_forever, daemon=True)
    thread.start()
    yield callback
    callback.shutdown()
    callback.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, app):
    from tests.e2e.browser import missing_reason

    if reason := missing_reason():  # do not start a server only to skip every test
        pytest.skip(reason)
    server = start_smart_server(tmp_path_factory.mktemp("browser-launch"))
    try:
        server.data = seed_two_patients(server)
        server.add_user(PATIENT_USER, "Patient/pat-a")
        server.add_user(CLINICIAN, "Practitioner/doc-1")
        yield server
    finally:
        server.process.stop()


def authorize_url(server, app, client_id: str, scope: str) -> tuple[str, str, str]:
    """The app's authorize URL; returns (url, state, code_verifier)."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": app.url, "scope": scope,
              "state": state, "aud": server.base, "code_challenge": challenge, "code_challenge_method": "S256"}
    return f"{server.base}/auth/authorize?{urlencode(params)}", state, verifier


def sign_in(driver, username: str, screenshot: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.find_elements("id", "sign-in"))
    assert "/auth/login?" in driver.current_url
    save_screenshot(driver, screenshot)
    driver.find_element("id", "username").send_keys(username)
    driver.find_element("id", "password").send_keys(PASSWORD)
    driver.find_element("id", "sign-in").click()


def scope_boxes(driver) -> dict[str, object]:
    return {box.get_attribute("value"): box for box in driver.find_elements("css selector", "input[name=scope]")}


def land_on_callback(driver, app, state: str) -> str:
    """Waits for the browser to arrive at the app's redirect URI; returns the code."""
    from selenium.webdriver.support.ui import WebDriverWait

    hit = app.wait_for_hit()
    WebDriverWait(driver, 10).until(lambda d: d.current_url.startswith(app.url + "?"))
    assert driver.find_element("id", "app-callback").text == "Back in the app"
    assert query_of(driver.current_url) == hit
    assert "error" not in hit, hit
    assert hit["state"] == state
    return hit["code"]


def exchange(server, app, client_id: str, code: str, verifier: str) -> dict:
    r = httpx.post(server.token_url, data={"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": app.url, "client_id": client_id,
                                           "code_verifier": verifier})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"].lower() == "bearer" and body["access_token"]
    return body


def fhir_get(server, token: str, path: str) -> httpx.Response:
    return httpx.get(f"{server.base}/{path}", headers={**FHIR_JSON, "Authorization": f"Bearer {token}"})


def test_patient_unticks_a_scope_in_a_real_browser(browser, server, app):
    server.add_client("browser-patient-app", "public", PATIENT_SCOPE, redirect_uris=[app.url])
    url, state, verifier = authorize_url(server, app, "browser-patient-app", PATIENT_SCOPE)
    browser.get(url)
    sign_in(browser, PATIENT_USER, "launch-login")

    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 10).until(lambda d: d.find_elements("id", "approve"))
    assert "/auth/consent?" in browser.current_url
    boxes = scope_boxes(browser)
    assert {"patient/Patient.rs", "patient/Observation.rs", UNTICKED, "offline_access"} <= set(boxes)
    assert all(boxes[s].is_selected() for s in ("patient/Patient.rs", "patient/Observation.rs", UNTICKED))
    assert "Alpha" in browser.find_element("tag name", "main").text  # the patient the app will see
    boxes[UNTICKED].click()
    assert not boxes[UNTICKED].is_selected()
    save_screenshot(browser, "launch-consent")
    browser.find_element("id", "approve").click()

    code = land_on_callback(browser, app, state)
    save_screenshot(browser, "launch-callback")
    token = exchange(server, app, "browser-patient-app", code, verifier)
    granted = token["scope"].split()
    assert UNTICKED not in granted
    assert {"patient/Patient.rs", "patient/Observation.rs", "offline_access", "launch/patient"} <= set(granted)
    assert token["patient"] == "pat-a"
    assert token.get("refresh_token")

    r = fhir_get(server, token["access_token"], "Patient/pat-a")
    assert r.status_code == 200, r.text
    assert r.json()["name"][0]["family"] == "Alpha"
    r = fhir_get(server, token["access_token"], "Observation?patient=pat-a")
    assert r.status_code == 200, r.text
    assert {e["resource"]["id"] for e in r.json().get("entry", [])} == {"obs-a-lab", "obs-a-vital"}
    r = fhir_get(server, token["access_token"], "Condition?patient=pat-a")
    assert r.status_code == 403, r.text  # the unticked scope really is not granted


def test_clinician_picks_the_patient_in_a_real_browser(browser, server, app):
    server.add_client("browser-clinician-app", "public", CLINICIAN_SCOPE, redirect_uris=[app.url])
    url, state, verifier = authorize_url(server, app, "browser-clinician-app", CLINICIAN_SCOPE)
    browser.get(url)
    sign_in(browser, CLINICIAN, "launch-login-clinician")

    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 10).until(lambda d: d.find_elements("id", "choose"))
    radios = {r.get_attribute("value"): r for r in browser.find_elements("css selector", "input[name=patient]")}
    assert {"pat-a", "pat-b"} <= set(radios)
    save_screenshot(browser, "launch-picker")
    radios["pat-b"].click()
    assert radios["pat-b"].is_selected()
    browser.find_element("id", "choose").click()

    WebDriverWait(browser, 10).until(lambda d: d.find_elements("id", "approve"))
    assert "/auth/consent?" in browser.current_url
    assert "Bravo" in browser.find_element("tag name", "main").text  # the chosen patient is shown
    save_screenshot(browser, "launch-consent-clinician")
    browser.find_element("id", "approve").click()

    code = land_on_callback(browser, app, state)
    token = exchange(server, app, "browser-clinician-app", code, verifier)
    assert token["patient"] == "pat-b"
    assert "refresh_token" not in token  # no offline_access asked for
    r = fhir_get(server, token["access_token"], "Patient/pat-b")
    assert r.status_code == 200, r.text
    assert r.json()["name"][0]["family"] == "Bravo"
    r = fhir_get(server, token["access_token"], "Observation?patient=pat-b")
    assert r.status_code == 200, r.text
    assert {e["resource"]["id"] for e in r.json().get("entry", [])} == {"obs-b-lab"}
    r = fhir_get(server, token["access_token"], "Patient/pat-a")
    assert r.status_code in (403, 404), r.text  # the other patient is out of this token's reach
