"""The authorization endpoint and the sign-in / patient picker / consent pages, over plain HTTP
(research/smart.md AUTHZ-01..AUTHZ-11, SA-01, matrix items 4-9)."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest

from tests.e2e.smart_support import (FORM, REDIRECT, Browserless, pkce_pair, query_of, seed_two_patients,
                                     start_smart_server)

PUBLIC = "authz-public"
NARROW = "authz-narrow"  # registered for Observation only
LAB = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
CLIENT_SCOPE = "launch launch/patient openid fhirUser offline_access patient/*.rs user/*.rs"


@pytest.fixture(scope="module")
def smart(tmp_path_factory):
    server = start_smart_server(tmp_path_factory.mktemp("smart-authorize"))
    try:
        seed_two_patients(server)
        server.add_client(PUBLIC, "public", CLIENT_SCOPE, launch_url="http://127.0.0.1:9/launch")
        server.add_client(NARROW, "public", "launch/patient patient/Observation.rs")
        server.add_user("alice", "Patient/pat-a")
        server.add_user("dana", "Practitioner/doc-1")
        yield server
    finally:
        server.process.stop()


@pytest.fixture()
def browser(smart):
    b = Browserless(smart.base)
    yield b
    b.close()


def _params(smart, challenge: str, **overrides) -> dict:
    params = {"response_type": "code", "client_id": PUBLIC, "redirect_uri": REDIRECT,
              "scope": "launch/patient openid fhirUser patient/*.rs", "state": "st-1", "aud": smart.base,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def _redirected_error(r: httpx.Response) -> dict:
    """An error sent back to the app's redirect URI (never a code)."""
    assert r.status_code == 302, r.text
    assert r.headers["location"].startswith(REDIRECT + "?")
    answer = query_of(r.headers["location"])
    assert "code" not in answer
    return answer


def _exchange(smart, code: str, verifier: str, client_id: str = PUBLIC) -> httpx.Response:
    return httpx.post(smart.token_url, data={"grant_type": "authorization_code", "code": code, "client_id": client_id,
                                             "redirect_uri": REDIRECT, "code_verifier": verifier})


def _token(smart, signed_in, username: str, scope: str, client_id: str = PUBLIC, **kwargs) -> dict:
    verifier, challenge = pkce_pair()
    code = signed_in(username).code_for(client_id=client_id, username=username, scope=scope, aud=smart.base,
                                        challenge=challenge, **kwargs)
    r = _exchange(smart, code, verifier, client_id)
    assert r.status_code == 200, r.text
    return r.json()


# -- a valid request, GET and POST ------------------------------------------------------------------

def test_authorize_get_leads_to_a_code(smart, signed_in):
    assert _token(smart, signed_in, "alice", "launch/patient patient/*.rs")["access_token"]


def test_authorize_post_form_leads_to_a_code(smart, browser):
    verifier, challenge = pkce_pair()
    r = browser.http.post("/auth/authorize", content=urlencode(_params(smart, challenge)), headers=FORM)
    assert r.status_code == 303, r.text
    r = browser.sign_in(r.headers["location"], "alice")
    assert r.status_code == 303
    r = browser.approve(r.headers["location"])
    answer = query_of(r.headers["location"])
    assert answer["state"] == "st-1"
    assert _exchange(smart, answer["code"], verifier).status_code == 200


def test_authorize_valid_request_goes_to_sign_in(smart, browser):
    r = browser.authorize(**_params(smart, pkce_pair()[1]))
    assert r.status_code == 303
    assert "/auth/login?" in r.headers["location"]


# -- aud ----------------------------------------------------------------------------------------------

def test_wrong_aud_redirects_with_invalid_request_and_state(smart, browser):
    answer = _redirected_error(browser.authorize(**_params(smart, pkce_pair()[1], aud="https://other.example/fhir")))
    assert answer["error"] == "invalid_request"
    assert answer["state"] == "st-1"


def test_aud_with_trailing_slash_is_accepted(smart, browser):
    r = browser.authorize(**_params(smart, pkce_pair()[1], aud=smart.base + "/"))
    assert r.status_code == 303
    assert "/auth/login?" in r.headers["location"]


def test_missing_aud_is_invalid_request(smart, browser):
    answer = _redirected_error(browser.authorize(**_params(smart, pkce_pair()[1], aud=None)))
    assert answer["error"] == "invalid_request"


# -- client and redirect URI: an error page, never a redirect -----------------------------------------

def test_unknown_client_gets_an_error_page_not_a_redirect(smart, browser):
    r = browser.authorize(**_params(smart, pkce_pair()[1], client_id="no-such-client"))
    assert r.status_code == 400
    assert "location" not in r.headers
    assert r.headers["content-type"].startswith("text/html")


def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(smart, browser):
    r = browser.authorize(**_params(smart, pkce_pair()[1], redirect_uri="https://evil.example/callback"))
    assert r.status_code == 400
    assert "location" not in r.headers
    assert r.headers["content-type"].startswith("text/html")


# -- PKCE, state, launch --------------------------------------------------------------------------------

def test_missing_code_challenge_is_invalid_request(smart, browser):
    answer = _redirected_error(browser.authorize(**_params(smart, None)))
    assert answer["error"] == "invalid_request"


def test_plain_code_challenge_method_is_invalid_request(smart, browser):
    answer = _redirected_error(browser.authorize(**_params(smart, pkce_pair()[1], code_challenge_method="plain")))
    assert answer["error"] == "invalid_request"


def test_malformed_code_challenge_is_invalid_request(smart, browser):
    answer = _redirected_error(browser.authorize(**_params(smart, "too-short")))
    assert answer["error"] == "invalid_request"


def test_missing_state_is_invalid_request(smart, browser):
    answer = _redirected_error(browser.authorize(**_params(smart, pkce_pair()[1], state=None)))
    assert answer["error"] == "invalid_request"


def test_unknown_launch_is_an_error(smart, browser):
    answer = _redirected_error(browser.authorize(**_params(smart, pkce_pair()[1], launch="no-such-launch",
                                                           scope="launch openid fhirUser user/*.rs")))
    assert answer["error"] == "invalid_request"
    assert answer["state"] == "st-1"


def test_launch_scope_without_launch_parameter_is_an_error(smart, browser):
    answer = _redirected_error(browser.authorize(**_params(smart, pkce_pair()[1], scope="launch user/*.rs")))
    assert answer["error"] == "invalid_request"


# -- consent --------------------------------------------------------------------------------------------

def test_denying_at_consent_returns_access_denied_with_state(smart, browser):
    r = browser.authorize(**_params(smart, pkce_pair()[1]))
    r = browser.sign_in(r.headers["location"], "alice")
    answer = _redirected_error(browser.approve(r.headers["location"], decision="deny"))
    assert answer["error"] == "access_denied"
    assert answer["state"] == "st-1"


def test_unchecking_a_scope_at_consent_narrows_the_granted_scope(smart, signed_in):
    token = _token(smart, signed_in, "alice", "launch/patient patient/Observation.rs patient/Condition.rs",
                   scopes=["launch/patient", "patient/Observation.rs"])
    granted = token["scope"].split()
    assert "patient/Observation.rs" in granted
    assert "patient/Condition.rs" not in granted


def test_consent_offers_category_narrowings_of_observation(smart, browser):
    r = browser.authorize(**_params(smart, pkce_pair()[1], scope="launch/patient patient/Observation.rs"))
    r = browser.sign_in(r.headers["location"], "alice")
    assert LAB in browser.offered_scopes(browser.consent_page(r.headers["location"]).text)


def test_choosing_a_category_at_consent_grants_only_that_category(smart, signed_in):
    token = _token(smart, signed_in, "alice", "launch/patient patient/Observation.rs", scopes=["launch/patient", LAB])
    granted = token["scope"].split()
    assert LAB in granted
    assert "patient/Observation.rs" not in granted


def test_consent_cannot_widen_beyond_what_was_asked(smart, signed_in):
    token = _token(smart, signed_in, "alice", "launch/patient patient/Observation.rs",
                   scopes=["launch/patient", "patient/Observation.rs", "patient/*.cruds", "patient/Condition.rs"])
    assert token["scope"].split() == ["launch/patient", "patient/Observation.rs"]


# -- patient context ------------------------------------------------------------------------------------

def test_patient_user_gets_no_patient_picker(smart, browser):
    r = browser.authorize(**_params(smart, pkce_pair()[1]))
    r = browser.sign_in(r.headers["location"], "alice")
    page = browser.consent_page(r.headers["location"])
    assert page.status_code == 200
    assert 'name="patient"' not in page.text


def test_patient_user_gets_their_own_patient_in_context(smart, signed_in):
    assert _token(smart, signed_in, "alice", "launch/patient openid fhirUser patient/*.rs")["patient"] == "pat-a"


def test_clinician_standalone_launch_gets_the_patient_picker(smart, browser):
    r = browser.authorize(**_params(smart, pkce_pair()[1]))
    r = browser.sign_in(r.headers["location"], "dana")
    page = browser.consent_page(r.headers["location"])
    assert 'name="patient" value="pat-a"' in page.text
    assert 'name="patient" value="pat-b"' in page.text


def test_clinician_chosen_patient_comes_back_in_the_token_response(smart, signed_in):
    token = _token(smart, signed_in, "dana", "launch/patient openid fhirUser patient/*.rs", patient="pat-b")
    assert token["patient"] == "pat-b"


def test_clinician_cannot_pick_an_unknown_patient(smart, browser):
    r = browser.authorize(**_params(smart, pkce_pair()[1]))
    r = browser.sign_in(r.headers["location"], "dana")
    assert browser.pick_patient(r.headers["location"], "no-such-patient").status_code == 400


def test_patient_user_is_not_granted_user_scopes(smart, signed_in):
    token = _token(smart, signed_in, "alice", "launch/patient openid fhirUser user/*.rs patient/Observation.rs")
    granted = token["scope"].split()
    assert not [s for s in granted if s.startswith("user/")]
    assert "patient/Observation.rs" in granted


def test_system_scopes_are_never_granted_through_a_browser(smart, signed_in):
    token = _token(smart, signed_in, "dana", "openid fhirUser user/*.rs system/*.cruds")
    assert not [s for s in token["scope"].split() if s.startswith("system/")]


def test_granted_scope_is_limited_to_the_client_registration(smart, signed_in):
    token = _token(smart, signed_in, "alice", "launch/patient patient/*.cruds", client_id=NARROW)
    assert token["scope"].split() == ["launch/patient", "patient/Observation.rs"]


def test_nothing_grantable_is_invalid_scope(smart, browser):
    answer = _redirected_error(browser.authorize(**_params(smart, pkce_pair()[1], client_id=NARROW,
                                                           scope="user/Patient.rs")))
    assert answer["error"] == "invalid_scope"


def test_malformed_scope_at_authorize_is_invalid_scope(smart, browser):
    answer = _redirected_error(browser.authorize(**_params(smart, pkce_pair()[1], scope="patient/Observation.sr")))
    assert answer["error"] == "invalid_scope"


def test_malformed_scope_posted_at_consent_is_ignored(smart, signed_in):
    token = _token(smart, signed_in, "alice", "launch/patient patient/Observation.rs",
                   scopes=["launch/patient", "patient/Observation.sr", "patient/Observation.rs"])
    assert token["scope"].split() == ["launch/patient", "patient/Observation.rs"]


def test_unchecking_offline_access_at_consent_withholds_the_refresh_token(smart, signed_in):
    token = _token(smart, signed_in, "alice", "launch/patient offline_access patient/*.rs",
                   scopes=["launch/patient", "patient/*.rs"])
    assert "offline_access" not in token["scope"].split()
    assert "refresh_token" not in token


def test_clinician_cannot_skip_the_patient_picker(smart, browser):
    r = browser.authorize(**_params(smart, pkce_pair()[1]))
    r = browser.sign_in(r.headers["location"], "dana")
    location = r.headers["location"]
    r = browser.http.post("/auth/consent", headers=FORM, content=urlencode(
        [("request", query_of(location)["request"]), ("decision", "allow"), ("scope", "patient/*.rs")]))
    assert r.status_code == 303
    assert "/auth/consent?" in r.headers["location"]
    assert "code=" not in r.headers["location"]
