"""Subscriptions with authorization on: EHR backends (SMART Backend Services: client_credentials
with a private_key_jwt assertion, system/ scopes) subscribe to consultation-completed. The one
that may read Encounters gets the handshake and the notification of a completed visit, its
full-resource payload holding only what its token may read (the Encounter, not the Patient); one
that may not read Encounters is refused at create (403); no notification request carries a token
of ours, only the header the subscriber asked for."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.smart_support import backend_services_token, start_smart_server
from tests.e2e.test_subscriptions import ENV, Receiver, complete, of_type, params, subscription, wait_status
from tests.support import FHIR_JSON

READS_ENCOUNTERS = "system/Subscription.cruds system/Encounter.rs"
NO_ENCOUNTERS = "system/Subscription.cruds system/Patient.rs"


@pytest.fixture(scope="module")
def smart(tmp_path_factory):
    server = start_smart_server(tmp_path_factory.mktemp("subs-auth"), env=ENV)
    try:
        yield server
    finally:
        server.process.stop()


def backend_token(smart, client_id: str, scope: str) -> str:
    """A registered backend-services client's access token, by the client_credentials grant."""
    return backend_services_token(smart, client_id, scope)["access_token"]


def http(smart, token: str) -> httpx.Client:
    return httpx.Client(base_url=smart.base, timeout=30.0, headers={**FHIR_JSON, "Authorization": f"Bearer {token}"})


def test_an_ehr_backend_gets_the_completed_visit_with_only_what_its_token_may_read(smart):
    ehr_token = backend_token(smart, "ehr-encounters", READS_ENCOUNTERS)
    clinic_token = smart.system_token()  # drives the visit, as the clinic's apps would
    receiver = Receiver().start()
    with http(smart, ehr_token) as ehr, http(smart, clinic_token) as clinic:
        try:
            created = ehr.post("/Subscription", json=subscription(receiver.url, content="full-resource"))
            assert created.status_code == 201, created.text
            sub_id = created.json()["id"]
            receiver.wait(of_type("handshake"))
            wait_status(ehr, sub_id, "active")
            task = complete(clinic)
            [note] = receiver.wait(of_type("event-notification"))
            event = {q["name"]: q for q in params(note["body"])["notification-event"]["part"]}
            assert event["focus"]["valueReference"]["reference"].endswith(task["focus"]["reference"])
            assert "additional-context" not in event  # the Patient: this token may not read it
            payload = [e["resource"] for e in note["body"]["entry"][1:]]
            assert [(r["resourceType"], r["status"]) for r in payload] == [("Encounter", "finished")]
            assert f"Encounter/{payload[0]['id']}" == task["focus"]["reference"]
            # the subscriber's own header, and never a token of ours
            for request in receiver.requests:
                assert request["headers"]["Authorization"] == "Bearer receiver-secret"
                values = " ".join(request["headers"].values())
                assert ehr_token not in values and clinic_token not in values
            status = ehr.get(f"/Subscription/{sub_id}/$status")
            assert status.status_code == 200 and params(status.json())["events-since-subscription-start"]["valueString"] == "1"
            # the notification disclosed the visit to the EHR: a disclosure in the audit trail, about
            # the visit's patient, naming the endpoint it went to (the accounting of disclosures)
            encounter = payload[0]
            patient = encounter["subject"]["reference"]
            with http(smart, smart.system_token()) as auditor:
                deadline = time.monotonic() + 5
                while True:
                    found = [e["resource"] for e in auditor.get("/AuditEvent", params={
                        "type": "http://dicom.nema.org/resources/ontology/DCM|110106", "patient": patient,
                        "_count": "100"}).json().get("entry", [])]
                    sent = [e for e in found if any(a.get("network", {}).get("address") == receiver.url
                                                    for a in e["agent"])]
                    if sent or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
            assert sent, "no disclosure recorded for the notification"
            assert any(x.get("what", {}).get("reference") == task["focus"]["reference"] for x in sent[0]["entity"])
        finally:
            receiver.stop()


def test_a_backend_that_cannot_read_encounters_cannot_subscribe_to_them(smart):
    token = backend_token(smart, "ehr-patients-only", NO_ENCOUNTERS)
    with http(smart, token) as c:
        refused = c.post("/Subscription", json=subscription("http://127.0.0.1:9/hook"))
        assert refused.status_code == 403, refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"
        stored = [e["resource"] for e in c.get("/Subscription").json().get("entry", [])]
        assert not [s for s in stored if s["channel"]["endpoint"] == "http://127.0.0.1:9/hook"]


def test_without_a_token_nothing_is_subscribed(smart):
    r = httpx.post(f"{smart.base}/Subscription", json=subscription("http://127.0.0.1:9/hook"), headers=FHIR_JSON)
    assert r.status_code == 401


def test_a_client_sees_and_changes_only_its_own_subscriptions(smart):
    """A Subscription holds its subscriber's endpoint and the headers sent with every notification
    (often a secret): another client, even with system/Subscription.cruds, neither reads, finds,
    changes nor deletes it."""
    owner = backend_token(smart, "ehr-owner", READS_ENCOUNTERS)
    other = backend_token(smart, "ehr-other", READS_ENCOUNTERS)
    with http(smart, owner) as mine, http(smart, other) as theirs:
        created = mine.post("/Subscription", json=subscription("http://127.0.0.1:9/owned-hook"))
        assert created.status_code == 201, created.text
        sub = created.json()
        assert mine.get(f"/Subscription/{sub['id']}").status_code == 200
        assert theirs.get(f"/Subscription/{sub['id']}").status_code == 404
        assert theirs.get(f"/Subscription/{sub['id']}/$status").status_code == 404
        found = [e["resource"]["id"] for e in theirs.get("/Subscription", params={"_count": "100"}).json().get("entry", [])]
        assert sub["id"] not in found
        assert sub["id"] in [e["resource"]["id"] for e in mine.get("/Subscription", params={"_count": "100"}).json()["entry"]]
        taken = theirs.put(f"/Subscription/{sub['id']}", json={**sub, "channel": {**sub["channel"], "endpoint":
                                                                                   "http://127.0.0.1:9/stolen"}})
        assert taken.status_code in (403, 404), taken.text
        assert theirs.delete(f"/Subscription/{sub['id']}").status_code in (403, 404)
        kept = mine.get(f"/Subscription/{sub['id']}").json()
        assert kept["channel"]["endpoint"] == "http://127.0.0.1:9/owned-hook"
        # a client cannot put another's owner tag on its own Subscription either
        forged = {**subscription("http://127.0.0.1:9/forged"), "meta": {"tag": [
            {"system": "http://fhir-async-telehealth.example/CodeSystem/subscription-owner", "code": "ehr-owner"}]}}
        made = theirs.post("/Subscription", json=forged)
        assert made.status_code == 201 and made.json()["id"] not in [
            e["resource"]["id"] for e in mine.get("/Subscription", params={"_count": "100"}).json()["entry"]]
