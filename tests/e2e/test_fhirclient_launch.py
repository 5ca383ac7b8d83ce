"""Standalone launches driven by the official SMART clients: the Python `fhirclient` (PyPI,
>= 4.4.0) and, when Node and npm are available, the JS `fhirclient` (npm) through its Node entry.

fhirclient discovers the endpoints from /metadata only (the oauth-uris extension of
rest[0].security), parsing the CapabilityStatement with its strict R4 models, and always sends PKCE
S256. The test takes `authorize_url`, walks it through sign-in and consent with httpx as the
user's browser would (303s followed by hand, the final 302 to the app's redirect URI read, not
followed), hands the callback URL to `handle_callback`, reads the patient through fhirclient's
models, refreshes with `reauthorize()` and reads again.

Every request fhirclient makes goes through a guard that fails the test unless it is for the
loopback server under test (and no proxy from the environment is used).

The JS client runs as tests/e2e/clientjs/launch.js (package.json and package-lock.json pin it;
`npm ci` runs here when node_modules is missing, and the test skips if that fails): it prints the
authorize URL it built (`noRedirect: true`), the test walks it the same way and hands back the
callback URL, and the script completes `ready()`, reads, refreshes and reads again.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.smart_support import REDIRECT, Browserless, query_of, seed_two_patients, start_smart_server

fhirclient = pytest.importorskip("fhirclient", reason="fhirclient is not installed: pip install 'fhirclient>=4.4.0'")

from fhirclient import client  # noqa: E402
from fhirclient.models.patient import Patient  # noqa: E402
from fhirclient.server import (FHIRNotFoundException, FHIRPermissionDeniedException,  # noqa: E402
                               FHIRUnauthorizedException)

SCOPE = "launch/patient openid fhirUser offline_access patient/*.read"
PATIENT_USER = "alice"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


if _version(client.__version__) < (4, 4, 0):
    pytest.skip("fhirclient >= 4.4.0 is needed (older versions send no PKCE)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_smart_server(tmp_path_factory.mktemp("fhirclient"))
    try:
        server.data = seed_two_patients(server)
        server.add_user(PATIENT_USER, "Patient/pat-a")
        yield server
    finally:
        server.process.stop()


@pytest.fixture()
def loopback_only(server, monkeypatch):
    """Every request any requests.Session makes must be for the server under test; no proxies."""
    import requests

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    allowed = urlsplit(server.base).netloc
    seen: list[tuple[str, str]] = []
    send = requests.Session.send

    def guarded(self, request, **kwargs):
        netloc = urlsplit(request.url).netloc
        assert netloc == allowed, f"fhirclient tried to reach {request.url} (only {server.base} is allowed)"
        assert not kwargs.get("proxies"), f"a proxy would be used: {kwargs['proxies']}"
        seen.append((request.method, request.url))
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", guarded)
    return seen


def walk_authorize_url(server, url: str, username: str) -> str:
    """The user's side: open the authorize URL, sign in, approve everything offered; returns the
    Location of the final redirect to the app (not followed)."""
    assert url.startswith(f"{server.base}/auth/authorize?"), url
    user = Browserless(server.base)
    try:
        r = user.http.get(url)
        assert r.status_code == 303, r.text
        location = r.headers["location"]
        assert "/auth/login" in location, location
        r = user.sign_in(location, username)
        assert r.status_code == 303, r.text
        location = r.headers["location"]
        assert "/auth/consent" in location, location
        r = user.approve(location)
        assert r.status_code == 302, r.text
        callback = r.headers["location"]
    finally:
        user.close()
    assert callback.startswith(REDIRECT + "?"), callback
    return callback


def run_launch(server, loopback_only, settings: dict) -> client.FHIRClient:
    saved: list[dict] = []
    smart = client.FHIRClient(settings={"api_base": server.base, "redirect_uri": REDIRECT, "scope": SCOPE,
                                        **settings}, save_func=saved.append)
    assert not smart.ready

    url = smart.authorize_url  # fetches /metadata and parses it with the strict R4 models
    assert loopback_only[0] == ("GET", f"{server.base}/metadata")
    params = query_of(url)
    assert params["response_type"] == "code"
    assert params["client_id"] == settings["app_id"]
    assert params["redirect_uri"] == REDIRECT
    assert params["aud"] == server.base
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert set(params["scope"].split()) == set(SCOPE.split())  # fhirclient prefixes launch/patient again

    callback = walk_authorize_url(server, url, PATIENT_USER)
    answer = query_of(callback)
    assert answer["state"] == params["state"] and answer["code"]
    assert answer.get("iss") in (None, server.base)

    smart.handle_callback(callback)
    token_calls = [(m, u) for m, u in loopback_only if u == f"{server.base}/auth/token"]
    assert token_calls == [("POST", f"{server.base}/auth/token")]
    assert smart.ready
    assert smart.patient_id == "pat-a"
    context = smart.launch_context
    assert context["token_type"].lower() == "bearer"
    assert set(context["scope"].split()) >= {"launch/patient", "openid", "fhirUser", "offline_access"}
    assert "id_token" in context  # fhirclient logs that it ignores it
    assert smart.server.auth.refresh_token
    assert saved and saved[-1]["patient_id"] == "pat-a"  # the client saved its state

    patient = Patient.read(smart.patient_id, smart.server)
    assert patient.id == "pat-a"
    assert patient.name[0].family == "Alpha"
    assert smart.human_name(patient.name[0]) == "Test Alpha"
    assert smart.patient.id == "pat-a"  # the client's own convenience read

    # the token is scoped to the patient: the other patient is out of reach
    with pytest.raises((FHIRNotFoundException, FHIRPermissionDeniedException)):
        Patient.read("pat-b", smart.server)

    first_access = smart.server.auth.access_token
    assert smart.reauthorize() is True
    assert smart.ready
    assert smart.server.auth.access_token != first_access
    assert smart.server.auth.refresh_token  # kept (or rotated) for the next refresh
    assert smart.patient_id == "pat-a"
    token_calls = [(m, u) for m, u in loopback_only if u == f"{server.base}/auth/token"]
    assert len(token_calls) == 2
    again = Patient.read("pat-a", smart.server)
    assert again.id == "pat-a" and again.birthDate.isostring == "1980-01-01"
    return smart


def test_public_client_standalone_launch(server, loopback_only):
    server.add_client("fhirclient-public", "public", SCOPE)
    smart = run_launch(server, loopback_only, {"app_id": "fhirclient-public"})
    assert smart.app_secret is None
    # every request fhirclient made went to the server under test
    assert {urlsplit(u).netloc for _, u in loopback_only} == {urlsplit(server.base).netloc}


def test_confidential_symmetric_client_standalone_launch(server, loopback_only):
    secret = secrets.token_urlsafe(32)
    server.add_client("fhirclient-confidential", "symmetric", SCOPE, secret=secret)
    smart = run_launch(server, loopback_only, {"app_id": "fhirclient-confidential", "app_secret": secret})
    assert smart.server.auth.app_secret == secret


def test_confidential_client_with_a_wrong_secret_is_refused(server, loopback_only):
    server.add_client("fhirclient-wrong", "symmetric", SCOPE, secret=secrets.token_urlsafe(32))
    smart = client.FHIRClient(settings={"app_id": "fhirclient-wrong", "app_secret": "not-the-secret",
                                        "api_base": server.base, "redirect_uri": REDIRECT, "scope": SCOPE})
    callback = walk_authorize_url(server, smart.authorize_url, PATIENT_USER)
    with pytest.raises(FHIRUnauthorizedException) as failure:  # fhirclient's name for any 401
        smart.handle_callback(callback)
    assert failure.value.response.status_code == 401
    assert failure.value.response.json()["error"] == "invalid_client"
    assert not smart.ready


# -- the JS client (npm fhirclient, Node entry) ----------------------------------------------------

CLIENTJS = Path(__file__).resolve().parent / "clientjs"
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        pytest.skip("the JS fhirclient test needs Node.js (>= 18) on PATH")
    if not (CLIENTJS / "node_modules" / "fhirclient").is_dir():
        if npm is None:
            pytest.skip("the JS fhirclient test needs npm to install tests/e2e/clientjs (npm ci)")
        try:
            done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=CLIENTJS,
                                  capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci in tests/e2e/clientjs did not finish within 10 minutes")
        if done.returncode != 0:
            pytest.skip(f"npm ci in tests/e2e/clientjs failed: {(done.stderr or done.stdout)[-500:]}")
    return node


class NodeApp:
    """launch.js as a child process speaking one JSON object per line."""

    def __init__(self, node: str, *args: str):
        self.process = subprocess.Popen([node, "launch.js", *args], cwd=CLIENTJS, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**NO_PROXY_ENV, "NO_PROXY": "*"})
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def receive(self, timeout: float = 30.0) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"launch.js said nothing within {timeout}s; stderr: {self.stderr()}") from None
        return json.loads(line)

    def send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stderr.read()[-2000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def test_js_fhirclient_standalone_launch(node, server):
    server.add_client("clientjs-public", "public", SCOPE)
    app = NodeApp(node, server.base, "clientjs-public", REDIRECT, SCOPE)
    try:
        first = app.receive()
        assert "authorize_url" in first, first
        url = first["authorize_url"]
        params = query_of(url)
        assert params["client_id"] == "clientjs-public" and params["redirect_uri"] == REDIRECT
        assert params["aud"] == server.base
        assert params["scope"] == SCOPE
        assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
        assert len(params["state"]) == 16

        callback = walk_authorize_url(server, url, PATIENT_USER)
        assert query_of(callback)["state"] == params["state"]
        app.send({"callback": callback})
        answer = app.receive()
    finally:
        app.close()
    assert "result" in answer, answer.get("error")
    result = answer["result"]
    assert result["patientId"] == "pat-a"
    assert result["fhirUser"] == "Patient/pat-a"  # from the id_token's fhirUser claim
    assert result["userType"] == "Patient" and result["userId"] == "pat-a"
    assert result["hadIdToken"] and result["hadRefresh"]
    assert set(result["grantedScope"].split()) >= {"launch/patient", "openid", "fhirUser", "offline_access"}
    assert result["patientFamily"] == "Alpha"
    assert result["observationIds"] == ["obs-a-lab", "obs-a-vital"]
    assert result["refreshed"] and result["refreshKept"]
    assert result["readAfterRefresh"] == "pat-a"
    # discovery through .well-known; every request went to the server under test
    assert result["contacted"][0] == f"{server.base}/.well-known/smart-configuration"
    assert {urlsplit(u).netloc for u in result["contacted"]} == {urlsplit(server.base).netloc}
