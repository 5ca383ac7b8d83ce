"""The audit trail end to end (issue 11, "Audit trail" and its first three tests), against a real
server with authorization on and e-prescribing to the gateway simulator (the disclosures):

- a table: each FHIR interaction, done with a given token, yields exactly the AuditEvent(s) it
  should (type, subtype, action, outcome, agents, entities, the query for searches), successes and
  refusals (401, 403, 404) alike; each request is found in the trail by its X-Request-Id;
- the authorization server's security events: sign-in success and failure, token issued and refused;
- the hash chain: `audit verify` on a snapshot of the database is whole after the traffic, and names
  the position of an altered and of a deleted AuditEvent; `audit export` writes positions 1..N;
  the API refuses every write of an AuditEvent (405), with authorization on and off;
- who reads the trail: system/ scopes, user/ scopes of a security officer only, and a patient's app
  only the disclosures of that patient's data (the accounting of disclosures), nothing else.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl

import httpx
import pytest

from fhir_server.audit.chain import CHAIN_URL, positions
from mappers.gateway_sim.process import GatewaySimProcess
from smart_auth.service import AuthService
from tests.e2e.smart_support import PASSWORD, REDIRECT, Browserless, SmartServer, pkce_pair, query_of
from tests.fixtures import erx
from tests.support import FHIR_JSON, ONE_PIXEL_PNG, ROOT, ServerProcess

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
SECURITY_EVENT_SYSTEM = "http://fhir-async-telehealth.example/CodeSystem/security-event"
CLIENT_AGENT = "110153"  # DICOM Source Role ID: the client app, by client_id
USER_AGENT = "UserOauthAgent"  # BALP: the user, by fhirUser
QUERY_ROLE = "24"
PATIENT_ROLE = "1"
EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
VALIDATE = "http://hl7.org/fhir/OperationDefinition/Resource-validate"

OFFICER = "sec-officer"
CLINICIAN_APP = "clinic-app"
PATIENT_APP = "patient-app"
PATIENT_SCOPE = "launch/patient openid fhirUser patient/*.rs patient/AuditEvent.rs"
MARIA, JAMES = "pat-maria", "pat-james"  # the e-Rx fixtures' patients (tests/fixtures/erx)
FLUSH_WAIT = 3.0  # seconds to wait for a batched AuditEvent (the trail flushes every 0.25 s)


# -- the server and its people -------------------------------------------------------------------


def observation(id: str | None, patient: str, text: str = "audit test") -> dict:
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": text},
                "subject": {"reference": f"Patient/{patient}"}}
    if id:
        resource["id"] = id
    return resource


SEEDED = [
    observation("obs-read", MARIA), observation("obs-upd", MARIA), observation("obs-patch", MARIA),
    observation("obs-del", MARIA), observation("obs-james", JAMES),
    {"resourceType": "Binary", "id": "bin-maria", "contentType": "image/png", "data": ONE_PIXEL_PNG,
     "securityContext": {"reference": f"Patient/{MARIA}"}},
]


@dataclass
class World:
    smart: SmartServer
    gateway: GatewaySimProcess
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.smart.base

    def user_token(self, scope: str, *, username: str, fhir_user: str, client_id: str = CLINICIAN_APP) -> str:
        token, _ = self.smart.auth.tokens.access_token(
            issuer=self.base, audience=self.base, client_id=client_id, subject=username, scope=scope,
            grant_id=uuid.uuid4().hex, fhir_user=fhir_user)
        return token

    def backend_token(self, scope: str, client_id: str = "backend-svc") -> str:
        token, _ = self.smart.auth.tokens.access_token(
            issuer=self.base, audience=self.base, client_id=client_id, subject=client_id, scope=scope,
            grant_id=uuid.uuid4().hex)
        return token

    def http(self, token: str | None) -> httpx.Client:
        headers = dict(FHIR_JSON)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base, headers=headers, timeout=30.0)

    def trail(self) -> list[dict]:
        """Every AuditEvent stored, read as a backend with system/AuditEvent.rs (reading is audited too)."""
        events: list[dict] = []
        with self.http(self.tokens["auditor"]) as client:
            url: str | None = "/AuditEvent?_count=1000"
            while url:
                r = client.get(url)
                assert r.status_code == 200, r.text
                bundle = r.json()
                events += [e["resource"] for e in bundle.get("entry", [])]
                url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        return events

    def events_of(self, request_id: str, count: int = 1) -> list[dict]:
        """The AuditEvents that carry this X-Request-Id, once `count` of them are committed."""
        deadline = time.monotonic() + FLUSH_WAIT
        while True:
            found = [e for e in self.trail() if request_id in request_ids(e)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def request_ids(event: dict) -> list[str]:
    return [e["what"]["identifier"]["value"] for e in event.get("entity", ())
            if e.get("type", {}).get("code") == "XrequestId"]


def new_request_id() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture(scope="module")
def gateway():
    with GatewaySimProcess() as sim:
        yield sim


@pytest.fixture(scope="module")
def world(tmp_path_factory, gateway):
    database = tmp_path_factory.mktemp("audit") / "fhir.db"
    process = ServerProcess(database, auth=True, extra_args=[
        "--erx-gateway", f"{gateway.url}/script", "--erx-sender-id", "TELEHEALTH01", "--erx-max-attempts", "3"],
        env={"FHIR_SECURITY_OFFICERS": OFFICER}).start()
    auth = AuthService.from_url(f"sqlite:///{database}")
    auth.open_sync()  # the server created its signing key at start-up; this handle shares it
    smart = SmartServer(process, auth)
    try:
        for reference in erx._directory():  # patients, practitioners, pharmacies of the e-Rx fixtures
            smart.put(erx.resource(reference))
        for resource in SEEDED:
            smart.put(resource)
        smart.add_client(PATIENT_APP, "public", PATIENT_SCOPE)
        smart.add_user("maria", f"Patient/{MARIA}")
        smart.add_user("james", f"Patient/{JAMES}")
        w = World(smart, gateway)
        w.tokens.update(
            auditor=w.backend_token("system/AuditEvent.rs", client_id="siem-reader"),
            clinician=w.user_token("user/*.cruds", username="dr-kim", fhir_user="Practitioner/prac-kim"),
            backend=w.backend_token("system/*.cruds"),
            narrow=w.user_token("user/Observation.rs", username="dr-kim", fhir_user="Practitioner/prac-kim"),
        )
        yield w
    finally:
        process.stop()
        auth.store.close()


# -- what an AuditEvent must say ---------------------------------------------------------------------


def coding_codes(value) -> set[str]:
    items = value if isinstance(value, list) else [value]
    return {c.get("code") for c in items if isinstance(c, dict)}


def agent(event: dict, code: str) -> dict | None:
    return next((a for a in event["agent"] if code in coding_codes(a["type"].get("coding", []))), None)


def patients(event: dict) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", ())
            if e.get("role", {}).get("code") == PATIENT_ROLE and "what" in e}


def resources(event: dict) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", ())
            if e.get("role", {}).get("code") == "4" and "reference" in e.get("what", {})]


def query_entity(event: dict) -> dict | None:
    return next((e for e in event.get("entity", ()) if e.get("role", {}).get("code") == QUERY_ROLE), None)


def assert_agents(event: dict, *, client_id: str, user: str | None, username: str | None = None) -> None:
    client = agent(event, CLIENT_AGENT)
    assert client is not None, event["agent"]
    assert client["who"]["identifier"]["value"] == client_id
    assert client["network"] == {"address": "127.0.0.1", "type": "2"}
    person = agent(event, USER_AGENT)
    if user is None and username is None:
        assert person is None, person
        assert client["requestor"] is True
    else:
        assert person is not None, event["agent"]
        if user is not None:
            assert person["who"]["reference"] == user
        if username is not None:
            assert person["who"]["identifier"]["value"] == username
        assert person["requestor"] is True and client["requestor"] is False
    assert event["source"]["type"][0]["code"] == "4"  # this server, an application server


@dataclass
class Expect:
    """One AuditEvent a request must yield."""

    subtype: str  # the restful-interaction code
    action: str
    outcome: str = "0"
    resource: str | Callable[[httpx.Response], str] | None = None  # "Type/id/_history/n", or from the response
    patients: tuple[str, ...] = ()
    operation: str | None = None  # an operation's OperationDefinition URL (a second subtype coding)
    query: str | None = None  # the query asked ("Type?name=value&..."), for searches
    returned: Callable[[httpx.Response], int] | None = None  # the result count the query entity carries


@dataclass
class Row:
    name: str
    who: str  # "clinician" (user/ token with fhirUser), "backend" (system/), "narrow" (no scope for it), "forged"
    method: str
    path: str
    status: int
    expect: list[Expect]
    json: dict | list | None = None
    headers: dict = field(default_factory=dict)
    content: bytes | None = None


def created_reference(response: httpx.Response) -> str:
    location = response.headers["location"]
    return location[location.index("Observation/"):]


def entry_locations(response: httpx.Response) -> list[str]:
    return [e["response"].get("location", "") for e in response.json()["entry"]]


def entries(response: httpx.Response) -> int:
    return len(response.json().get("entry", []))


CLINICIAN = "Practitioner/prac-kim"
M = f"Patient/{MARIA}"

ROWS = [
    Row("read", "clinician", "GET", f"/Patient/{MARIA}", 200,
        [Expect("read", "R", resource=f"{M}/_history/1", patients=(MARIA,))]),
    Row("vread", "clinician", "GET", "/Observation/obs-read/_history/1", 200,
        [Expect("vread", "R", resource="Observation/obs-read/_history/1", patients=(MARIA,))]),
    Row("search-type", "clinician", "GET", f"/Observation?subject={M}&status=final", 200,
        [Expect("search-type", "E", patients=(MARIA,), query=f"Observation?subject={M}&status=final",
                returned=entries)]),
    Row("search-type by a backend", "backend", "GET", "/Observation?subject=Patient/pat-james", 200,
        [Expect("search-type", "E", patients=(JAMES,), query="Observation?subject=Patient/pat-james",
                returned=entries)]),
    Row("search-type by POST, parameters in the body", "clinician", "POST", "/Observation/_search?status=final", 200,
        [Expect("search-type", "E", patients=(MARIA,), query=f"Observation?status=final&subject={M}",  # (the path as searched, not /_search)
                returned=entries)],
        content=f"subject={M}".encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}),
    Row("history-instance", "clinician", "GET", "/Observation/obs-read/_history", 200,
        [Expect("history-instance", "R", resource="Observation/obs-read/_history/1", patients=(MARIA,))]),
    Row("create", "clinician", "POST", "/Observation", 201,
        [Expect("create", "C", resource=created_reference, patients=(MARIA,))], json=observation(None, MARIA)),
    Row("update", "clinician", "PUT", "/Observation/obs-upd", 200,
        [Expect("update", "U", resource="Observation/obs-upd/_history/2", patients=(MARIA,))],
        json=observation("obs-upd", MARIA, "updated")),
    Row("update-as-create", "clinician", "PUT", "/Observation/obs-put-new", 201,
        [Expect("create", "C", resource="Observation/obs-put-new/_history/1", patients=(MARIA,))],
        json=observation("obs-put-new", MARIA, "created by PUT")),
    Row("patch", "clinician", "PATCH", "/Observation/obs-patch", 200,
        [Expect("patch", "U", resource="Observation/obs-patch/_history/2", patients=(MARIA,))],
        json=[{"op": "replace", "path": "/status", "value": "amended"}],
        headers={"Content-Type": "application/json-patch+json"}),
    Row("delete", "clinician", "DELETE", "/Observation/obs-del", 204,
        [Expect("delete", "D", resource="Observation/obs-del/_history/2", patients=(MARIA,))]),
    Row("transaction of two entries", "clinician", "POST", "/", 200, [
        Expect("create", "C", resource=lambda r: entry_locations(r)[0], patients=(MARIA,)),
        Expect("create", "C", resource=lambda r: entry_locations(r)[1], patients=(JAMES,)),
        Expect("transaction", "E"),
    ], json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(None, MARIA), "request": {"method": "POST", "url": "Observation"}},
        {"resource": observation(None, JAMES), "request": {"method": "POST", "url": "Observation"}}]}),
    Row("batch of a read and a create", "clinician", "POST", "/", 200, [
        Expect("create", "C", resource=lambda r: entry_locations(r)[1], patients=(JAMES,)),
        Expect("batch", "E", resource="Observation/obs-read/_history/1", patients=(MARIA,)),
    ], json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/obs-read"}},
        {"resource": observation(None, JAMES), "request": {"method": "POST", "url": "Observation"}}]}),
    Row("$everything", "clinician", "GET", f"/Patient/{MARIA}/$everything", 200,
        [Expect("operation", "E", operation=EVERYTHING, resource=f"{M}/_history/1", patients=(MARIA,))]),
    Row("$validate", "clinician", "POST", "/Observation/$validate", 200,
        [Expect("operation", "E", operation=VALIDATE)], json=observation(None, MARIA)),
    Row("Binary read", "clinician", "GET", "/Binary/bin-maria", 200,
        [Expect("read", "R", resource="Binary/bin-maria/_history/1", patients=(MARIA,))],
        headers={"Accept": "image/png"}),
    Row("403: no scope for the type", "narrow", "GET", f"/Patient/{MARIA}", 403,
        [Expect("read", "R", outcome="4", resource=M)]),
    Row("403: a write without the scope", "narrow", "POST", "/Observation", 403,
        [Expect("create", "C", outcome="4")], json=observation(None, MARIA)),
    Row("404: a missing id", "clinician", "GET", "/Patient/not-there", 404,
        [Expect("read", "R", outcome="4", resource="Patient/not-there")]),
    Row("401: a forged token", "forged", "GET", f"/Patient/{MARIA}", 401,
        [Expect("read", "R", outcome="4", resource=M)]),
]


def _token_of(world: World, who: str) -> str:
    if who == "forged":
        header, payload, signature = world.tokens["clinician"].split(".")
        return f"{header}.{payload}.{signature[::-1]}"
    return world.tokens[who]


def _matches(event: dict, expect: Expect, response: httpx.Response) -> bool:
    if RESTFUL + "|" + expect.subtype not in {f"{c['system']}|{c['code']}" for c in event.get("subtype", [])}:
        return False
    if expect.resource is None:
        return True
    wanted = expect.resource(response) if callable(expect.resource) else expect.resource
    return wanted in resources(event)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_each_interaction_yields_its_audit_events(world, row):
    request_id = new_request_id()
    with world.http(_token_of(world, row.who)) as client:
        response = client.request(row.method, row.path, json=row.json, content=row.content,
                                  headers={"X-Request-Id": request_id, **row.headers})
    assert response.status_code == row.status, response.text
    assert response.headers["x-request-id"] == request_id
    events = world.events_of(request_id, len(row.expect))
    assert len(events) == len(row.expect), [e.get("subtype") for e in events]
    for expect in row.expect:
        matching = [e for e in events if _matches(e, expect, response)]
        assert len(matching) == 1, (expect, events)
        event = matching[0]
        assert event["type"]["code"] == "rest"
        assert event["action"] == expect.action
        assert event["outcome"] == expect.outcome
        if expect.operation:
            assert {"system": "urn:ietf:rfc:3986", "code": expect.operation} in event["subtype"]
        if row.who in ("clinician", "narrow"):
            assert_agents(event, client_id=CLINICIAN_APP, user=CLINICIAN, username="dr-kim")
        elif row.who == "backend":
            assert_agents(event, client_id="backend-svc", user=None)
        else:  # nobody could be told from the token
            assert_agents(event, client_id="unknown", user=None)
        assert patients(event) == {f"Patient/{p}" for p in expect.patients}, event.get("entity")
        if expect.resource is None and expect.query is None:
            assert resources(event) == [], event.get("entity")  # nothing was read or written
        query = query_entity(event)
        if expect.query is None:
            assert query is None
        else:
            asked = base64.b64decode(query["query"]).decode()
            method, _, target = asked.partition(" ")
            path, _, params = target.partition("?")
            wanted_path, _, wanted_params = expect.query.partition("?")
            assert (method, path.lstrip("/")) == (row.method, wanted_path)
            assert sorted(parse_qsl(params)) == sorted(parse_qsl(wanted_params))
            details = {d["type"]: d["valueString"] for d in query["detail"]}
            assert details["returned"] == str(expect.returned(response))
        serialized = json.dumps(event)
        assert "audit test" not in serialized and "updated" not in serialized  # never a resource's content


def test_a_request_id_that_is_not_a_plain_token_is_replaced_by_the_servers_own(world):
    with world.http(world.tokens["clinician"]) as client:
        r = client.get(f"/Patient/{MARIA}", headers={"X-Request-Id": "short"})
    assert r.status_code == 200
    assert str(uuid.UUID(r.headers["x-request-id"])) == r.headers["x-request-id"]
    [event] = world.events_of(r.headers["x-request-id"])
    assert event["subtype"][0]["code"] == "read"


def test_a_search_event_names_every_resource_it_returned(world):
    request_id = new_request_id()
    with world.http(world.tokens["clinician"]) as client:
        bundle = client.get("/Observation", params={"subject": M, "_count": "50"},
                            headers={"X-Request-Id": request_id}).json()
    [event] = world.events_of(request_id)
    returned = {f"Observation/{e['resource']['id']}/_history/{e['resource']['meta']['versionId']}"
                for e in bundle["entry"]}
    assert len(returned) >= 3
    assert set(resources(event)) == returned


# -- security events of the authorization server ---------------------------------------------------------


def security_events(world: World, request_id: str) -> list[dict]:
    return [e for e in world.events_of(request_id) if e["type"]["code"] == "110114"]


def test_sign_in_success_and_failure_consent_and_token_issued_and_refused_are_recorded(world):
    verifier, challenge = pkce_pair()
    browser = Browserless(world.base)
    try:
        r = browser.authorize(response_type="code", client_id=PATIENT_APP, redirect_uri=REDIRECT, scope=PATIENT_SCOPE,
                              state="s-1", aud=world.base, code_challenge=challenge, code_challenge_method="S256")
        assert r.status_code == 303, r.text
        login = r.headers["location"]
        request = query_of(login)["request"]

        failed_id = new_request_id()
        r = browser.http.post("/auth/login", data={"username": "maria", "password": "not the password",
                                                   "request": request}, headers={"X-Request-Id": failed_id})
        assert r.status_code == 401
        [failed] = security_events(world, failed_id)
        assert coding_codes(failed["subtype"]) == {"110122"} and failed["outcome"] == "4"
        assert_agents(failed, client_id=PATIENT_APP, user=None, username="maria")
        assert PASSWORD not in json.dumps(failed) and "not the password" not in json.dumps(failed)

        signed_id = new_request_id()
        r = browser.http.post("/auth/login", data={"username": "maria", "password": PASSWORD, "request": request},
                              headers={"X-Request-Id": signed_id})
        assert r.status_code == 303, r.text
        [signed] = security_events(world, signed_id)
        assert coding_codes(signed["subtype"]) == {"110122"} and signed["outcome"] == "0"
        assert signed["action"] == "E"
        assert_agents(signed, client_id=PATIENT_APP, user=M, username="maria")
        assert patients(signed) == {M}

        location = r.headers["location"]
        if 'name="patient"' in browser.http.get(location).text:
            assert browser.pick_patient(location, MARIA).status_code == 303
        consent_id = new_request_id()
        browser.http.headers["X-Request-Id"] = consent_id
        r = browser.approve(location)
        del browser.http.headers["X-Request-Id"]
        assert r.status_code == 302, r.text
        code = query_of(r.headers["location"])["code"]
        [consent] = security_events(world, consent_id)
        assert coding_codes(consent["subtype"]) == {"consent"} and consent["outcome"] == "0"
        assert_agents(consent, client_id=PATIENT_APP, user=M, username="maria")
    finally:
        browser.close()

    issued_id = new_request_id()
    r = httpx.post(f"{world.base}/auth/token", headers={"X-Request-Id": issued_id}, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
        "client_id": PATIENT_APP})
    assert r.status_code == 200, r.text
    [issued] = security_events(world, issued_id)
    assert coding_codes(issued["subtype"]) == {"token"} and issued["subtype"][0]["system"] == SECURITY_EVENT_SYSTEM
    assert issued["outcome"] == "0" and issued["action"] == "C"
    assert_agents(issued, client_id=PATIENT_APP, user=M, username="maria")
    assert r.json()["access_token"] not in json.dumps(issued)

    refused_id = new_request_id()
    r = httpx.post(f"{world.base}/auth/token", headers={"X-Request-Id": refused_id}, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
        "client_id": PATIENT_APP})  # the code was used: refused
    assert r.status_code == 400, r.text
    [refused] = security_events(world, refused_id)
    assert coding_codes(refused["subtype"]) == {"token"} and refused["outcome"] == "4"
    assert_agents(refused, client_id=PATIENT_APP, user=None)


# -- the accounting of disclosures, and who may read the trail ------------------------------------------


def patient_app_token(world: World, username: str, patient: str) -> str:
    """A patient's app, from a standalone launch: sign-in, patient picker if asked, consent, PKCE."""
    verifier, challenge = pkce_pair()
    browser = Browserless(world.base)
    try:
        code = browser.code_for(client_id=PATIENT_APP, username=username, scope=PATIENT_SCOPE, aud=world.base,
                                challenge=challenge, patient=patient)
    finally:
        browser.close()
    r = httpx.post(f"{world.base}/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                     "redirect_uri": REDIRECT, "code_verifier": verifier,
                                                     "client_id": PATIENT_APP})
    assert r.status_code == 200, r.text
    assert r.json().get("patient") == patient
    return r.json()["access_token"]


def disclosures_about(events: list[dict], patient: str) -> list[dict]:
    return [e for e in events if e["type"]["code"] == "110106" and f"Patient/{patient}" in patients(e)]


@pytest.fixture(scope="module")
def prescribed(world):
    """Prescriptions for Maria and for James sent to the gateway: one disclosure each, at least."""
    for name in ("amlodipine-tablet", "albuterol-inhaler"):  # Maria's, James's
        world.smart.put(erx.medication_request(name))
    deadline = time.monotonic() + 30
    while True:
        trail = world.trail()
        if disclosures_about(trail, MARIA) and disclosures_about(trail, JAMES):
            return trail
        assert time.monotonic() < deadline, "no disclosure recorded for the prescriptions sent"
        time.sleep(0.3)


def test_a_disclosure_names_the_patient_the_prescription_and_the_recipient(world, prescribed):
    [event] = disclosures_about(prescribed, MARIA)
    assert coding_codes(event["subtype"]) == {"disclose"}
    assert event["outcome"] == "0"
    assert "MedicationRequest/mr-amlodipine" in resources(event)
    destination = agent(event, "110152")
    assert destination["network"]["address"] == f"{world.gateway.url}/script"
    assert patients(event) == {M}


@pytest.fixture(scope="module")
def maria_app(world, prescribed) -> str:
    """Maria's patient app, which has read her record (an ordinary access, audited about her)."""
    token = patient_app_token(world, "maria", MARIA)
    with world.http(token) as client:
        request_id = new_request_id()
        assert client.get(f"/Patient/{MARIA}", headers={"X-Request-Id": request_id}).status_code == 200
    assert world.events_of(request_id)
    return token


def test_a_patient_sees_only_the_disclosures_of_their_own_data(world, prescribed, maria_app):
    with world.http(maria_app) as client:
        trail = world.trail()
        about_maria = [e for e in trail if M in patients(e)]
        assert any(e["type"]["code"] != "110106" for e in about_maria)  # reads, writes, sign-ins about her exist
        wanted = {e["id"] for e in disclosures_about(trail, MARIA)}
        james = {e["id"] for e in disclosures_about(trail, JAMES)}

        for params in ({}, {"patient": M}, {"_count": "1000"}):
            r = client.get("/AuditEvent", params=params)
            assert r.status_code == 200, r.text
            seen = [e["resource"] for e in r.json().get("entry", [])]
            assert {e["id"] for e in seen} == wanted, params
            assert all(e["type"]["code"] == "110106" for e in seen)

        r = client.get("/AuditEvent", params={"patient": f"Patient/{JAMES}"})
        assert r.status_code == 200 and not r.json().get("entry"), r.text  # outside her compartment: nothing
        assert james
        for id in james:  # another patient's disclosures: as if they did not exist
            assert client.get(f"/AuditEvent/{id}").status_code == 404
        ordinary = next(e for e in about_maria if e["type"]["code"] != "110106")
        assert client.get(f"/AuditEvent/{ordinary['id']}").status_code == 404
        assert client.get(f"/AuditEvent/{next(iter(wanted))}").status_code == 200


def test_only_security_officers_read_the_trail_with_user_scopes(world):
    clinician = world.user_token("user/*.cruds", username="dr-kim", fhir_user=CLINICIAN)
    officer = world.user_token("user/*.rs", username=OFFICER, fhir_user="Practitioner/prac-sanchez")
    with world.http(clinician) as client:
        r = client.get("/AuditEvent")
        assert r.status_code == 403, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
    with world.http(officer) as client:
        r = client.get("/AuditEvent", params={"_count": "5"})
        assert r.status_code == 200, r.text
        assert r.json()["entry"]
    with world.http(world.backend_token("system/Patient.rs")) as client:
        assert client.get("/AuditEvent").status_code == 403  # a backend needs system/AuditEvent.rs


# -- the API cannot change the trail ----------------------------------------------------------------------


def _writes_of(client: httpx.Client, event: dict) -> list[httpx.Response]:
    id = event["id"]
    altered = {**event, "outcome": "8"}
    altered.pop("meta", None)
    fresh = {**altered}
    fresh.pop("id")
    return [
        client.put(f"/AuditEvent/{id}", json=altered),
        client.patch(f"/AuditEvent/{id}", json=[{"op": "replace", "path": "/outcome", "value": "8"}],
                     headers={"Content-Type": "application/json-patch+json"}),
        client.delete(f"/AuditEvent/{id}"),
        client.post("/AuditEvent", json=fresh),
        client.put("/AuditEvent/a-new-one", json={**fresh, "id": "a-new-one"}),
    ]


def test_the_api_refuses_every_write_of_an_audit_event_with_405(world):
    event = world.trail()[0]
    with world.http(world.tokens["backend"]) as client:  # system/*.cruds: may write everything else
        for r in _writes_of(client, event):
            assert r.status_code == 405, (r.request.method, r.request.url, r.text)
            assert r.json()["resourceType"] == "OperationOutcome"
        r = client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {**event, "outcome": "8"}, "request": {"method": "PUT", "url": f"AuditEvent/{event['id']}"}}]})
        assert r.status_code == 405, r.text
    with world.http(world.tokens["auditor"]) as client:
        again = client.get(f"/AuditEvent/{event['id']}").json()
    assert again == event


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("audit-noauth") / "fhir.db").start()
    yield process
    process.stop()


def test_without_authorization_too_audit_events_cannot_be_written(open_server):
    with httpx.Client(base_url=open_server.base, headers=FHIR_JSON, timeout=30.0) as client:
        assert client.get("/Patient/nobody").status_code == 404  # makes one AuditEvent
        deadline = time.monotonic() + FLUSH_WAIT
        while not (bundle := client.get("/AuditEvent").json()).get("entry"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        event = bundle["entry"][0]["resource"]
        for r in _writes_of(client, event):
            assert r.status_code == 405, (r.request.method, r.request.url, r.text)
        assert client.get(f"/AuditEvent/{event['id']}").json() == event


# -- the hash chain, verified and exported from the command line -------------------------------------------


def audit_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fhir_server", "audit", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def snapshot(world: World, to: Path) -> Path:
    """A consistent copy of the server's database (SQLite's online backup), to tamper with."""
    source = sqlite3.connect(world.smart.process.database)
    target = sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return to


def stored_positions(database: Path) -> dict[int, tuple[int, str]]:
    """chain position -> (seq, AuditEvent id) of the stored AuditEvents."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT seq, id, body FROM resource_versions WHERE type = 'AuditEvent'").fetchall()
    found = {}
    for seq, id, body in rows:
        [position] = positions([json.loads(body)])
        found[position] = (seq, id)
    return found


@pytest.fixture(scope="module")
def trail_copy(world, prescribed, tmp_path_factory) -> Path:
    """The trail after all the module's traffic (the table, sign-ins, disclosures), copied."""
    time.sleep(0.6)  # the last batch committed
    return snapshot(world, tmp_path_factory.mktemp("audit-copy") / "copy.db")


def test_verify_finds_the_chain_whole_after_the_traffic(world, trail_copy):
    result = audit_cli("verify", "--database", f"sqlite:///{trail_copy}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the chain is whole" in result.stdout
    count = len(stored_positions(trail_copy))
    assert count >= 10  # the seeding, the disclosures and whatever else the module did first
    assert f"{count} events, head position {count}" in result.stdout
    # the live database, being written while it is read, verifies too
    live = audit_cli("verify", "--database", f"sqlite:///{world.smart.process.database}")
    assert live.returncode == 0, live.stdout + live.stderr


def test_verify_names_the_position_of_an_altered_event(trail_copy, tmp_path):
    copy = tmp_path / "altered.db"
    shutil.copy(trail_copy, copy)
    stored = stored_positions(copy)
    position = len(stored) // 2
    seq, id = stored[position]
    with sqlite3.connect(copy) as conn:
        [body] = conn.execute("SELECT body FROM resource_versions WHERE seq = ?", (seq,)).fetchone()
        event = json.loads(body)
        event["outcome"] = "0" if event["outcome"] != "0" else "4"  # a refusal made a success, or back
        conn.execute("UPDATE resource_versions SET body = ? WHERE seq = ?", (json.dumps(event).encode(), seq))
    result = audit_cli("verify", "--database", f"sqlite:///{copy}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"BROKEN at position {position} (AuditEvent/{id})" in result.stdout
    assert "altered" in result.stdout


def test_verify_names_the_position_of_a_deleted_event(trail_copy, tmp_path):
    copy = tmp_path / "deleted.db"
    shutil.copy(trail_copy, copy)
    stored = stored_positions(copy)
    position = len(stored) // 3
    seq, id = stored[position]
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM resources WHERE type = 'AuditEvent' AND id = ?", (id,))
        conn.execute("DELETE FROM resource_versions WHERE seq = ?", (seq,))
    result = audit_cli("verify", "--database", f"sqlite:///{copy}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"BROKEN at position {position} " in result.stdout
    assert "missing" in result.stdout


def test_verify_finds_a_rewritten_event_whose_hash_was_recomputed(trail_copy, tmp_path):
    """Whoever alters an event and reseals it must reseal every later one: the next link breaks."""
    from fhir_server.audit import chain

    copy = tmp_path / "resealed.db"
    shutil.copy(trail_copy, copy)
    stored = stored_positions(copy)
    position = len(stored) // 2
    seq, _ = stored[position]
    with sqlite3.connect(copy) as conn:
        [body] = conn.execute("SELECT body FROM resource_versions WHERE seq = ?", (seq,)).fetchone()
        event = json.loads(body)
        parts = {e["url"]: e["valueString"] for e in next(x for x in event["extension"] if x["url"] == CHAIN_URL)["extension"]}
        event["extension"] = [x for x in event["extension"] if x["url"] != CHAIN_URL]
        event["outcome"] = "8"
        resealed, _ = chain.seal(event, chain.Link(position - 1, parts["previous"]))
        conn.execute("UPDATE resource_versions SET body = ? WHERE seq = ?", (json.dumps(resealed).encode(), seq))
    result = audit_cli("verify", "--database", f"sqlite:///{copy}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"BROKEN at position {position + 1} " in result.stdout


def test_verify_says_when_the_oldest_events_are_gone(trail_copy, tmp_path):
    """Removing the oldest events looks like a retention purge, which the chain must accept; verify
    names the positions no longer stored so the operator can hold them against the retention policy."""
    copy = tmp_path / "truncated.db"
    shutil.copy(trail_copy, copy)
    stored = stored_positions(copy)
    with sqlite3.connect(copy) as conn:
        for position in (1, 2, 3):
            seq, id = stored[position]
            conn.execute("DELETE FROM resources WHERE type = 'AuditEvent' AND id = ?", (id,))
            conn.execute("DELETE FROM resource_versions WHERE seq = ?", (seq,))
    result = audit_cli("verify", "--database", f"sqlite:///{copy}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "positions 1..3 are not stored" in result.stdout


def test_export_writes_the_trail_oldest_first_with_positions_one_to_n(trail_copy, tmp_path):
    out = tmp_path / "trail.ndjson"
    result = audit_cli("export", "--database", f"sqlite:///{trail_copy}", "--to", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = out.read_bytes().splitlines()
    events = [json.loads(line) for line in lines]
    assert all(e["resourceType"] == "AuditEvent" for e in events)
    assert positions(events) == list(range(1, len(stored_positions(trail_copy)) + 1))
    assert f"{len(events)} AuditEvents written" in result.stdout


SIDEWAYS = [
    ("GET", f"/Patient?_id={MARIA}&_revinclude=AuditEvent:patient"),
    ("GET", f"/Patient/{MARIA}/AuditEvent"),
    ("GET", "/AuditEvent/_history"),
    ("GET", "/_history"),
    ("GET", "/?_type=AuditEvent"),
    ("POST", "/AuditEvent/_search"),
    ("GET", f"/Patient/{MARIA}/$everything"),
]


@pytest.mark.parametrize("method, path", SIDEWAYS)
def test_no_way_around_shows_a_patient_other_audit_events(world, prescribed, maria_app, method, path):
    with world.http(maria_app) as client:
        r = client.request(method, path, content=b"" if method == "POST" else None,
                           headers={"Content-Type": "application/x-www-form-urlencoded"} if method == "POST" else {})
    assert r.status_code in (200, 403), r.text
    if r.status_code == 200:
        leaked = [e["resource"] for e in r.json().get("entry", []) if e.get("resource", {}).get("resourceType") == "AuditEvent"
                  and (e["resource"]["type"]["code"] != "110106" or M not in patients(e["resource"]))]
        assert not leaked, [(e["type"]["code"], e.get("subtype")) for e in leaked]


@pytest.mark.parametrize("method, path", SIDEWAYS)
def test_no_way_around_shows_a_clinician_the_trail(world, method, path):
    with world.http(world.tokens["clinician"]) as client:  # user/*.cruds, not a security officer
        r = client.request(method, path, content=b"" if method == "POST" else None,
                           headers={"Content-Type": "application/x-www-form-urlencoded"} if method == "POST" else {})
    assert r.status_code in (200, 403), r.text
    if r.status_code == 200:
        leaked = [e["resource"] for e in r.json().get("entry", []) if e.get("resource", {}).get("resourceType") == "AuditEvent"]
        assert not leaked, len(leaked)


def test_verify_of_a_database_that_is_not_there_fails_and_creates_nothing(tmp_path):
    """A mistyped path must not verify an empty, new database as a whole trail."""
    missing = tmp_path / "typo.db"
    result = audit_cli("verify", "--database", f"sqlite:///{missing}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no database" in result.stderr
    assert not missing.exists()


# -- Bulk export: each file downloaded is a disclosure of the patients it holds ----------------------


def test_an_export_file_download_is_a_disclosure_of_the_patients_it_holds(world):
    token = world.backend_token("system/Patient.rs system/Observation.rs", client_id="ehr-exporter")
    in_files: set[str] = set()
    with world.http(token) as client:
        r = client.get("/Patient/$export", params={"_type": "Patient,Observation"},
                       headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        status_url = r.headers["Content-Location"]
        deadline = time.monotonic() + 60
        while (r := client.get(status_url)).status_code != 200:
            assert r.status_code in (202, 429) and time.monotonic() < deadline, r.text
            time.sleep(1.0)
        outputs = r.json()["output"]
        assert outputs
        for output in outputs:
            download = client.get(output["url"], headers={"Accept": "application/fhir+ndjson"})
            assert download.status_code == 200
            for line in download.text.splitlines():
                resource = json.loads(line)
                if resource["resourceType"] == "Patient":
                    in_files.add(f"Patient/{resource['id']}")
                else:
                    in_files.add(resource["subject"]["reference"])
    assert {M, f"Patient/{JAMES}"} <= in_files
    deadline = time.monotonic() + FLUSH_WAIT
    while True:
        exported = [e for e in world.trail() if e["type"]["code"] == "110106"
                    and any("Bulk Data export file" in (x.get("description") or "") for x in e.get("entity", ()))]
        if len(exported) >= len(outputs) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(exported) == len(outputs)  # one disclosure per file downloaded
    assert set().union(*(patients(e) for e in exported)) == in_files
    for event in exported:
        assert agent(event, CLIENT_AGENT)["who"]["identifier"]["value"] == "ehr-exporter"
        assert coding_codes(event["subtype"]) == {"disclose"}
