"""The review of a submitted visit over HTTP: claim (licence in the patient's state, one winner),
clarifying messages, decline (fee cancelled, patient told) and completion (needs a diagnosis and a
care plan; the Encounter finishes with it). Every refusal names its rule and changes nothing."""

from __future__ import annotations

import copy
import json
import threading

import httpx
import pytest

from tests.e2e.visit_support import load, rule, start_visit
from tests.support import FHIR_JSON, ServerProcess, module_server


server, client = module_server("review")


def practitioner(client: httpx.Client, *states: str) -> str:
    """A clinician licensed in `states` (the guide's example, its licences re-pointed)."""
    body = load("profiles/examples/licensed-practitioner-valid.json")
    body.pop("id")
    template = body["qualification"][0]
    body["qualification"] = []
    for state in states:
        q = copy.deepcopy(template)
        q["extension"][0]["extension"][1]["valueCodeableConcept"]["coding"][0].update(code=state, display=state)
        body["qualification"].append(q)
    response = client.post("/Practitioner", json=body)
    assert response.status_code == 201, response.text
    return f"Practitioner/{response.json()['id']}"


def submitted(client: httpx.Client) -> dict:
    encounter_id = start_visit(client, state="CA")
    response = client.post(f"/Encounter/{encounter_id}/$submit")
    assert response.status_code == 201
    return response.json()


def claim(client: httpx.Client, task: dict, owner: str, **headers) -> httpx.Response:
    body = {**task, "status": "in-progress", "owner": {"reference": owner},
            "businessStatus": {"coding": [{**task["businessStatus"]["coding"][0], "code": "in-review"}]}}
    return client.put(f"/Task/{task['id']}", json=body, headers=headers)


def with_state(task: dict, status: str, business: str, **fields) -> dict:
    return {**task, **fields, "status": status,
            "businessStatus": {"coding": [{**task["businessStatus"]["coding"][0], "code": business}]}}


def encounter_of(client: httpx.Client, task: dict) -> dict:
    return client.get(f"/{task['focus']['reference']}").json()


def test_a_clinician_licensed_in_the_patients_state_claims_the_visit(client):
    task = submitted(client)
    doctor = practitioner(client, "CA")
    response = claim(client, task, doctor)
    assert response.status_code == 200, response.text
    encounter = encounter_of(client, task)
    assert encounter["status"] == "in-progress"
    assert doctor in [p["individual"]["reference"] for p in encounter["participant"]]


def test_a_clinician_not_licensed_there_cannot_claim(client):
    task = submitted(client)
    response = claim(client, task, practitioner(client, "NY", "OR"))
    assert response.status_code == 422
    assert "visit-claim-licence" in rule(response)
    assert client.get(f"/Task/{task['id']}").json()["status"] == "requested"
    assert encounter_of(client, task)["status"] == "arrived"


def test_of_two_clinicians_claiming_at_once_exactly_one_wins(client, server):
    task = submitted(client)
    doctors = [practitioner(client, "CA"), practitioner(client, "CA")]
    results: list[int] = []

    def attempt(owner: str) -> None:
        with httpx.Client(base_url=server.base, timeout=30.0, headers=FHIR_JSON) as c:
            results.append(claim(c, task, owner).status_code)

    threads = [threading.Thread(target=attempt, args=(d,)) for d in doctors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 409]
    assert client.get(f"/Task/{task['id']}").json()["owner"]["reference"] in doctors


def test_a_stale_if_match_claim_gets_412(client):
    task = submitted(client)
    assert claim(client, task, practitioner(client, "CA")).status_code == 200
    assert claim(client, task, practitioner(client, "CA"), **{"If-Match": 'W/"1"'}).status_code == 412


def test_a_clinicians_question_and_the_patients_reply_move_the_review(client):
    task = submitted(client)
    doctor = practitioner(client, "CA")
    assert claim(client, task, doctor).status_code == 200
    patient = task["for"]
    question = {"resourceType": "Communication", "status": "completed", "encounter": task["focus"], "subject": patient,
                "sender": {"reference": doctor}, "recipient": [patient], "sent": "2026-11-29T10:00:00Z",
                "payload": [{"contentString": "Is the rash itchy at night?"}]}
    asked = client.post("/Communication", json=question)
    assert asked.status_code == 201
    assert client.get(f"/Task/{task['id']}").json()["businessStatus"]["coding"][0]["code"] == "awaiting-patient"
    reply = {**question, "sender": patient, "recipient": [{"reference": doctor}],
             "inResponseTo": [{"reference": f"Communication/{asked.json()['id']}"}],
             "payload": [{"contentString": "Yes, mostly at night."}]}
    assert client.post("/Communication", json=reply).status_code == 201
    assert client.get(f"/Task/{task['id']}").json()["businessStatus"]["coding"][0]["code"] == "in-review"


def test_declining_cancels_the_fee_and_tells_the_patient(client):
    task = submitted(client)
    doctor = practitioner(client, "CA")
    claimed = claim(client, task, doctor).json()
    no_reason = client.put(f"/Task/{task['id']}", json=with_state(claimed, "rejected", "referred-to-synchronous"))
    assert no_reason.status_code == 422 and "visit-decline-reason" in rule(no_reason)
    declined = client.put(f"/Task/{task['id']}", json=with_state(
        claimed, "rejected", "referred-to-synchronous", statusReason={"text": "The rash needs to be seen in person"}))
    assert declined.status_code == 200, declined.text
    assert encounter_of(client, task)["status"] == "cancelled"
    [charge] = [e["resource"] for e in client.get("/ChargeItem", params={"context": task["focus"]["reference"]}).json()["entry"]]
    assert charge["status"] == "cancelled"
    messages = client.get("/Communication", params={"encounter": task["focus"]["reference"]}).json()["entry"]
    assert any("seen in person" in m["resource"]["payload"][0]["contentString"] for m in messages)


def test_completing_needs_a_diagnosis_and_a_care_plan_then_finishes_the_encounter(client):
    task = submitted(client)
    doctor = practitioner(client, "CA")
    claimed = claim(client, task, doctor).json()
    done = with_state(claimed, "completed", "completed")
    early = client.put(f"/Task/{task['id']}", json=done)
    assert early.status_code == 422 and "visit-complete-diagnosis" in rule(early)
    condition = load("profiles/examples/visit-diagnosis-valid.json")
    careplan = load("profiles/examples/visit-careplan-valid.json")
    for resource in (condition, careplan):
        resource.pop("id")
        resource.pop("meta", None)  # (their references point at the examples' ids)
        resource["encounter"] = task["focus"]
        resource["subject"] = task["for"]
    careplan["addresses"] = [{"reference": "Condition/" + client.post("/Condition", json=condition).json()["id"]}]
    assert client.post("/CarePlan", json=careplan).status_code == 201
    response = client.put(f"/Task/{task['id']}", json=done)
    assert response.status_code == 200, response.text
    encounter = encounter_of(client, task)
    assert encounter["status"] == "finished" and "end" in encounter["period"]
    # when it was submitted, claimed and completed, for turnaround
    period = response.json()["executionPeriod"]
    assert task["authoredOn"] <= claimed["executionPeriod"]["start"] == period["start"] <= period["end"]


@pytest.mark.parametrize("change, expected", [
    (lambda t: with_state(t, "completed", "completed"), "visit-transition"),  # skipping the review
    (lambda t: {**t, "focus": {"reference": "Encounter/other"}}, "visit-task-fixed"),
])
def test_steps_outside_the_state_machine_are_refused(client, change, expected):
    task = submitted(client)
    response = client.put(f"/Task/{task['id']}", json=change(task))
    assert response.status_code == 409
    assert expected in rule(response)
    assert client.get(f"/Task/{task['id']}").json()["meta"]["versionId"] == task["meta"]["versionId"]


def test_review_tasks_are_made_by_submit_only_and_never_deleted(client):
    task = submitted(client)
    copy_of = {k: v for k, v in task.items() if k not in ("id", "meta")}
    made = client.post("/Task", json=copy_of)
    assert made.status_code == 422 and "visit-task-create" in rule(made)
    deleted = client.delete(f"/Task/{task['id']}")
    assert deleted.status_code == 409
    assert json.loads(client.get(f"/Task/{task['id']}").text)["status"] == "requested"


def test_metrics_show_queue_depth_steps_and_turnaround_without_patient_data(client):
    task = submitted(client)
    claim(client, task, practitioner(client, "CA"))
    text = client.get("/metrics").text
    assert 'visit_queue_depth{state="in-review"}' in text
    assert 'visit_steps_total{step="claim"}' in text and 'visit_steps_total{step="submit"}' in text
    assert "visit_time_to_claim_seconds_count" in text
    assert task["for"]["reference"].split("/")[1] not in text


def test_only_the_visits_patient_and_reviewer_exchange_its_messages(client):
    task = submitted(client)
    doctor, colleague = practitioner(client, "CA"), practitioner(client, "CA")
    assert claim(client, task, doctor).status_code == 200
    patient = task["for"]
    message = {"resourceType": "Communication", "status": "completed", "encounter": task["focus"], "subject": patient,
               "sent": "2026-11-29T10:00:00Z", "payload": [{"contentString": "A question"}]}
    intruder = client.post("/Communication", json={**message, "sender": {"reference": colleague}, "recipient": [patient]})
    assert intruder.status_code == 403
    assert client.post("/Communication", json={**message, "sender": {"reference": doctor}, "recipient": [patient]}).status_code == 201


def test_a_submitted_visits_encounter_status_follows_its_task(client):
    task = submitted(client)
    encounter = encounter_of(client, task)
    response = client.put(f"/{task['focus']['reference']}", json={**encounter, "status": "finished"})
    assert response.status_code == 409 and "visit-encounter-status" in rule(response)
    assert client.delete(f"/{task['focus']['reference']}").status_code == 409
    assert encounter_of(client, task)["status"] == "arrived"


def test_metrics_sum_the_steps_over_worker_processes(tmp_path):
    proc = ServerProcess(tmp_path / "fhir.db", extra_args=["--workers", "2"]).start()
    try:
        with httpx.Client(base_url=proc.base, timeout=30.0, headers=FHIR_JSON) as c:
            for _ in range(6):  # new connections: the kernel spreads them over both workers
                with httpx.Client(base_url=proc.base, timeout=30.0, headers=FHIR_JSON) as fresh:
                    submitted(fresh)
            text = c.get("/metrics").text
            assert 'visit_steps_total{step="submit"} 6.0' in text
    finally:
        proc.stop()
