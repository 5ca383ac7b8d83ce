"""The whole asynchronous visit over HTTP with real SMART tokens: a patient user and two clinician
users (one licensed in the patient's state, one not), apps and users registered with the CLI,
tokens from the authorization code flow (sign-in, patient picker, consent, PKCE).

Patient: starts the visit (transaction), submits it. Licensed clinician: finds it in the queue,
claims it, asks a question; the patient answers; the clinician records a diagnosis and a care plan,
prescribes, completes. Refusals on the way: the unlicensed clinician neither sees nor claims the
visit, a patient cannot prescribe, another patient cannot read the visit or its messages."""

from __future__ import annotations

import base64
import copy
import subprocess
import sys

import httpx
import pytest

from tests.e2e.smart_support import PASSWORD, REDIRECT, Browserless, pkce_pair, start_smart_server
from tests.e2e.visit_support import ROOT, load, rule
from tests.support import FHIR_JSON, ONE_PIXEL_PNG

PATIENT_SCOPE = "launch/patient openid fhirUser patient/*.cruds"
CLINICIAN_SCOPE = "openid fhirUser user/*.cruds"


def cli(database: str, *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "fhir_server", *args, "--database", database], cwd=ROOT,
                            input=PASSWORD, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def licensed(id: str, state: str) -> dict:
    body = load("profiles/examples/licensed-practitioner-valid.json")
    body["id"] = id
    body["qualification"] = [copy.deepcopy(body["qualification"][0])]
    body["qualification"][0]["extension"][0]["extension"][1]["valueCodeableConcept"]["coding"][0]["code"] = state
    body["identifier"] = [i for i in body["identifier"] if i.get("system") == "http://hl7.org/fhir/sid/us-npi"]
    body["identifier"][0]["value"] = {"dr-ca": "1234567893", "dr-ny": "1245319599"}[id]
    return body


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    smart = start_smart_server(tmp_path_factory.mktemp("visit-smart"))
    try:
        db = f"sqlite:///{smart.process.database}"
        vera = {**load("profiles/examples/async-visit-patient-valid.json"), "id": "pat-v"}  # a US Core patient
        for resource in (
            vera,
            {"resourceType": "Patient", "id": "pat-o", "name": [{"family": "Other", "given": ["Otto"]}]},
            licensed("dr-ca", "CA"), licensed("dr-ny", "NY"),
        ):
            smart.put(resource)
        cli(db, "clients", "add", "--client-id", "patient-app", "--public", "--redirect-uri", REDIRECT, "--scope", PATIENT_SCOPE)
        cli(db, "clients", "add", "--client-id", "clinician-app", "--public", "--redirect-uri", REDIRECT, "--scope", CLINICIAN_SCOPE)
        for username, fhir_user in (("vera", "Patient/pat-v"), ("otto", "Patient/pat-o"),
                                    ("dr-ca", "Practitioner/dr-ca"), ("dr-ny", "Practitioner/dr-ny")):
            cli(db, "users", "add", "--username", username, "--password", "-", "--fhir-user", fhir_user)

        def token(client_id: str, username: str, scope: str, patient: str | None = None) -> httpx.Client:
            verifier, challenge = pkce_pair()
            browser = Browserless(smart.base)
            try:
                code = browser.code_for(client_id=client_id, username=username, scope=scope, aud=smart.base,
                                        challenge=challenge, patient=patient)
            finally:
                browser.close()
            r = httpx.post(smart.token_url, data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                                  "code_verifier": verifier, "client_id": client_id})
            assert r.status_code == 200, r.text
            return httpx.Client(base_url=smart.base, timeout=30.0,
                                headers={**FHIR_JSON, "Authorization": f"Bearer {r.json()['access_token']}"})

        yield {
            "vera": token("patient-app", "vera", PATIENT_SCOPE, "pat-v"),
            "otto": token("patient-app", "otto", PATIENT_SCOPE, "pat-o"),
            "dr-ca": token("clinician-app", "dr-ca", CLINICIAN_SCOPE),
            "dr-ny": token("clinician-app", "dr-ny", CLINICIAN_SCOPE),
        }
    finally:
        smart.process.stop()


def start(client: httpx.Client) -> str:
    """The patient app's transaction: planned Encounter and completed intake, which answers where the
    patient is (California); a patient app cannot write a Location, $submit records it."""
    encounter = load("profiles/examples/async-visit-encounter-valid.json")
    intake = load("tests/fixtures/questionnaire/async-visit-intake-complete.json")
    for r in (encounter, intake):
        r.pop("id", None)
        r.pop("meta", None)  # (the examples' targets are other ids; the profiles are checked elsewhere)
    me = {"reference": "Patient/pat-v"}
    encounter.update(status="planned", subject=me)
    encounter.pop("participant", None)
    encounter.pop("location", None)
    intake.update(subject=me, author=me, source=me, encounter={"reference": "urn:uuid:0b1e0000-0000-4000-8000-000000000003"})
    entries = [("urn:uuid:0b1e0000-0000-4000-8000-000000000003", encounter),
               ("urn:uuid:0b1e0000-0000-4000-8000-000000000004", intake)]
    r = client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": u, "resource": x, "request": {"method": "POST", "url": x["resourceType"]}} for u, x in entries]})
    assert r.status_code == 200, r.text
    return next(e["response"]["location"].split("/")[1] for e in r.json()["entry"]
                if e["response"]["location"].startswith("Encounter/"))


def queue(client: httpx.Client) -> list[str]:
    bundle = client.get("/Task", params={"status": "requested", "owner:missing": "true", "_sort": "authored-on",
                                         "_include": "Task:focus"}).json()
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "Task"]


def test_the_whole_visit_with_real_tokens(world):
    vera, otto, dr_ca, dr_ny = world["vera"], world["otto"], world["dr-ca"], world["dr-ny"]
    encounter_id = start(vera)
    submitted = vera.post(f"/Encounter/{encounter_id}/$submit")
    assert submitted.status_code == 201, submitted.text
    task = submitted.json()

    # a photo of the problem: the patient's own, unreadable to another patient
    photo = base64.b64decode(ONE_PIXEL_PNG)
    uploaded = vera.post("/Binary", content=photo, headers={"Content-Type": "image/png",
                                                           "X-Security-Context": "Patient/pat-v"})
    assert uploaded.status_code == 201, uploaded.text
    binary = f"/Binary/{uploaded.json()['id']}"
    assert vera.get(binary, headers={"Accept": "image/png"}).content == photo
    assert otto.get(binary, headers={"Accept": "image/png"}).status_code == 404

    # the queue: the clinician licensed in CA sees the visit, the NY-only one does not
    assert task["id"] in queue(dr_ca)
    assert task["id"] not in queue(dr_ny)
    assert dr_ny.get(f"/Task/{task['id']}").status_code == 404
    assert dr_ny.get(f"/Encounter/{encounter_id}").status_code == 404
    assert not dr_ny.get("/QuestionnaireResponse", params={"encounter": f"Encounter/{encounter_id}"}).json().get("entry")
    assert dr_ca.get("/QuestionnaireResponse", params={"encounter": f"Encounter/{encounter_id}"}).json()["entry"]

    claimed = {**task, "status": "in-progress", "owner": {"reference": "Practitioner/dr-ca"},
               "businessStatus": {"coding": [{**task["businessStatus"]["coding"][0], "code": "in-review"}]}}
    # a clinician cannot claim in a colleague's name, nor without a licence where the patient is
    unlicensed = dr_ny.put(f"/Task/{task['id']}", json={**claimed, "owner": {"reference": "Practitioner/dr-ny"}})
    assert unlicensed.status_code == 422 and "visit-claim-licence" in rule(unlicensed)
    assert dr_ca.put(f"/Task/{task['id']}", json={**claimed, "owner": {"reference": "Practitioner/dr-ny"}}).status_code == 403
    response = dr_ca.put(f"/Task/{task['id']}", json=claimed)
    assert response.status_code == 200, response.text

    # a question, and the patient's answer
    me, doctor = {"reference": "Patient/pat-v"}, {"reference": "Practitioner/dr-ca"}
    question = dr_ca.post("/Communication", json={
        "resourceType": "Communication", "status": "completed", "encounter": {"reference": f"Encounter/{encounter_id}"},
        "subject": me, "sender": doctor, "recipient": [me], "sent": "2026-11-29T10:00:00Z",
        "payload": [{"contentString": "Does it itch more at night?"}]})
    assert question.status_code == 201, question.text
    assert dr_ca.get(f"/Task/{task['id']}").json()["businessStatus"]["coding"][0]["code"] == "awaiting-patient"
    assert [e["resource"]["id"] for e in vera.get("/Communication").json()["entry"]] == [question.json()["id"]]
    assert not otto.get("/Communication").json().get("entry")  # another patient sees none of it
    assert otto.get(f"/Communication/{question.json()['id']}").status_code == 404
    assert otto.get(f"/Encounter/{encounter_id}").status_code == 404
    assert not dr_ny.get("/Communication").json().get("entry")  # nor does a clinician outside the conversation
    answer = vera.post("/Communication", json={
        "resourceType": "Communication", "status": "completed", "encounter": {"reference": f"Encounter/{encounter_id}"},
        "subject": me, "sender": me, "recipient": [doctor], "sent": "2026-11-29T11:00:00Z",
        "inResponseTo": [{"reference": f"Communication/{question.json()['id']}"}],
        "payload": [{"contentString": "Yes, mostly at night."}]})
    assert answer.status_code == 201, answer.text
    assert dr_ca.get(f"/Task/{task['id']}").json()["businessStatus"]["coding"][0]["code"] == "in-review"

    # the decision: diagnosis, care plan, prescription; the patient cannot prescribe
    condition = load("profiles/examples/visit-diagnosis-valid.json")
    careplan = load("profiles/examples/visit-careplan-valid.json")
    prescription = load("profiles/examples/async-prescription-valid.json")
    for r in (condition, careplan, prescription):
        for key in ("id", "meta", "reasonReference"):
            r.pop(key, None)
        r.update(subject=me, encounter={"reference": f"Encounter/{encounter_id}"})
    careplan["author"] = doctor
    prescription["requester"] = doctor
    prescription["dispenseRequest"].pop("performer", None)
    condition_id = dr_ca.post("/Condition", json=condition).json()["id"]
    careplan["addresses"] = [{"reference": f"Condition/{condition_id}"}]
    assert dr_ca.post("/CarePlan", json=careplan).status_code == 201
    assert vera.post("/MedicationRequest", json=prescription).status_code in (403, 422)
    prescribed = dr_ca.post("/MedicationRequest", json=prescription)
    assert prescribed.status_code == 201, prescribed.text
    controlled = copy.deepcopy(prescription)
    controlled["medicationCodeableConcept"] = {"text": "Oxycodone 5 mg tablet"}
    refused = dr_ca.post("/MedicationRequest", json=controlled)
    assert refused.status_code == 422 and "no-controlled-substance" in rule(refused)

    done = {**dr_ca.get(f"/Task/{task['id']}").json(), "status": "completed",
            "businessStatus": {"coding": [{**task["businessStatus"]["coding"][0], "code": "completed"}]}}
    assert dr_ca.put(f"/Task/{task['id']}", json=done).status_code == 200
    assert vera.get(f"/Encounter/{encounter_id}").json()["status"] == "finished"

    # the consult note: the patient reads her document, another patient cannot
    [note] = [e["resource"] for e in vera.get("/Composition", params={"encounter": f"Encounter/{encounter_id}"}).json()["entry"]]
    document = vera.get(f"/Composition/{note['id']}/$document")
    assert document.status_code == 200, document.text
    assert document.json()["type"] == "document" and document.json()["entry"][0]["resource"]["id"] == note["id"]
    assert otto.get(f"/Composition/{note['id']}/$document").status_code == 404


def test_everything_is_authorized_like_a_search(world):
    vera, otto, dr_ny = world["vera"], world["otto"], world["dr-ny"]
    encounter_id = start(vera)
    mine = vera.get("/Patient/pat-v/$everything")
    assert mine.status_code == 200, mine.text
    refs = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in mine.json()["entry"]}
    assert f"Encounter/{encounter_id}" in refs
    assert all(not r.startswith("Patient/") or r == "Patient/pat-v" for r in refs)
    assert otto.get("/Patient/pat-v/$everything").status_code == 404
    theirs = otto.get("/Patient/pat-o/$everything").json()
    assert not any(e["resource"].get("subject", {}).get("reference") == "Patient/pat-v" for e in theirs["entry"])
    assert otto.get(f"/Encounter/{encounter_id}/$everything").status_code == 404
    assert vera.get(f"/Encounter/{encounter_id}/$everything").status_code == 200
    # a clinician not licensed where the patient is does not see the visit (submitted or not)
    vera.post(f"/Encounter/{encounter_id}/$submit")
    assert dr_ny.get(f"/Encounter/{encounter_id}/$everything").status_code == 404
