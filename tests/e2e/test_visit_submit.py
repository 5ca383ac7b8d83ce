"""`POST Encounter/{id}/$submit` over HTTP: a planned async visit with a completed intake becomes a
review Task, an arrived Encounter and a fee; red flags decline it at once; every refusal names its
rule and changes nothing; submitting twice gives the same Task."""

from __future__ import annotations

import pytest

from profiles.canonical import CANONICAL_BASE
from tests.e2e.visit_support import rule, start_visit
from tests.support import module_server

server, client = module_server("visit", "--visit-fee", "42.50 USD")


def test_submit_makes_the_review_task_the_fee_and_an_arrived_encounter(client):
    encounter_id = start_visit(client)
    response = client.post(f"/Encounter/{encounter_id}/$submit")
    assert response.status_code == 201, response.text
    task = response.json()
    assert task["resourceType"] == "Task" and task["status"] == "requested"
    assert task["businessStatus"]["coding"][0]["code"] == "submitted"
    assert task["focus"]["reference"] == f"Encounter/{encounter_id}"
    assert {i["valueReference"]["reference"].split("/")[0] for i in task["input"]} == {"QuestionnaireResponse"}
    assert client.get(f"/Encounter/{encounter_id}").json()["status"] == "arrived"
    [charge] = [e["resource"] for e in client.get("/ChargeItem", params={"context": f"Encounter/{encounter_id}"}).json()["entry"]]
    assert charge["status"] == "billable" and charge["priceOverride"] == {"value": 42.5, "currency": "USD"}
    # the queue a clinician reads is an ordinary search
    queue = client.get("/Task", params={"status": "requested", "owner:missing": "true", "_sort": "authored-on",
                                         "_include": "Task:focus"}).json()
    assert task["id"] in {e["resource"]["id"] for e in queue["entry"] if e["search"]["mode"] == "match"}


def test_without_a_location_the_intakes_state_answer_says_where_the_patient_is(client):
    # a patient app (patient/ scopes) cannot write a Location: the intake's patient-state answer stands in
    encounter_id = start_visit(client)
    encounter = client.get(f"/Encounter/{encounter_id}").json()
    encounter.pop("location")
    encounter.pop("meta")
    assert client.put(f"/Encounter/{encounter_id}", json=encounter).status_code == 200
    submitted = client.post(f"/Encounter/{encounter_id}/$submit")
    assert submitted.status_code == 201, submitted.text
    [where] = client.get(f"/Encounter/{encounter_id}").json()["location"]
    location = client.get(f"/{where['location']['reference']}").json()
    assert location["address"]["state"] == "CA"  # the intake fixture answers California


def test_submitting_again_returns_the_same_task(client):
    encounter_id = start_visit(client)
    first = client.post(f"/Encounter/{encounter_id}/$submit")
    second = client.post(f"/Encounter/{encounter_id}/$submit")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert len(client.get("/ChargeItem", params={"context": f"Encounter/{encounter_id}"}).json().get("entry", [])) == 1


def test_red_flags_decline_the_visit_at_once_and_tell_the_patient(client):
    encounter_id = start_visit(client, red_flag=True)
    response = client.post(f"/Encounter/{encounter_id}/$submit")
    assert response.status_code == 201
    task = response.json()
    assert task["status"] == "rejected" and task["statusReason"]["coding"][0]["code"] == "red-flag-emergency"
    assert client.get(f"/Encounter/{encounter_id}").json()["status"] == "cancelled"
    [message] = [e["resource"] for e in client.get("/Communication", params={"encounter": f"Encounter/{encounter_id}"}).json()["entry"]]
    assert "emergency" in message["payload"][0]["contentString"]
    assert not client.get("/ChargeItem", params={"context": f"Encounter/{encounter_id}"}).json().get("entry")


@pytest.mark.parametrize("setup, status, expected", [
    (dict(intake_status=None), 422, "submit-intake-missing"),
    (dict(intake_status="in-progress"), 422, "submit-intake-missing"),
    (dict(state=None), 422, "submit-state-unknown"),
    (dict(visit_class="AMB"), 422, "submit-not-async-visit"),
])
def test_refusals_name_their_rule_and_change_nothing(client, setup, status, expected):
    encounter_id = start_visit(client, **setup)
    before = client.get(f"/Encounter/{encounter_id}").json()
    response = client.post(f"/Encounter/{encounter_id}/$submit")
    assert response.status_code == status
    assert expected in rule(response)
    assert client.get(f"/Encounter/{encounter_id}").json() == before
    assert not client.get("/Task", params={"focus": f"Encounter/{encounter_id}"}).json().get("entry")


def test_a_visit_no_longer_planned_cannot_be_submitted(client):
    encounter_id = start_visit(client)
    encounter = client.get(f"/Encounter/{encounter_id}").json()
    encounter["status"] = "finished"
    assert client.put(f"/Encounter/{encounter_id}", json=encounter).status_code == 200
    assert client.post(f"/Encounter/{encounter_id}/$submit").status_code == 409


def test_an_unknown_visit_is_404(client):
    assert client.post("/Encounter/no-such-visit/$submit").status_code == 404


def test_metadata_lists_submit_and_the_guide_serves_its_definition(client):
    encounter = next(r for r in client.get("/metadata").json()["rest"][0]["resource"] if r["type"] == "Encounter")
    assert {"name": "submit", "definition": f"{CANONICAL_BASE}/OperationDefinition/submit"} in encounter["operation"]
    assert client.get("/OperationDefinition/submit").json()["code"] == "submit"
