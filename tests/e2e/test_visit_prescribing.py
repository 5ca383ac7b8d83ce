"""The prescribing rules on the write path, over HTTP: a clinician reviewing a visit prescribes;
controlled substances, medications the intake does not evaluate, and prescribers who are not the
visit's licensed reviewer are refused with 422 naming the rule, and nothing is stored."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.test_visit_review import claim, practitioner, submitted
from tests.e2e.visit_support import load, rule, start_visit
from tests.support import FHIR_JSON, ServerProcess, module_server


server, client = module_server("prescribing")


def prescription(task: dict, prescriber: str, *, rxnorm: str | None = None, display: str | None = None) -> dict:
    body = load("profiles/examples/async-prescription-valid.json")
    body.pop("id")
    body.pop("meta")  # (the example's references point at the examples' own ids)
    body.pop("reasonReference", None)
    body["dispenseRequest"].pop("performer", None)
    body.update(subject=task["for"], encounter=task["focus"], requester={"reference": prescriber})
    if rxnorm:
        body["medicationCodeableConcept"] = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                         "code": rxnorm, "display": display}], "text": display}
    return body


def reviewing(client: httpx.Client) -> tuple[dict, str]:
    task = submitted(client)
    doctor = practitioner(client, "CA")
    assert claim(client, task, doctor).status_code == 200
    return task, doctor


def count(client: httpx.Client, task: dict) -> int:
    return len(client.get("/MedicationRequest", params={"encounter": task["focus"]["reference"]}).json().get("entry", []))


def test_the_reviewing_clinician_prescribes(client):
    task, doctor = reviewing(client)
    response = client.post("/MedicationRequest", json=prescription(task, doctor))
    assert response.status_code == 201, response.text


def test_a_controlled_substance_needs_a_synchronous_visit(client):
    task, doctor = reviewing(client)
    response = client.post("/MedicationRequest", json=prescription(
        task, doctor, rxnorm="1049621", display="oxycodone hydrochloride 5 MG Oral Tablet"))
    assert response.status_code == 422
    assert "no-controlled-substance" in rule(response)
    assert "synchronous" in response.text
    assert count(client, task) == 0


def test_a_medication_the_intake_does_not_evaluate_is_refused(client):
    task, doctor = reviewing(client)
    # sildenafil needs the ED intake; this visit answered the general one
    response = client.post("/MedicationRequest", json=prescription(task, doctor, rxnorm="136411", display="sildenafil"))
    assert response.status_code == 422
    assert "evaluation-fits-medication" in rule(response)
    assert count(client, task) == 0


@pytest.mark.parametrize("nitrates, expected", [(False, 201), (True, 422)])
def test_an_answer_that_contraindicates_the_medication_refuses_it(client, nitrates, expected):
    # an erectile-dysfunction visit: sildenafil is evaluated by the ED intake, unless the patient takes nitrates
    encounter_id = start_visit(client, intake_file="tests/fixtures/questionnaire/ed-intake-complete.json",
                               answers={"nitrates": {"valueBoolean": nitrates}})
    task = client.post(f"/Encounter/{encounter_id}/$submit").json()
    doctor = practitioner(client, "CA")
    assert claim(client, task, doctor).status_code == 200
    response = client.post("/MedicationRequest", json=prescription(task, doctor, rxnorm="136411", display="sildenafil"))
    assert response.status_code == expected, response.text
    if expected == 422:
        assert rule(response) == {"no-contraindication"}


def test_a_clinician_who_is_not_the_reviewer_cannot_prescribe_in_the_visit(client):
    task, _ = reviewing(client)
    other = practitioner(client, "CA")
    response = client.post("/MedicationRequest", json=prescription(task, other))
    assert response.status_code == 422
    assert "encounter-is-async-visit" in rule(response)


def test_a_clinician_without_a_licence_where_the_patient_is_cannot_prescribe(client):
    task, doctor = reviewing(client)
    # the licence lapsed after the claim: the reviewer's Practitioner now lists only Oregon
    body = client.get(f"/{doctor}").json()
    body["qualification"][0]["extension"][0]["extension"][1]["valueCodeableConcept"]["coding"][0]["code"] = "OR"
    assert client.put(f"/{doctor}", json=body).status_code == 200
    response = client.post("/MedicationRequest", json=prescription(task, doctor))
    assert response.status_code == 422
    assert "licence-in-patient-state" in rule(response)


def test_an_ehr_record_outside_any_async_visit_is_stored_as_a_record(client):
    # a backend import (no signed-in user) of an EHR's own prescription: not an async prescription
    body = prescription({"for": {"reference": "Patient/ehr-1"}, "focus": {"reference": "Encounter/ehr-visit"}},
                        "Practitioner/ehr-doctor", rxnorm="1049621", display="oxycodone hydrochloride 5 MG Oral Tablet")
    assert client.post("/MedicationRequest", json=body).status_code == 201


def test_a_deployment_switches_a_rule_off_in_its_own_rule_file(tmp_path):
    # e.g. where a platform may prescribe some scheduled drugs asynchronously: no code changes
    config = load("profiles/prescribing-rules.json")
    config["rules"]["no-controlled-substance"]["enabled"] = False
    (tmp_path / "rules.json").write_text(json.dumps(config))
    proc = ServerProcess(tmp_path / "fhir.db", extra_args=["--prescribing-rules", str(tmp_path / "rules.json")]).start()
    try:
        with httpx.Client(base_url=proc.base, timeout=30.0, headers=FHIR_JSON) as c:
            task, doctor = reviewing(c)
            response = c.post("/MedicationRequest", json=prescription(
                task, doctor, rxnorm="1049621", display="oxycodone hydrochloride 5 MG Oral Tablet"))
            assert response.status_code == 201, response.text
    finally:
        proc.stop()
