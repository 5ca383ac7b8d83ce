"""EHR launch: a signed-in clinician opens an app for a patient and encounter, the app comes back
with `launch` and gets the launch context in its token response (research/smart.md EHR-01..EHR-04,
AUTHZ-06, matrix item 8)."""

from __future__ import annotations

from urllib.parse import urlencode, urlparse

import httpx
import pytest

from tests.e2e.smart_support import (PASSWORD, REDIRECT, Browserless, pkce_pair, query_of, seed_two_patients,
                                     start_smart_server)
from tests.support import FHIR_JSON

APP, OTHER_APP = "ehr-app", "ehr-other-app"
SECRET = "ehr-app-secret"
LAUNCH_URL = "http://127.0.0.1:9/launch"
APP_SCOPE = "launch openid fhirUser offline_access user/*.rs patient/*.rs"
EHR_SCOPE = "launch openid fhirUser user/*.rs patient/*.rs"


@pytest.fixture(scope="module")
def smart(tmp_path_factory):
    server = start_smart_server(tmp_path_factory.mktemp("smart-ehr"))
    try:
        seed_two_patients(server)
        server.add_client(APP, "symmetric", APP_SCOPE, secret=SECRET, launch_url=LAUNCH_URL)
        server.add_client(OTHER_APP, "public", APP_SCOPE, launch_url=LAUNCH_URL + "?app=other")
        server.add_user("dana", "Practitioner/doc-1")
        server.add_user("alice", "Patient/pat-a")
        yield server
    finally:
        server.process.stop()


@pytest.fixture()
def browser(smart):
    b = Browserless(smart.base)
    yield b
    b.close()


def _launch_path(client_id: str = APP, patient: str = "pat-a", encounter: str | None = "enc-a") -> str:
    params = {"client_id": client_id, "patient": patient, **({"encounter": encounter} if encounter else {})}
    return f"/auth/ehr-launch?{urlencode(params)}"


def _sign_in_to(browser: Browserless, next_path: str, username: str = "dana") -> httpx.Response:
    return browser.http.post("/auth/login", data={"username": username, "password": PASSWORD, "next": next_path})


def _launch(browser: Browserless, **kwargs) -> dict:
    """The clinician (signing in if need be) launches the app; returns the launch URL's query (iss, launch)."""
    path = _launch_path(**kwargs)
    r = browser.http.get(path)
    if r.status_code == 303:
        r = _sign_in_to(browser, path)
        assert r.status_code == 303, r.text
        r = browser.http.get(r.headers["location"])
    assert r.status_code == 302, r.text
    assert r.headers["location"].startswith(LAUNCH_URL)
    return query_of(r.headers["location"])


def _exchange(smart, code: str, verifier: str) -> httpx.Response:
    return httpx.post(smart.token_url, auth=(APP, SECRET), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})


def _app_token(smart, browser, launch_id: str, scope: str = EHR_SCOPE) -> httpx.Response:
    verifier, challenge = pkce_pair()
    code = browser.code_for(client_id=APP, username="dana", scope=scope, aud=smart.base, challenge=challenge,
                            launch=launch_id)
    return _exchange(smart, code, verifier)


@pytest.fixture(scope="module")
def dana(smart):
    """The clinician, signed in once for the module (each sign-in costs an argon2 hash)."""
    browser = Browserless(smart.base)
    assert _sign_in_to(browser, "/auth/manage").status_code == 303
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def launched(smart) -> tuple[dict, dict]:
    """One complete EHR launch from a fresh browser: (the launch URL's query, the token response)."""
    b = Browserless(smart.base)
    try:
        query = _launch(b)
        r = _app_token(smart, b, query["launch"])
        assert r.status_code == 200, r.text
        return query, r.json()
    finally:
        b.close()


# -- the EHR side ---------------------------------------------------------------------------------------

def test_ehr_launch_without_a_session_asks_the_clinician_to_sign_in(browser):
    r = browser.http.get(_launch_path())
    assert r.status_code == 303
    location = urlparse(r.headers["location"])
    assert location.path == "/auth/login"
    assert query_of(r.headers["location"])["next"] == _launch_path()


def test_ehr_launch_sign_in_leads_back_to_the_launch(browser):
    r = _sign_in_to(browser, _launch_path())
    assert r.status_code == 303
    assert r.headers["location"].endswith(_launch_path())


def test_ehr_launch_opens_the_app_with_iss_equal_to_the_fhir_base(smart, launched):
    assert launched[0]["iss"] == smart.base


def test_ehr_launch_opens_the_app_with_a_launch_id(launched):
    assert launched[0]["launch"]


def test_ehr_launch_keeps_the_launch_urls_own_query(dana):
    r = dana.http.get(_launch_path(OTHER_APP))
    assert r.status_code == 302
    assert query_of(r.headers["location"])["app"] == "other"


def test_ehr_launch_by_a_patient_user_is_refused(browser):
    r = _sign_in_to(browser, _launch_path(), username="alice")
    assert browser.http.get(r.headers["location"]).status_code == 403


def test_ehr_launch_for_an_unknown_patient_is_refused(dana):
    assert dana.http.get(_launch_path(patient="no-such-patient")).status_code == 404


def test_ehr_launch_for_an_unknown_encounter_is_refused(dana):
    assert dana.http.get(_launch_path(encounter="no-such-encounter")).status_code == 404


def test_ehr_launch_of_an_app_without_launch_url_is_refused(smart, dana):
    smart.add_client("ehr-no-launch-url", "public", APP_SCOPE)
    assert dana.http.get(_launch_path("ehr-no-launch-url")).status_code == 404


# -- the app's token response -------------------------------------------------------------------------

def test_ehr_launch_token_carries_the_patient(launched):
    assert launched[1]["patient"] == "pat-a"


def test_ehr_launch_token_carries_the_encounter(launched):
    assert launched[1]["encounter"] == "enc-a"


def test_ehr_launch_token_carries_need_patient_banner(launched):
    assert isinstance(launched[1]["need_patient_banner"], bool)


def test_ehr_launch_token_grants_the_launch_scope(launched):
    assert "launch" in launched[1]["scope"].split()


def test_ehr_launch_smart_style_url_serves_json(smart, launched):
    url = launched[1]["smart_style_url"]
    assert url.startswith(smart.base)
    r = httpx.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json(), dict)


def test_ehr_launch_token_reads_the_patient_in_context(smart, launched):
    r = httpx.get(f"{smart.base}/Patient/pat-a",
                  headers={**FHIR_JSON, "Authorization": f"Bearer {launched[1]['access_token']}"})
    assert r.status_code == 200


def test_ehr_launch_with_patient_scopes_grants_patient_read(smart, dana):
    query = _launch(dana)
    r = _app_token(smart, dana, query["launch"], scope="launch openid fhirUser offline_access patient/Patient.rs")
    assert r.status_code == 200, r.text
    token = r.json()
    assert "patient/Patient.rs" in token["scope"].split()
    read = httpx.get(f"{smart.base}/Patient/{token['patient']}",
                     headers={**FHIR_JSON, "Authorization": f"Bearer {token['access_token']}"})
    assert read.status_code == 200


def test_ehr_launch_without_encounter_has_no_encounter_in_the_token(smart, dana):
    query = _launch(dana, encounter=None)
    token = _app_token(smart, dana, query["launch"]).json()
    assert token["patient"] == "pat-a"
    assert "encounter" not in token


# -- launch misuse ------------------------------------------------------------------------------------

def _authorize_with_launch(smart, browser: Browserless, client_id: str, launch_id: str) -> httpx.Response:
    return browser.authorize(response_type="code", client_id=client_id, redirect_uri=REDIRECT, scope=EHR_SCOPE,
                             state="s-2", aud=smart.base, code_challenge=pkce_pair()[1],
                             code_challenge_method="S256", launch=launch_id)


def test_launch_id_cannot_be_used_twice(smart, dana):
    launch_id = _launch(dana)["launch"]
    assert _app_token(smart, dana, launch_id).status_code == 200
    r = _authorize_with_launch(smart, dana, APP, launch_id)
    if r.status_code == 303:  # accepted at first sight: refused when the clinician approves
        r = dana.approve(r.headers["location"])
    assert r.status_code in (302, 400)
    assert "code" not in query_of(r.headers.get("location", ""))


def test_launch_id_of_another_app_is_refused(smart, dana):
    r = _authorize_with_launch(smart, dana, OTHER_APP, _launch(dana)["launch"])
    assert r.status_code == 302
    answer = query_of(r.headers["location"])
    assert answer["error"] == "invalid_request"
    assert "code" not in answer
