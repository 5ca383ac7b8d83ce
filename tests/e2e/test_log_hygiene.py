"""No patient data in logs, ever: a whole visit at --log-level debug with distinctive markers in the
patient's name, the intake answers, the messages, the clinical notes and a photo's description,
plus refusals that carry the markers (a 400 for a malformed body and for an invalid resource, a
422, a 404 for an id, unknown search values, a failed sign-in and a bad token request), and then
every line the servers wrote is searched for the markers.

Two servers: the visit runs on one without authorization (as the README walk-through does); the
sign-in and token endpoints are exercised on one with authorization on."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import httpx
import pytest

from mappers.gateway_sim.process import GatewaySimProcess
from smart_auth.service import AuthService
from tests.e2e.erx_support import transmissions, wait_for
from tests.e2e.smart_support import REDIRECT, SmartServer, pkce_pair
from tests.e2e.visit_support import set_answer
from tests.support import FHIR_JSON, ONE_PIXEL_PNG, ROOT, ServerProcess

# one random stem, so any appearance in a log is ours, and a field name after it says which leaked
MARK = f"Zq{secrets.token_hex(5)}"


def marker(field: str) -> str:
    return f"{MARK}{field}"


def example(name: str) -> dict:
    body = json.loads((ROOT / name).read_text())
    body.pop("id", None)
    return body


def leaked_lines(log: Path) -> list[str]:
    text = log.read_text(errors="replace")
    assert text.strip(), "the server wrote no log at all: the test would prove nothing"
    return [line for line in text.splitlines() if MARK.lower() in line.lower()]


@pytest.fixture(scope="module")
def visit_server(tmp_path_factory):
    """The server, sending its prescriptions to the gateway simulator (the NewRx carries the markers)."""
    with GatewaySimProcess() as gateway:
        proc = ServerProcess(tmp_path_factory.mktemp("log-hygiene") / "fhir.db",
                             extra_args=["--log-level", "debug", "--erx-gateway", f"{gateway.url}/script"])
        proc.start()
        yield proc
        proc.stop()


def drive_visit(fhir: httpx.Client) -> None:
    """The README's visit, every free-text field carrying a marker."""
    patient = example("profiles/examples/async-visit-patient-valid.json")
    patient["name"] = [{"family": marker("family"), "given": [marker("given")]}]
    patient["telecom"] = [{"system": "email", "value": f"{marker('email')}@example.org"}]
    created = fhir.post("/Patient", json=patient)
    assert created.status_code == 201, created.text
    doctor = example("profiles/examples/licensed-practitioner-valid.json")
    doctor.update(telecom=[{"system": "phone", "value": "4155550100"}], address=[{
        "line": ["1 Market St"], "city": "San Francisco", "state": "CA", "postalCode": "94105"}])  # (for the NewRx)
    doctor = fhir.post("/Practitioner", json=doctor).json()
    me, dr = {"reference": f"Patient/{created.json()['id']}"}, {"reference": f"Practitioner/{doctor['id']}"}
    pharmacy = json.loads((ROOT / "profiles/examples/pharmacy-organization-valid.json").read_text())
    assert fhir.put(f"/Organization/{pharmacy['id']}", json=pharmacy).status_code in (200, 201)

    visit = example("profiles/examples/async-visit-encounter-valid.json")
    visit.update(status="planned", subject=me)
    for key in ("meta", "participant", "location"):
        visit.pop(key)
    intake = example("tests/fixtures/questionnaire/async-visit-intake-complete.json")
    intake.pop("meta")
    for link_id in ("reason", "history", "prior-episodes-detail", "conditions", "photo-description"):
        set_answer(intake, link_id, {"valueString": marker(link_id)})
    enc_url = "urn:uuid:7d0c1a2e-0000-4000-8000-00000000000a"
    intake.update(subject=me, author=me, source=me, encounter={"reference": enc_url})
    started = fhir.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": enc_url, "resource": visit, "request": {"method": "POST", "url": "Encounter"}},
        {"resource": intake, "request": {"method": "POST", "url": "QuestionnaireResponse"}}]})
    assert started.status_code == 200, started.text
    encounter = started.json()["entry"][0]["response"]["location"].split("/_history")[0]

    photo = fhir.post("/Binary", content=base64.b64decode(ONE_PIXEL_PNG),
                      headers={"Content-Type": "image/png", "X-Security-Context": me["reference"]})
    assert photo.status_code == 201, photo.text

    submitted = fhir.post(f"/{encounter}/$submit")
    assert submitted.status_code == 201, submitted.text
    task = submitted.json()
    task.update(status="in-progress", owner=dr, businessStatus={"coding": [
        {"system": "http://fhir-async-telehealth.example/CodeSystem/visit-review-status", "code": "in-review"}]})
    task = fhir.put(f"/Task/{task['id']}", json=task).json()

    message = {"resourceType": "Communication", "status": "completed", "encounter": {"reference": encounter},
               "subject": me, "sent": "2026-11-29T10:00:00Z"}
    asked = fhir.post("/Communication", json={**message, "sender": dr, "recipient": [me],
                                              "payload": [{"contentString": marker("question")}]})
    assert asked.status_code == 201, asked.text
    answered = fhir.post("/Communication", json={
        **message, "sender": me, "recipient": [dr], "inResponseTo": [{"reference": f"Communication/{asked.json()['id']}"}],
        "payload": [{"contentString": marker("answer")}]})
    assert answered.status_code == 201, answered.text

    def record(name: str, **fields) -> dict:
        body = example(f"profiles/examples/{name}-valid.json")
        for key in ("meta", "reasonReference"):
            body.pop(key, None)
        body.update(subject=me, encounter={"reference": encounter}, **fields)
        r = fhir.post(f"/{body['resourceType']}", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    condition = record("visit-diagnosis", note=[{"text": marker("diagnosis-note")}])
    record("visit-careplan", author=dr, description=marker("careplan"),
           addresses=[{"reference": f"Condition/{condition['id']}"}])
    prescription = record("async-prescription", requester=dr, note=[{"text": marker("rx-note")}],
                          identifier=[{"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4"}])
    # e-prescribing: the NewRx (with the patient's name) goes to the gateway and is accepted
    wait_for(lambda: any(t.get("businessStatus", {}).get("coding", [{}])[0].get("code") in ("accepted", "sent")
                         for t in transmissions(fhir, prescription["id"])))

    task = fhir.get(f"/Task/{task['id']}").json()
    task["status"], task["businessStatus"]["coding"][0]["code"] = "completed", "completed"
    done = fhir.put(f"/Task/{task['id']}", json=task)
    assert done.status_code == 200, done.text
    assert fhir.get(f"/{encounter}").json()["status"] == "finished"

    # reading it all back: search, the consult note as a document and as HTML, $everything
    found = fhir.get("/Patient", params={"family": marker("family")})
    assert found.status_code == 200 and found.json()["total"] == 1
    [composition] = [e["resource"] for e in fhir.get("/Composition", params={"encounter": encounter}).json()["entry"]]
    document = fhir.get(f"/Composition/{composition['id']}/$document")
    assert document.status_code == 200 and MARK in document.text  # the markers travel in the data...
    [docref] = fhir.get("/DocumentReference", params={"encounter": encounter}).json()["entry"]
    html_url = next(c["attachment"]["url"] for c in docref["resource"]["content"]
                    if c["attachment"]["contentType"] == "text/html")
    rendering = fhir.get(f"/{html_url}", headers={"Accept": "text/html"})
    assert rendering.status_code == 200 and MARK in rendering.text
    assert "sandbox" in rendering.headers["content-security-policy"]  # the note's HTML can run nothing
    assert fhir.get(f"/{encounter}/$everything").status_code == 200  # ...and must not reach the logs


def provoke_errors(fhir: httpx.Client) -> None:
    """Refusals whose request carries patient data: the error path must log no more than the success path."""
    not_json = fhir.post("/Patient", content=f'{{"resourceType": "Patient", "name": [{{"family": "{marker("broken")}'.encode(),
                         headers={"Content-Type": "application/fhir+json"})
    assert not_json.status_code == 400
    invalid = fhir.post("/Patient", json={"resourceType": "Patient", "name": [{"family": marker("invalid")}],
                                          "gender": marker("gender"), marker("element"): True})
    assert invalid.status_code == 400, invalid.text
    patient = fhir.post("/Patient", json={"resourceType": "Patient", "name": [{"family": marker("patched")}]}).json()
    failed_patch = fhir.patch(f"/Patient/{patient['id']}", content=json.dumps(
        [{"op": "test", "path": "/name/0/family", "value": marker("patch-test")}]),
        headers={"Content-Type": "application/json-patch+json"})
    assert failed_patch.status_code == 422, failed_patch.text
    assert fhir.get(f"/Patient/{marker('id')}").status_code == 404
    assert fhir.get("/Patient", params={"name": marker("search"), marker("param"): "x"}).status_code == 200
    strict = fhir.get("/Patient", params={marker("strict"): "x"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    wrong_type = fhir.put(f"/Patient/{patient['id']}", json={"resourceType": "Observation",
                                                              "status": marker("status")})
    assert wrong_type.status_code == 400


def test_a_whole_visit_and_its_errors_log_no_patient_data(visit_server):
    with httpx.Client(base_url=visit_server.base, timeout=60.0, headers=FHIR_JSON) as fhir:
        drive_visit(fhir)
        provoke_errors(fhir)
    assert leaked_lines(visit_server.log_path) == []


def test_sign_in_and_token_refusals_log_no_patient_data(tmp_path):
    process = ServerProcess(tmp_path / "fhir.db", auth=True, extra_args=["--log-level", "debug"]).start()
    try:
        auth = AuthService.from_url(f"sqlite:///{process.database}")
        auth.open_sync()
        smart = SmartServer(process, auth)
        smart.add_client("hygiene-app", "public", "launch/patient openid fhirUser patient/*.rs")
        smart.add_user(marker("user"), "Patient/pat-x")
        http = httpx.Client(base_url=smart.base, timeout=30.0)
        failed = http.post("/auth/login", data={"username": marker("user"), "password": marker("password"),
                                                "next": "/auth/manage"})
        assert failed.status_code == 401
        assert http.post("/auth/login", data={"username": marker("nobody"), "password": marker("pw"),
                                              "next": "/auth/manage"}).status_code == 401
        verifier, challenge = pkce_pair()
        authorize = http.get("/auth/authorize", params={
            "response_type": "code", "client_id": "hygiene-app", "redirect_uri": REDIRECT, "scope": "patient/*.rs",
            "state": marker("state"), "aud": smart.base, "code_challenge": challenge, "code_challenge_method": "S256",
            "login_hint": marker("hint")})
        assert authorize.status_code == 303
        token = http.post("/auth/token", data={"grant_type": "authorization_code", "code": marker("code"),
                                               "redirect_uri": REDIRECT, "code_verifier": verifier,
                                               "client_id": "hygiene-app"})
        assert token.status_code == 400
        bearer = http.get("/Patient", headers={"Authorization": f"Bearer {marker('token')}"})
        assert bearer.status_code == 401
        http.close()
    finally:
        process.stop()
    assert leaked_lines(process.log_path) == []
